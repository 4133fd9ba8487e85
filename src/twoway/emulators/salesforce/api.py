"""The `/services/data/vXX.X` pipeline: version, session (which names the org), faults, the org's daily
allowance, routing, counters."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from twoway.emulators.salesforce import composite, errors, records, schema, soql
from twoway.emulators.salesforce.core import Cursor, Emulator
from twoway.emulators.salesforce.errors import SfError
from twoway.emulators.salesforce.orgs import Org
from twoway.emulators.salesforce.store import DAY_MS, Store

_VERSION = re.compile(r"^v(\d{2})\.(\d)$")
_BATCH = re.compile(r"batchSize=(\d+)", re.I)
_CLIENT = re.compile(r"client=([^,;\s]+)", re.I)


class Ctx:
    def __init__(self, emu: Emulator, org: Org, request: Request, version: str, user_id: str, body: bytes) -> None:
        self.emu, self.request, self.version, self.user_id, self.body = emu, request, version, user_id, body
        self.org, self.store = org, org.store
        self.base = f"/services/data/{version}"
        self.writes = 0

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            raise errors.bad_json()


def versions(base_url: str) -> list[dict[str, str]]:
    return [{"label": f"Release {v}", "url": f"/services/data/v{v}.0", "version": f"{v}.0"} for v in range(55, 67)]


async def handle(emu: Emulator, request: Request) -> Response:
    version, rest = request.path_params["version"], request.path_params.get("rest", "")
    segments = [s for s in rest.split("/") if s]
    label = f"{request.method} {_label(segments)}"
    response = await _run(emu, request, version, segments)
    emu.stats.count(label, response.status_code)
    return response


async def _run(emu: Emulator, request: Request, version: str, segments: list[str]) -> Response:
    # Until the session names an org, answers carry the first org's usage (as they always have).
    store = emu.orgs.default.store
    m = _VERSION.match(version)
    if not m or not 20 <= int(m.group(1)) <= 70:
        return _error(store, errors.not_found())
    session = _session(emu, request.headers.get("authorization"))
    if session is None:
        return _error(store, errors.session_invalid())
    org, user_id = session
    store = org.store
    options = request.headers.get("sforce-call-options") or ""
    client = _CLIENT.search(options)
    key = client.group(1) if client else "(none)"
    emu.stats.clients[key] = emu.stats.clients.get(key, 0) + 1
    faults = emu.faults
    if faults.rate_limited():
        return _error(store, SfError(403, "REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn Limit exceeded."))
    injected = faults.injected_status()
    if injected is not None:
        return _error(store, errors.unavailable(injected))
    delay = faults.latency_seconds()
    if delay:
        await asyncio.sleep(delay)
    if not store.take_call():
        return _error(store, errors.limit_exceeded())
    ctx = Ctx(emu, org, request, version, user_id, await request.body())
    try:
        status, body = _route(ctx, request.method, segments)
    except SfError as exc:
        return _error(store, exc)
    emu.stats.writes += ctx.writes
    if ctx.writes and faults.response_delay_ms > 0:
        await asyncio.sleep(faults.response_delay_ms / 1000)
    return _response(store, status, body)


def _session(emu: Emulator, header: str | None) -> tuple[Org, str] | None:
    """(org, user id): the token's prefix names the org, and only that org's token table can admit it."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() not in ("bearer", "oauth"):
        return None
    org = emu.orgs.for_token(token.strip())
    user_id = org.store.user_of(token.strip()) if org is not None else None
    return (org, user_id) if org is not None and user_id is not None else None


def _label(segments: list[str]) -> str:
    """The stats key: ids and values replaced by placeholders."""
    if len(segments) >= 3 and segments[0] == "sobjects" and segments[2] not in ("describe", "updated", "deleted"):
        return "/".join(segments[:2] + (["{id}"] if len(segments) == 3 else ["{field}", "{value}"]))
    if len(segments) == 2 and segments[0] in ("query", "queryAll"):
        return segments[0] + "/{cursor}"
    return "/".join(segments)


