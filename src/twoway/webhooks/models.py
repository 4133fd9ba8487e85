"""Rejected deliveries cost bounded storage: a counter per reason, and a capped sample in `webhook_rejections`."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, PrimaryKeyConstraint, String, func
from sqlalchemy.orm import Mapped, mapped_column

from twoway.kit.db import Base


class WebhookRejectionCount(Base):
    __tablename__ = "webhook_rejection_counts"

    system: Mapped[str] = mapped_column(String(50))
    reason: Mapped[str] = mapped_column(String(200))
    count: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    first_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (PrimaryKeyConstraint("system", "reason", name="pk_webhook_rejection_counts"),)
