"""One settings object for the whole process, read from the environment."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Stripe's limits per endpoint (docs.stripe.com/rate-limits): a named operation (method and route, so
# `POST /v1/customers` and `GET /v1/customers/{id}` are two) may take 25 requests/s, Search 20 reads/s,
# within the account's 100/s live or 25/s in a sandbox. Unset, we pace a little below each (24, 19),
# as below the account's (90, 20): workers' tokens are spread, Stripe's window is not ours.
STRIPE_ENDPOINT_RATE = 24.0
STRIPE_SEARCH_RATE = 19.0
STRIPE_SEARCH_ENDPOINTS = "GET /v1/*/search"  # a pattern (fnmatch) over endpoint names


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", populate_by_name=True)

    database_url: str | None = None
    kafka_bootstrap_servers: str | None = None
    stripe_secret_key: SecretStr | None = None
    # Several secrets may be given, comma separated, so a secret can be rotated without downtime.
    stripe_webhook_secret: SecretStr | None = None
    stripe_api_base: str | None = None
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # API processes (uvicorn workers) sharing the port; each has its own pools and group committers.
    api_workers: int = 1
    # Group commit of webhook events and customer creates: a group is flushed when it holds this many
    # writes, or this long after its first one arrived.
    group_commit_max_batch: int = 256
    group_commit_max_wait_ms: float = 2.0
    # Groups committing at once per writer (each on its own connection): one forms while another syncs.
    group_commit_max_inflight: int = 4
    # Rejected webhooks: counted always; at most this many per second kept as samples, at most this many kept.
    webhook_rejection_samples_per_second: float = 5.0
    webhook_rejection_sample_max: int = 1000
    # A rejected delivery's 400 waits this long (no CPU): a sender of forgeries that waits for answers
    # (as HTTP/1.1 clients do) is slowed to ~1000/this per connection, so genuine deliveries keep the CPU.
    webhook_rejection_delay_ms: float = 50.0
    twoway_api_keys: SecretStr | None = None

    kafka_topic_partitions: int = 4
    # Consumer groups are "<prefix>-<system>-outbound" and "<prefix>-inbound".
    kafka_group_prefix: str = "twoway"
    kafka_enable_idempotence: bool = True
    kafka_session_timeout_ms: int = 10_000
    kafka_heartbeat_interval_ms: int = 1_000
    kafka_rebalance_timeout_ms: int = 10_000
    # A consumer that holds no partitions (or whose partitions get no fetch answer) while nothing moves
    # for this long is closed and replaced (sync/consumer.py, the liveness guard). Keep it above the
    # rebalance timeout (a join in progress holds no partitions). 0 turns it off.
    kafka_consumer_stall_seconds: float = 30.0

    max_body_bytes: int = 1024 * 1024
    webhook_tolerance_seconds: int = 300
    inbound_mode: Literal["webhook", "poll", "both"] = "webhook"
    poll_interval_seconds: float = 2.0

    # The Stripe account's limit (unset: 90 live, 20 in a sandbox), and each endpoint's within it (unset:
    # STRIPE_ENDPOINT_RATE, Search STRIPE_SEARCH_RATE); STRIPE_ENDPOINT_RATE_LIMITS names endpoints whose
    # limits Stripe raised for the account: "POST /v1/customers=50,GET /v1/*/search=30" (patterns allowed).
    stripe_rate_limit_per_second: float | None = None
    stripe_endpoint_rate_limit_per_second: float | None = Field(default=None, gt=0)
    stripe_search_rate_limit_per_second: float | None = Field(default=None, gt=0)
    stripe_endpoint_rate_limits: str | None = None
    stripe_timeout_seconds: float = 20.0
    sync_max_attempts: int = 8
    sync_backoff_base_seconds: float = 0.5
    sync_backoff_max_seconds: float = 300.0
    # The engine (see docs/architecture.md, "Engine"): records in flight per consumer, and calls in flight
    # per connector (a connector's own `max_in_flight` wins). Decoupled from the database pool.
    sync_max_in_flight: int = 256
    worker_db_pool_size: int = 5
    # A transient error of one record becomes dead only after this long (and sync_max_attempts); outages
    # (5xx, timeouts, an open breaker) and 429s never use up attempts at all.
    sync_dead_after_seconds: float = 24 * 3600
    sync_outage_retry_max_seconds: float = 30.0
    sync_parent_wait_seconds: float = 30.0
    # The breaker opens when, of the calls answered in the last BREAKER_WINDOW_SECONDS, at least
    # BREAKER_FAILURE_THRESHOLD and at least BREAKER_FAILURE_RATE failed with an outage error
    # (src/twoway/sync/breaker.py says why a rate, and why over time).
    breaker_failure_threshold: int = 5
    breaker_failure_rate: float = Field(default=0.8, gt=0, le=1)
    breaker_window_seconds: float = Field(default=5.0, gt=0)
    breaker_open_seconds: float = 1.0
    breaker_max_open_seconds: float = 30.0
    # The sweeper re-enqueues a lagging record at most once per this many seconds.
    sweeper_resweep_seconds: float = 10.0
    db_application_name: str = "twoway"
    sync_linger_ms: int = 50
    sync_conflict_policy: Literal["newer_wins", "ours_wins", "theirs_wins"] = "newer_wins"
    sweeper_interval_seconds: float = 5.0
    sweeper_grace_seconds: float = 30.0
    relay_poll_seconds: float = 1.0
    # Retention: the worker purges every RETENTION_INTERVAL_SECONDS, RETENTION_BATCH_SIZE rows a statement
    # (each its own transaction). Why each window is what it is: src/twoway/kit/retention.py.
    retention_interval_seconds: float = Field(default=60.0, gt=0)
    retention_batch_size: int = Field(default=2000, gt=0)
    inbox_payload_retention_hours: float = Field(default=1.0, ge=0)
    inbox_dedup_retention_days: float = Field(default=31.0, ge=0)
    sync_events_retention_days: float = Field(default=7.0, ge=0)
    outbox_retention_seconds: float = Field(default=3600.0, ge=0)
    idempotency_key_retention_hours: float = Field(default=24.0, ge=0)
    worker_ready_file: str | None = None
    # Workers do the syncing, so their counters live in their process: served on this port when set.
    worker_metrics_port: int | None = None
    # Which connectors run, comma separated (e.g. "stripe,salesforce"). Unset: stripe, plus salesforce
    # when it is configured.
    twoway_connectors: str | None = None

    salesforce_login_url: str = "https://login.salesforce.com"
    salesforce_client_id: str | None = None
    salesforce_client_secret: SecretStr | None = None
    # JWT bearer instead of client credentials: the connected app's private key and the user to act as.
    salesforce_jwt_key_file: str | None = None
    salesforce_username: str | None = None
    salesforce_jwt_audience: str | None = None  # default: the login URL
    salesforce_api_version: str = "60.0"
    # An extra CA to trust (the emulator's test CA); unset: the system's.
    salesforce_ca_file: str | None = None
    salesforce_object: str = "Account"
    salesforce_name_field: str = "Name"
    salesforce_email_field: str = "Email__c"
    salesforce_external_id_field: str = "Twoway_Id__c"
    # Our record's uid beside our id (text, 36 characters): what tells a record from one a database restore
    # lost. "none": an org without the field (a restore's lost records can then be overwritten there).
    salesforce_uid_field: str = "Twoway_Uid__c"
    salesforce_timeout_seconds: float = 30.0
    salesforce_rate_limit_per_second: float = 20.0
    salesforce_max_in_flight: int = 8
    # During a burst, a partial composite call (up to 200 records, one API call) waits this long for more.
    salesforce_batch_linger_ms: float = 200.0
    # Share of the daily API allowance left for others: at it, the connector pauses like at the limit.
    salesforce_api_reserve_percent: float = 10.0
    salesforce_limit_pause_seconds: float = 300.0
    # Each poll costs API calls (one queryAll, and `deleted/` every fifth): 30 s is ~3.5k calls a day.
    salesforce_poll_interval_seconds: float = 30.0
    salesforce_poll_overlap_seconds: float = 60.0
    salesforce_poll_settle_seconds: float = 2.0

    log_level: str = "info"
    log_json: bool = False
    state_dir: str = Field(default=".twoway")

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, url: str | None) -> str | None:
        if url and url.startswith(("postgres://", "postgresql://")):
            return "postgresql+asyncpg://" + url.split("://", 1)[1]
        return url

    @field_validator("salesforce_login_url", "salesforce_api_version", "salesforce_object", "salesforce_name_field",
                     "salesforce_email_field", "salesforce_external_id_field", "salesforce_uid_field", mode="before")
    @classmethod
    def _empty_is_default(cls, value: object, info: Any) -> object:
        # Compose passes unset variables as "": that means the default, not an empty URL or name.
        return cls.model_fields[info.field_name].default if value == "" else value

    @field_validator("stripe_endpoint_rate_limits")
    @classmethod
    def _endpoint_limits_parse(cls, raw: str | None) -> str | None:
        _endpoint_limits(raw)  # a typo fails at start, not as a silent default
        return raw

    def api_keys(self) -> list[str]:
        raw = self.twoway_api_keys.get_secret_value() if self.twoway_api_keys else ""
        return [k.strip() for k in raw.split(",") if k.strip()]

    def webhook_secrets(self) -> list[str]:
        raw = self.stripe_webhook_secret.get_secret_value() if self.stripe_webhook_secret else ""
        return [s.strip() for s in raw.split(",") if s.strip()]

    def stripe_key(self) -> str:
        return self.stripe_secret_key.get_secret_value() if self.stripe_secret_key else ""

    def salesforce_secret(self) -> str | None:
        return self.salesforce_client_secret.get_secret_value() if self.salesforce_client_secret else None

    def salesforce_configured(self) -> bool:
        return bool(self.salesforce_client_id and (self.salesforce_secret() or self.salesforce_jwt_key_file))

    def connector_names(self) -> list[str] | None:
        """The systems named by TWOWAY_CONNECTORS, or None when it is unset."""
        if not self.twoway_connectors:
            return None
        return [n.strip().lower() for n in self.twoway_connectors.split(",") if n.strip()]

    def stripe_livemode(self) -> bool:
        return self.stripe_key().startswith(("sk_live_", "rk_live_"))

    def effective_stripe_rate(self) -> float:
        """Stay under Stripe's limits: 25 req/s in test mode, 100 req/s live; keep headroom."""
        if self.stripe_rate_limit_per_second:
            return self.stripe_rate_limit_per_second
        return 90.0 if self.stripe_livemode() else 20.0

    def stripe_endpoint_limits(self) -> tuple[float, dict[str, float]]:
        """Each Stripe endpoint's limit: the default, and limits by endpoint or pattern, the operator's first
        (for `kit.ratelimit.EndpointRates`)."""
        limits = _endpoint_limits(self.stripe_endpoint_rate_limits)
        limits.setdefault(STRIPE_SEARCH_ENDPOINTS, self.stripe_search_rate_limit_per_second or STRIPE_SEARCH_RATE)
        return self.stripe_endpoint_rate_limit_per_second or STRIPE_ENDPOINT_RATE, limits

    def require_database_url(self) -> str:
        if not self.database_url:
            raise RuntimeError("DATABASE_URL is not set (twoway dev starts an embedded PostgreSQL)")
        return self.database_url

    def require_kafka(self) -> str:
        if not self.kafka_bootstrap_servers:
            raise RuntimeError("KAFKA_BOOTSTRAP_SERVERS is not set (twoway dev starts an embedded broker)")
        return self.kafka_bootstrap_servers


def _endpoint_limits(raw: str | None) -> dict[str, float]:
    """ "POST /v1/customers=50,GET /v1/*/search=30" -> {endpoint: limit}, in the order given."""
    limits: dict[str, float] = {}
    for item in (raw or "").split(","):
        if not item.strip():
            continue
        endpoint, sep, rate = item.rpartition("=")
        method, _, route = endpoint.strip().partition(" ")
        if not sep or not method or not route.strip().startswith("/") or not rate.strip():
            raise ValueError(f"expected METHOD /route=limit, got {item.strip()!r}")
        limit = float(rate)
        if limit <= 0:
            raise ValueError(f"a limit must be above 0: {item.strip()!r}")
        limits[f"{method.upper()} {route.strip()}"] = limit
    return limits


@lru_cache
def get_settings() -> Settings:
    return Settings()
