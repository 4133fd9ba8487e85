"""What the invoice API accepts and answers. Amounts and quantities are strict integers (no 1.0, no "1")."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from twoway.invoices import currencies
from twoway.invoices.models import MAX_LINES

DESCRIPTION_MAX = 500
# Stripe's largest amount for a charge in most currencies (eight digits of minor units).
AMOUNT_MAX = 99_999_999
QUANTITY_MAX = 1_000_000
DAYS_MAX = 3650
BIGINT_MAX = 2**63 - 1
DUE_MIN, DUE_MAX = date(2000, 1, 1), date(2099, 12, 31)

CollectionMethod = Literal["charge_automatically", "send_invoice"]
Status = Literal["draft", "open", "uncollectible", "paid", "void"]
Amount = Annotated[int, Field(strict=True, ge=0, le=AMOUNT_MAX)]


def _text(value: object) -> object:
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("must not contain NUL characters")  # PostgreSQL text cannot hold NUL
    return value.strip() if isinstance(value, str) else value


def _currency(value: object) -> object:
    return currencies.normalize(value) if isinstance(value, str) else value


def _due_date(value: date | None) -> date | None:
    # Stripe takes a unix timestamp; keep it a plausible one.
    if value is not None and not (DUE_MIN <= value <= DUE_MAX):
        raise ValueError(f"due_date must be between {DUE_MIN} and {DUE_MAX}")
    return value


class LineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # On PATCH: the line this entry keeps (its id stays, Stripe sees an update, not a delete + create).
    id: int | None = Field(default=None, strict=True, ge=1, le=BIGINT_MAX)
    description: str = Field(default="", max_length=DESCRIPTION_MAX)
    quantity: int = Field(strict=True, ge=0, le=QUANTITY_MAX)
    unit_amount: Amount

    _clean = field_validator("description", mode="before")(_text)

    @model_validator(mode="after")
    def _amount_fits(self) -> LineIn:
        if self.quantity * self.unit_amount > AMOUNT_MAX:
            raise ValueError(f"quantity × unit_amount must not exceed {AMOUNT_MAX}")
        return self


Lines = Annotated[list[LineIn], Field(max_length=MAX_LINES)]


class InvoiceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer_id: int = Field(strict=True, ge=1, le=BIGINT_MAX)
    currency: str = Field(min_length=3, max_length=3)
    description: str = Field(default="", max_length=DESCRIPTION_MAX)
    collection_method: CollectionMethod = "charge_automatically"
    days_until_due: int | None = Field(default=None, strict=True, ge=0, le=DAYS_MAX)
    due_date: date | None = None
    lines: Lines = Field(default_factory=list)

    _clean = field_validator("description", mode="before")(_text)
    _cur = field_validator("currency", mode="before")(_currency)
    _due = field_validator("due_date")(_due_date)

    @model_validator(mode="after")
    def _terms(self) -> InvoiceCreate:
        check_terms(self.collection_method, self.days_until_due, self.due_date)
        if any(line.id is not None for line in self.lines):
            raise ValueError("new lines carry no id")
        return self


class InvoiceUpdate(BaseModel):
    """Only the fields given change; `lines` replaces the whole list (entries with an id keep that line)."""

    model_config = ConfigDict(extra="forbid")

    customer_id: int | None = Field(default=None, strict=True, ge=1, le=BIGINT_MAX)
    currency: str | None = Field(default=None, min_length=3, max_length=3)
    description: str | None = Field(default=None, max_length=DESCRIPTION_MAX)
    collection_method: CollectionMethod | None = None
    days_until_due: int | None = Field(default=None, strict=True, ge=0, le=DAYS_MAX)
    due_date: date | None = None
    lines: Lines | None = None

    _clean = field_validator("description", mode="before")(_text)
    _cur = field_validator("currency", mode="before")(_currency)
    _due = field_validator("due_date")(_due_date)

    @model_validator(mode="after")
    def _no_null_for_required(self) -> InvoiceUpdate:
        for name in ("customer_id", "currency", "description", "collection_method", "lines"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


def check_terms(method: str, days_until_due: int | None, due_date: date | None) -> None:
    """Stripe's rule: `send_invoice` needs exactly one due term; `charge_automatically` takes none."""
    if method == "send_invoice":
        if (days_until_due is None) == (due_date is None):
            raise ValueError("send_invoice needs exactly one of days_until_due and due_date")
    elif days_until_due is not None or due_date is not None:
        raise ValueError("days_until_due and due_date apply only to collection_method send_invoice")


class LineOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    position: int
    description: str
    quantity: int
    unit_amount: int
    amount: int


class InvoiceOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    customer_id: int
    currency: str
    description: str
    collection_method: CollectionMethod
    days_until_due: int | None
    due_date: date | None
    status: Status
    requested_status: Status | None
    number: str | None
    subtotal: int
    total: int
    amount_due: int
    amount_paid: int
    hosted_invoice_url: str | None
    lines: list[LineOut]
    version: int
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None


class InvoicePage(BaseModel):
    data: list[InvoiceOut]
    has_more: bool
    next_cursor: str | None
