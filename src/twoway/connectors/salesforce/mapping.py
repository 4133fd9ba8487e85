"""Our customer fields and an Account's. Names of the object and fields come from settings.

Our id is the External ID (`Twoway_Id__c`; creates upsert by it); our record's uid, which a restored
database cannot issue again, rides beside it (`Twoway_Uid__c`; `uid_field` None: an org without one, where
Accounts carry our id only).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from twoway.connectors.base import parse_uid

# Account.Name is required in Salesforce; our name may be empty (Stripe allows null). Sent as this,
# read back as "".
NO_NAME = "(no name)"
UID_LENGTH = 36  # a uuid as text


@dataclass(frozen=True)
class Mapping_:
    sobject: str = "Account"
    name_field: str = "Name"
    email_field: str = "Email__c"
    external_id_field: str = "Twoway_Id__c"
    uid_field: str | None = "Twoway_Uid__c"

    def fields(self) -> tuple[str, ...]:
        """The Account fields a sync reads."""
        return ("Id", "SystemModstamp", self.name_field, self.email_field, self.external_id_field,
                *([self.uid_field] if self.uid_field else []))

    def identity(self, internal_id: int, uid: str | None) -> dict[str, str]:
        """The fields that name our record: our id, and its uid where the org keeps one."""
        out = {self.external_id_field: str(int(internal_id))}
        if self.uid_field and uid:
            out[self.uid_field] = uid
        return out

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
        raw = record.get(self.external_id_field)
        return int(raw) if isinstance(raw, str) and raw.isdigit() else None

    def uid(self, record: Mapping[str, Any]) -> str | None:
        return parse_uid(record.get(self.uid_field)) if self.uid_field else None
