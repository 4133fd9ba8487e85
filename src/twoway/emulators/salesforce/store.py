"""One org's data, in memory: Accounts (live and in the recycle bin), the delete log, users, tokens,
the daily API counter, and its schema; plus the instance's clock, which every org on it shares.

Record dicts are never mutated after they are stored (updates store a new dict), so a snapshot or an
all-or-none rollback is a shallow copy.
"""

from __future__ import annotations

import time
from typing import Any

from twoway.emulators.salesforce import ids
from twoway.emulators.salesforce.schema import DEFAULT, KEY_PREFIX, Schema

Obj = dict[str, Any]
DAY_MS = 24 * 3600 * 1000
ORG_ID = ids.make("00D", "5g", 1)


class Clock:
    """The instance's clock, which a control endpoint moves forward: one per instance, shared by its orgs."""

    def __init__(self) -> None:
        self.offset_ms = 0

    def now_ms(self) -> int:
        return int(time.time() * 1000) + self.offset_ms


class Store:
    def __init__(self, daily_limit: int = 15_000, schema: Schema = DEFAULT, clock: Clock | None = None,
                 id_base: int = 0) -> None:
        self.schema = schema
        self.clock = clock or Clock()
        # Where this org's record and user sequences start: ids stay unique across the orgs of an instance.
        self.id_base = id_base
        self.records: dict[str, Obj] = {}
        # External ID field -> value -> ids of live records holding it.
        self.by_ext: dict[str, dict[str, set[str]]] = {f: {} for f in schema.external_ids}
        self.delete_log: list[tuple[str, int]] = []  # (id, deleted at ms), in deletion order
        self.users: dict[str, Obj] = {}
        self.tokens: dict[str, tuple[str, int]] = {}  # token -> (user id, expires at ms)
        self.seq = 0
        self.user_seq = 0
        self.daily_limit = daily_limit
        self.usage_window_start: int | None = None
        self.usage = 0
        self.dirty = False

    # -- clock and allowance ---------------------------------------------------------

    def now_ms(self) -> int:
        return self.clock.now_ms()

    def _roll_window(self) -> None:
        now = self.now_ms()
        if self.usage_window_start is None or now - self.usage_window_start >= DAY_MS:
            self.usage_window_start, self.usage = now, 0

    def take_call(self) -> bool:
        """Count one API call; False (and nothing counted) when the daily allowance is used up."""
        self._roll_window()
        if self.usage >= self.daily_limit:
            return False
        self.usage += 1
        self.dirty = True
        return True

    def usage_now(self) -> tuple[int, int]:
        self._roll_window()
        return self.usage, self.daily_limit

    # -- users and tokens ------------------------------------------------------------

    def user(self, username: str) -> Obj:
        for u in self.users.values():
            if u["Username"] == username:
                return u
        self.user_seq += 1
        ident = ids.make("005", "5g", self.id_base + self.user_seq)
        u = {"Id": ident, "Username": username, "Name": username.split("@")[0]}
        self.users[ident] = u
        self.dirty = True
        return u

    def add_token(self, token: str, user_id: str, ttl_ms: int) -> int:
        expires = self.now_ms() + ttl_ms
        self.tokens[token] = (user_id, expires)
        if len(self.tokens) > 10_000:  # keep the table small: drop expired ones
            now = self.now_ms()
            self.tokens = {t: v for t, v in self.tokens.items() if v[1] > now}
        self.dirty = True
        return expires

    def user_of(self, token: str) -> str | None:
        found = self.tokens.get(token)
        if found is None or found[1] <= self.now_ms():
            return None
        return found[0]

    # -- records ---------------------------------------------------------------------

    def new_id(self) -> str:
        self.seq += 1
        return ids.make(KEY_PREFIX, "5g", self.id_base + self.seq)

    def put(self, record: Obj) -> None:
        old = self.records.get(record["Id"])
        self.records[record["Id"]] = record
        for f, index in self.by_ext.items():
            before = None if old is None or old["IsDeleted"] else old.get(f)
            after = None if record["IsDeleted"] else record.get(f)
            if before == after:
                continue
            if before is not None:
                holders = index.get(before, set())
                holders.discard(record["Id"])
                if not holders:
                    index.pop(before, None)
            if after is not None:
                index.setdefault(after, set()).add(record["Id"])
        self.dirty = True

    def drop(self, ident: str) -> None:
        """Gone for good (the recycle bin emptied): no record, no delete log entry."""
        record = self.records.get(ident)
        if record is None:
            return
        self.put({**record, "IsDeleted": True})
        del self.records[ident]
        self.delete_log = [e for e in self.delete_log if e[0] != ident]
        self.dirty = True

    def holders(self, field: str, value: str) -> list[str]:
        return sorted(self.by_ext.get(field, {}).get(value, set()))

    # -- all-or-none -----------------------------------------------------------------

    def savepoint(self) -> tuple[Any, ...]:
        return (dict(self.records), {f: {v: set(s) for v, s in idx.items()} for f, idx in self.by_ext.items()},
                len(self.delete_log), self.seq)

    def rollback(self, point: tuple[Any, ...]) -> None:
        self.records, self.by_ext, log_len, self.seq = point
        del self.delete_log[log_len:]

    # -- lifecycle -------------------------------------------------------------------

    def reset(self) -> None:
        """Empty, with the same allowance, schema and id range; the clock is the instance's, not reset here."""
        self.__init__(self.daily_limit, self.schema, self.clock, self.id_base)  # type: ignore[misc]
        self.dirty = True

    def snapshot(self) -> Obj:
        return {"records": list(self.records.values()), "delete_log": list(self.delete_log),
                "users": list(self.users.values()), "tokens": dict(self.tokens), "seq": self.seq,
                "user_seq": self.user_seq, "clock_offset_ms": self.clock.offset_ms, "daily_limit": self.daily_limit,
                "usage_window_start": self.usage_window_start, "usage": self.usage}

    def restore(self, data: Obj) -> None:
        self.reset()
        for record in data.get("records", []):
            self.put(record)
        self.delete_log = [(i, int(t)) for i, t in data.get("delete_log", [])]
        self.users = {u["Id"]: u for u in data.get("users", [])}
        self.tokens = {t: (u, int(e)) for t, (u, e) in data.get("tokens", {}).items()}
        self.seq = int(data.get("seq", len(self.records)))
        self.user_seq = int(data.get("user_seq", len(self.users)))
        self.clock.offset_ms = int(data.get("clock_offset_ms", 0))
        self.daily_limit = int(data.get("daily_limit", self.daily_limit))
        self.usage_window_start = data.get("usage_window_start")
        self.usage = int(data.get("usage", 0))
        self.dirty = False
