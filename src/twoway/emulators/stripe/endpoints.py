"""Webhook endpoint resource (`/v1/webhook_endpoints`)."""

from __future__ import annotations

import time
from typing import Any

from twoway.emulators.stripe.errors import invalid, missing, unknown_param
from twoway.emulators.stripe.ids import rand_id, webhook_secret
from twoway.emulators.stripe.paging import list_body, paginate
from twoway.emulators.stripe.state import Obj, Origin, Store

_CREATE = frozenset({"url", "enabled_events", "description", "metadata", "api_version", "connect", "expand"})
_UPDATE = frozenset({"url", "enabled_events", "description", "metadata", "disabled", "expand"})


def create(store: Store, params: Obj, origin: Origin, secret: str | None = None) -> Obj:
    for name in params:
        if name not in _CREATE:
            raise unknown_param(name)
    url = _url(params.get("url"), required=True)
    events = _enabled_events(params.get("enabled_events"), required=True)
    endpoint: Obj = {
        "id": rand_id("we_", 24),
        "object": "webhook_endpoint",
        "api_version": params.get("api_version") or None,
        "application": None,
        "created": int(time.time()),
        "description": params.get("description") or None,
        "enabled_events": events,
        "livemode": origin.livemode,
        "metadata": _metadata(params.get("metadata")),
        "secret": secret or webhook_secret(),
        # A Connect endpoint (on the platform) gets every connected account's events instead of its own.
        "connect": params.get("connect") == "true",
        "status": "enabled",
        "url": url,
    }
    store.endpoints[endpoint["id"]] = endpoint
    store.dirty = True
    # Stripe reveals the signing secret only in the create response.
    return endpoint


def public(endpoint: Obj) -> Obj:
    return {k: v for k, v in endpoint.items() if k != "secret"}


def retrieve(store: Store, ident: str) -> Obj:
    endpoint = store.endpoints.get(ident)
    if endpoint is None:
        raise missing("webhook_endpoint", ident)
    return public(endpoint)


def update(store: Store, ident: str, params: Obj) -> Obj:
    endpoint = store.endpoints.get(ident)
    if endpoint is None:
        raise missing("webhook_endpoint", ident)
    for name in params:
        if name not in _UPDATE:
            raise unknown_param(name)
    changed = dict(endpoint)
    if "url" in params:
        changed["url"] = _url(params["url"], required=True)
    if "enabled_events" in params:
        changed["enabled_events"] = _enabled_events(params["enabled_events"], required=True)
    if "description" in params:
        changed["description"] = params["description"] or None
    if "metadata" in params:
        merged = {**endpoint["metadata"], **_metadata(params["metadata"])}
        changed["metadata"] = {k: v for k, v in merged.items() if v != ""}
    if "disabled" in params:
        changed["status"] = "disabled" if params["disabled"] == "true" else "enabled"
    store.endpoints[ident] = changed
    store.dirty = True
    return public(changed)


def delete(store: Store, ident: str) -> Obj:
    if store.endpoints.pop(ident, None) is None:
        raise missing("webhook_endpoint", ident)
    store.dirty = True
    return {"id": ident, "object": "webhook_endpoint", "deleted": True}


def list_endpoints(store: Store, params: Obj) -> Obj:
    for name in params:
        if name not in {"limit", "starting_after", "ending_before", "expand"}:
            raise unknown_param(name)
    ids = list(store.endpoints)

    def index_of(ident: str) -> int | None:
        return ids.index(ident) if ident in ids else None

    def get(ident: str) -> Obj | None:
        ep = store.endpoints.get(ident)
        return None if ep is None else public(ep)

    page, more = paginate(ids, index_of, get, None, params, "webhook_endpoint")
    return list_body(page, more, "/v1/webhook_endpoints")


def _url(raw: Any, required: bool) -> str:
    if raw is None and required:
        raise invalid("Missing required param: url.", param="url", code="parameter_missing")
    if not isinstance(raw, str) or not raw.startswith(("http://", "https://")):
        raise invalid(f"Invalid URL: {raw}", param="url", code="url_invalid")
    return raw


def _enabled_events(raw: Any, required: bool) -> list[str]:
    if raw is None and required:
        raise invalid("Missing required param: enabled_events.", param="enabled_events", code="parameter_missing")
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw or not all(isinstance(x, str) and x for x in raw):
        raise invalid("Invalid array", param="enabled_events")
    return list(raw)


def _metadata(raw: Any) -> dict[str, str]:
    if raw is None or raw == "":
        return {}
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise invalid("Invalid hash", param="metadata")
    return {k: v for k, v in raw.items() if v != ""}
