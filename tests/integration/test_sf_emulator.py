# ruff: noqa: F811  (fixtures imported from tests.salesforce are used as parameters)
"""The Salesforce emulator, driven by simple-salesforce over TLS: the surface the connector relies on."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceError,
    SalesforceExpiredSession,
    SalesforceMalformedRequest,
    SalesforceMoreThanOneRecord,
    SalesforceResourceNotFound,
)

from tests.salesforce import (  # noqa: F401
    SF_CLIENT_ID,
    SF_CLIENT_SECRET,
    SF_VERSION,
    SfEmulator,
    sf_emulator,
    sf_emulator_session,
    start_sf_emulator,
)
from twoway.kit.embedded import free_port


def token(emu: SfEmulator, **form: str) -> requests.Response:
    return emu.session().post(emu.base + "/services/oauth2/token", data=form, timeout=10)


def integration_client(emu: SfEmulator) -> Salesforce:
    tok = token(emu, grant_type="client_credentials", client_id=SF_CLIENT_ID, client_secret=SF_CLIENT_SECRET).json()
    return Salesforce(instance_url=tok["instance_url"], session_id=tok["access_token"], session=emu.session(),
                      version=SF_VERSION)


def account(**fields: Any) -> dict[str, Any]:
    return {"attributes": {"type": "Account"}, **fields}


def test_client_credentials_and_bad_secret(sf_emulator: SfEmulator) -> None:
    good = token(sf_emulator, grant_type="client_credentials", client_id=SF_CLIENT_ID, client_secret=SF_CLIENT_SECRET)
    assert good.status_code == 200
    body = good.json()
    assert body["token_type"] == "Bearer" and body["instance_url"] == sf_emulator.base
    bad = token(sf_emulator, grant_type="client_credentials", client_id=SF_CLIENT_ID, client_secret="nope")
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_client"
    assert token(sf_emulator, grant_type="password", username="a", password="b").status_code == 400


def test_jwt_bearer(tmp_path: Any, workdir: Any) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub = tmp_path / "pub.pem"
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    port = free_port()
    proc = start_sf_emulator(port, workdir / "sf-tls", "--jwt-public-key-file", str(pub))
    try:
        emu = SfEmulator(f"https://127.0.0.1:{port}", str(workdir / "sf-tls" / "ca.pem"), workdir / "sf-tls")

        def assertion(signing_key: Any, **claims: Any) -> str:
            base = {"iss": SF_CLIENT_ID, "sub": "jwt-user@twoway.test", "aud": "https://login.salesforce.com",
                    "exp": int(time.time()) + 180}
            return jwt.encode({**base, **claims}, signing_key, algorithm="RS256")

        grant = "urn:ietf:params:oauth:grant-type:jwt-bearer"
        ok = token(emu, grant_type=grant, assertion=assertion(key))
        assert ok.status_code == 200, ok.text
        sf = Salesforce(instance_url=emu.base, session_id=ok.json()["access_token"], session=emu.session(),
                        version=SF_VERSION)
        assert sf.Account.create({"Name": "Via JWT"})["success"]
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        assert token(emu, grant_type=grant, assertion=assertion(other)).json()["error"] == "invalid_grant"
        expired = assertion(key, exp=int(time.time()) - 60)
        assert token(emu, grant_type=grant, assertion=expired).json()["error"] == "invalid_grant"
        assert token(emu, grant_type=grant, assertion=assertion(key, iss="x")).json()["error"] == "invalid_client_id"
    finally:
        proc.terminate()
        proc.wait(10)


def test_crud_ids_and_system_fields(sf_emulator: SfEmulator) -> None:
    app, person = integration_client(sf_emulator), sf_emulator.client("ada@twoway.test")
    made = app.Account.create({"Name": "Ada", "Email__c": "ada@example.com"})
    ident = made["id"]
    assert made["success"] and len(ident) == 18 and ident.startswith("001")
    rec = app.Account.get(ident)
    assert rec["Name"] == "Ada" and rec["Email__c"] == "ada@example.com" and rec["IsDeleted"] is False
    assert rec["CreatedDate"].endswith("+0000") and rec["SystemModstamp"] >= rec["LastModifiedDate"]
    assert app.Account.get(ident[:15])["Id"] == ident  # 15-character ids work too
    assert person.Account.update(ident, {"Name": "Ada King"}) == 204
    changed = app.Account.get(ident)
    assert changed["Name"] == "Ada King" and changed["LastModifiedById"] != rec["LastModifiedById"]
    assert changed["SystemModstamp"] >= rec["SystemModstamp"]
    with pytest.raises(SalesforceMalformedRequest) as bad:
        app.Account.create({"Email__c": "x@example.com"})
    assert bad.value.content[0]["errorCode"] == "REQUIRED_FIELD_MISSING"
    with pytest.raises(SalesforceMalformedRequest) as unknown:
        app.Account.update(ident, {"Nope__c": "1"})
    assert unknown.value.content[0]["errorCode"] == "INVALID_FIELD"
    assert app.Account.delete(ident) == 204
    with pytest.raises(SalesforceResourceNotFound) as gone:
        app.Account.get(ident)
    assert gone.value.content[0]["errorCode"] == "ENTITY_IS_DELETED"


def test_upsert_by_external_id_201_200_300_and_unique(sf_emulator: SfEmulator) -> None:
    sf = integration_client(sf_emulator)
    first = sf.Account.upsert("Twoway_Id__c/42", {"Name": "Ada"}, raw_response=True)
    assert first.status_code == 201 and first.json()["created"] is True
    again = sf.Account.upsert("Twoway_Id__c/42", {"Name": "Ada 2"}, raw_response=True)
    assert again.status_code == 200 and again.json()["created"] is False
    assert again.json()["id"] == first.json()["id"]
    assert sf.query("SELECT Id FROM Account WHERE Twoway_Id__c = '42'")["totalSize"] == 1
    with pytest.raises(SalesforceMalformedRequest) as dup:
        sf.Account.create({"Name": "Other", "Twoway_Id__c": "42"})
    assert dup.value.content[0]["errorCode"] == "DUPLICATE_VALUE"
    sf.Account.create({"Name": "L1", "Legacy_Id__c": "L"})
    sf.Account.create({"Name": "L2", "Legacy_Id__c": "L"})
    with pytest.raises(SalesforceMoreThanOneRecord):
        sf.Account.upsert("Legacy_Id__c/L", {"Name": "which?"})


def test_query_paging_and_query_all_sees_the_recycle_bin(sf_emulator: SfEmulator) -> None:
    sf = integration_client(sf_emulator)
    for start in range(0, 250, 200):
        chunk = [account(Name=f"N{i:03d}", Twoway_Id__c=str(i)) for i in range(start, min(250, start + 200))]
        assert all(r["success"] for r in sf.restful("composite/sobjects", method="POST",
                                                    json={"allOrNone": True, "records": chunk}))
    first = sf.query("SELECT Id, Name FROM Account ORDER BY Name", headers={"Sforce-Query-Options": "batchSize=200"})
    assert first["totalSize"] == 250 and not first["done"] and len(first["records"]) == 200
    assert first["nextRecordsUrl"].startswith(f"/services/data/v{SF_VERSION}/query/")
    rest = sf.query_more(first["nextRecordsUrl"], identifier_is_url=True)
    assert rest["done"] and len(rest["records"]) == 50 and rest["records"][-1]["Name"] == "N249"
    assert len(list(sf.query_all_iter("SELECT Id FROM Account"))) == 250
    victim = first["records"][0]["Id"]
    sf.Account.delete(victim)
    assert sf.query(f"SELECT Id FROM Account WHERE Id = '{victim}'")["totalSize"] == 0
    seen = sf.query_all(f"SELECT Id, IsDeleted FROM Account WHERE Id = '{victim}'", include_deleted=True)
    assert seen["records"][0]["IsDeleted"] is True
    sub = sf.query("SELECT Name FROM Account WHERE (Twoway_Id__c IN ('1', '2', '3') OR Name = 'N010') "
                   "AND Name != 'N002' ORDER BY Name DESC LIMIT 3")
    assert [r["Name"] for r in sub["records"]] == ["N010", "N003", "N001"]


def test_soql_datetimes_and_errors(sf_emulator: SfEmulator) -> None:
    sf = integration_client(sf_emulator)
    sf.Account.create({"Name": "A"})
    past = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    future = (datetime.now(UTC) + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S.000+0000")
    q = f"SELECT Id, SystemModstamp FROM Account WHERE SystemModstamp >= {past} AND SystemModstamp < {future}"
    assert sf.query(q)["totalSize"] == 1
    assert sf.query(f"SELECT Id FROM Account WHERE SystemModstamp > {future}")["totalSize"] == 0
    for bad in ("SELECT FROM Account", "SELECT Id FROM Account WHERE SystemModstamp > '2024-01-01'",
                "SELECT Id FROM Account WHERE", "SELECT Id FROM Contact"):
        with pytest.raises(SalesforceMalformedRequest) as err:
            sf.query(bad)
        assert err.value.content[0]["errorCode"] in ("MALFORMED_QUERY", "INVALID_TYPE")


def test_updated_and_deleted_windows_and_hard_delete(sf_emulator: SfEmulator) -> None:
    sf = integration_client(sf_emulator)
    start = datetime.now(UTC) - timedelta(seconds=5)
    a = sf.Account.create({"Name": "A"})["id"]
    b = sf.Account.create({"Name": "B"})["id"]
    sf.Account.delete(b)
    end = datetime.now(UTC) + timedelta(seconds=5)
    assert sf.Account.updated(start, end)["ids"] == [a]
    gone = sf.Account.deleted(start, end)
    assert [d["id"] for d in gone["deletedRecords"]] == [b]
    sf_emulator.call("/_emulator/hard_delete", {"ids": [a, b]})
    assert sf.Account.deleted(start, end)["deletedRecords"] == []
    assert sf.query_all("SELECT Id FROM Account", include_deleted=True)["totalSize"] == 0
    with pytest.raises(SalesforceMalformedRequest):
        sf.Account.deleted(end, start)


def test_composite_create_update_upsert_delete_and_all_or_none(sf_emulator: SfEmulator) -> None:
    sf = integration_client(sf_emulator)
    before = sf_emulator.stats()["api_usage"]
    made = sf.restful("composite/sobjects", method="POST", json={"allOrNone": False, "records": [
        account(Name="C1"), account(Email__c="no-name@example.com"), account(Name="C3")]})
    assert [r["success"] for r in made] == [True, False, True]
    assert made[1]["errors"][0]["statusCode"] == "REQUIRED_FIELD_MISSING"
    assert sf_emulator.stats()["api_usage"] == before + 1  # one call, however many records
    ids = [made[0]["id"], made[2]["id"]]
    updated = sf.restful("composite/sobjects", method="PATCH", json={"allOrNone": False, "records": [
        account(id=ids[0], Name="C1b"), account(id=ids[1], Name="C3b")]})
    assert all(r["success"] for r in updated)
    rolled = sf.restful("composite/sobjects", method="PATCH", json={"allOrNone": True, "records": [
        account(id=ids[0], Name="never"), account(id=ids[1], Nope__c="x")]})
    assert rolled[0]["errors"][0]["statusCode"] == "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    assert sf.Account.get(ids[0])["Name"] == "C1b"
    upserted = sf.restful("composite/sobjects/Account/Twoway_Id__c", method="PATCH", json={
        "allOrNone": False, "records": [account(Name="U1", Twoway_Id__c="7"), account(Name="U2", Twoway_Id__c="8")]})
    assert [r["created"] for r in upserted] == [True, True]
    again = sf.restful("composite/sobjects/Account/Twoway_Id__c", method="PATCH", json={
        "allOrNone": False, "records": [account(Name="U1b", Twoway_Id__c="7")]})
    assert again[0]["created"] is False and again[0]["id"] == upserted[0]["id"]
    got = sf.restful("composite/sobjects/Account", params={"ids": ",".join(ids), "fields": "Id,Name"})
    assert [r["Name"] for r in got] == ["C1b", "C3b"]
    deleted = sf.restful("composite/sobjects", method="DELETE", params={"ids": ",".join(ids), "allOrNone": "false"})
    assert all(r["success"] for r in deleted)
    with pytest.raises(SalesforceMalformedRequest) as too_many:
        sf.restful("composite/sobjects", method="POST",
                   json={"records": [account(Name=str(i)) for i in range(201)]})
    assert too_many.value.content[0]["errorCode"] == "EXCEEDED_ID_LIMIT"


def test_limit_header_daily_limit_and_clock(sf_emulator: SfEmulator) -> None:
    sf = integration_client(sf_emulator)
    sf.limits()
    used = sf.api_usage["api-usage"].used
    sf.query("SELECT Id FROM Account")
    assert sf.api_usage["api-usage"].used == used + 1 and sf.api_usage["api-usage"].total == 15000
    sf_emulator.call("/_emulator/limits", {"daily_api_requests": used + 1})
    with pytest.raises(SalesforceError) as err:
        sf.query("SELECT Id FROM Account")
    assert err.value.status == 403 and err.value.content[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"
    # A day later the allowance is back (and the one-day tokens have not expired: ttl is 2 h, so get a new one).
    sf_emulator.call("/_emulator/clock", {"advance_seconds": 24 * 3600})
    with pytest.raises(SalesforceExpiredSession):
        sf.query("SELECT Id FROM Account")
    assert integration_client(sf_emulator).query("SELECT Id FROM Account")["totalSize"] == 0


def test_expired_token_is_invalid_session(sf_emulator: SfEmulator) -> None:
    sf = integration_client(sf_emulator)
    sf_emulator.call("/_emulator/expire_tokens", {})
    with pytest.raises(SalesforceExpiredSession) as err:
        sf.Account.create({"Name": "x"})
    assert err.value.content[0]["errorCode"] == "INVALID_SESSION_ID"


def test_faults_outage_and_call_options(sf_emulator: SfEmulator) -> None:
    sf = integration_client(sf_emulator)
    sf_emulator.call("/_emulator/faults", {"outage": True})
    with pytest.raises(SalesforceError) as err:
        sf.query("SELECT Id FROM Account", headers={"Sforce-Call-Options": "client=twoway"})
    assert err.value.status == 503 and err.value.content[0]["errorCode"] == "SERVER_UNAVAILABLE"
    sf_emulator.call("/_emulator/faults", {"outage": False})
    sf.query("SELECT Id FROM Account", headers={"Sforce-Call-Options": "client=twoway"})
    assert sf_emulator.stats()["clients"]["twoway"] == 2
    bad = sf_emulator.session().post(sf_emulator.base + "/_emulator/faults", json={"error_rate": 2}, timeout=5)
    assert bad.status_code == 400


def test_if_unmodified_since(sf_emulator: SfEmulator) -> None:
    sf = integration_client(sf_emulator)
    ident = sf.Account.create({"Name": "A"})["id"]
    stale = "Mon, 01 Jan 2001 00:00:00 GMT"
    with pytest.raises(SalesforceError) as err:
        sf.Account.update(ident, {"Name": "B"}, headers={"If-Unmodified-Since": stale})
    assert err.value.status == 412
    fresh = (datetime.now(UTC) + timedelta(minutes=1)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert sf.Account.update(ident, {"Name": "B"}, headers={"If-Unmodified-Since": fresh}) == 204


def test_page_shows_and_edits_accounts(sf_emulator: SfEmulator) -> None:
    s = sf_emulator.session()
    made = s.post(sf_emulator.base + "/_emulator/ui/accounts", data={"Name": "From the page",
                                                                      "Email__c": "p@example.com"}, timeout=5)
    assert made.status_code == 200 and "From the page" in made.text
    sf = integration_client(sf_emulator)
    rec = sf.query("SELECT Id, LastModifiedById FROM Account")["records"][0]
    s.post(f"{sf_emulator.base}/_emulator/ui/accounts/{rec['Id']}", data={"Name": "Edited"}, timeout=5)
    assert sf.Account.get(rec["Id"])["Name"] == "Edited"
    assert "&lt;b&gt;" in s.post(sf_emulator.base + "/_emulator/ui/accounts", data={"Name": "<b>"}, timeout=5).text
