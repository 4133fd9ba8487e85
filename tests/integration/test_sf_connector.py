# ruff: noqa: F811  (fixtures imported from tests.salesforce are used as parameters)
"""The Salesforce connector against the emulator: auth, upserts, batches, limits, polling, schema check."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import wait_until
from tests.salesforce import (  # noqa: F401
    SF_CLIENT_ID,
    SF_CLIENT_SECRET,
    SfEmulator,
    sf_emulator,
    sf_emulator_session,
    start_sf_emulator,
)
from twoway.connectors import registry
from twoway.connectors.base import ConnectorError, CreateItem, UpdateItem, WebhookRejected
from twoway.connectors.salesforce.connector import SalesforceConnector, SchemaMissing
from twoway.kit.embedded import free_port
from twoway.settings import Settings


def sf_settings(emu: SfEmulator, **extra: object) -> Settings:
    values: dict[str, object] = {"salesforce_login_url": emu.base, "salesforce_client_id": SF_CLIENT_ID,
                                 "salesforce_client_secret": SF_CLIENT_SECRET, "salesforce_ca_file": emu.ca_file,
                                 "salesforce_poll_settle_seconds": 0, "salesforce_poll_overlap_seconds": 5,
                                 "salesforce_poll_interval_seconds": 0}
    return Settings(**{**values, **extra})  # type: ignore[arg-type]


@pytest.fixture
async def connector(sf_emulator: SfEmulator):  # type: ignore[no-untyped-def]
    c = SalesforceConnector.from_settings(sf_settings(sf_emulator))
    yield c
    await c.close()


def test_registry_chooses_connectors() -> None:
    assert registry.enabled_systems(Settings(stripe_secret_key="sk_test_x")) == ["stripe"]
    both = Settings(stripe_secret_key="sk_test_x", salesforce_client_id="c", salesforce_client_secret="s")
    assert registry.enabled_systems(both) == ["stripe", "salesforce"]
    assert registry.enabled_systems(Settings(twoway_connectors="salesforce, stripe")) == ["salesforce", "stripe"]
    with pytest.raises(ValueError, match="hubspot"):
        registry.enabled_systems(Settings(twoway_connectors="stripe,hubspot"))


async def test_create_is_an_upsert_by_external_id(connector: SalesforceConnector, sf_emulator: SfEmulator) -> None:
    first = await connector.create("customer", 41, {"name": "Ada", "email": "ada@example.com"}, "k1")
    again = await connector.create("customer", 41, {"name": "Ada", "email": "ada@example.com"}, "k2")
    assert again.external_id == first.external_id and again.replayed and not first.replayed
    sf = sf_emulator.client()
    rows = sf.query("SELECT Id, Name, Email__c, Twoway_Id__c FROM Account")["records"]
    assert [(r["Name"], r["Email__c"], r["Twoway_Id__c"]) for r in rows] == [("Ada", "ada@example.com", "41")]
    found = await connector.find_by_internal_id("customer", 41)
    assert found is not None and found.external_id == first.external_id and found.internal_id == 41
    await connector.update("customer", first.external_id, {"name": "", "email": ""}, "k3")
    got = await connector.fetch("customer", first.external_id)
    assert got.fields == {"name": "", "email": ""}  # Name is required there: "(no name)" reads back as ""
    await connector.delete("customer", first.external_id, "k4")
    await connector.delete("customer", first.external_id, "k4")  # already gone: fine
    assert (await connector.fetch("customer", first.external_id)).deleted
    stats = sf_emulator.stats()  # every call of ours is marked; the one other call is the person's query
    assert stats["clients"] == {"twoway": stats["api_usage"] - 1, "(none)": 1}
    with pytest.raises(WebhookRejected):
        connector.verify_webhook(b"{}", {})


async def test_batches_go_200_a_call(connector: SalesforceConnector, sf_emulator: SfEmulator) -> None:
    items = [CreateItem(1000 + i, {"name": f"N{i}", "email": f"n{i}@example.com"}, f"k{i}") for i in range(450)]
    made = await connector.create_many("customer", items)
    assert all(not isinstance(r, ConnectorError) for r in made) and len({r.external_id for r in made}) == 450
    calls = sf_emulator.stats()["requests"]
    assert calls["PATCH composite/sobjects/Account/Twoway_Id__c"] == 3
    bad = [UpdateItem(made[0].external_id, {"name": "M"}, "u0"), UpdateItem(made[1].external_id, {"name": ""}, "u1"),
           UpdateItem("001000000000000AAA", {"name": "X"}, "u2"),
           UpdateItem(made[2].external_id, {"email": "not-an-email"}, "u3")]
    results = await connector.update_many("customer", bad)
    assert not isinstance(results[0], ConnectorError) and not isinstance(results[1], ConnectorError)
    assert isinstance(results[2], ConnectorError) and results[2].status == 404
    assert isinstance(results[3], ConnectorError) and not results[3].transient
    assert (await connector.fetch("customer", made[0].external_id)).fields["name"] == "M"


async def test_expired_session_gets_a_new_token(connector: SalesforceConnector, sf_emulator: SfEmulator) -> None:
    await connector.create("customer", 1, {"name": "A", "email": ""}, "k")
    sf_emulator.call("/_emulator/expire_tokens", {})
    assert (await connector.find_by_internal_id("customer", 1)) is not None


async def test_daily_limit_is_an_outage_not_a_record_failure(sf_emulator: SfEmulator) -> None:
    c = SalesforceConnector.from_settings(sf_settings(sf_emulator, salesforce_api_reserve_percent=0,
                                                      salesforce_limit_pause_seconds=0.5))
    try:
        await c.create("customer", 1, {"name": "A", "email": ""}, "k")
        used = sf_emulator.stats()["api_usage"]
        sf_emulator.call("/_emulator/limits", {"daily_api_requests": used})
        with pytest.raises(ConnectorError) as exc:
            await c.create("customer", 2, {"name": "B", "email": ""}, "k")
        assert exc.value.transient and exc.value.outage and exc.value.code == "REQUEST_LIMIT_EXCEEDED"
        with pytest.raises(ConnectorError) as paused:  # paused: no call goes out
            await c.fetch("customer", "001000000000000AAA")
        assert paused.value.outage and "GET sobjects/Account/{id}" not in sf_emulator.stats()["requests"]
        sf_emulator.call("/_emulator/limits", {"daily_api_requests": used + 100})

        async def resumed() -> bool:
            try:
                await c.create("customer", 2, {"name": "B", "email": ""}, "k")
                return True
            except ConnectorError:
                return False
        assert await wait_until(resumed, 10)
    finally:
        await c.close()


async def test_reserve_pauses_before_the_limit(sf_emulator: SfEmulator) -> None:
    c = SalesforceConnector.from_settings(sf_settings(sf_emulator, salesforce_api_reserve_percent=50))
    try:
        sf_emulator.call("/_emulator/limits", {"daily_api_requests": 10, "used": 3})
        await c.create("customer", 1, {"name": "A", "email": ""}, "k")  # describe + upsert: 5/10, the reserve
        with pytest.raises(ConnectorError) as exc:
            await c.create("customer", 2, {"name": "B", "email": ""}, "k")
        assert exc.value.outage and exc.value.retry_after and exc.value.retry_after > 0
        assert sf_emulator.stats()["api_usage"] == 5  # the paused call never went out
    finally:
        await c.close()


async def test_missing_fields_are_named(sf_emulator: SfEmulator) -> None:
    c = SalesforceConnector.from_settings(sf_settings(sf_emulator, salesforce_email_field="Mail__c",
                                                      salesforce_external_id_field="Legacy_Id__c"))
    try:
        with pytest.raises(SchemaMissing) as exc:
            await c.fetch("customer", "001000000000000AAA")
        assert "Account.Mail__c" in str(exc.value) and "Legacy_Id__c must be a unique External ID" in str(exc.value)
        assert exc.value.outage
    finally:
        await c.close()


async def test_poll_events_sees_changes_and_deletes_once(connector: SalesforceConnector,
                                                         sf_emulator: SfEmulator) -> None:
    events, cursor = await connector.poll_events(None)
    assert events == [] and cursor
    person = sf_emulator.client()
    made = person.Account.create({"Name": "Grace", "Email__c": "g@example.com"})["id"]
    person.Account.update(made, {"Name": "Grace H"})
    other = person.Account.create({"Name": "Temp"})["id"]
    person.Account.delete(other)
    seen: dict[str, object] = {}

    async def caught_up() -> bool:
        nonlocal cursor
        got, cursor = await connector.poll_events(cursor)
        seen.update({e.event_id: e for e in got})
        return any(e.external_id == other and e.is_delete for e in seen.values()) and any(
            e.external_id == made and e.record and e.record.fields["name"] == "Grace H" for e in seen.values())
    assert await wait_until(caught_up, 10, 0.3)
    again, _ = await connector.poll_events(cursor)
    assert {e.event_id for e in again} <= set(seen)  # the overlap re-reads; event ids dedup it
    snap = connector.snapshot("customer", next(e for e in seen.values() if e.external_id == made).payload)  # type: ignore[attr-defined]
    assert snap is not None and snap.external_id == made


async def test_jwt_bearer_flow(tmp_path: Path, workdir: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = tmp_path / "key.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    port = free_port()
    proc = start_sf_emulator(port, workdir / "sf-tls", "--jwt-public-key-file", str(private))
    emu = SfEmulator(f"https://127.0.0.1:{port}", str(workdir / "sf-tls" / "ca.pem"), workdir / "sf-tls")
    c = SalesforceConnector.from_settings(Settings(
        salesforce_login_url=emu.base, salesforce_client_id=SF_CLIENT_ID, salesforce_jwt_key_file=str(private),
        salesforce_username="integration@twoway.test", salesforce_ca_file=emu.ca_file))
    try:
        made = await c.create("customer", 5, {"name": "J", "email": ""}, "k")
        assert (await c.fetch("customer", made.external_id)).internal_id == 5
    finally:
        await c.close()
        proc.terminate()
        proc.wait(10)


async def test_polls_are_spaced_by_the_poll_interval(sf_emulator: SfEmulator) -> None:
    c = SalesforceConnector.from_settings(sf_settings(sf_emulator, salesforce_poll_interval_seconds=3600))
    try:
        _, cursor = await c.poll_events(None)
        await c.poll_events(cursor)
        used = sf_emulator.stats()["api_usage"]
        events, again = await c.poll_events(cursor)
        assert events == [] and again == cursor and sf_emulator.stats()["api_usage"] == used  # no call spent
    finally:
        await c.close()
