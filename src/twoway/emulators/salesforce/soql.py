"""The SOQL subset a sync needs: SELECT fields FROM Account [WHERE ...] [ORDER BY ...] [LIMIT n] [OFFSET n].

WHERE takes =, !=, <>, <, <=, >, >=, LIKE, IN (...), NOT IN (...), AND, OR, NOT and parentheses over
string, number, boolean, null and unquoted datetime literals (`2024-01-01T00:00:00Z`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twoway.emulators.salesforce import errors, ids, schema
from twoway.emulators.salesforce.store import Obj

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<str>'(?:[^'\\]|\\.)*')
  | (?P<dt>\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2}))?(?![\w-]))
  | (?P<num>-?\d+(?:\.\d+)?(?![\w]))
  | (?P<op>!=|<>|<=|>=|=|<|>)
  | (?P<punct>[(),])
  | (?P<word>[A-Za-z_][A-Za-z0-9_.]*)
""", re.VERBOSE)
_KEYWORDS = {"select", "from", "where", "and", "or", "not", "in", "like", "order", "by", "asc", "desc", "limit",
             "offset", "nulls", "first", "last", "true", "false", "null"}

Predicate = Callable[[Obj], bool]


@dataclass
class Query:
    fields: list[str]
    where: Predicate | None = None
    order: list[tuple[str, bool, bool]] = field(default_factory=list)  # (field, descending, nulls last)
    limit: int | None = None
    offset: int = 0

    def run(self, records: list[Obj]) -> list[Obj]:
        rows = [r for r in records if self.where is None or self.where(r)]
        # Stable sorts, last key first; without ORDER BY, Id order (creation order).
        rows.sort(key=lambda r: r["Id"])
        for name, desc, nulls_last in reversed(self.order):
            present = [r for r in rows if r.get(name) is not None]
            missing = [r for r in rows if r.get(name) is None]
            present.sort(key=lambda r, n=name: r[n], reverse=desc)  # type: ignore[misc]
            rows = present + missing if nulls_last else missing + present
        rows = rows[self.offset:]
        return rows if self.limit is None else rows[: self.limit]


