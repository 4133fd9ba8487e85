"""A subset of Stripe's search query language, for customers.

Supported: `field:'v'` (exact, case-insensitive), `field~'v'` (substring, >= 3 chars),
`metadata['k']:'v'`, `-` negation, `field:null`, numeric `created>n` style comparisons,
and clauses joined by all-`AND` or all-`OR` (Stripe rejects mixing the two).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from twoway.emulators.stripe.errors import invalid, unknown_param
from twoway.emulators.stripe.paging import parse_limit
from twoway.emulators.stripe.state import Obj, Store

Predicate = Callable[[Obj], bool]

_STRING_FIELDS = frozenset({"email", "name", "phone"})
_CLAUSE = re.compile(
    r"""\s*(?P<neg>-)?
    (?P<field>[a-z_]+)(?:\[(?P<q1>['"])(?P<key>.*?)(?P=q1)\])?
    \s*(?P<op>:|~|>=|<=|>|<)\s*
    (?:(?P<q2>['"])(?P<str>.*?)(?P=q2)|(?P<bare>[^\s'"]+))\s*""",
    re.VERBOSE,
)
_JOINER = re.compile(r"\s+(AND|OR)\s+")


def parse_query(
    query: str,
    string_fields: frozenset[str] = _STRING_FIELDS,
    numeric_fields: frozenset[str] = frozenset({"created"}),
    kind: str = "customers",
) -> Predicate:
    parts = _JOINER.split(query.strip())
    clauses = [_clause(p, string_fields, numeric_fields, kind) for p in parts[0::2]]
    joiners = set(parts[1::2])
    if len(joiners) > 1:
        raise invalid("Cannot combine AND and OR in the same query.", param="query")
    if joiners == {"OR"}:
        return lambda c: any(p(c) for p in clauses)
    return lambda c: all(p(c) for p in clauses)


def _clause(text: str, string_fields: frozenset[str], numeric_fields: frozenset[str], kind: str) -> Predicate:
    m = _CLAUSE.fullmatch(text)
    if m is None:
        raise invalid(f"Invalid query: could not parse '{text}'", param="query")
    field, op = m["field"], m["op"]
    value = m["str"] if m["q2"] else m["bare"]
    if field == "metadata":
        pred = _metadata(m["key"], op, value, quoted=bool(m["q2"]))
    elif field in string_fields:
        pred = _string(field, op, value, quoted=bool(m["q2"]))
    elif field in numeric_fields:
        pred = _numeric(field, op, value)
    else:
        raise invalid(f"Field '{field}' is an unsupported search field for {kind}.", param="query")
    return (lambda c: not pred(c)) if m["neg"] else pred


def _matcher(op: str, value: str, quoted: bool, param: str) -> Callable[[Any], bool]:
    if not quoted and value == "null" and op == ":":
        return lambda v: v is None
    wanted = value.lower()
    if op == ":":
        return lambda v: isinstance(v, str) and v.lower() == wanted
    if op == "~":
        if len(value) < 3:
            raise invalid("Substring queries need at least 3 characters.", param="query")
        return lambda v: isinstance(v, str) and wanted in v.lower()
    raise invalid(f"Operator '{op}' is not supported for field {param}.", param="query")


def _string(field: str, op: str, value: str, quoted: bool) -> Predicate:
    match = _matcher(op, value, quoted, field)
    return lambda c: match(c.get(field))


def _metadata(key: str | None, op: str, value: str, quoted: bool) -> Predicate:
    if key is None:
        raise invalid("Metadata queries need a key: metadata['key']:'value'.", param="query")
    match = _matcher(op, value, quoted, "metadata")
    return lambda c: match(c["metadata"].get(key))


def _numeric(field: str, op: str, value: str) -> Predicate:
    if not value.lstrip("-").isdigit():
        raise invalid(f"Invalid integer in query: {value}", param="query")
    n = int(value)
    ops: dict[str, Predicate] = {
        ":": lambda c: c[field] == n,
        ">": lambda c: c[field] > n,
        ">=": lambda c: c[field] >= n,
        "<": lambda c: c[field] < n,
        "<=": lambda c: c[field] <= n,
    }
    if op not in ops:
        raise invalid(f"Operator '{op}' is not supported for field {field}.", param="query")
    return ops[op]


def search_customers(store: Store, params: Obj) -> Obj:
    return search(params, list(store.customers.values()), parse_query, "/v1/customers/search")


def search(
    params: Obj,
    objects: list[Obj],
    parse: Callable[[str], Predicate],
    url: str,
    render: Callable[[Obj], Obj] | None = None,
) -> Obj:
    """A search_result page over `objects` (oldest first), newest match first."""
    for name in params:
        if name not in {"query", "limit", "page", "expand"}:
            raise unknown_param(name)
    query = params.get("query")
    if not isinstance(query, str) or not query.strip():
        raise invalid("Missing required param: query.", param="query", code="parameter_missing")
    pred = parse(query)
    limit = parse_limit(params)
    offset = _page_offset(params.get("page"))
    matches = [c for c in reversed(objects) if pred(c)]
    page = matches[offset : offset + limit]
    more = len(matches) > offset + limit
    return {
        "object": "search_result",
        "data": [render(c) for c in page] if render else page,
        "has_more": more,
        "next_page": f"page_{offset + limit}" if more else None,
        "url": url,
    }


def _page_offset(raw: Any) -> int:
    if raw is None or raw == "":
        return 0
    if isinstance(raw, str) and raw.startswith("page_") and raw[5:].isdigit():
        return int(raw[5:])
    raise invalid("Invalid page token.", param="page")
