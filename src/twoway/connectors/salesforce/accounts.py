"""customers <-> Salesforce Accounts (object and field names from settings: mapping.py).

Creates are upserts by our External ID (a retried create lands on the same Account); an Account that holds
our id but another record's uid (the id was issued again after a restore) is never written: that create is
answered `Taken` (one query per batch looks first). Batches go through
`composite/sobjects`, 200 records a call. The `customer` row of the Salesforce connector's handler table;
the connector holds the client (auth, limits, the daily allowance) and polls for changes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from simple_salesforce import Salesforce

from twoway.connectors.base import (
    ConnectorError,
    CreateItem,
    ExternalRecord,
    InboundEvent,
    NotFound,
    Taken,
    UpdateItem,
    best_match,
    parse_uid,
)
from twoway.connectors.salesforce.batching import Filler
from twoway.connectors.salesforce.client import SalesforceClient
from twoway.connectors.salesforce.mapping import UID_LENGTH, Mapping_

KIND = "customer"
BATCH = 200  # composite/sobjects takes up to 200 records a call


class Accounts:
    kind = KIND

    def __init__(self, client: SalesforceClient, mapping: Mapping_, *, batch_linger_seconds: float = 0.2) -> None:
        self.client = client
        self.map = mapping
        self.sobject = mapping.sobject
        # The types of the events a poll makes of this object's changes.
        self.event_types = (f"{self.sobject.lower()}.updated", f"{self.sobject.lower()}.deleted")
        upsert_path = f"composite/sobjects/{mapping.sobject}/{mapping.external_id_field}"
        self._upserts = Filler(lambda rs: client.composite("upsert_many", "PATCH", upsert_path, rs),
                               size=BATCH, linger=batch_linger_seconds)
        self._updates = Filler(lambda rs: client.composite("update_many", "PATCH", "composite/sobjects", rs),
                               size=BATCH, linger=batch_linger_seconds)

    def schema_problems(self, described: Mapping[str, Any]) -> list[str]:
        """What the object's description lacks for this mapping (fields, a unique External ID)."""
        have = {f["name"].lower(): f for f in described.get("fields", [])}
        wanted = (self.map.name_field, self.map.email_field, self.map.external_id_field,
                  *([self.map.uid_field] if self.map.uid_field else []))
        missing = [f for f in wanted if f.lower() not in have]
        ext = have.get(self.map.external_id_field.lower())
        problems = [f"missing field {self.sobject}.{f}" for f in missing]
        if ext is not None and not (ext.get("externalId") and ext.get("unique")):
            problems.append(f"{self.sobject}.{self.map.external_id_field} must be a unique External ID field")
        uid = have.get(self.map.uid_field.lower()) if self.map.uid_field else None
        if uid is not None and int(uid.get("length") or UID_LENGTH) < UID_LENGTH:
            problems.append(f"{self.sobject}.{self.map.uid_field} must hold {UID_LENGTH} characters")
        return problems

    # -- reads ---------------------------------------------------------------------------------

    def record(self, obj: Mapping[str, Any], deleted: bool = False) -> ExternalRecord:
        gone = deleted or bool(obj.get("IsDeleted"))
        return ExternalRecord(external_id=str(obj["Id"]), fields={} if gone else self.map.from_sf(obj),
                              internal_id=self.map.internal_id(obj), deleted=gone, uid=self.map.uid(obj))

    def select(self) -> str:
        """The fields a read asks for, as a SOQL select list."""
        return ", ".join(self.map.fields())

    async def fetch(self, external_id: str) -> ExternalRecord:
        fields = ",".join(self.map.fields())
        try:
            raw = await self.client.call("retrieve", lambda sf: self._api(sf).get(
                external_id, params={"fields": fields}))
        except NotFound:
            return ExternalRecord(external_id, {}, deleted=True)
        return self.record(raw)

    async def find_by_internal_id(self, internal_id: int, uid: str | None = None) -> ExternalRecord | None:
        where = f"{self.map.external_id_field} = '{int(internal_id)}'"
        if uid and self.map.uid_field:
            where += f" OR {self.map.uid_field} = '{parse_uid(uid)}'"  # parsed: only a uuid goes into SOQL
        q = f"SELECT {self.select()} FROM {self.sobject} WHERE {where} ORDER BY CreatedDate LIMIT 10"
        page = await self.client.call("query", lambda sf: sf.query(q))
        return best_match(map(self.record, page["records"]), internal_id, uid)

    async def _taken(self, items: Sequence[CreateItem]) -> dict[int, ExternalRecord]:
        """Accounts that hold the id of a create but not its uid: another record's (ids go back with a database
        restore), which an upsert by that id would overwrite. One query for the batch."""
        ids = sorted({int(i.internal_id) for i in items if i.uid})
        if not ids or not self.map.uid_field:
            return {}
        listed = ", ".join(f"'{i}'" for i in ids)
        q = f"SELECT {self.select()} FROM {self.sobject} WHERE {self.map.external_id_field} IN ({listed})"
        page = await self.client.call("query", lambda sf: sf.query(q))
        uids = {int(i.internal_id): i.uid for i in items}
        return {found.internal_id: found for found in map(self.record, page["records"])
                if found.internal_id is not None and found.uid != uids.get(found.internal_id)}

    async def list_all(self, page_size: int = 100) -> AsyncIterator[ExternalRecord]:
        q = f"SELECT {self.select()} FROM {self.sobject} ORDER BY Id"
        page = await self.client.call("query", lambda sf: sf.query(q))
        async for raw in self.client.query_all_pages("query", page):
            yield self.record(raw)

    # -- writes --------------------------------------------------------------------------------

    async def create(self, internal_id: int, fields: Mapping[str, str], idempotency_key: str,
                     uid: str | None = None) -> ExternalRecord:
        """An upsert by our External ID: a create retried after a crash updates the Account it made."""
        taken = await self._taken([CreateItem(internal_id, fields, idempotency_key, uid)])
        if taken:
            raise _taken(taken[int(internal_id)])
        path = f"{self.map.external_id_field}/{int(internal_id)}"
        body = {**self.to_system(fields), **self.map.identity(internal_id, uid)}
        body.pop(self.map.external_id_field)
        answer = await self.client.call("upsert", lambda sf: self._api(sf).upsert(
            path, body, raw_response=True).json())
        return ExternalRecord(str(answer["id"]), self._normal(fields), internal_id=internal_id,
                              replayed=answer.get("created") is False, uid=uid)

    async def update(self, external_id: str, changes: Mapping[str, str], idempotency_key: str) -> ExternalRecord:
        body = self.to_system(changes)
        await self.client.call("update", lambda sf: self._api(sf).update(external_id, body))
        return ExternalRecord(external_id, self._normal(changes))

    async def set_internal_id(self, external_id: str, internal_id: int, idempotency_key: str,
                              uid: str | None = None) -> ExternalRecord:
        body = self.map.identity(internal_id, uid)
        await self.client.call("update", lambda sf: self._api(sf).update(external_id, body))
        return await self.fetch(external_id)

    async def delete(self, external_id: str, idempotency_key: str) -> None:
        try:
            await self.client.call("delete", lambda sf: self._api(sf).delete(external_id))
        except NotFound:
            return  # already gone (or in the recycle bin): the goal state holds

    async def create_many(self, items: Sequence[CreateItem]) -> list[ExternalRecord | ConnectorError]:
        """Upserts by External ID through composite/sobjects, 200 a call, allOrNone=false."""
        taken = await self._taken(items)
        go = [i for i in items if int(i.internal_id) not in taken]
        records = [{"attributes": {"type": self.sobject}, **self.to_system(i.fields),
                    **self.map.identity(i.internal_id, i.uid)} for i in go]
        answers = dict(zip((id(i) for i in go), await self._upserts.submit(records) if go else [], strict=True))
        out: list[ExternalRecord | ConnectorError] = []
        for i in items:
            r = answers.get(id(i))
            out.append(_taken(taken[int(i.internal_id)]) if r is None else r if isinstance(r, ConnectorError) else
                       ExternalRecord(str(r["id"]), self._normal(i.fields), internal_id=i.internal_id,
                                      replayed=r.get("created") is False, uid=i.uid))
        return out

    async def update_many(self, items: Sequence[UpdateItem]) -> list[ExternalRecord | ConnectorError]:
        records = [{"attributes": {"type": self.sobject}, "id": i.external_id, **self.to_system(i.changes)}
                   for i in items]
        results = await self._updates.submit(records)
        return [r if isinstance(r, ConnectorError) else ExternalRecord(i.external_id, self._normal(i.changes))
                for i, r in zip(items, results, strict=True)]

    def to_system(self, fields: Mapping[str, str]) -> dict[str, Any]:
        return dict(self.map.to_sf(fields))

    def _normal(self, fields: Mapping[str, str]) -> dict[str, str]:
        """What Salesforce holds after our write, in our terms (it is `base` for the next diff)."""
        return self.map.from_sf(self.map.to_sf(fields)) if fields else {}

    def _api(self, sf: Salesforce) -> Any:
        return getattr(sf, self.sobject)

    # -- events --------------------------------------------------------------------------------

    def event(self, payload: Mapping[str, Any]) -> InboundEvent | None:
        """A polled change ({record, deleted, stamp}: the connector's poll makes them) as an event; events are
        (id, SystemModstamp), so a change the poll's overlap reads again dedups in the inbox."""
        raw = payload.get("record")
        if not isinstance(raw, Mapping) or not isinstance(raw.get("Id"), str):
            return None
        deleted = bool(payload.get("deleted"))
        ident, stamp, change = str(raw["Id"]), str(payload.get("stamp")), "deleted" if deleted else "updated"
        return InboundEvent(event_id=f"{ident}:{change}:{stamp}", type=f"{self.sobject.lower()}.{change}", kind=KIND,
                            external_id=ident, created=_parse_sf_time(stamp), record=self.record(raw, deleted),
                            payload=dict(payload))


def _taken(current: ExternalRecord) -> Taken:
    return Taken(f"Account {current.external_id} holds our id with another record's uid", current=current)


def _parse_sf_time(text: str) -> datetime | None:
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z")
    except ValueError:
        return None
