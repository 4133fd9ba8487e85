"""Account's fields as `describe` shows them, and Salesforce's datetime format."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

SOBJECT = "Account"
KEY_PREFIX = "001"


@dataclass(frozen=True)
class FieldDef:
    name: str
    type: str  # id, string, email, datetime, boolean, reference, textarea, url, phone
    label: str
    length: int = 0
    nillable: bool = True
    createable: bool = True
    updateable: bool = True
    external_id: bool = False
    unique: bool = False
    custom: bool = False

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "type": self.type, "label": self.label, "length": self.length,
                "nillable": self.nillable, "createable": self.createable, "updateable": self.updateable,
                "externalId": self.external_id, "unique": self.unique, "custom": self.custom,
                "idLookup": self.name == "Id" or self.external_id, "filterable": True, "sortable": True}


def _system(name: str, type_: str, label: str) -> FieldDef:
    return FieldDef(name, type_, label, 18 if type_ in ("id", "reference") else 0, nillable=False,
                    createable=False, updateable=False)


FIELDS: tuple[FieldDef, ...] = (
    _system("Id", "id", "Account ID"),
    _system("IsDeleted", "boolean", "Deleted"),
    FieldDef("Name", "string", "Account Name", 255, nillable=False),
    FieldDef("Phone", "phone", "Account Phone", 40),
    FieldDef("Website", "url", "Website", 255),
    FieldDef("Description", "textarea", "Account Description", 32000),
    FieldDef("OwnerId", "reference", "Owner ID", 18, nillable=False),
    _system("CreatedDate", "datetime", "Created Date"),
    _system("CreatedById", "reference", "Created By ID"),
    _system("LastModifiedDate", "datetime", "Last Modified Date"),
    _system("LastModifiedById", "reference", "Last Modified By ID"),
    _system("SystemModstamp", "datetime", "System Modstamp"),
    FieldDef("Email__c", "email", "Email", 80, custom=True),
    FieldDef("Twoway_Id__c", "string", "Twoway Id", 64, external_id=True, unique=True, custom=True),
    FieldDef("Legacy_Id__c", "string", "Legacy Id", 64, external_id=True, custom=True),
)
BY_LOWER = {f.name.lower(): f for f in FIELDS}
DATETIMES = frozenset(f.name for f in FIELDS if f.type == "datetime")
EXTERNAL_IDS = tuple(f.name for f in FIELDS if f.external_id)
UNIQUE = tuple(f.name for f in FIELDS if f.unique)


def field(name: str) -> FieldDef | None:
    return BY_LOWER.get(name.lower())


def describe(base: str) -> dict[str, object]:
    return {
        "name": SOBJECT, "label": "Account", "labelPlural": "Accounts", "keyPrefix": KEY_PREFIX,
        "createable": True, "updateable": True, "deletable": True, "queryable": True, "custom": False,
        "fields": [f.describe() for f in FIELDS],
        "urls": {"sobject": f"{base}/sobjects/{SOBJECT}", "describe": f"{base}/sobjects/{SOBJECT}/describe",
                 "rowTemplate": f"{base}/sobjects/{SOBJECT}/{{ID}}"},
    }


# -- datetimes: stored as epoch milliseconds, shown as 2024-05-28T21:10:08.000+0000 ---------------

_DT = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?(Z|[+-]\d{2}:?\d{2})?)?$")


def render_ms(ms: int) -> str:
    dt = datetime.fromtimestamp(ms / 1000, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}+0000"


def parse_ms(text: str) -> int | None:
    """A datetime literal (or date) in milliseconds; None when it is not one. Naive means UTC."""
    m = _DT.match(text.strip().replace(" ", "+"))
    if not m:
        return None
    y, mo, d, h, mi, s, frac, tz = m.groups()
    try:
        dt = datetime(int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(s or 0), tzinfo=UTC)
    except ValueError:
        return None
    ms = int(dt.timestamp() * 1000) + (int((frac or "0").ljust(3, "0")[:3]) if frac else 0)
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        digits = tz[1:].replace(":", "")
        ms -= sign * (int(digits[:2]) * 60 + int(digits[2:])) * 60_000
    return ms
