"""Our invoices and their lines. Money is integer minor units of the invoice's ISO currency."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Text,
    Uuid,
    func,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from twoway.kit.db import Base

STATUSES = ("draft", "open", "uncollectible", "paid", "void")
# The ladder: a status only ever moves up. paid and void share the top rung and are terminal.
RANK = {"draft": 0, "open": 1, "uncollectible": 2, "paid": 3, "void": 3}
TERMINAL = frozenset({"paid", "void"})
MAX_LINES = 250  # Stripe's limit of invoice items per invoice


class Invoice(Base):
    __tablename__ = "invoices"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    customer_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("customers.id"))
    currency: Mapped[str] = mapped_column(String(3))
    collection_method: Mapped[str] = mapped_column(String(32))
    days_until_due: Mapped[int | None] = mapped_column(Integer)
    due_date: Mapped[date | None] = mapped_column(Date)
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    status: Mapped[str] = mapped_column(String(20), default="draft", server_default="draft")
    # A command asked through our API (finalize, void, ...) and not yet confirmed by the external system.
    requested_status: Mapped[str | None] = mapped_column(String(20))
    # Owned by Stripe: copied from it, never pushed. Totals start as our sum of the lines.
    number: Mapped[str | None] = mapped_column(String(100))
    subtotal: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    total: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    amount_due: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    amount_paid: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    hosted_invoice_url: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # An identity a restored database cannot re-issue (as customers.uid; docs/architecture.md, Creates).
    uid: Mapped[UUID] = mapped_column(Uuid, default=uuid4, server_default=func.gen_random_uuid(), unique=True)

    lines: Mapped[list[InvoiceLine]] = relationship(
        back_populates="invoice", order_by="InvoiceLine.position", cascade="all, delete-orphan",
        lazy="selectin")

    __table_args__ = (
        Index("ix_invoices_customer_id", "customer_id"),
        Index("ix_invoices_status", "status"),
    )
    __mapper_args__ = {"eager_defaults": True}

    @property
    def effective_status(self) -> str:
        """Where the invoice is headed: the pending command's status, else the confirmed one."""
        return self.requested_status or self.status

    def fields(self) -> dict[str, Any]:
        """The draft fields both sides edit (3-way merged); lines travel with them."""
        return {
            "currency": self.currency,
            "collection_method": self.collection_method,
            "days_until_due": self.days_until_due,
            "due_date": self.due_date.isoformat() if self.due_date else None,
            "description": self.description,
        }


class InvoiceLine(Base):
    __tablename__ = "invoice_lines"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    invoice_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("invoices.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    quantity: Mapped[int] = mapped_column(BigInteger)
    unit_amount: Mapped[int] = mapped_column(BigInteger)
    amount: Mapped[int] = mapped_column(BigInteger)
    # Our id is on the other side's line (we made it there, or wrote it on). A line made over there
    # that we could not tag before it froze is matched by its content instead.
    tagged: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    invoice: Mapped[Invoice] = relationship(back_populates="lines")

    __table_args__ = (Index("ix_invoice_lines_invoice_id", "invoice_id", "position"),)
    __mapper_args__ = {"eager_defaults": True}

    def values(self) -> dict[str, Any]:
        return {"description": self.description, "quantity": self.quantity, "unit_amount": self.unit_amount}

