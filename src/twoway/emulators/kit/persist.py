"""Optional state file: load at start, save every few seconds when dirty and at exit."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)


class Persistent(Protocol):
    dirty: bool

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready copy, taken on the event loop (so consistent)."""
        ...

    def restore(self, data: dict[str, Any]) -> None: ...


class Persister:
    def __init__(self, store: Persistent, path: str, interval: float = 2.0) -> None:
        self.store = store
        self.path = Path(path)
        self.interval = interval

    def load(self) -> bool:
        if not self.path.exists():
            return False
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable state file %s: %s", self.path, exc)
            return False
        self.store.restore(data)
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if self.store.dirty:
                await self.save()

    async def save(self) -> None:
        # Snapshot on the loop (consistent), encode and write off it (slow for big states).
        self.store.dirty = False
        snapshot = self.store.snapshot()
        try:
            await asyncio.to_thread(self._write, snapshot)
        except Exception as exc:
            self.store.dirty = True
            log.warning("could not save state to %s: %s", self.path, exc)

    def save_now(self) -> None:
        self.store.dirty = False
        self._write(self.store.snapshot())

    def _write(self, snapshot: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(snapshot))
        # Replace atomically so a crash mid-write never leaves a torn file.
        os.replace(tmp, self.path)
