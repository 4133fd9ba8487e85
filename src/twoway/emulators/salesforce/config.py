"""Startup configuration of the Salesforce emulator."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twoway.emulators.salesforce.faults import Faults

DEFAULT_CLIENT_ID = "twoway-emulator"
DEFAULT_USERNAME = "integration@twoway.test"


@dataclass
class SalesforceConfig:
    # Fault knobs at startup, as accepted by POST /_emulator/faults (also what reset goes back to).
    startup_faults: dict[str, Any] = field(default_factory=dict)
    # OAuth: the connected app's client id/secret (client credentials) and the JWT bearer certificate.
    client_id: str = DEFAULT_CLIENT_ID
    client_secret: str | None = None
    jwt_public_key_file: str | None = None
    # The user client credentials run as (Salesforce's "Run As" user of the connected app).
    integration_username: str = DEFAULT_USERNAME
    token_ttl_seconds: float = 7200.0
    daily_api_requests: int = 15_000
    # Storage and TLS.
    state_file: str | None = None
    save_interval: float = 2.0
    tls_dir: str | None = None
    # Largest page of query results (Salesforce: 2000; `Sforce-Query-Options: batchSize=` lowers it).
    query_page_size: int = 2000

    def faults(self) -> Faults:
        faults = Faults()
        faults.merge(dict(self.startup_faults))
        return faults
