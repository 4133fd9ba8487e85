"""A short chaos run over real processes, and the convergence checker it relies on."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from bench import chaos_invoices, chaos_salesforce
from bench.chaos import KNOWN_BUGS, Snapshot, divergences

from tests.helpers import run_bench


def _snap(ours: list[dict], theirs: list[dict], links: list[tuple[int, str]]) -> Snapshot:
    return Snapshot(ours=ours, theirs=theirs, links=[{"internal_id": i, "external_id": x, "base": "{}"}
                                                     for i, x in links], backlog={}, dead=[])


def _row(rid: int, name: str = "A", email: str = "a@x.io", deleted: bool = False) -> dict:
    return {"id": rid, "name": name, "email": email, "deleted_at": "2024-01-01" if deleted else None}


def _obj(xid: str, internal_id: int | None, name: str = "A", email: str = "a@x.io") -> dict:
    return {"id": xid, "name": name, "email": email, "internal_id": None if internal_id is None else str(internal_id)}


def _types(snap: Snapshot) -> list[str]:
    return sorted(d["type"] for d in divergences(snap))


def test_checker_accepts_an_agreeing_pair() -> None:
    snap = _snap([_row(1), _row(2, deleted=True)], [_obj("cus_1", 1)], [(1, "cus_1"), (2, "cus_2")])
    assert divergences(snap) == []


@pytest.mark.parametrize(("snap", "expected"), [
    (_snap([_row(1, name="B")], [_obj("cus_1", 1)], [(1, "cus_1")]), ["field_mismatch"]),
    (_snap([_row(1)], [], []), ["live_row_without_link"]),
    (_snap([_row(1)], [], [(1, "cus_1")]), ["linked_stripe_customer_missing"]),
    (_snap([_row(1, deleted=True)], [_obj("cus_1", 1)], [(1, "cus_1")]),
     ["delete_not_propagated", "stripe_customer_without_live_row"]),
    (_snap([_row(1)], [_obj("cus_1", 1), _obj("cus_2", 1)], [(1, "cus_1")]),
     ["duplicate_stripe_customers", "stripe_customer_without_live_row"]),
    (_snap([_row(1)], [_obj("cus_1", None)], [(1, "cus_1")]), ["wrong_metadata_internal_id"]),
    (_snap([_row(1), _row(2)], [_obj("cus_1", 1)], [(1, "cus_1"), (2, "cus_1")]),
     ["duplicate_links", "wrong_metadata_internal_id"]),
])
def test_checker_reports_each_kind_of_divergence(snap: Snapshot, expected: list[str]) -> None:
    assert _types(snap) == expected


def _acct(aid: str, internal_id: int | None, name: str = "A", email: str = "a@x.io") -> dict:
    return {"id": aid, "name": name, "email": email, "internal_id": None if internal_id is None else str(internal_id)}


def _sf_types(ours: list[dict], accounts: list[dict], links: dict[int, str]) -> list[str]:
    return sorted(d["type"] for d in chaos_salesforce.divergences(ours, accounts, links))


def test_salesforce_checker_accepts_agreeing_accounts() -> None:
    assert _sf_types([_row(1), _row(2, deleted=True)], [_acct("001A", 1)], {1: "001A", 2: "001B"}) == []


@pytest.mark.parametrize(("ours", "accounts", "links", "expected"), [
    ([_row(1, email="b@x.io")], [_acct("001A", 1)], {1: "001A"}, ["account_field_mismatch"]),
    ([_row(1)], [], {}, ["live_row_without_account"]),
    ([_row(1)], [_acct("001A", 1)], {}, ["salesforce_link_mismatch"]),
    ([_row(1, deleted=True)], [_acct("001A", 1)], {1: "001A"},
     ["account_delete_not_propagated", "account_without_live_row"]),
    ([_row(1)], [_acct("001A", 1), _acct("001B", 1)], {1: "001A"}, ["duplicate_accounts"]),
    ([_row(1)], [_acct("001A", 1), _acct("001C", None)], {1: "001A"}, ["account_without_live_row"]),
])
def test_salesforce_checker_reports_each_kind_of_divergence(ours: list[dict], accounts: list[dict],
                                                            links: dict[int, str], expected: list[str]) -> None:
    assert _sf_types(ours, accounts, links) == expected


@pytest.mark.slow
@pytest.mark.timeout(250)
def test_short_chaos_run_converges(tmp_path: Path) -> None:
    out = tmp_path / "chaos.json"
    proc = run_bench(
        [sys.executable, "-m", "bench.chaos", "--duration", "35", "--seed", "7", "--rate", "20",
         "--converge-timeout", "75", "--out", str(out)],
        timeout=170,
    )
    assert out.exists(), proc.stderr[-3000:]
    report = json.loads(out.read_text())
    new = [d for d in report["divergences"] if d["type"] not in KNOWN_BUGS]
    assert new == [], new[:10]
    assert report["dead_letters"] == []
    assert report["backlog"]["outbox_unsent"] == report["backlog"]["inbox_unprocessed"] == 0, report["backlog"]
    # The run must actually have been chaotic, or convergence proves nothing. (Floors, not rates: at load
    # 13 on 2 cores a run without invoices made 170 operations in the same 35 s; with invoices, at load 2-3,
    # 170-240 on customers and as many on invoices.)
    def done(*kinds: str) -> int:
        return sum(n for op, n in report["operations"].items()
                   if op.split(".")[0] in kinds and not op.endswith(".failed"))
    assert done("ours", "stripe", "invoice") > 100, report["operations"]
    assert done("invoice") > 20, report["operations"]
    assert any(name.startswith("sigkill.") for name in report["faults"])
    assert report["converged"], report["backlog"]
    # Salesforce took part: edits as a person, an outage of its emulator, and its catalog counted.
    assert sum(n for op, n in report["operations"].items()
               if op.startswith("salesforce.") and not op.endswith(".failed")) > 50
    assert report["faults"].get("salesforce_outage", 0) >= 1
    assert report["counts"]["salesforce_live"] == report["counts"]["ours_live"]
    assert proc.returncode == 0, proc.stdout[-2000:]


def _inv(rid: int, status: str = "draft", deleted: bool = False) -> dict:
    return {"id": rid, "status": status, "requested_status": None, "total": 500, "deleted_at": "x" if deleted else None,
            "lines": [{"id": 10 * rid, "description": "a", "amount": 500}]}


def _sinv(xid: str, internal_id: int | None, status: str = "draft", customer: str = "cus_gone") -> dict:
    return {"id": xid, "status": status, "total": 500, "customer": customer,
            "metadata": {} if internal_id is None else {"internal_id": str(internal_id)},
            "lines": {"data": [{"description": "a", "amount": 500,
                                "metadata": {} if internal_id is None else {"internal_id": str(10 * internal_id)}}]}}


@pytest.mark.parametrize(("ours", "theirs", "links", "expected"), [
    ([_inv(1)], [_sinv("in_1", 1)], {1: "in_1"}, []),
    ([_inv(1, deleted=True)], [], {1: "in_1"}, []),
    ([_inv(1, status="open")], [_sinv("in_1", 1)], {1: "in_1"}, ["invoice_status_mismatch"]),
    # Deleted here, kept there (paid first): both sides must hold it.
    ([_inv(1, deleted=True)], [_sinv("in_1", 1, "paid")], {1: "in_1"},
     ["invoice_delete_not_propagated", "stripe_invoice_without_live_row"]),
    # No exception for an invoice whose customer is gone: it must have a row here too.
    ([], [_sinv("in_2", None)], {}, ["stripe_invoice_without_live_row"]),
])
def test_invoice_checker(ours: list[dict], theirs: list[dict], links: dict[int, str], expected: list[str]) -> None:
    assert sorted(d["type"] for d in chaos_invoices.divergences(ours, theirs, links)) == expected
