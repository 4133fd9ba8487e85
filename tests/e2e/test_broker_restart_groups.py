"""Bug 6 (bench/README.md): after a broker restart every consumer group must consume again. Two workers, so
each group (stripe outbound, inbound) has two members; the broker loses its memory (groups, offsets)."""

from __future__ import annotations

from tests.conftest import emulator_call, wait_until
from tests.helpers import running_worker
from tests.integration.test_outbound import _converged, _create, _why_not
from twoway.kit import metrics
from twoway.kit.embedded import EmbeddedBroker
from twoway.kit.kafka import ensure_topics
from twoway.kit.outbox import INBOUND_TOPIC, OUTBOUND_TOPIC
from twoway.settings import Settings
from twoway.sync.worker import inbound_group, outbound_group


def _consumed(group: str, topic: str) -> float:
    return metrics.CONSUMED.labels(group=group, topic=topic)._value.get()


async def test_every_group_consumes_again_after_a_broker_restart(client, settings: Settings, emulator, db,  # type: ignore[no-untyped-def]
                                                                 broker: EmbeddedBroker) -> None:
    # Stripe's changes come in by the Events API poller (the test API is in-process: no webhook reaches it).
    settings = settings.model_copy(update={"inbound_mode": "poll"})
    groups = {outbound_group(settings, "stripe"): OUTBOUND_TOPIC, inbound_group(settings): INBOUND_TOPIC}
    async with running_worker(settings), running_worker(settings):
        ids = [await _create(client, f"G{i}", f"g{i}@example.com") for i in range(5)]
        assert await wait_until(lambda: _converged(client, emulator, ids), timeout=60), \
            await _why_not(client, emulator, ids)
        broker.stop(hard=True)
        broker.start()  # same port, empty memory: groups, members, offsets and topics are gone
        await ensure_topics(broker.bootstrap, settings.kafka_topic_partitions)
        before = {g: _consumed(g, t) for g, t in groups.items()}
        ids += [await _create(client, f"H{i}", f"h{i}@example.com") for i in range(5)]
        # A change made in Stripe: its webhook goes through the inbound group.
        cus = emulator_call(emulator, "/_emulator/customers")
        cus = cus["data"] if isinstance(cus, dict) else cus
        target = next(c for c in cus if c["metadata"].get("internal_id") == str(ids[0]))
        stripe_edit(emulator, target["id"], "Renamed in Stripe")

        def all_groups_moved() -> bool:
            return all(_consumed(g, t) > before[g] for g, t in groups.items())

        assert await wait_until(all_groups_moved, timeout=90, step=0.5), \
            {g: (before[g], _consumed(g, t)) for g, t in groups.items()}

        async def renamed_here() -> bool:
            return (await client.get(f"/api/v1/customers/{ids[0]}")).json()["name"] == "Renamed in Stripe"

        assert await wait_until(renamed_here, timeout=90, step=0.5)
        assert await wait_until(lambda: _converged(client, emulator, ids), timeout=90, step=1), \
            await _why_not(client, emulator, ids)


def stripe_edit(base: str, customer_id: str, name: str) -> None:
    import urllib.parse
    import urllib.request

    from tests.conftest import STRIPE_KEY

    req = urllib.request.Request(f"{base}/v1/customers/{customer_id}", method="POST",
                                 data=urllib.parse.urlencode({"name": name}).encode(),
                                 headers={"Authorization": f"Bearer {STRIPE_KEY}",
                                          "Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(req, timeout=10) as r:
        r.read()
