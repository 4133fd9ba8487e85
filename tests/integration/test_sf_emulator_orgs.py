# ruff: noqa: F811  (fixtures imported from tests.salesforce are used as parameters)
"""Many orgs on one Salesforce emulator, driven by simple-salesforce: the org is chosen by the OAuth client
and by the token, and each org has its own records, daily allowance and schema."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceExpiredSession,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

from tests.salesforce import (  # noqa: F401
    SF_VERSION,
    SfEmulator,
    sf_emulator,
    sf_emulator_session,
    start_sf_emulator,
)
from twoway.kit.embedded import free_port


def new_org(emu: SfEmulator, **body: Any) -> dict[str, Any]:
    org = emu.call("/_emulator/orgs", body)
    assert set(org) >= {"org_id", "login_url", "client_id", "client_secret", "person_token"}
    return dict(org)


def token(emu: SfEmulator, login_url: str, **form: str) -> requests.Response:
    return emu.session().post(login_url + "/services/oauth2/token", data=form, timeout=10)


def client_for(emu: SfEmulator, org: dict[str, Any]) -> Salesforce:
    """The integration user's client, by the org's client credentials (as the connector signs in)."""
    tok = token(emu, org["login_url"], grant_type="client_credentials", client_id=org["client_id"],
                client_secret=org["client_secret"])
    assert tok.status_code == 200, tok.text
    return session_client(emu, tok.json()["access_token"])


def session_client(emu: SfEmulator, access_token: str) -> Salesforce:
    return Salesforce(instance_url=emu.base, session_id=access_token, session=emu.session(), version=SF_VERSION)


def names(sf: Salesforce) -> list[str]:
    return sorted(r["Name"] for r in sf.query("SELECT Name FROM Account")["records"])


def test_two_orgs_do_not_see_each_others_accounts(sf_emulator: SfEmulator) -> None:
    a, b = new_org(sf_emulator), new_org(sf_emulator)
    assert a["org_id"] != b["org_id"] and a["client_id"] != b["client_id"]
    sf_a, sf_b, sf_default = client_for(sf_emulator, a), client_for(sf_emulator, b), sf_emulator.client()
    made_a = sf_a.Account.create({"Name": "Acme in A", "Twoway_Id__c": "same-id"})
    # The same External ID value in another org is another record (uniqueness is per org).
    made_b = sf_b.Account.create({"Name": "Acme in B", "Twoway_Id__c": "same-id"})
    assert made_a["id"] != made_b["id"]
    assert names(sf_a) == ["Acme in A"] and names(sf_b) == ["Acme in B"] and names(sf_default) == []
    assert sf_a.Account.get_by_custom_id("Twoway_Id__c", "same-id")["Name"] == "Acme in A"
    # A person in org B (the token handed out with the org) edits B's record; A's stays as it was.
    session_client(sf_emulator, b["person_token"]).Account.update(made_b["id"], {"Name": "Edited in B"})
    assert names(sf_b) == ["Edited in B"] and names(sf_a) == ["Acme in A"]
    listed = sf_emulator.call(f"/_emulator/orgs/{a['org_id']}/accounts")
    assert [r["Name"] for r in listed] == ["Acme in A"]
    assert sf_emulator.call("/_emulator/accounts") == []  # the first org's, as before


def test_a_token_of_org_a_cannot_read_org_b(sf_emulator: SfEmulator) -> None:
    a, b = new_org(sf_emulator), new_org(sf_emulator)
    sf_a, sf_b = client_for(sf_emulator, a), client_for(sf_emulator, b)
    secret_b = sf_b.Account.create({"Name": "Only B"})["id"]
    with pytest.raises(SalesforceResourceNotFound):
        sf_a.Account.get(secret_b)
    with pytest.raises(SalesforceResourceNotFound):
        sf_a.Account.update(secret_b, {"Name": "Taken over"})
    with pytest.raises(SalesforceResourceNotFound):
        sf_a.Account.delete(secret_b)
    assert sf_b.Account.get(secret_b)["Name"] == "Only B"
    # A's token dressed as B's (B's org id in front) is no session of B.
    forged = b["org_id"][:15] + "!" + sf_a.session_id.partition("!")[2]
    with pytest.raises(SalesforceExpiredSession):
        session_client(sf_emulator, forged).query("SELECT Id FROM Account")
    # A's client id with B's secret signs in nowhere.
    mixed = token(sf_emulator, a["login_url"], grant_type="client_credentials", client_id=a["client_id"],
                  client_secret=b["client_secret"])
    assert mixed.status_code == 400 and mixed.json()["error"] == "invalid_client"
    # A query locator opens only in the org that made it.
    locator = _locator(sf_b, 250)
    with pytest.raises(SalesforceMalformedRequest, match="INVALID_QUERY_LOCATOR"):
        sf_a.query_more(locator, identifier_is_url=True)
    assert sf_b.query_more(locator, identifier_is_url=True)["records"]


def _locator(sf: Salesforce, total: int) -> str:
    """A `nextRecordsUrl` of a query over `total` Accounts (pages of 200)."""
    have = sf.query("SELECT Id FROM Account")["totalSize"]
    for start in range(have, total, 200):
        batch = [{"attributes": {"type": "Account"}, "Name": f"bulk {i}"} for i in range(start, min(total, start + 200))]
        sf.restful("composite/sobjects", method="POST", json={"records": batch, "allOrNone": True})
    answer = sf.query("SELECT Id FROM Account", headers={"Sforce-Query-Options": "batchSize=200"})
    assert not answer["done"]
    return str(answer["nextRecordsUrl"])


def test_daily_allowance_is_per_org(sf_emulator: SfEmulator) -> None:
    a, b = new_org(sf_emulator, daily_api_requests=1000), new_org(sf_emulator, daily_api_requests=50)
    sf_a, sf_b = client_for(sf_emulator, a), client_for(sf_emulator, b)
    sf_a.query("SELECT Id FROM Account")
    sf_b.query("SELECT Id FROM Account")
    assert sf_a.api_usage["api-usage"].total == 1000 and sf_b.api_usage["api-usage"].total == 50
    assert sf_b.limits()["DailyApiRequests"] == {"Max": 50, "Remaining": 48}
    # Exhaust A alone: A is refused, B and the first org go on.
    exhausted = sf_emulator.call(f"/_emulator/orgs/{a['org_id']}/limits", {"used": 1000})
    assert exhausted == {"daily_api_requests": 1000, "used": 1000}
    with pytest.raises(SalesforceRefusedRequest, match="REQUEST_LIMIT_EXCEEDED"):
        sf_a.query("SELECT Id FROM Account")
    assert sf_b.query("SELECT Id FROM Account")["totalSize"] == 0
    assert sf_b.api_usage["api-usage"].used == 3
    assert sf_emulator.client().query("SELECT Id FROM Account")["totalSize"] == 0
    assert sf_emulator.call(f"/_emulator/orgs/{b['org_id']}/stats")["api_usage"] == 3
    # Raising A's allowance lets it in again.
    sf_emulator.call(f"/_emulator/orgs/{a['org_id']}/limits", {"daily_api_requests": 2000})
    assert sf_a.query("SELECT Id FROM Account")["totalSize"] == 0


def test_each_org_has_its_own_custom_fields(sf_emulator: SfEmulator) -> None:
    fields = [{"name": "Billing_Email__c", "type": "email"},
              {"name": "Ext_Ref__c", "external_id": True, "unique": True, "length": 40}]
    org = new_org(sf_emulator, custom_fields=fields)
    sf = client_for(sf_emulator, org)
    described = {f["name"]: f for f in sf.Account.describe()["fields"]}
    assert "Billing_Email__c" in described and described["Ext_Ref__c"]["externalId"]
    assert "Email__c" not in described and "Twoway_Id__c" not in described
    with pytest.raises(SalesforceMalformedRequest, match="INVALID_FIELD"):
        sf.Account.create({"Name": "Wrong field", "Email__c": "a@example.com"})
    made = sf.Account.upsert("Ext_Ref__c/r-1", {"Name": "Right", "Billing_Email__c": "a@example.com"})
    assert made == 201
    rows = sf.query("SELECT Name, Ext_Ref__c FROM Account WHERE Billing_Email__c = 'a@example.com'")["records"]
    assert [(r["Name"], r["Ext_Ref__c"]) for r in rows] == [("Right", "r-1")]
    # The first org keeps the fields it always had.
    assert "Email__c" in {f["name"] for f in sf_emulator.client().Account.describe()["fields"]}
    bad = sf_emulator.session().post(sf_emulator.base + "/_emulator/orgs", json={"custom_fields": [{"name": "x"}]},
                                     timeout=5)
    assert bad.status_code == 400


def test_jwt_bearer_picks_the_org_by_issuer(sf_emulator: SfEmulator) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    org, other = new_org(sf_emulator, jwt_public_key=pem), new_org(sf_emulator)
    grant = "urn:ietf:params:oauth:grant-type:jwt-bearer"

    def assertion(iss: str) -> str:
        claims = {"iss": iss, "sub": "jwt@org.test", "aud": org["login_url"], "exp": int(time.time()) + 180}
        return jwt.encode(claims, key, algorithm="RS256")

    ok = token(sf_emulator, org["login_url"], grant_type=grant, assertion=assertion(org["client_id"]))
    assert ok.status_code == 200, ok.text
    assert ok.json()["id"].split("/")[-2] == org["org_id"]
    sf = session_client(sf_emulator, ok.json()["access_token"])
    sf.Account.create({"Name": "By JWT"})
    assert names(sf) == ["By JWT"] and names(client_for(sf_emulator, other)) == []
    # The other org registered no certificate: the same key does not open it.
    refused = token(sf_emulator, org["login_url"], grant_type=grant, assertion=assertion(other["client_id"]))
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"


def test_reset_drops_created_orgs_and_unknown_org_is_404(sf_emulator: SfEmulator) -> None:
    org = new_org(sf_emulator)
    assert {o["org_id"] for o in sf_emulator.call("/_emulator/orgs")} >= {org["org_id"]}
    sf_emulator.call("/_emulator/reset", {})
    gone = token(sf_emulator, org["login_url"], grant_type="client_credentials", client_id=org["client_id"],
                 client_secret=org["client_secret"])
    assert gone.status_code == 400 and gone.json()["error"] == "invalid_client_id"
    missing = sf_emulator.session().get(f"{sf_emulator.base}/_emulator/orgs/{org['org_id']}/limits", timeout=5)
    assert missing.status_code == 404


def test_orgs_survive_a_restart(tmp_path: Path, workdir: Path) -> None:
    state, port = tmp_path / "sf.json", free_port()
    tls_dir = workdir / "sf-tls"
    emu = SfEmulator(f"https://127.0.0.1:{port}", str(tls_dir / "ca.pem"), tls_dir)
    proc = start_sf_emulator(port, tls_dir, "--state-file", str(state))
    try:
        org = new_org(emu, daily_api_requests=77, custom_fields=[{"name": "Ref__c", "external_id": True}])
        made = client_for(emu, org).Account.create({"Name": "Durable", "Ref__c": "d-1"})["id"]
    finally:
        proc.terminate()
        proc.wait(10)
    proc = start_sf_emulator(port, tls_dir, "--state-file", str(state))
    try:
        sf = client_for(emu, org)  # the same client id and secret sign in again
        assert sf.Account.get(made)["Ref__c"] == "d-1"
        assert sf.limits()["DailyApiRequests"]["Max"] == 77
        assert names(emu.client()) == []
    finally:
        proc.terminate()
        proc.wait(10)
