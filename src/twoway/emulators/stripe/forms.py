"""Stripe-style form decoding: `a[b][0]=x` bracket keys into nested dicts and lists."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

# Metadata keys are free-form strings, so `metadata[0]=x` must stay a dict.
_NO_LISTIFY = frozenset({"metadata"})


def parse_form(raw: str | bytes) -> dict[str, Any]:
    """Decode an urlencoded body or query string the way Stripe's API does."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    if not raw:
        return {}
    out: dict[str, Any] = {}
    for key, value in parse_qsl(raw, keep_blank_values=True):
        _assign(out, _split_key(key), value)
    return {k: (v if k in _NO_LISTIFY else _listify(v)) for k, v in out.items()}


def _split_key(key: str) -> list[str]:
    head, sep, rest = key.partition("[")
    if not sep:
        return [key]
    parts = [head]
    for chunk in rest.split("["):
        parts.append(chunk[:-1] if chunk.endswith("]") else chunk)
    return parts


def _assign(node: dict[str, Any], path: list[str], value: str) -> None:
    for i, part in enumerate(path):
        if part == "":
            # `x[]=a&x[]=b` appends: number the entries in arrival order.
            part = str(len(node))
        if i == len(path) - 1:
            node[part] = value
            return
        child = node.get(part)
        if not isinstance(child, dict):
            # A later bracketed key wins over an earlier scalar (`metadata=` then `metadata[a]=1`).
            child = {}
            node[part] = child
        node = child


def _listify(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    converted = {k: _listify(v) for k, v in value.items()}
    if converted and all(k.isdigit() for k in converted):
        return [converted[k] for k in sorted(converted, key=int)]
    return converted
