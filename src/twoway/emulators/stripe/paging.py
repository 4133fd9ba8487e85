"""Cursor pagination and list parameters shared by every list endpoint."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twoway.emulators.stripe.errors import invalid

Obj = dict[str, Any]

_RANGE_OPS = ("gt", "gte", "lt", "lte")


def parse_limit(params: Obj, default: int = 10) -> int:
    raw = params.get("limit")
    if raw is None:
        return default
    if not isinstance(raw, str) or not raw.lstrip("-").isdigit():
        raise invalid(f"Invalid integer: {raw}", param="limit")
    limit = int(raw)
    if limit < 1:
        raise invalid("This value must be greater than or equal to 1.", param="limit")
    if limit > 100:
        raise invalid("This value must be less than or equal to 100.", param="limit")
    return limit


def range_filter(params: Obj, name: str) -> Callable[[int], bool] | None:
    """`created=<int>` or `created[gt|gte|lt|lte]=<int>` as a predicate, or None."""
    raw = params.get(name)
    if raw is None:
        return None
    if isinstance(raw, str):
        exact = _as_int(raw, name)
        return lambda v: v == exact
    if not isinstance(raw, dict):
        raise invalid(f"Invalid {name}: must be an integer or a hash", param=name)
    bounds: list[tuple[str, int]] = []
    for op, value in raw.items():
        if op not in _RANGE_OPS:
            raise invalid(f"Received unknown parameter: {name}[{op}]", param=f"{name}[{op}]")
        bounds.append((op, _as_int(value, f"{name}[{op}]")))
    return lambda v: all(_compare(v, op, bound) for op, bound in bounds)


def _compare(value: int, op: str, bound: int) -> bool:
    if op == "gt":
        return value > bound
    if op == "gte":
        return value >= bound
    if op == "lt":
        return value < bound
    return value <= bound


def _as_int(raw: Any, param: str) -> int:
    if not isinstance(raw, str) or not raw.lstrip("-").isdigit():
        raise invalid(f"Invalid integer: {raw}", param=param)
    return int(raw)


def paginate(
    ids: Sequence[str],
    index_of: Callable[[str], int | None],
    get: Callable[[str], Obj | None],
    keep: Callable[[Obj], bool] | None,
    params: Obj,
    kind: str,
) -> tuple[list[Obj], bool]:
    """Newest-first page over `ids` (oldest first), honouring Stripe's cursors.

    `get` returns None for ids that no longer count (deleted customers), which are
    skipped but still usable as cursors so paging survives concurrent deletes.
    """
    limit = parse_limit(params)
    after, before = params.get("starting_after"), params.get("ending_before")
    if after and before:
        raise invalid("You may only specify one of these parameters: ending_before, starting_after.")
    if before:
        start = _cursor(index_of, before, "ending_before", kind)
        found = _scan(ids, range(start + 1, len(ids)), get, keep, limit + 1)
        page = found[:limit]
        page.reverse()
        return page, len(found) > limit
    start = len(ids) if not after else _cursor(index_of, after, "starting_after", kind)
    found = _scan(ids, range(start - 1, -1, -1), get, keep, limit + 1)
    return found[:limit], len(found) > limit


def _cursor(index_of: Callable[[str], int | None], ident: Any, param: str, kind: str) -> int:
    pos = index_of(ident) if isinstance(ident, str) else None
    if pos is None:
        raise invalid(f"No such {kind}: '{ident}'", param=param, code="resource_missing")
    return pos


def _scan(
    ids: Sequence[str],
    positions: range,
    get: Callable[[str], Obj | None],
    keep: Callable[[Obj], bool] | None,
    want: int,
) -> list[Obj]:
    found: list[Obj] = []
    for pos in positions:
        obj = get(ids[pos])
        if obj is not None and (keep is None or keep(obj)):
            found.append(obj)
            if len(found) >= want:
                break
    return found


def list_body(data: list[Obj], has_more: bool, url: str) -> Obj:
    return {"object": "list", "data": data, "has_more": has_more, "url": url}
