"""Issue 11, must show: the broker down for 60 s under writes. The sweeper repairs without flooding:
the outbox rows it writes stay a small multiple of the records changed, and everything converges."""

from __future__ import annotations

import asyncio
import random
import time

from sqlalchemy import text

from tests.conftest import wait_until
from tests.helpers import running_worker
from tests.integration.test_outbound import _converged, _create, _why_not
from twoway.kit.embedded import EmbeddedBroker


async def test_broker_down_a_minute_under_writes_sweeps_without_flooding(client, settings, emulator, db,
                                                                          broker: EmbeddedBroker) -> None:  # type: ignore[no-untyped-def]
    async with running_worker(settings):
        ids = [await _create(client, f"K{i}", f"k{i}@example.com") for i in range(20)]
        assert await wait_until(lambda: _converged(client, emulator, ids), timeout=60)
        broker.stop(hard=True)
        try:
            rng = random.Random(3)
            changed: set[int] = set()
            end = time.monotonic() + 60
            n = 0
            while time.monotonic() < end:
                n += 1
                if n % 4 == 0:
                    cid = await _create(client, f"New {n}", f"new{n}@example.com")
                    ids.append(cid)
                else:
                    cid = rng.choice(ids)
                    await client.patch(f"/api/v1/customers/{cid}", json={"name": f"Edit {n}"})
                changed.add(cid)
                await asyncio.sleep(0.25)
        finally:
            broker.start()  # same port, empty memory: topics, messages and offsets are gone
        ok = await wait_until(lambda: _converged(client, emulator, ids), timeout=120, step=1)
        assert ok, await _why_not(client, emulator, ids)
    async with db() as s:
        swept = (await s.execute(text("SELECT count(*) FROM outbox WHERE payload->>'reason' = 'sweep'"))).scalar()
    assert swept is not None and swept <= 4 * len(changed), (swept, len(changed))
    assert (await client.get("/api/v1/sync/failures")).json() == []
