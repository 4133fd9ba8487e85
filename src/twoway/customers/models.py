from __future__ import annotations

from datetime import datetime
from uuid import UUID

from sqlalchemy import BigInteger, DateTime, Identity, Index, Integer, String, Uuid, func
from sqlalchemy.orm import Mapped, mapped_column

from twoway.kit import records
from twoway.kit.db import Base


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    email: Mapped[str] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # An identity a restored database cannot re-issue (ids go back with a restore; a random uid does not):
    # made at insert, or kept from the external object an import came from. See docs/architecture.md, Creates.
    uid: Mapped[UUID] = mapped_column(Uuid, server_default=func.gen_random_uuid(), unique=True)

    __table_args__ = (Index("ix_customers_email", "email"),)
    # Server defaults come back in the INSERT's RETURNING, so no refresh round trip is needed.
    __mapper_args__ = {"eager_defaults": True}

    def fields(self) -> dict[str, str]:
        """The synced field values, the currency of every merge."""
        return {"name": self.name, "email": self.email}


CUSTOMER = records.register(records.Kind(name="customer", model=Customer, fields=("name", "email")))
