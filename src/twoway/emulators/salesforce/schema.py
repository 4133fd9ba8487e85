"""Account's fields as `describe` shows them (standard ones, plus custom ones per org), and Salesforce's
datetime format."""

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


STANDARD: tuple[FieldDef, ...] = (
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
)
# The custom fields of an org made without a list of its own (the emulator's first org among them).
DEFAULT_CUSTOM: tuple[FieldDef, ...] = (
    FieldDef("Email__c", "email", "Email", 80, custom=True),
    FieldDef("Twoway_Id__c", "string", "Twoway Id", 64, external_id=True, unique=True, custom=True),
    FieldDef("Twoway_Uid__c", "string", "Twoway Uid", 36, custom=True),
    FieldDef("Legacy_Id__c", "string", "Legacy Id", 64, external_id=True, custom=True),
)
_CUSTOM_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,36}__c$")
_CUSTOM_TYPES = {"string": 255, "email": 80, "phone": 40, "url": 255, "textarea": 32000}


class Schema:
    """One org's Account: the standard fields plus that org's custom fields (they differ from org to org)."""

    def __init__(self, custom: tuple[FieldDef, ...] = DEFAULT_CUSTOM) -> None:
        self.custom = custom
        self.fields = STANDARD + custom
        self.by_lower = {f.name.lower(): f for f in self.fields}
        self.datetimes = frozenset(f.name for f in self.fields if f.type == "datetime")
        self.external_ids = tuple(f.name for f in self.fields if f.external_id)
        self.unique = tuple(f.name for f in self.fields if f.unique)

    def field(self, name: str) -> FieldDef | None:
        return self.by_lower.get(name.lower())

    def describe(self, base: str) -> dict[str, object]:
        return {
            "name": SOBJECT, "label": "Account", "labelPlural": "Accounts", "keyPrefix": KEY_PREFIX,
            "createable": True, "updateable": True, "deletable": True, "queryable": True, "custom": False,
            "fields": [f.describe() for f in self.fields],
            "urls": {"sobject": f"{base}/sobjects/{SOBJECT}", "describe": f"{base}/sobjects/{SOBJECT}/describe",
                     "rowTemplate": f"{base}/sobjects/{SOBJECT}/{{ID}}"},
        }


DEFAULT = Schema()


def custom_field(spec: object) -> FieldDef:
    """A custom field from a control request: `{"name": "X__c", "type": "email", "external_id", "unique", ...}`."""
    if not isinstance(spec, dict):
        raise ValueError("each custom field must be a JSON object")
    name, type_ = spec.get("name"), spec.get("type", "string")
    if not isinstance(name, str) or not _CUSTOM_NAME.match(name):
        raise ValueError(f"custom field name {name!r} must look like Some_Name__c")
    if type_ not in _CUSTOM_TYPES:
        raise ValueError(f"custom field type must be one of {sorted(_CUSTOM_TYPES)}")
    length = spec.get("length", _CUSTOM_TYPES[type_])
    if isinstance(length, bool) or not isinstance(length, int) or length <= 0:
        raise ValueError("custom field length must be a positive integer")
    flags = {k: spec.get(k, False) for k in ("external_id", "unique")}
    if not all(isinstance(v, bool) for v in flags.values()):
        raise ValueError("external_id and unique must be booleans")
    label = spec.get("label", name[:-3].replace("_", " "))
    if not isinstance(label, str):
        raise ValueError("custom field label must be a string")
    return FieldDef(name, type_, label, length, custom=True, **flags)


def custom_fields(specs: object) -> tuple[FieldDef, ...]:
    if not isinstance(specs, list):
        raise ValueError("custom_fields must be a list")
    made = tuple(custom_field(s) for s in specs)
    if len({f.name.lower() for f in made}) != len(made):
        raise ValueError("custom field names must differ")
    return made


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
