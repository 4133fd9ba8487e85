"""`/composite/sobjects`: up to 200 records a call, one result per record in order, allOrNone."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.datastructures import QueryParams

from twoway.emulators.salesforce import errors, records, schema
from twoway.emulators.salesforce.errors import SfError

if TYPE_CHECKING:
    from twoway.emulators.salesforce.api import Ctx

MAX_RECORDS = 200
_ROLLED_BACK = {"statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                "message": "Record rolled back because not all records were valid and the request was using "
                           "AllOrNone header", "fields": []}


def run(ctx: Ctx, op: str, ext_field: str | None, q: QueryParams) -> list[dict[str, Any]]:
    """op: POST (create), PATCH (update by id), UPSERT (by `ext_field`), DELETE (`?ids=`)."""
    store = ctx.store
    if op == "DELETE":
        items: list[Any] = [i for i in (q.get("ids") or "").split(",") if i]
        all_or_none = (q.get("allOrNone") or "false").lower() == "true"
    else:
        body = ctx.json()
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            raise SfError(400, "INVALID_FIELD", "records is required", ["records"])
        items, all_or_none = body["records"], bool(body.get("allOrNone", False))
    if not items:
        raise SfError(400, "INVALID_FIELD", "No records to process", ["records"])
    if len(items) > MAX_RECORDS:
        raise SfError(400, "EXCEEDED_ID_LIMIT", f"record limit reached. cannot submit more than {MAX_RECORDS} "
                      "records into this call")
    fdef = store.schema.field(ext_field) if ext_field else None
    if op == "UPSERT" and (fdef is None or not fdef.external_id):
        raise errors.not_found(f"Provided external ID field does not exist or is not accessible: {ext_field}")
    sizes = ctx.emu.stats.composite_sizes
    sizes.append(len(items))
    del sizes[:-1000]
    point = store.savepoint()
    results: list[dict[str, Any]] = []
    written = 0
    for item in items:
        try:
            results.append(_one(ctx, op, fdef.name if fdef else None, item))
            written += 1
        except SfError as exc:
            ident = item if isinstance(item, str) else (item.get("id") if isinstance(item, dict) else None)
            result: dict[str, Any] = {"id": ident if op in ("PATCH", "DELETE") else None, "success": False,
                                      "errors": [exc.record_error()]}
            if op == "UPSERT":
                result["created"] = False
            results.append(result)
    if all_or_none and written < len(items):
        store.rollback(point)
        results = [r if not r["success"] else {"id": None, "success": False, "errors": [dict(_ROLLED_BACK)]}
                   for r in results]
        written = 0
    ctx.writes += written
    return results


def _one(ctx: Ctx, op: str, ext_field: str | None, item: Any) -> dict[str, Any]:
    store, user = ctx.store, ctx.user_id
    if op == "DELETE":
        records.delete(store, str(item), user)
        return {"id": records.get_any(store, str(item))["Id"], "success": True, "errors": []}
    if not isinstance(item, dict):
        raise errors.bad_json("Each record must be a JSON object")
    attributes = item.get("attributes")
    if not isinstance(attributes, dict) or str(attributes.get("type", "")).lower() != schema.SOBJECT.lower():
        raise SfError(400, "INVALID_TYPE", "Each record needs attributes.type = Account")
    data = {k: v for k, v in item.items() if k != "attributes"}
    if op == "POST":
        if "id" in {k.lower() for k in data}:
            raise SfError(400, "INVALID_FIELD", "cannot specify Id in an insert call", ["Id"])
        record = records.create(store, data, user, ctx.emu.faults)
        return {"id": record["Id"], "success": True, "errors": []}
    if op == "PATCH":
        ident = next((v for k, v in data.items() if k.lower() == "id"), None)
        if not isinstance(ident, str):
            raise SfError(400, "MISSING_ARGUMENT", "Id not specified in an update call", ["Id"])
        record = records.update(store, ident, {k: v for k, v in data.items() if k.lower() != "id"}, user,
                                ctx.emu.faults)
        return {"id": record["Id"], "success": True, "errors": []}
    assert ext_field is not None
    value = next((v for k, v in data.items() if k.lower() == ext_field.lower()), None)
    if not isinstance(value, str) or not value:
        raise SfError(400, "MISSING_ARGUMENT", f"{ext_field} not specified", [ext_field])
    try:
        record, created = records.upsert(store, ext_field, value, data, user, ctx.emu.faults)
    except SfError as exc:
        if exc.status == 300:
            raise SfError(300, "DUPLICATE_EXTERNAL_ID", f"{ext_field}: more than one record found for external id "
                          f"field: {exc.message}", [ext_field])
        raise
    return {"id": record["Id"], "success": True, "errors": [], "created": created}


def retrieve(ctx: Ctx, q: QueryParams) -> list[dict[str, Any] | None]:
    ids = [i for i in (q.get("ids") or "").split(",") if i]
    if not ids:
        raise SfError(400, "MISSING_ARGUMENT", "ids is required", ["ids"])
    if len(ids) > 2000:
        raise SfError(400, "EXCEEDED_ID_LIMIT", "cannot retrieve more than 2000 records")
    fields = records.parse_fields(ctx.store.schema, q.get("fields"))
    if not fields:
        raise SfError(400, "MISSING_ARGUMENT", "fields is required", ["fields"])
    out: list[dict[str, Any] | None] = []
    for ident in ids:
        try:
            out.append(records.render(records.get(ctx.store, ident), ctx.store.schema, fields, ctx.base))
        except SfError:
            out.append(None)
    return out
