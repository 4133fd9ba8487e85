"""Issue 21: the outbox insert is written in one module; every other writer builds on it."""

from __future__ import annotations

from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "twoway"


def test_the_outbox_insert_lives_in_kit_outbox_only() -> None:
    holders = sorted(str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if "INSERT INTO outbox" in p.read_text())
    assert holders == ["kit/outbox.py"]