def parse(text: str, shape: schema.Schema) -> Query:
    """Field names are checked against `shape`, the asking org's schema."""
    return _Parser(_tokens(text), shape).query()


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise errors.malformed(f"unexpected token: '{text[pos:pos + 20]}'")
        pos = m.end()
        kind = m.lastgroup or ""
        if kind == "ws":
            continue
        value = m.group()
        if kind == "word" and value.lower() in _KEYWORDS:
            kind, value = "kw", value.lower()
        out.append((kind, value))
    return out


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]], shape: schema.Schema) -> None:
        self.tokens = tokens
        self.shape = shape
        self.i = 0

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.i] if self.i < len(self.tokens) else ("end", "")

    def take(self, kind: str, value: str | None = None) -> str:
        k, v = self.peek()
        if k != kind or (value is not None and v != value):
            shown = v or "end of query"
            raise errors.malformed(f"unexpected token: '{shown}'" + (f", expected {value or kind}"))
        self.i += 1
        return v

    def accept(self, kind: str, value: str | None = None) -> bool:
        k, v = self.peek()
        if k == kind and (value is None or v == value):
            self.i += 1
            return True
        return False

    def query(self) -> Query:
        self.take("kw", "select")
        fields = [self.field_name()]
        while self.accept("punct", ","):
            fields.append(self.field_name())
        self.take("kw", "from")
        sobject = self.take("word")
        if sobject.lower() != schema.SOBJECT.lower():
            raise SfErrorType(sobject)
        q = Query(fields)
        if self.accept("kw", "where"):
            q.where = self.disjunction()
        if self.accept("kw", "order"):
            self.take("kw", "by")
            q.order.append(self.order_item())
            while self.accept("punct", ","):
                q.order.append(self.order_item())
        if self.accept("kw", "limit"):
            q.limit = self.integer()
        if self.accept("kw", "offset"):
            q.offset = self.integer()
        if self.peek()[0] != "end":
            raise errors.malformed(f"unexpected token: '{self.peek()[1]}'")
        return q

    def integer(self) -> int:
        raw = self.take("num")
        if not raw.isdigit():
            raise errors.malformed(f"expected a non-negative integer, not {raw}")
        return int(raw)

    def field_name(self) -> str:
        k, v = self.peek()
        if k != "word":
            raise errors.malformed(f"unexpected token: '{v or 'end of query'}', expected a field")
        self.i += 1
        fdef = self.shape.field(v)
        if fdef is None:
            raise errors.invalid_field(v)
        return fdef.name

    def order_item(self) -> tuple[str, bool, bool]:
        name = self.field_name()
        desc = False
        if self.accept("kw", "desc"):
            desc = True
        else:
            self.accept("kw", "asc")
        nulls_last = desc  # Salesforce: nulls first ascending, last descending
        if self.accept("kw", "nulls"):
            nulls_last = self.accept("kw", "last") or (self.take("kw", "first") == "")
        return name, desc, nulls_last

    def disjunction(self) -> Predicate:
        parts = [self.conjunction()]
        while self.accept("kw", "or"):
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else (lambda r: any(p(r) for p in parts))

    def conjunction(self) -> Predicate:
        parts = [self.negation()]
        while self.accept("kw", "and"):
            parts.append(self.negation())
        return parts[0] if len(parts) == 1 else (lambda r: all(p(r) for p in parts))

    def negation(self) -> Predicate:
        if self.accept("kw", "not"):
            inner = self.negation()
            return lambda r: not inner(r)
        if self.accept("punct", "("):
            inner = self.disjunction()
            self.take("punct", ")")
            return inner
        return self.comparison()

    def comparison(self) -> Predicate:
        name = self.field_name()
        ftype = self.shape.by_lower[name.lower()].type
        if self.accept("kw", "not"):
            self.take("kw", "in")
            values = self.value_list(name, ftype)
            return lambda r: r.get(name) not in values
        if self.accept("kw", "in"):
            values = self.value_list(name, ftype)
            return lambda r: r.get(name) in values
        if self.accept("kw", "like"):
            pattern = self.value(name, ftype)
            if not isinstance(pattern, str):
                raise errors.malformed("LIKE needs a string")
            regex = re.compile("^" + re.escape(pattern).replace("%", ".*").replace("_", ".") + "$", re.I | re.S)
            return lambda r: isinstance(r.get(name), str) and bool(regex.match(r[name]))
        op = self.take("op")
        value = self.value(name, ftype)
        return _compare(name, op, value)

    def value_list(self, name: str, ftype: str) -> set[Any]:
        self.take("punct", "(")
        values = {self.value(name, ftype)}
        while self.accept("punct", ","):
            values.add(self.value(name, ftype))
        self.take("punct", ")")
        return values

    def value(self, name: str, ftype: str) -> Any:
        kind, raw = self.peek()
        self.i += 1
        if kind == "kw" and raw in ("true", "false", "null"):
            return None if raw == "null" else raw == "true"
        if ftype == "datetime":
            if kind != "dt":
                raise errors.malformed(f"value of filter criterion for field '{name}' must be of type dateTime "
                                       "and should not be enclosed in quotes")
            ms = schema.parse_ms(raw)
            if ms is None:
                raise errors.malformed(f"invalid dateTime: {raw}")
            return ms
        if kind == "str":
            text = re.sub(r"\\(.)", r"\1", raw[1:-1])
            if ftype in ("id", "reference"):
                return ids.to18(text) or text
            return text
        if kind in ("num", "dt"):
            return raw
        raise errors.malformed(f"unexpected token: '{raw or 'end of query'}', expected a value")


class SfErrorType(errors.SfError):
    def __init__(self, sobject: str) -> None:
        super().__init__(400, "INVALID_TYPE", f"sObject type '{sobject}' is not supported.")


def _compare(name: str, op: str, value: Any) -> Predicate:
    if op == "=":
        return lambda r: r.get(name) == value
    if op in ("!=", "<>"):
        return lambda r: r.get(name) != value
    if value is None:
        return lambda r: False

    def ordered(r: Obj) -> bool:
        have = r.get(name)
        if have is None:
            return False
        if op == "<":
            return bool(have < value)
        if op == "<=":
            return bool(have <= value)
        if op == ">":
            return bool(have > value)
        return bool(have >= value)
    return ordered
