"""The dev broker restarted with its memory lost while changes waited in it: the sweeper repairs it."""

from __future__ import annotations

from sqlalchemy import text

from tests.conftest import emulator_call, wait_until
from tests.helpers import running_worker
from twoway.kit.embedded import EmbeddedBroker


def stripe_side(base: str) -> dict[str, dict]:
    rows = emulator_call(base, "/_emulator/customers")
    rows = rows["data"] if isinstance(rows, dict) else rows
    return {c["metadata"].get("internal_id", ""): c for c in rows}


async def test_broker_memory_loss_is_repaired_by_the_sweeper(client, settings, emulator, db, broker: EmbeddedBroker) -> None:  # type: ignore[no-untyped-def]
    # Only the relay runs while the changes are made: every message is on the broker and no consumer has
    # read one, so once the broker forgets them nothing but the sweeper can bring them back. (With the
    # consumers running, how many were already in flight at the restart, and so finished without a sweep,
    # depended on this machine's load.)
    async with running_worker(settings, ["relay"]):
        ids = [(await client.post("/api/v1/customers", json={"name": f"B{i}", "email": f"b{i}@example.com"})).json()["id"]
               for i in range(40)]
        assert await wait_until(lambda: _all_published(db), timeout=20)
    assert len(stripe_side(emulator)) == 0
    broker.stop(hard=True)
    broker.start()  # same port, empty memory: topics, messages and offsets are gone
    async with running_worker(settings):

        def converged() -> bool:
            side = stripe_side(emulator)
            return all(str(cid) in side and side[str(cid)]["name"] == f"B{n}" for n, cid in enumerate(ids))

        assert await wait_until(converged, timeout=90, step=1)
    side = stripe_side(emulator)
    assert len([k for k in side if k]) == 40  # no duplicates
    async with db() as s:
        swept = (await s.execute(text("SELECT count(*) FROM outbox WHERE payload->>'reason' = 'sweep'"))).scalar()
    assert swept and swept >= 40  # the repair came from the sweeper, for every record


async def _all_published(db) -> bool:  # type: ignore[no-untyped-def]
    async with db() as s:
        return (await s.execute(text("SELECT count(*) FROM outbox WHERE sent_at IS NULL"))).scalar() == 0