def _route(ctx: Ctx, method: str, seg: list[str]) -> tuple[int, Any]:
    q = ctx.request.query_params
    if not seg and method == "GET":
        return 200, {"sobjects": f"{ctx.base}/sobjects", "query": f"{ctx.base}/query",
                     "queryAll": f"{ctx.base}/queryAll", "limits": f"{ctx.base}/limits",
                     "composite": f"{ctx.base}/composite"}
    head = seg[0] if seg else ""
    if head == "limits" and len(seg) == 1 and method == "GET":
        used, limit = ctx.store.usage_now()
        return 200, {"DailyApiRequests": {"Max": limit, "Remaining": max(0, limit - used)}}
    if head in ("query", "queryAll") and method == "GET":
        return 200, _query(ctx, seg, include_deleted=head == "queryAll")
    if head == "sobjects":
        return _sobjects(ctx, method, seg[1:])
    if head == "composite" and len(seg) >= 2 and seg[1] == "sobjects":
        ctx_obj = _sobject(seg[2]) if len(seg) >= 3 else None
        if len(seg) == 2 and method in ("POST", "PATCH", "DELETE"):
            return 200, composite.run(ctx, method, None, q)
        if len(seg) == 3 and method == "GET" and ctx_obj:
            return 200, composite.retrieve(ctx, q)
        if len(seg) == 4 and method == "PATCH" and ctx_obj:
            return 200, composite.run(ctx, "UPSERT", seg[3], q)
    raise errors.not_found()


def _sobject(name: str) -> str:
    if name.lower() != schema.SOBJECT.lower():
        raise errors.not_found(f"The requested resource does not exist: sObject type '{name}' is not supported")
    return schema.SOBJECT


def _sobjects(ctx: Ctx, method: str, seg: list[str]) -> tuple[int, Any]:
    store, q = ctx.store, ctx.request.query_params
    if not seg and method == "GET":
        return 200, {"encoding": "UTF-8", "maxBatchSize": 200, "sobjects": [
            {"name": schema.SOBJECT, "label": "Account", "keyPrefix": schema.KEY_PREFIX, "custom": False,
             "queryable": True, "urls": {"sobject": f"{ctx.base}/sobjects/{schema.SOBJECT}"}}]}
    if not seg:
        raise errors.not_found()
    _sobject(seg[0])
    rest = seg[1:]
    if not rest:
        if method == "POST":
            record = records.create(store, ctx.json(), ctx.user_id, ctx.emu.faults)
            ctx.writes += 1
            return 201, {"id": record["Id"], "success": True, "errors": []}
        if method == "GET":
            return 200, {"objectDescribe": {"name": schema.SOBJECT, "keyPrefix": schema.KEY_PREFIX}, "recentItems": []}
    elif rest == ["describe"] and method == "GET":
        return 200, store.schema.describe(ctx.base)
    elif rest in (["updated"], ["deleted"]) and method == "GET":
        return 200, _changes(ctx, rest[0])
    elif len(rest) == 1:
        return _one(ctx, method, rest[0])
    elif len(rest) == 2:
        return _by_external_id(ctx, method, rest[0], rest[1])
    del q
    raise errors.not_found()


