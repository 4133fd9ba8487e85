"""Ids in creation order, for cursor paging."""

from __future__ import annotations


class Log:
    """Ids in creation order with O(1) position lookups, so cursors page cheaply."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self._seq: dict[str, int] = {}
        self._base = 0  # sequence number of ids[0]; grows as old entries are trimmed

    def append(self, ident: str) -> None:
        self._seq[ident] = self._base + len(self.ids)
        self.ids.append(ident)

    def index(self, ident: str) -> int | None:
        seq = self._seq.get(ident)
        return None if seq is None else seq - self._base

    def trim(self, keep: int) -> list[str]:
        """Drop the oldest ids beyond `keep`; returns what was dropped."""
        extra = len(self.ids) - keep
        if extra <= 0:
            return []
        dropped = self.ids[:extra]
        self.ids = self.ids[extra:]
        self._base += extra
        for ident in dropped:
            del self._seq[ident]
        return dropped

    def clear(self) -> None:
        self.ids, self._seq, self._base = [], {}, 0
