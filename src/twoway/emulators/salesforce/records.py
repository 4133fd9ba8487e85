"""Account operations: create, update, upsert by External ID, delete, read. They raise SfError.

Fields are checked against the store's schema: each org has its own custom fields."""

from __future__ import annotations

import re
from typing import Any

from twoway.emulators.kit.faults import Faults
from twoway.emulators.salesforce import errors, ids, schema
from twoway.emulators.salesforce.errors import SfError
from twoway.emulators.salesforce.schema import Schema
from twoway.emulators.salesforce.store import Obj, Store

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def get(store: Store, ident: str) -> Obj:
    full = ids.to18(ident)
    record = store.records.get(full) if full else None
    if record is None:
        raise errors.not_found()
    if record["IsDeleted"]:
        raise SfError(404, "ENTITY_IS_DELETED", "entity is deleted")
    return record


def get_any(store: Store, ident: str) -> Obj:
    """Live or in the recycle bin."""
    full = ids.to18(ident)
    record = store.records.get(full) if full else None
    if record is None:
        raise errors.not_found()
    return record


def create(store: Store, data: Any, user_id: str, faults: Faults | None = None) -> Obj:
    values = _validated(store.schema, data, creating=True, faults=faults)
    if not values.get("Name"):
        raise SfError(400, "REQUIRED_FIELD_MISSING", "Required fields are missing: [Name]", ["Name"])
    _check_unique(store, values, None)
    now = store.now_ms()
    record: Obj = {f.name: None for f in store.schema.fields}
    record.update(values)
    record.update({"Id": store.new_id(), "IsDeleted": False, "OwnerId": values.get("OwnerId") or user_id,
                   "CreatedDate": now, "CreatedById": user_id, "LastModifiedDate": now,
                   "LastModifiedById": user_id, "SystemModstamp": now})
    store.put(record)
    return record


def update(store: Store, ident: str, data: Any, user_id: str, faults: Faults | None = None,
           unmodified_since_ms: int | None = None) -> Obj:
    record = get(store, ident)
    if unmodified_since_ms is not None and record["LastModifiedDate"] // 1000 * 1000 > unmodified_since_ms:
        raise SfError(412, "PRECONDITION_FAILED", "The requested Salesforce object has been modified since")
    values = _validated(store.schema, data, creating=False, faults=faults)
    if "Name" in values and not values["Name"]:
        raise SfError(400, "REQUIRED_FIELD_MISSING", "Required fields are missing: [Name]", ["Name"])
    _check_unique(store, values, record["Id"])
    now = store.now_ms()
    # Salesforce stamps a save even when no value changed.
    changed = {**record, **values, "LastModifiedDate": now, "LastModifiedById": user_id, "SystemModstamp": now}
    store.put(changed)
    return changed


def upsert(store: Store, ext_field: str, value: str, data: Any, user_id: str,
           faults: Faults | None = None) -> tuple[Obj, bool]:
    """(record, created). Several matches: 300 with their URLs in the message."""
    fdef = store.schema.field(ext_field)
    if fdef is None or not (fdef.external_id or fdef.name == "Id"):
        raise SfError(404, "NOT_FOUND", f"Provided external ID field does not exist or is not accessible: {ext_field}")
    if not isinstance(data, dict):
        raise errors.bad_json("Expected a JSON object")
    given = {k.lower(): v for k, v in data.items()}
    if fdef.name.lower() in given and given[fdef.name.lower()] != value:
        raise SfError(400, "INVALID_FIELD", f"The external ID field {fdef.name} in the body does not match the URL",
                      [fdef.name])
    if fdef.name == "Id":
        return update(store, value, data, user_id, faults), False
    body = {k: v for k, v in data.items() if k.lower() != fdef.name.lower()}
    matches = store.holders(fdef.name, value)
    if len(matches) > 1:
        raise SfError(300, "MULTIPLE_CHOICES", ",".join(f"/services/data/v60.0/sobjects/Account/{m}" for m in matches))
    if matches:
        return update(store, matches[0], body, user_id, faults), False
    return create(store, {**body, fdef.name: value}, user_id, faults), True


def delete(store: Store, ident: str, user_id: str) -> Obj:
    record = get(store, ident)
    now = store.now_ms()
    gone = {**record, "IsDeleted": True, "LastModifiedDate": now, "LastModifiedById": user_id, "SystemModstamp": now}
    store.put(gone)
    store.delete_log.append((record["Id"], now))
    return gone


def render(record: Obj, shape: Schema, fields: list[str] | None = None, base: str = "/services/data/v60.0") -> Obj:
    out: Obj = {"attributes": {"type": schema.SOBJECT, "url": f"{base}/sobjects/{schema.SOBJECT}/{record['Id']}"}}
    for name in fields or [f.name for f in shape.fields]:
        value = record.get(name)
        out[name] = schema.render_ms(value) if name in shape.datetimes and value is not None else value
    return out


def parse_fields(shape: Schema, raw: str | None) -> list[str] | None:
    if not raw:
        return None
    out = []
    for name in raw.split(","):
        fdef = shape.field(name.strip())
        if fdef is None:
            raise errors.invalid_field(name.strip())
        out.append(fdef.name)
    return out


def _validated(shape: Schema, data: Any, *, creating: bool, faults: Faults | None) -> Obj:
    if not isinstance(data, dict):
        raise errors.bad_json("Expected a JSON object for an Account")
    out: Obj = {}
    for key, value in data.items():
        if key == "attributes":
            continue
        fdef = shape.field(key)
        if fdef is None:
            raise errors.invalid_field(key)
        if not (fdef.createable if creating else fdef.updateable):
            raise SfError(400, "INVALID_FIELD_FOR_INSERT_UPDATE",
                          f"Unable to create/update fields: {fdef.name}. Please check the security settings of "
                          "this field and verify that it is read/write for your profile or permission set.",
                          [fdef.name])
        if value is not None and not isinstance(value, str):
            raise SfError(400, "JSON_PARSER_ERROR", f"Cannot deserialize instance of {fdef.type} for {fdef.name}",
                          [fdef.name])
        value = value or None  # Salesforce stores "" as null
        if value is not None and fdef.length and len(value) > fdef.length:
            raise SfError(400, "STRING_TOO_LONG", f"{fdef.label}: data value too large: {value[:40]}"
                          f" (max length={fdef.length})", [fdef.name])
        if value is not None and fdef.type == "email" and not _EMAIL.match(value):
            raise SfError(400, "INVALID_EMAIL_ADDRESS", f"{fdef.label}: invalid email address: {value}", [fdef.name])
        if value is not None and fdef.type == "reference" and ids.to18(value) is None:
            raise SfError(400, "MALFORMED_ID", f"{fdef.label}: id value of incorrect type: {value}", [fdef.name])
        out[fdef.name] = value
    if faults is not None and faults.rejects(out.get("Name"), out.get("Email__c")):
        raise SfError(400, "FIELD_CUSTOM_VALIDATION_EXCEPTION", "Rejected by a validation rule (reject_pattern)")
    return out


def _check_unique(store: Store, values: Obj, own_id: str | None) -> None:
    for name in store.schema.unique:
        value = values.get(name)
        if value is None:
            continue
        others = [i for i in store.holders(name, value) if i != own_id]
        if others:
            raise SfError(400, "DUPLICATE_VALUE",
                          f"duplicate value found: {name} duplicates value on record with id: {others[0]}", [name])