def _one(ctx: Ctx, method: str, ident: str) -> tuple[int, Any]:
    store = ctx.store
    if method == "GET":
        fields = records.parse_fields(store.schema, ctx.request.query_params.get("fields"))
        return 200, records.render(records.get(store, ident), store.schema, fields, ctx.base)
    if method == "PATCH":
        since = _unmodified_since(ctx.request.headers.get("if-unmodified-since"))
        records.update(store, ident, ctx.json(), ctx.user_id, ctx.emu.faults, since)
        ctx.writes += 1
        return 204, None
    if method == "DELETE":
        records.delete(store, ident, ctx.user_id)
        ctx.writes += 1
        return 204, None
    raise SfError(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed. Allowed are GET,PATCH,DELETE")


def _by_external_id(ctx: Ctx, method: str, field_name: str, value: str) -> tuple[int, Any]:
    store = ctx.store
    fdef = store.schema.field(field_name)
    if fdef is None or not (fdef.external_id or fdef.name == "Id"):
        raise errors.not_found(f"Provided external ID field does not exist or is not accessible: {field_name}")
    if method == "PATCH":
        try:
            record, created = records.upsert(store, fdef.name, value, ctx.json(), ctx.user_id, ctx.emu.faults)
        except SfError as exc:
            if exc.status == 300:
                return 300, [f"{ctx.base}/sobjects/Account/{i}" for i in store.holders(fdef.name, value)]
            raise
        ctx.writes += 1
        return (201 if created else 200), {"id": record["Id"], "success": True, "errors": [], "created": created}
    matches = [record_id for record_id in store.holders(fdef.name, value)] if fdef.name != "Id" else [value]
    if method == "GET":
        if len(matches) > 1:
            return 300, [f"{ctx.base}/sobjects/Account/{i}" for i in matches]
        if not matches:
            raise errors.not_found()
        fields = records.parse_fields(store.schema, ctx.request.query_params.get("fields"))
        return 200, records.render(records.get(store, matches[0]), store.schema, fields, ctx.base)
    if method == "DELETE":
        if len(matches) > 1:
            return 300, [f"{ctx.base}/sobjects/Account/{i}" for i in matches]
        if not matches:
            raise errors.not_found()
        records.delete(store, matches[0], ctx.user_id)
        ctx.writes += 1
        return 204, None
    raise errors.not_found()


def _query(ctx: Ctx, seg: list[str], include_deleted: bool) -> dict[str, Any]:
    emu, store = ctx.emu, ctx.store
    if len(seg) == 2:
        cursor = emu.cursors.get(seg[1].split("-")[0])
        if cursor is None or cursor.org_id != ctx.org.org_id:
            raise SfError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return _page(ctx, seg[0], seg[1].split("-")[0], cursor, len(cursor.rows))
    text = ctx.request.query_params.get("q")
    if not text:
        raise errors.malformed("A query string has to be specified")
    query = soql.parse(text, store.schema)
    pool = [r for r in store.records.values() if include_deleted or not r["IsDeleted"]]
    rows = query.run(pool)
    page = min(emu.config.query_page_size, _batch_size(ctx.request.headers.get("sforce-query-options")))
    cursor = Cursor(rows, query.fields, page, ctx.org.org_id)
    total = len(rows)
    ident = emu.add_cursor(cursor) if total > page else ""
    return _page(ctx, seg[0], ident, cursor, total)


def _page(ctx: Ctx, endpoint: str, ident: str, cursor: Cursor, total: int) -> dict[str, Any]:
    rows, rest = cursor.rows[: cursor.page], cursor.rows[cursor.page:]
    body: dict[str, Any] = {"totalSize": total, "done": not rest,
                            "records": [records.render(r, ctx.store.schema, cursor.fields, ctx.base) for r in rows]}
    if rest:
        cursor.rows = rest
        served = total - len(rest)
        body["nextRecordsUrl"] = f"{ctx.base}/{endpoint}/{ident}-{served}"
    elif ident:
        ctx.emu.cursors.pop(ident, None)
    return body


def _batch_size(header: str | None) -> int:
    m = _BATCH.search(header or "")
    return max(200, min(2000, int(m.group(1)))) if m else 2000


def _changes(ctx: Ctx, which: str) -> dict[str, Any]:
    store, q = ctx.store, ctx.request.query_params
    start, end = schema.parse_ms(q.get("start") or ""), schema.parse_ms(q.get("end") or "")
    now = store.now_ms()
    if start is None or end is None:
        raise SfError(400, "MALFORMED_QUERY", "start and end are required ISO 8601 datetimes")
    if start >= end:
        raise SfError(400, "INVALID_REPLICATION_DATE", "startDate must chronologically precede endDate")
    days = 30 if which == "updated" else 15
    if start < now - days * DAY_MS:
        raise SfError(400, "INVALID_REPLICATION_DATE", f"startDate cannot be more than {days} days ago")
    end = min(end, now)
    if which == "updated":
        hits = sorted((r["SystemModstamp"], r["Id"]) for r in store.records.values()
                      if not r["IsDeleted"] and start <= r["SystemModstamp"] < end)
        return {"ids": [i for _, i in hits], "latestDateCovered": schema.render_ms(end)}
    gone = [{"id": i, "deletedDate": schema.render_ms(t)} for i, t in store.delete_log if start <= t < end]
    earliest = store.delete_log[0][1] if store.delete_log else now - days * DAY_MS
    return {"deletedRecords": gone, "earliestDateAvailable": schema.render_ms(earliest),
            "latestDateCovered": schema.render_ms(end)}


def _unmodified_since(header: str | None) -> int | None:
    if not header:
        return None
    try:
        return int(parsedate_to_datetime(header).timestamp() * 1000)
    except (TypeError, ValueError):
        raise SfError(400, "INVALID_HEADER_TYPE", "If-Unmodified-Since is not an HTTP date")


def _limit_header(store: Store) -> dict[str, str]:
    used, limit = store.usage_now()
    # Date from the emulator's (movable) clock: clients learn the server's time from it, as from Salesforce.
    now = datetime.fromtimestamp(store.now_ms() / 1000, UTC)
    return {"Sforce-Limit-Info": f"api-usage={used}/{limit}", "Date": format_datetime(now, usegmt=True)}


def _error(store: Store, exc: SfError) -> Response:
    headers = _limit_header(store)
    return Response(json.dumps(exc.body()), exc.status, headers, media_type="application/json")


def _response(store: Store, status: int, body: Any) -> Response:
    headers = _limit_header(store)
    if status == 204:
        return Response(None, 204, headers)
    return Response(json.dumps(body), status, headers, media_type="application/json")
