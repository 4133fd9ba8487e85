"""The orgs of one emulated instance, each with its own OAuth client, records, daily allowance and schema.

As on a real shared instance (many orgs behind one host), a request's org is the one of its OAuth client at
the token endpoint (client credentials' `client_id`, JWT's `iss`) and, at the API, the one whose id begins
its access token (Salesforce's tokens start with the org's 15-character id, then `!`). The first org is
made from the startup configuration and keeps its client, so a caller that knows one org sees no change.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from twoway.emulators.salesforce import ids
from twoway.emulators.salesforce.config import SalesforceConfig
from twoway.emulators.salesforce.schema import DEFAULT, FieldDef, Schema, custom_fields
from twoway.emulators.salesforce.store import Clock, Obj, Store

# Org n numbers its records and users from (n - 1) * ORG_SPAN, so ids never collide across orgs.
ORG_SPAN = 62**8
DEFAULT_NUMBER = 1


@dataclass
class Org:
    number: int
    client_id: str
    client_secret: str
    integration_username: str
    store: Store
    jwt_public_key: str | None = None  # PEM (key or certificate) for JWT bearer; None: JWT is refused

    @property
    def org_id(self) -> str:
        return ids.make("00D", "5g", self.number)

    def describe(self) -> Obj:
        used, limit = self.store.usage_now()
        return {"org_id": self.org_id, "client_id": self.client_id,
                "integration_username": self.integration_username, "daily_api_requests": limit, "used": used,
                "custom_fields": [f.name for f in self.store.schema.custom]}


class Orgs:
    def __init__(self, config: SalesforceConfig) -> None:
        assert config.client_secret, "the emulator sets a client secret before it makes its orgs"
        self.config = config
        self.clock = Clock()
        key = Path(config.jwt_public_key_file).read_text() if config.jwt_public_key_file else None
        self.default = Org(DEFAULT_NUMBER, config.client_id, config.client_secret, config.integration_username,
                           Store(config.daily_api_requests, clock=self.clock), key)
        self.by_id: dict[str, Org] = {self.default.org_id: self.default}
        self._dirty = False

    def _drop_created(self) -> None:
        self.by_id = {self.default.org_id: self.default}

    def all(self) -> list[Org]:
        return list(self.by_id.values())

    def get(self, org_id: str) -> Org | None:
        """By its 15- or 18-character id."""
        full = ids.to18(org_id)
        return self.by_id.get(full) if full else None

    def for_client(self, client_id: str | None) -> Org | None:
        return next((o for o in self.by_id.values() if o.client_id == client_id), None)

    def for_token(self, token: str) -> Org | None:
        prefix, bang, _ = token.partition("!")
        return self.get(prefix) if bang and len(prefix) == 15 else None

    def create(self, body: Obj) -> Org:
        """A new org from a control request: `daily_api_requests`, `custom_fields`, `integration_username`,
        `jwt_public_key` (PEM), all optional. Its client id and secret are made here."""
        limit = body.get("daily_api_requests", self.config.daily_api_requests)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError("daily_api_requests must be an integer >= 0")
        number = max(o.number for o in self.by_id.values()) + 1
        username = body.get("integration_username", f"integration@org{number}.twoway.test")
        if not isinstance(username, str) or "@" not in username:
            raise ValueError("integration_username must look like an email address")
        key = body.get("jwt_public_key")
        if key is not None and not isinstance(key, str):
            raise ValueError("jwt_public_key must be PEM text")
        schema = Schema(custom_fields(body["custom_fields"])) if "custom_fields" in body else DEFAULT
        org = Org(number, "3MVG9" + secrets.token_urlsafe(30), secrets.token_urlsafe(24), username,
                  Store(limit, schema, self.clock, (number - DEFAULT_NUMBER) * ORG_SPAN), key)
        self.by_id[org.org_id] = org
        self._dirty = True
        return org

    def reset(self) -> None:
        """One org again, the first, empty; the clock back to now."""
        self._drop_created()
        self.default.store.reset()
        self.default.store.daily_limit = self.config.daily_api_requests
        self.clock.offset_ms = 0
        self._dirty = True

    # -- persistence: the first org's state at the top level (older state files load as they are) ----------

    @property
    def dirty(self) -> bool:
        return self._dirty or any(o.store.dirty for o in self.by_id.values())

    @dirty.setter
    def dirty(self, value: bool) -> None:
        self._dirty = value
        for org in self.by_id.values():
            org.store.dirty = value

    def snapshot(self) -> Obj:
        created = [{"number": o.number, "client_id": o.client_id, "client_secret": o.client_secret,
                    "integration_username": o.integration_username, "jwt_public_key": o.jwt_public_key,
                    "custom_fields": [asdict(f) for f in o.store.schema.custom], "store": o.store.snapshot()}
                   for o in self.by_id.values() if o is not self.default]
        return {**self.default.store.snapshot(), "orgs": created}

    def restore(self, data: Obj) -> None:
        self._drop_created()
        self.default.store.restore(data)
        for saved in data.get("orgs", []):
            schema = Schema(tuple(FieldDef(**f) for f in saved["custom_fields"]))
            number = int(saved["number"])
            store = Store(0, schema, self.clock, (number - DEFAULT_NUMBER) * ORG_SPAN)
            store.restore(saved["store"])
            org = Org(number, saved["client_id"], saved["client_secret"], saved["integration_username"], store,
                      saved.get("jwt_public_key"))
            self.by_id[org.org_id] = org
        self.dirty = False
