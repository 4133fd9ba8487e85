"""Salesforce in the chaos run: its emulator as one more process, edits as a person, faults, and the checker.

Accounts are created, edited and deleted with simple-salesforce as another user than the connector's
(a sales person), alongside the API and Stripe edits; the emulator gets error rates, latency and short
outages (503 on every call). Converged means, on top of the Stripe checks: every live customer of ours
has exactly one live Account with `Twoway_Id__c` = our id, the same Name and Email__c, and its link
names that Account; a deleted customer has no live Account; every live Account carries the id of a live
customer (one made in Salesforce was imported and got our id written back); no two Accounts share an id.
"""

from __future__ import annotations

import asyncio
import collections
import json
import secrets
import ssl
import urllib.request
from typing import Any

import asyncpg
import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceError

from bench.cluster import Cluster
from twoway.kit.embedded import free_port, wait_for_port

CLIENT_ID = "twoway-chaos"
PERSON = "sales@twoway.chaos"
NO_FAULTS = {"error_rate": 0, "latency_ms": 0, "outage": False}
# A live row ahead of what was pushed to its Account (or a deleted row whose Account is still linked).
RECORDS_AHEAD_SQL = """SELECT count(*) FROM customers c LEFT JOIN links l
                       ON l.kind = 'customer' AND l.internal_id = c.id AND l.system = 'salesforce'
                       WHERE c.version > COALESCE(l.last_pushed_version, 0)
                       AND NOT (c.deleted_at IS NOT NULL AND l.id IS NULL)"""


class SalesforceCluster(Cluster):
    """The usual processes plus the Salesforce emulator (TLS, test CA) and the connector enabled."""

    def start_emulator(self) -> None:
        super().start_emulator()
        self.sf_port = free_port()
        tls_dir = self.root / "sf-tls"
        secret = secrets.token_urlsafe(24)
        # By environment, never on a command line; the emulator and our processes read the same one.
        self.env.update({"SALESFORCE_EMULATOR_CLIENT_SECRET": secret})
        self._spawn_module("salesforce", "twoway.emulators.salesforce", [
            "--port", str(self.sf_port), "--tls-dir", str(tls_dir), "--client-id", CLIENT_ID,
            "--daily-api-requests", "100000000"])
        wait_for_port(self.sf_port, 60, self.procs["salesforce"])
        self.sf_ca_file = str(tls_dir / "ca.pem")
        self.env.update({
            "TWOWAY_CONNECTORS": "stripe,salesforce", "SALESFORCE_LOGIN_URL": self.sf_url,
            "SALESFORCE_CLIENT_ID": CLIENT_ID, "SALESFORCE_CLIENT_SECRET": secret,
            "SALESFORCE_CA_FILE": self.sf_ca_file, "SALESFORCE_RATE_LIMIT_PER_SECOND": "500",
            "SALESFORCE_POLL_INTERVAL_SECONDS": "1", "SALESFORCE_POLL_SETTLE_SECONDS": "0.5",
            "SALESFORCE_POLL_OVERLAP_SECONDS": "15", "SALESFORCE_LIMIT_PAUSE_SECONDS": "2",
            "SALESFORCE_TIMEOUT_SECONDS": "10",
        })

    @property
    def sf_url(self) -> str:
        return f"https://127.0.0.1:{self.sf_port}"

    def sf_call(self, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.sf_url + path, data=data, method="POST" if data is not None else "GET",
                                     headers={"Content-Type": "application/json"})
        context = ssl.create_default_context(cafile=self.sf_ca_file)
        with urllib.request.urlopen(req, timeout=30, context=context) as r:
            raw = r.read()
        return json.loads(raw) if raw else {}

    def sf_accounts(self) -> list[dict[str, Any]]:
        return [a for a in self.sf_call("/_emulator/accounts") if not a.get("IsDeleted")]


