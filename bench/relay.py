"""`relay`: messages/s from the outbox to the broker. N unsent rows are inserted at once, then one relay
(the real `twoway worker --only relay` process) drains them; the rate is counted between the first and
the moment the first row is seen sent to the moment none is left, so producer start-up is not in it."""

from __future__ import annotations

import time
from typing import Any

from bench.cluster import Cluster, ClusterConfig

FILL = """
INSERT INTO outbox (topic, key, payload)
SELECT 'sync.outbound', 'customer:' || g, jsonb_build_object('kind', 'customer', 'id', g, 'reason', 'bench')
FROM generate_series(1, $1) g
"""


async def relay(cluster: Cluster, n: int) -> list[Any]:
    from bench.run import Figure, db_value, wait_for

    await db_value(cluster, FILL, n)
    cluster._spawn("relay", ["worker", "--only", "relay"])
    started = time.monotonic()
    unsent = "SELECT count(*) FROM outbox WHERE sent_at IS NULL"

    async def begun() -> bool:
        return int(await db_value(cluster, unsent)) < n
    await wait_for(begun, 120, 0.02)
    first, left = time.monotonic(), int(await db_value(cluster, unsent))

    async def drained() -> bool:
        return int(await db_value(cluster, unsent)) == 0
    done = await wait_for(drained, 600, 0.02)
    seconds = time.monotonic() - first
    sent = left
    note = (f"one relay process, {n:,} rows queued before it starts; {sent:,} published in {seconds:.2f} s "
            f"(from the first batch seen marked to none left; {time.monotonic() - started:.1f} s wall with start-up)")
    rate = round(sent / seconds, 1) if seconds > 0 and done else None
    return [Figure("relay", "messages_per_s", rate, "msgs/s", 5000, True, {"messages": n}, note)]


def config() -> ClusterConfig:
    return ClusterConfig(workers=0, split_relay=False)


if __name__ == "__main__":
    import sys

    from bench.run import with_cluster

    size = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    with_cluster(config(), lambda c: relay(c, size))
