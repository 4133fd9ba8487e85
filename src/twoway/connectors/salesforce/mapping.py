"""Our customer fields and an Account's. Names of the object and fields come from settings.

The External ID field holds our record's uid: an upsert by it cannot land on another record's Account, even
when a restored database issues the same integer id again, and it lands on the record's own Account when an
import from elsewhere gave the record a new id. Accounts made before uids hold our integer id there; both
are read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from twoway.connectors.base import parse_uid

# Account.Name is required in Salesforce; our name may be empty (Stripe allows null). Sent as this,
# read back as "".
NO_NAME = "(no name)"
UID_LENGTH = 36  # what the External ID field must hold: a uuid as text


@dataclass(frozen=True)
class Mapping_:
    sobject: str = "Account"
    name_field: str = "Name"
    email_field: str = "Email__c"
    external_id_field: str = "Twoway_Id__c"

    def fields(self) -> tuple[str, ...]:
        """The Account fields a sync reads."""
        return ("Id", "SystemModstamp", self.name_field, self.email_field, self.external_id_field)

    def to_sf(self, fields: Mapping[str, str]) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        if "name" in fields:
            out[self.name_field] = fields["name"] or NO_NAME
        if "email" in fields:
            out[self.email_field] = fields["email"] or None  # Salesforce stores "" as null
        return out

    def from_sf(self, record: Mapping[str, Any]) -> dict[str, str]:
        name = record.get(self.name_field) or ""
        return {"name": "" if name == NO_NAME else str(name), "email": str(record.get(self.email_field) or "")}

    def internal_id(self, record: Mapping[str, Any]) -> int | None:
        """Our integer id, on an Account made before uids (newer ones carry the uid only)."""
        raw = record.get(self.external_id_field)
        return int(raw) if isinstance(raw, str) and raw.isdigit() else None

    def uid(self, record: Mapping[str, Any]) -> str | None:
        return parse_uid(record.get(self.external_id_field))


def external_value(uid: str | None, internal_id: int | None = None) -> str:
    """The External ID value of a record: its uid (checked to be one: it goes into SOQL and URLs), or, for a
    record without one, our id."""
    if uid:
        return str(UUID(uid))
    assert internal_id is not None
    return str(int(internal_id))
