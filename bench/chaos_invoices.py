"""Invoices in the chaos run: random invoice changes on both sides, and the checker for them.

Ours through the API (drafts with lines, edits, commands, deletes), theirs through the SDK (invoices and
items, edits, finalize / pay / void / mark uncollectible, deletes). Converged means: every live invoice
of ours has exactly one Stripe invoice with our id, the same status, the same lines and total; a
deleted draft is gone there; every Stripe invoice has a live row here, no exception (one whose customer
Stripe deleted before we saw it hangs on a deleted customer row; a draft deleted here that Stripe
finalized or paid first is back here with Stripe's state).
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import httpx
import stripe

COMMANDS = ("finalize", "finalize", "pay", "void", "mark_uncollectible")
STRIPE_COMMANDS = {"finalize": "finalize_invoice_async", "pay": "pay_async", "void": "void_invoice_async",
                   "mark_uncollectible": "mark_uncollectible_async"}
# Answers that are a legitimate race or refusal in a chaos run (the other side moved first).
TOLERATED = {404, 409, 422}


class InvoiceSides:
    """Invoice operations for `bench.chaos.Sides` (its clients, dice and tally)."""

    def __init__(self, sides: Any) -> None:
        self.sides = sides
        self.our_ids: list[int] = []
        self.stripe_ids: list[str] = []

    @property
    def rng(self) -> Any:
        return self.sides.rng

    def _lines(self) -> list[dict[str, Any]]:
        return [{"description": f"item {self.rng.randrange(1000)}", "quantity": self.rng.randrange(1, 4),
                 "unit_amount": self.rng.randrange(1, 50) * 100} for _ in range(self.rng.randrange(1, 4))]

    async def refresh(self) -> None:
        try:
            ours = await list_invoices(self.sides.api)
            self.our_ids = [i["id"] for i in ours if i["deleted_at"] is None]
            theirs = await asyncio.to_thread(stripe_invoices, self.sides.cluster)
            self.stripe_ids = [i["id"] for i in theirs]
        except (httpx.HTTPError, OSError, ValueError):
            pass

    async def one_op(self) -> None:
        side = self.rng.choice(("ours", "stripe"))
        ids = self.our_ids if side == "ours" else self.stripe_ids
        roll = self.rng.random()
        op = "create" if roll < 0.3 or not ids else "edit" if roll < 0.6 else "command" if roll < 0.9 else "delete"
        action = getattr(self, f"_{side}_{op}")
        try:
            await action()
            self.sides.tally.ops[f"invoice.{side}.{op}"] += 1
        except (httpx.HTTPError, stripe.StripeError, OSError, IndexError) as exc:
            self.sides.tally.ops[f"invoice.{side}.{op}.failed"] += 1
            self.sides.tally.ops[f"error.{type(exc).__name__}"] += 1

    def _check(self, r: httpx.Response) -> None:
        if r.status_code not in TOLERATED:
            r.raise_for_status()

    async def _ours_create(self) -> None:
        customer = self.rng.choice(self.sides.our_ids)
        r = await self.sides.api.post("/api/v1/invoices", json={
            "customer_id": customer, "currency": "usd", "description": f"ours {self.rng.randrange(10**6)}",
            "collection_method": "send_invoice", "days_until_due": 30, "lines": self._lines()})
        self._check(r)
        if r.status_code == 201:
            self.our_ids.append(r.json()["id"])

    async def _ours_edit(self) -> None:
        body: dict[str, Any] = self.rng.choice(({"description": f"edit {self.rng.randrange(10**6)}"},
                                                {"lines": self._lines()}))
        self._check(await self.sides.api.patch(f"/api/v1/invoices/{self.rng.choice(self.our_ids)}", json=body))

    async def _ours_command(self) -> None:
        name = self.rng.choice(COMMANDS)
        self._check(await self.sides.api.post(f"/api/v1/invoices/{self.rng.choice(self.our_ids)}/{name}"))

    async def _ours_delete(self) -> None:
        self._check(await self.sides.api.delete(f"/api/v1/invoices/{self.rng.choice(self.our_ids)}"))

    async def _stripe_create(self) -> None:
        customer = self.rng.choice(self.sides.stripe_ids)
        invoices = self.sides.stripe.v1.invoices
        created = await invoices.create_async({
            "customer": customer, "collection_method": "send_invoice", "days_until_due": 10,
            "description": f"theirs {self.rng.randrange(10**6)}"})
        for line in self._lines():
            await self.sides.stripe.v1.invoice_items.create_async({
                "customer": customer, "invoice": created.id, "currency": "usd",
                "amount": line["quantity"] * line["unit_amount"], "description": line["description"]})
        self.stripe_ids.append(created.id)

    async def _stripe_edit(self) -> None:
        target = self.rng.choice(self.stripe_ids)
        try:
            if self.rng.random() < 0.5:
                await self.sides.stripe.v1.invoices.update_async(
                    target, {"description": f"theirs edit {self.rng.randrange(10**6)}"})
            else:
                invoice = await self.sides.stripe.v1.invoices.retrieve_async(target)
                await self.sides.stripe.v1.invoice_items.create_async({
                    "customer": invoice.customer, "invoice": target, "currency": invoice.currency,
                    "amount": self.rng.randrange(1, 50) * 100, "description": "added in stripe"})
        except stripe.InvalidRequestError as exc:
            if exc.http_status not in (400, 404):
                raise

    async def _stripe_command(self) -> None:
        name = self.rng.choice(COMMANDS)
        method = getattr(self.sides.stripe.v1.invoices, STRIPE_COMMANDS[name])
        params = {"paid_out_of_band": True} if name == "pay" else {}
        try:
            await method(self.rng.choice(self.stripe_ids), params)
        except stripe.InvalidRequestError as exc:
            if exc.http_status not in (400, 404):
                raise

    async def _stripe_delete(self) -> None:
        target = self.rng.choice(self.stripe_ids)
        try:
            await self.sides.stripe.v1.invoices.delete_async(target)
        except stripe.InvalidRequestError as exc:
            if exc.http_status not in (400, 404):
                raise


async def list_invoices(api: httpx.AsyncClient) -> list[dict[str, Any]]:
    return await list_pages(api, "/api/v1/invoices", 100)


async def list_pages(api: httpx.AsyncClient, path: str, limit: int) -> list[dict[str, Any]]:
    """Every row of one of our list endpoints, deleted ones included, page by page."""
    out: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": limit, "include_deleted": "true", **({"cursor": cursor} if cursor else {})}
        r = await api.get(path, params=params)
        r.raise_for_status()
        page = r.json()
        out.extend(page["data"])
        if not page["has_more"]:
            return out
        cursor = page["next_cursor"]


def stripe_invoices(cluster: Any) -> list[dict[str, Any]]:
    from bench.cluster import http_json

    return http_json(cluster.emulator_url + "/_emulator/invoices")  # type: ignore[no-any-return]


def _lines(lines: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return sorted((line.get("description") or "", int(line["amount"])) for line in lines)


def divergences(ours: list[dict[str, Any]], theirs: list[dict[str, Any]], links: dict[int, str]
                ) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    by_id = {i["id"]: i for i in theirs}
    by_internal = collections.defaultdict(list)
    for i in theirs:
        by_internal[(i.get("metadata") or {}).get("internal_id")].append(i["id"])
    found += [{"type": "duplicate_stripe_invoices", "internal_id": k, "external_ids": v}
              for k, v in by_internal.items() if k is not None and len(v) > 1]
    live_linked: set[str] = set()
    for row in ours:
        xid = links.get(row["id"])
        obj = by_id.get(xid) if xid else None
        if row["deleted_at"] is not None:
            if obj is not None:
                found.append({"type": "invoice_delete_not_propagated", "internal_id": row["id"], "external_id": xid})
            continue
        if obj is None:
            found.append({"type": "live_invoice_without_stripe_invoice", "internal_id": row["id"], "external_id": xid})
            continue
        live_linked.add(obj["id"])
        want = {"status": row["status"], "requested": row["requested_status"], "lines": _lines(row["lines"]),
                "total": row["total"], "id": str(row["id"])}
        got = {"status": obj["status"], "requested": None, "lines": _lines(obj["lines"]["data"]),
               "total": obj["total"], "id": (obj.get("metadata") or {}).get("internal_id")}
        for key in want:
            if want[key] != got[key]:
                found.append({"type": f"invoice_{key}_mismatch", "internal_id": row["id"], "external_id": obj["id"],
                              "ours": want[key], "theirs": got[key]})
        # Lines made in Stripe may carry no id of ours (matched by content); those that do name our lines, once.
        item_ids = [i for line in obj["lines"]["data"] if (i := (line.get("metadata") or {}).get("internal_id"))]
        if len(item_ids) != len(set(item_ids)) or not set(item_ids) <= {str(x["id"]) for x in row["lines"]}:
            found.append({"type": "invoice_item_ids_mismatch", "internal_id": row["id"], "external_id": obj["id"],
                          "ours": [x["id"] for x in row["lines"]], "theirs": item_ids})
    for xid, obj in by_id.items():
        if xid not in live_linked:
            found.append({"type": "stripe_invoice_without_live_row", "external_id": xid, "status": obj["status"]})
    return found
