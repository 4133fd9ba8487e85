"""Salesforce emulator pieces that need no server: ids, SOQL, the store's snapshot."""

from __future__ import annotations

import pytest

from twoway.emulators.salesforce import ids, records, schema, soql
from twoway.emulators.salesforce.errors import SfError
from twoway.emulators.salesforce.store import Store


def test_ids_checksum_matches_salesforce() -> None:
    # A documented example: 001A0000006Vm9r -> 001A0000006Vm9rIAC.
    assert ids.to18("001A0000006Vm9r") == "001A0000006Vm9rIAC"
    assert ids.to18("001A0000006Vm9rIAC") == "001A0000006Vm9rIAC"
    assert ids.to18("001A0000006Vm9rAAA") is None
    made = ids.make("001", "5g", 12345)
    assert len(made) == 18 and ids.to18(made[:15]) == made


def test_datetimes_round_trip() -> None:
    ms = schema.parse_ms("2024-05-28T21:10:08.123+0000")
    assert ms is not None and schema.render_ms(ms) == "2024-05-28T21:10:08.123+0000"
    assert schema.parse_ms("2024-05-28T23:10:08.123+02:00") == ms
    assert schema.parse_ms("2024-05-28T21:10:08Z") == ms - 123
    assert schema.parse_ms("nope") is None


def test_soql_parses_the_subset() -> None:
    store = Store()
    for i in range(5):
        records.create(store, {"Name": f"n{i}", "Twoway_Id__c": str(i) if i % 2 else None}, "005x")
    query = "select Id, name from account where Twoway_Id__c != null order by Name desc limit 1"
    rows = soql.parse(query, store.schema).run(list(store.records.values()))
    assert [r["Name"] for r in rows] == ["n3"]
    with pytest.raises(SfError):
        soql.parse("SELECT Id FROM Account WHERE Name = ", store.schema)
    with pytest.raises(SfError):
        soql.parse("SELECT Id FROM Account LIMIT 1 garbage", store.schema)


def test_store_snapshot_restores() -> None:
    store = Store()
    made = records.create(store, {"Name": "A", "Twoway_Id__c": "9"}, "005x")
    records.delete(store, made["Id"], "005x")
    again = Store()
    again.restore(store.snapshot())
    assert again.records == store.records and again.delete_log == store.delete_log
    assert again.holders("Twoway_Id__c", "9") == []
