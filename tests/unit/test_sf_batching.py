"""Filling Salesforce composite calls: full calls at once, a lone change at once, a burst packed."""

from __future__ import annotations

import asyncio
from typing import Any

from twoway.connectors.base import ConnectorError
from twoway.connectors.salesforce.batching import Filler


async def test_full_calls_lone_changes_and_bursts() -> None:
    sizes: list[int] = []

    async def send(records: list[dict[str, Any]]) -> list[Any]:
        sizes.append(len(records))
        await asyncio.sleep(0.05)
        return [{"n": r["n"]} if r["n"] % 7 else ConnectorError("bad", transient=False) for r in records]

    filler = Filler(send, size=200, linger=0.2, burst_window=1.0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    lone = await filler.submit([{"n": 1}])
    assert lone == [{"n": 1}] and loop.time() - started < 0.15  # no linger when nothing else is going on
    sizes.clear()
    waves = [filler.submit([{"n": i} for i in range(w * 100, w * 100 + 100)]) for w in range(5)]
    tasks = []
    for w in waves:  # handed over 30 ms apart, as an engine's batches arrive
        tasks.append(asyncio.ensure_future(w))
        await asyncio.sleep(0.03)
    results = list(await asyncio.gather(*tasks))
    assert sorted(sizes) == [100, 200, 200]  # 500 records in 3 calls
    flat = [r for rs in results for r in rs]
    assert len(flat) == 500 and isinstance(flat[7], ConnectorError) and flat[8] == {"n": 8}
