"""Prometheus series, defined once. A leaf: imports nothing of ours, so any layer may set a number.

Counters live in the process that does the work; gauges are refreshed from the database at scrape
time by `twoway.ops.status` (registered by whoever serves /metrics).
"""

from __future__ import annotations

import asyncio
import contextlib

from prometheus_client import Counter, Gauge, Histogram

OUTBOX_BACKLOG = Gauge("twoway_outbox_backlog", "Outbox messages not yet published")
INBOX_BACKLOG = Gauge("twoway_inbox_backlog", "Inbox events not yet processed")
# The same backlogs split by kind of record (the totals above stay as they were for existing dashboards).
OUTBOX_BACKLOG_BY_KIND = Gauge("twoway_outbox_backlog_by_kind", "Outbound sync messages not yet published, by kind",
                               ["kind"])
INBOX_BACKLOG_BY_KIND = Gauge("twoway_inbox_backlog_by_kind", "Inbox events not yet processed, by system and kind",
                              ["system", "kind"])
# Sync series carry the kind of record: `sum without (kind)` gives the totals they had before.
DEAD_LETTERS = Gauge("twoway_dead_letters", "Sync items parked as dead", ["system", "kind"])
CONSUMER_LAG = Gauge("twoway_consumer_lag", "Messages behind the end of the topic (absent when it cannot be read)",
                     ["group", "topic"])
LAG_READ_FAILURES = Counter("twoway_consumer_lag_read_failures_total", "Scrapes that could not read a group's lag",
                            ["group"])
PUBLISHED = Counter("twoway_messages_published_total", "Outbox messages published to Kafka", ["topic"])
CONSUMER_REBUILDS = Counter("twoway_consumer_rebuilds_total",
                            "Consumers closed and replaced after holding no partitions or making no progress",
                            ["group"])
CONSUMER_RESETS = Counter("twoway_consumer_offset_resets_total",
                          "Partitions read again from the beginning: the consumer's position was past their end "
                          "(the broker lost its log)", ["group"])
CONSUMED = Counter("twoway_messages_consumed_total", "Kafka messages consumed", ["group", "topic"])
SYNC_RESULTS = Counter("twoway_sync_results_total", "Sync outcomes", ["system", "direction", "kind", "status"])
SYNC_LATENCY = Histogram(
    "twoway_sync_latency_seconds", "From our change (or Stripe's event) to both sides agreeing",
    ["system", "direction", "kind"], buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
STRIPE_CALLS = Counter("twoway_stripe_calls_total", "Stripe API calls", ["op", "status"])
SALESFORCE_CALLS = Counter("twoway_salesforce_calls_total", "Salesforce API calls", ["op", "status"])
SALESFORCE_API_USAGE = Gauge("twoway_salesforce_api_usage", "Salesforce daily API calls used and allowed (last seen)",
                             ["what"])
WEBHOOKS_RECEIVED = Counter("twoway_webhooks_received_total", "Webhook deliveries accepted", ["system", "result"])
WEBHOOKS_REJECTED = Counter("twoway_webhooks_rejected_total", "Webhook deliveries rejected", ["system", "reason"])
CONNECTOR_BREAKER = Gauge("twoway_connector_breaker", "Circuit breaker per connector: 0 closed, 1 half-open, 2 open",
                          ["system"])
RATE_LIMIT = Gauge("twoway_rate_limit_per_second", "Current shared rate limit per external account (after 429s)",
                   ["account", "endpoint"])  # endpoint "": the account's own limit
ASYNCIO_TASKS = Gauge("twoway_asyncio_tasks", "asyncio tasks alive in this process (sampled every 5 s)")


async def sample_tasks(stop: asyncio.Event, every: float = 5.0) -> None:
    """Keeps ASYNCIO_TASKS current until `stop`: a task leak shows as a count that only grows (bench/soak.py).
    Sampled on the loop because the worker's metrics server answers from a thread of its own."""
    while not stop.is_set():
        ASYNCIO_TASKS.set(len(asyncio.all_tasks()))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