class SalesforceChaos:
    """The Salesforce part of a chaos run, driven by `bench.chaos` (its dice and tally)."""

    name = "salesforce"

    def __init__(self, cluster: SalesforceCluster, rng: Any, tally: Any) -> None:
        self.cluster = cluster
        self.rng = rng
        self.tally = tally
        self.ids: list[str] = []
        # Account ids no edit may pick (a soak's latency probes).
        self.reserved: set[Any] = set()
        self.serial = 0
        self._sf: Salesforce | None = None

    def _client(self) -> Salesforce:
        if self._sf is None:
            tok = self.cluster.sf_call("/_emulator/token", {"username": PERSON, "ttl_seconds": 24 * 3600})
            session = requests.Session()
            session.verify = self.cluster.sf_ca_file
            session.trust_env = False  # REQUESTS_CA_BUNDLE would override `verify`
            self._sf = Salesforce(instance_url=tok["instance_url"], session_id=tok["access_token"],
                                  session=session, version="60.0")
        return self._sf

    def _account(self) -> Any:
        return self._client().Account  # simple-salesforce's attribute access is not typed per object

    # -- edits as a person -------------------------------------------------------------------------

    async def refresh(self) -> None:
        try:
            self.ids = [a["Id"] for a in await asyncio.to_thread(self.cluster.sf_accounts)
                        if a["Id"] not in self.reserved]
        except (OSError, ValueError):
            pass

    def _fields(self) -> dict[str, str]:
        self.serial += 1
        tag = f"f{self.serial}-{self.rng.randrange(10**6)}"
        fresh = {"Name": f"Name {tag}", "Email__c": f"{tag}@example.com"}
        which = self.rng.choice(("Name", "Email__c", "both"))
        return fresh if which == "both" else {which: fresh[which]}

    async def one_op(self) -> None:
        roll = self.rng.random()
        op = "create" if roll < 0.3 or not self.ids else "update" if roll < 0.87 else "delete"
        try:
            await getattr(self, f"_{op}")()
            self.tally.ops[f"salesforce.{op}"] += 1
        except (SalesforceError, requests.RequestException, OSError) as exc:
            self.tally.ops[f"salesforce.{op}.failed"] += 1
            self.tally.ops[f"error.{type(exc).__name__}"] += 1

    async def _create(self) -> None:
        self.serial += 1
        tag = f"f{self.serial}-{self.rng.randrange(10**6)}"
        made = await asyncio.to_thread(self._account().create, {"Name": f"Name {tag}",
                                                                        "Email__c": f"{tag}@example.com"})
        self.ids.append(made["id"])

    async def _update(self) -> None:
        target, changes = self.rng.choice(self.ids), self._fields()
        try:
            await asyncio.to_thread(self._account().update, target, changes)
        except SalesforceError as exc:
            if exc.status != 404:  # deleted meanwhile (by us or the connector): a legitimate race
                raise

    async def _delete(self) -> None:
        target = self.rng.choice(self.ids)
        try:
            await asyncio.to_thread(self._account().delete, target)
        except SalesforceError as exc:
            if exc.status != 404:
                raise
        if target in self.ids:
            self.ids.remove(target)

    # -- faults ------------------------------------------------------------------------------------

    async def fault(self, started: float, outage: bool = False) -> None:
        if outage or self.rng.random() < 0.25:
            down = self.rng.uniform(1.0, 4.0)
            await asyncio.to_thread(self.cluster.sf_call, "/_emulator/faults", {"outage": True})
            self.tally.fault("salesforce_outage", started, down_s=round(down, 2))
            try:
                await asyncio.sleep(down)
            finally:
                await asyncio.to_thread(self.cluster.sf_call, "/_emulator/faults", {"outage": False})
            return
        knobs = {"error_rate": self.rng.choice((0, 0.05, 0.15, 0.3)), "latency_ms": self.rng.choice((0, 20, 80))}
        await asyncio.to_thread(self.cluster.sf_call, "/_emulator/faults", knobs)
        self.tally.fault("salesforce_faults", started, **knobs)

    async def calm(self) -> None:
        await asyncio.to_thread(self.cluster.sf_call, "/_emulator/faults", NO_FAULTS)

    # -- convergence -------------------------------------------------------------------------------

    async def snapshot(self, conn: asyncpg.Connection) -> dict[str, Any]:
        links = {r["internal_id"]: r["external_id"] for r in await conn.fetch(
            "SELECT internal_id, external_id FROM links WHERE system = 'salesforce' AND kind = 'customer'")}
        ahead = int(await conn.fetchval(RECORDS_AHEAD_SQL))
        accounts = [{"id": a["Id"], "name": a.get("Name") or "", "email": a.get("Email__c") or "",
                     "internal_id": a.get("Twoway_Id__c")}
                    for a in await asyncio.to_thread(self.cluster.sf_accounts)]
        return {"links": sorted(links.items()), "accounts": sorted(accounts, key=lambda a: a["id"]),
                "backlog": {"salesforce_records_ahead": ahead}}

    @staticmethod
    def divergences(ours: list[dict[str, Any]], data: dict[str, Any]) -> list[dict[str, Any]]:
        return divergences(ours, data["accounts"], dict(data["links"]))


def divergences(ours: list[dict[str, Any]], accounts: list[dict[str, Any]],
                links: dict[int, str]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    by_internal: dict[str | None, list[dict[str, Any]]] = collections.defaultdict(list)
    for a in accounts:
        by_internal[a["internal_id"]].append(a)
    found += [{"type": "duplicate_accounts", "internal_id": k, "account_ids": [a["id"] for a in v]}
              for k, v in by_internal.items() if k is not None and len(v) > 1]
    live = {str(row["id"]) for row in ours if row["deleted_at"] is None}
    for row in ours:
        mine = by_internal.get(str(row["id"]), [])
        if row["deleted_at"] is not None:
            found += [{"type": "account_delete_not_propagated", "internal_id": row["id"], "account_id": a["id"]}
                      for a in mine]
            continue
        if not mine:
            found.append({"type": "live_row_without_account", "internal_id": row["id"]})
            continue
        account = mine[0]
        if links.get(row["id"]) != account["id"]:
            found.append({"type": "salesforce_link_mismatch", "internal_id": row["id"], "account_id": account["id"],
                          "linked": links.get(row["id"])})
        for name in ("name", "email"):
            if account[name] != (row[name] or ""):
                found.append({"type": "account_field_mismatch", "field": name, "internal_id": row["id"],
                              "account_id": account["id"], "ours": row[name], "theirs": account[name]})
    found += [{"type": "account_without_live_row", "account_id": a["id"], "internal_id": a["internal_id"]}
              for a in accounts if a["internal_id"] not in live]
    return found
