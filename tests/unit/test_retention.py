"""Retention's windows and what it never prunes (the purge itself runs on PostgreSQL: tests/integration)."""

from __future__ import annotations

import pytest

from twoway.kit.retention import KEPT_STATUSES, Windows
from twoway.settings import Settings
from twoway.sync import log
from twoway.syncstate import models

DAY = 86400


def test_work_still_owed_is_never_pruned() -> None:
    # A status added to the open set must be kept by retention too.
    assert set(log.OPEN) | {"dead", "conflict"} <= set(KEPT_STATUSES)
    assert all(f"'{s}'" in str(models.OPEN_ROWS) for s in (*log.OPEN, "dead"))
    assert all(f"'{s}'" in str(models.OPEN_ROWS) or s == "conflict" for s in KEPT_STATUSES)


def test_default_windows_outlast_every_copy_of_an_event() -> None:
    w = Windows.from_settings(Settings())
    assert w.inbox_dedup > 30 * DAY  # Stripe's Events API serves 30 days; its webhook retries end after 3
    assert w.inbox_payload == 3600 and w.sync_events == 7 * DAY and w.outbox == 3600
    assert w.idempotency_keys == DAY


def test_windows_are_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in (("INBOX_PAYLOAD_RETENTION_HOURS", "0.5"), ("INBOX_DEDUP_RETENTION_DAYS", "45"),
                        ("SYNC_EVENTS_RETENTION_DAYS", "2"), ("OUTBOX_RETENTION_SECONDS", "60"),
                        ("IDEMPOTENCY_KEY_RETENTION_HOURS", "48"), ("RETENTION_BATCH_SIZE", "500")):
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert Windows.from_settings(settings) == Windows(inbox_payload=1800, inbox_dedup=45 * DAY,
                                                      sync_events=2 * DAY, outbox=60, idempotency_keys=48 * 3600)
    assert settings.retention_batch_size == 500
    monkeypatch.setenv("RETENTION_BATCH_SIZE", "0")
    with pytest.raises(ValueError):
        Settings()
