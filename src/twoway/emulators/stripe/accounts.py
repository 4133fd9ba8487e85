"""Stripe accounts: the platform (the emulator's one account before accounts existed) and the accounts made at
`POST /_emulator/accounts`, each with its own store (objects, events, endpoints) and secret keys.

Which account a request acts on (`resolve`):
- a key an account owns acts on that account; a key it no longer has (revoked or rolled) answers 401;
- any other well-formed key acts on the platform, as every key did before accounts;
- `Stripe-Account: acct_…` with the platform's key acts on that connected account (Connect), unless the account
  deauthorized the platform; with an account's own key it may only name that account. Otherwise 403
  `account_invalid`, Stripe's answer for an account the key cannot reach.
Every account made here is connected to the platform: the platform's Connect endpoints (`connect=true`) get its
events, each with a top-level `account`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from twoway.emulators.stripe.errors import StripeError, bad_api_key, masked
from twoway.emulators.stripe.ids import rand_id
from twoway.emulators.stripe.state import Obj, Origin, Store, Target, endpoint_matches

DEAUTHORIZED = "account.application.deauthorized"
Listener = Callable[[Obj, list[Target]], None]


@dataclass
class Account:
    id: str
    store: Store
    keys: list[str] = field(default_factory=list)  # its valid secret keys (none for the platform: see resolve)
    deauthorized: bool = False  # cut the platform off: `Stripe-Account` calls for it fail
    created: int = field(default_factory=lambda: int(time.time()))

    def summary(self, platform: bool) -> Obj:
        store = self.store
        return {
            "id": self.id,
            "platform": platform,
            "keys_active": platform or bool(self.keys),
            "deauthorized": self.deauthorized,
            "customers": len(store.customers),
            "invoices": len(store.book.invoices),
            "events": len(store.events),
        }


class Accounts:
    def __init__(self, max_events: int, auto_finalize_after: float, listener: Listener) -> None:
        self._max_events = max_events
        self._auto_finalize_after = auto_finalize_after
        self._listener = listener
        self.platform = Account(rand_id("acct_", 16), self._store())
        self.application = rand_id("ca_", 24)  # the platform's Connect application, named by deauthorizations
        self.by_id: dict[str, Account] = {self.platform.id: self.platform}
        self._owner: dict[str, Account] = {}  # secret key -> its account
        self._retired: dict[str, Account] = {}  # revoked or rolled key -> the account it was for
        self._dirty = False

    def _store(self) -> Store:
        store = Store(self._max_events)
        store.book.auto_finalize_after = self._auto_finalize_after
        store.listeners.append(self._listener)
        return store

    def __iter__(self) -> Iterator[Account]:
        return iter(self.by_id.values())

    # -- which account a request acts on -----------------------------------------------

    def resolve(self, api_key: str, stripe_account: str | None) -> Account:
        if api_key in self._retired:
            raise bad_api_key(api_key)
        owner = self._owner.get(api_key, self.platform)
        if not stripe_account or stripe_account == owner.id:
            return owner
        target = self.by_id.get(stripe_account)
        if target is None or owner is not self.platform or target.deauthorized:
            raise no_access(api_key, stripe_account)
        return target

    # -- control (`/_emulator/accounts`) ------------------------------------------------

    def create(self) -> tuple[Account, str]:
        account = self._add(rand_id("acct_", 16))
        return account, self.roll_keys(account)

    def _add(self, ident: str) -> Account:
        account = Account(ident, self._store())
        account.store.upstream = lambda event_type: self._connect_targets(account, event_type)
        self.by_id[ident] = account
        self._dirty = True
        return account

    def roll_keys(self, account: Account) -> str:
        """A new secret key; the account's old ones stop working."""
        self.revoke_keys(account)
        key = rand_id("sk_test_", 24)
        account.keys.append(key)
        self._owner[key] = account
        return key

    def revoke_keys(self, account: Account) -> None:
        for key in account.keys:
            del self._owner[key]
            self._retired[key] = account
        account.keys.clear()
        self._dirty = True

    def deauthorize(self, account: Account) -> Obj:
        """The account cuts the platform off; the platform's Connect endpoints hear it (the event goes first)."""
        application = {"id": self.application, "object": "application", "name": None}
        event = account.store.record_event(DEAUTHORIZED, application, Origin(None))
        account.deauthorized = True
        self._dirty = True
        return event

    def authorize(self, account: Account) -> None:
        """Connected again, as after a new OAuth grant."""
        account.deauthorized = False
        self._dirty = True

    def drop_created(self) -> None:
        """Back to the platform alone (reset with `{"accounts": true}`)."""
        self.by_id = {self.platform.id: self.platform}
        self._owner.clear()
        self._retired.clear()
        self._dirty = True

    def _connect_targets(self, account: Account, event_type: str) -> list[Target]:
        if account.deauthorized or account.id not in self.by_id:
            return []
        endpoints = self.platform.store.endpoints
        return [
            Target(endpoints, ep["id"], account.id)
            for ep in endpoints.values()
            if ep.get("connect") and endpoint_matches(ep, event_type)
        ]

    # -- the state file (kit/persist.py's Persistent): the platform's store at the top, as before accounts ------

    @property
    def dirty(self) -> bool:
        return self._dirty or any(a.store.dirty for a in self)

    @dirty.setter
    def dirty(self, value: bool) -> None:
        self._dirty = value
        for account in self:
            account.store.dirty = value

    def snapshot(self) -> Obj:
        return {
            **self.platform.store.snapshot(),
            "platform": {"id": self.platform.id, "application": self.application},
            "accounts": [
                {
                    "id": a.id,
                    "keys": list(a.keys),
                    "retired": [k for k, owner in self._retired.items() if owner is a],
                    "deauthorized": a.deauthorized,
                    "created": a.created,
                    "state": a.store.snapshot(),
                }
                for a in self
                if a is not self.platform
            ],
        }

    def restore(self, data: Obj) -> None:
        self.drop_created()
        self.platform.store.restore(data)
        platform = data.get("platform", {})
        if platform:
            del self.by_id[self.platform.id]
            self.platform.id, self.application = platform["id"], platform["application"]
            self.by_id[self.platform.id] = self.platform
        for saved in data.get("accounts", []):
            account = self._add(saved["id"])
            account.deauthorized, account.created = saved["deauthorized"], saved["created"]
            account.keys = list(saved["keys"])
            self._owner.update((k, account) for k in account.keys)
            self._retired.update((k, account) for k in saved["retired"])
            account.store.restore(saved["state"])
        self.dirty = False


def no_access(api_key: str, account: str) -> StripeError:
    return StripeError(
        403,
        f"The provided key '{masked(api_key)}' does not have access to account '{account}' (or that account does not "
        "exist). Application access may have been revoked.",
        code="account_invalid",
    )
