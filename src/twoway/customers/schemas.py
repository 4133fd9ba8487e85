from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator

# Stripe's own limits, so whatever we accept Stripe accepts too.
NAME_MAX = 256
EMAIL_MAX = 512


def _strip(value: object) -> object:
    if isinstance(value, str) and "\x00" in value:
        # PostgreSQL text cannot hold NUL; rejecting it here turns a 500 into a 422.
        raise ValueError("must not contain NUL characters")
    return value.strip() if isinstance(value, str) else value


class CustomerCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=NAME_MAX)
    email: EmailStr = Field(max_length=EMAIL_MAX)

    _strip_name = field_validator("name", mode="before")(_strip)


class CustomerUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=NAME_MAX)
    email: EmailStr | None = Field(default=None, max_length=EMAIL_MAX)

    _strip_name = field_validator("name", mode="before")(_strip)


class CustomerOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    email: str
    version: int
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None


class CustomerPage(BaseModel):
    data: list[CustomerOut]
    has_more: bool
    next_cursor: str | None
