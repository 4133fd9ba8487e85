"""Reconcile: compare both catalogs in full and send every difference back through the normal sync path.

Memory is bounded by the batch size, not the catalog. The external side is streamed page by page and
our rows are looked up per batch with one query; the external ids seen go into a temporary table on
the scan's own connection, so links whose external object vanished are found by SQL instead of by a
set held in Python. Only the drift itself (and the ids of lost links) is kept.

Repairs are hints, never side doors: an outbound message for records our side must push, an inbound
message for records whose external state must be re-read and merged. The handlers decide what to do.
"""

from __future__ import annotations

import contextlib
import resource
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from twoway.connectors.base import Connector, ExternalRecord
from twoway.customers.models import Customer
from twoway.kit.db import make_sessionmaker, unit_of_work
from twoway.kit.outbox import enqueue_inbound, enqueue_outbound

KIND = "customer"
OUTBOUND, INBOUND, MANUAL = "outbound", "inbound", "manual"

# What each problem means, for people. `{system}` is the external system's name.
PROBLEMS = {
    "missing_external": "Missing in {system}",
    "missing_internal": "Missing here",
    "lost_link": "Link lost",
    "claims_other": "Claims another record",
    "drifted": "Drifted",
    "deleted_internal": "Deleted here, live in {system}",
    "missed_delete": "Deleted in {system}, live here",
    "exists_after_delete": "Live in {system} after a delete",
    "dangling_link": "Link to a missing record",
}

OnProgress = Callable[[str, int], None]

CREATE_SEEN = text("CREATE TEMP TABLE IF NOT EXISTS reconcile_seen (external_id text PRIMARY KEY)")
INSERT_SEEN = text("INSERT INTO reconcile_seen SELECT unnest(CAST(:ids AS text[])) ON CONFLICT DO NOTHING")
DROP_SEEN = text("DROP TABLE IF EXISTS reconcile_seen")
LINKED_BY_EXTERNAL = text("""
    SELECT l.external_id, l.internal_id, l.base, c.id AS row_id, c.name, c.email,
           c.deleted_at IS NOT NULL AS deleted
    FROM links l LEFT JOIN customers c ON c.id = l.internal_id
    WHERE l.kind = :kind AND l.system = :system AND l.external_id = ANY(CAST(:ids AS text[]))
""")
CLAIMED_ROWS = text("""
    SELECT c.id, l.external_id FROM customers c
    LEFT JOIN links l ON l.kind = :kind AND l.system = :system AND l.internal_id = c.id
    WHERE c.id = ANY(CAST(:ids AS bigint[]))
""")
OUR_PAGE = text("""
    SELECT c.id, c.name, c.email, c.deleted_at IS NOT NULL AS deleted, l.external_id, l.base,
           s.external_id IS NOT NULL AS seen
    FROM customers c
    LEFT JOIN links l ON l.kind = :kind AND l.system = :system AND l.internal_id = c.id
    LEFT JOIN reconcile_seen s ON s.external_id = l.external_id
    WHERE c.id > :after ORDER BY c.id LIMIT :limit
""")
DANGLING_LINKS = text("""
    SELECT l.id, l.internal_id, l.external_id, l.base, s.external_id IS NOT NULL AS seen
    FROM links l
    LEFT JOIN customers c ON c.id = l.internal_id
    LEFT JOIN reconcile_seen s ON s.external_id = l.external_id
    WHERE l.kind = :kind AND l.system = :system AND c.id IS NULL AND l.id > :after
    ORDER BY l.id LIMIT :limit
""")
COUNT_OURS = text("SELECT count(*) FROM customers")


@dataclass(frozen=True)
class Drift:
    """One record on which the two catalogs disagree, and the message that will repair it."""

    problem: str
    internal_id: int | None
    external_id: str | None
    repair: str
    # field -> {"base": ..., "ours": ..., "theirs": ...}, only for fields that differ
    fields: dict[str, dict[str, str]] = field(default_factory=dict)
    note: str = ""


@dataclass
class Report:
    system: str
    dry_run: bool
    drifts: list[Drift] = field(default_factory=list)
    scanned_external: int = 0
    scanned_internal: int = 0
    enqueued: dict[str, int] = field(default_factory=lambda: {OUTBOUND: 0, INBOUND: 0})
    seconds: float = 0.0
    peak_rss_mb: float = 0.0

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for drift in self.drifts:
            out[drift.problem] = out.get(drift.problem, 0) + 1
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"system": self.system, "dry_run": self.dry_run, "scanned_external": self.scanned_external,
                "scanned_internal": self.scanned_internal, "counts": self.counts(), "enqueued": self.enqueued,
                "seconds": round(self.seconds, 3), "peak_rss_mb": round(self.peak_rss_mb, 1),
                "drifts": [asdict(d) for d in self.drifts]}


@dataclass(frozen=True)
class _Linked:
    """A link found by external id, with its internal row when it still exists."""

    internal_id: int
    base: Mapping[str, Any]
    row_id: int | None
    ours: dict[str, str]
    deleted: bool


# -- comparison (pure) --------------------------------------------------------------------------


def field_diff(base: Mapping[str, Any], ours: Mapping[str, str], theirs: Mapping[str, str] | None
               ) -> dict[str, dict[str, str]]:
    """The fields on which either side left `base`, with all three values."""
    names = set(ours) | set(theirs or {})
    out: dict[str, dict[str, str]] = {}
    for name in sorted(names):
        was = str(base.get(name, ""))
        values = {"base": was, "ours": ours.get(name, "")}
        if theirs is not None:
            values["theirs"] = theirs.get(name, "")
        if any(v != was for k, v in values.items() if k != "base"):
            out[name] = values
    return out


def compare_pair(internal_id: int, external_id: str, base: Mapping[str, Any], ours: dict[str, str],
                 ours_deleted: bool, theirs: ExternalRecord) -> list[Drift]:
    """A linked pair where both sides exist (theirs may be deleted): which side must move, if any."""
    if theirs.deleted:
        if ours_deleted or base.get("deleted"):
            return []  # both gone, or the delete is already agreed
        return [Drift("missed_delete", internal_id, external_id, INBOUND)]
    if base.get("deleted"):
        # Stripe still lists what both sides agreed was deleted: a live row can merge again, a deleted one cannot.
        return [Drift("exists_after_delete", internal_id, external_id, MANUAL if ours_deleted else INBOUND)]
    if ours_deleted:
        return [Drift("deleted_internal", internal_id, external_id, OUTBOUND)]
    diff = field_diff(base, ours, theirs.fields)
    if not diff:
        return []
    theirs_moved = any(v["theirs"] != v["base"] for v in diff.values())
    # The inbound handler merges both sides (and pushes ours after), so it is the repair whenever theirs moved:
    # pushing first would overwrite a field both sides changed instead of resolving the conflict.
    return [Drift("drifted", internal_id, external_id, INBOUND if theirs_moved else OUTBOUND, diff)]


def compare_external(theirs: ExternalRecord, linked: _Linked | None,
                     claimed: tuple[int, str | None] | None) -> list[Drift]:
    """One external record against our side. `claimed` is (row id, its external id) for metadata.internal_id."""
    if linked is None:
        return [_unlinked(theirs, claimed)]
    if linked.row_id is None:
        return []  # our row is gone: the dangling-link scan reports it once
    drifts: list[Drift] = []
    if theirs.internal_id is not None and theirs.internal_id != linked.internal_id:
        drifts.append(Drift("claims_other", linked.internal_id, theirs.external_id, MANUAL,
                            note=f"metadata.internal_id={theirs.internal_id}; the link wins"))
    drifts += compare_pair(linked.internal_id, theirs.external_id, linked.base, linked.ours, linked.deleted, theirs)
    return drifts


def _unlinked(theirs: ExternalRecord, claimed: tuple[int, str | None] | None) -> Drift:
    fields = {k: {"theirs": v} for k, v in sorted(theirs.fields.items())}
    if claimed is None:
        return Drift("missing_internal", None, theirs.external_id, INBOUND, fields)
    row_id, other = claimed
    if other is None:
        return Drift("lost_link", row_id, theirs.external_id, INBOUND, fields)
    # The inbound handler keeps the existing link and imports this one as its own record.
    return Drift("claims_other", row_id, theirs.external_id, INBOUND, fields,
                 note=f"metadata.internal_id={row_id}, which is linked to {other}")


# -- the scan ---------------------------------------------------------------------------------------


class Reconciler:
    def __init__(self, engine: AsyncEngine, connector: Connector, *, dry_run: bool,
                 progress: OnProgress | None = None, batch_size: int = 500) -> None:
        self.engine = engine
        self.sessions = make_sessionmaker(engine)
        self.connector = connector
        self.system = connector.system
        self.batch_size = batch_size
        self.progress = progress or (lambda _phase, _n: None)
        self.report = Report(system=self.system, dry_run=dry_run)
        self._lost_links: set[int] = set()  # rows a Stripe customer will re-adopt: never create them twice

    @property
    def params(self) -> dict[str, Any]:
        return {"kind": KIND, "system": self.system}

    async def run(self) -> Report:
        started = time.monotonic()
        async with self.engine.connect() as conn:  # one connection: the temp table lives on it
            await conn.execute(CREATE_SEEN)
            await conn.commit()
            try:
                await self._scan_external(conn)
                await self._scan_internal(conn)
                await self._scan_dangling_links(conn)
            finally:
                await conn.execute(DROP_SEEN)
                await conn.commit()
        self.report.seconds = time.monotonic() - started
        self.report.peak_rss_mb = peak_rss_mb()
        return self.report

    async def count_internal(self) -> int:
        async with self.engine.connect() as conn:
            return int((await conn.execute(COUNT_OURS)).scalar() or 0)

    # external side

    async def _scan_external(self, conn: AsyncConnection) -> None:
        batch: list[ExternalRecord] = []
        async for record in self.connector.list_all(KIND):
            batch.append(record)
            if len(batch) >= self.batch_size:
                await self._check_external(conn, batch)
                batch = []
        if batch:
            await self._check_external(conn, batch)

    async def _check_external(self, conn: AsyncConnection, records: list[ExternalRecord]) -> None:
        ids = [r.external_id for r in records]
        await conn.execute(INSERT_SEEN, {"ids": ids})
        linked = {r.external_id: _linked(r) for r in await conn.execute(LINKED_BY_EXTERNAL, {**self.params,
                                                                                          "ids": ids})}
        claims = [r.internal_id for r in records if r.external_id not in linked and r.internal_id is not None]
        claimed: dict[int, tuple[int, str | None]] = {}
        if claims:
            rows = await conn.execute(CLAIMED_ROWS, {**self.params, "ids": claims})
            claimed = {r.id: (r.id, r.external_id) for r in rows}
        await conn.commit()
        drifts: list[Drift] = []
        for record in records:
            claim = claimed.get(record.internal_id) if record.internal_id is not None else None
            drifts += compare_external(record, linked.get(record.external_id), claim)
        self._lost_links.update(d.internal_id for d in drifts if d.problem == "lost_link" and d.internal_id)
        await self._record(drifts)
        self.report.scanned_external += len(records)
        self.progress("external", len(records))

    # our side: rows without links, and links whose external object was not listed

    async def _scan_internal(self, conn: AsyncConnection) -> None:
        after = 0
        while True:
            rows = (await conn.execute(OUR_PAGE, {**self.params, "after": after, "limit": self.batch_size})).all()
            await conn.commit()
            if not rows:
                return
            drifts: list[Drift] = []
            for row in rows:
                drifts += await self._check_internal(row)
            await self._record(drifts)
            after = rows[-1].id
            self.report.scanned_internal += len(rows)
            self.progress("internal", len(rows))

    async def _check_internal(self, row: Any) -> list[Drift]:
        if row.seen:
            return []  # compared during the external scan
        if row.external_id is None:
            if row.deleted or row.id in self._lost_links:
                return []
            return [Drift("missing_external", row.id, None, OUTBOUND)]
        if (row.base or {}).get("deleted"):
            return []  # agreed deleted, and the external side no longer lists it
        # Not listed: gone, or created after the listing passed it. Only a read can tell, and these are few.
        theirs = await self.connector.fetch(KIND, row.external_id)
        return compare_pair(row.id, row.external_id, row.base or {}, _fields(row), row.deleted, theirs)

    async def _scan_dangling_links(self, conn: AsyncConnection) -> None:
        after = 0
        while True:
            rows = (await conn.execute(DANGLING_LINKS, {**self.params, "after": after,
                                                        "limit": self.batch_size})).all()
            await conn.commit()
            if not rows:
                return
            # No handler can repair this: the row was removed outside twoway. Someone must decide.
            await self._record([Drift("dangling_link", r.internal_id, r.external_id, MANUAL,
                                      note=f"{self.system} object {'exists' if r.seen else 'is gone'}")
                                for r in rows if r.seen or not (r.base or {}).get("deleted")])
            after = rows[-1].id

    # repairs

    async def _record(self, drifts: list[Drift]) -> None:
        self.report.drifts.extend(drifts)
        if self.report.dry_run or not drifts:
            return
        outbound = _unique(d.internal_id for d in drifts if d.repair == OUTBOUND)
        inbound = _unique(d.external_id for d in drifts if d.repair == INBOUND)
        async with unit_of_work(self.sessions) as session:
            for internal_id in outbound:
                await enqueue_outbound(session, KIND, internal_id, reason="reconcile")
            for external_id in inbound:
                await enqueue_inbound(session, self.system, KIND, external_id)
        self.report.enqueued[OUTBOUND] += len(outbound)
        self.report.enqueued[INBOUND] += len(inbound)


async def reconcile(engine: AsyncEngine, connector: Connector, *, dry_run: bool,
                    progress: OnProgress | None = None, batch_size: int = 500) -> Report:
    return await Reconciler(engine, connector, dry_run=dry_run, progress=progress, batch_size=batch_size).run()


def peak_rss_mb() -> float:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def describe(drift: Drift, system: str) -> str:
    return describe_code(drift.problem, system)


def format_fields(drift: Drift) -> str:
    """`name: 'Old' -> ours 'New'`, one line per field that differs."""
    lines = []
    for name, values in drift.fields.items():
        shown = ", ".join(f"{side} {value!r}" for side, value in values.items())
        lines.append(f"{name}: {shown}")
    return "\n".join(lines)


def _linked(row: Any) -> _Linked:
    return _Linked(internal_id=row.internal_id, base=row.base or {}, row_id=row.row_id,
                   ours=_fields(row) if row.row_id is not None else {}, deleted=bool(row.deleted))


def _fields(row: Any) -> dict[str, str]:
    # The model owns which fields are synced.
    return Customer(name=row.name, email=row.email).fields()


def _unique(values: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(v for v in values if v is not None))


# -- presentation ---------------------------------------------------------------------------------

PHASES = {"external": "Scanning {system}", "internal": "Scanning our catalog"}


@contextlib.contextmanager
def progress_bars(console: Console, system: str) -> Iterator[OnProgress]:
    """Bars on `console` (stderr), drawn only on a terminal so piped output stays clean."""
    bars = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=True, disable=not console.is_terminal)
    tasks: dict[str, Any] = {}

    def advance(phase: str, n: int) -> None:
        if phase not in tasks:
            tasks[phase] = bars.add_task(PHASES.get(phase, phase).format(system=system.title()), total=None)
        bars.advance(tasks[phase], n)

    with bars:
        yield advance


def print_report(console: Console, report: Report, *, limit: int = 200) -> None:
    system = report.system.title()
    table = Table(title=f"Drift between our catalog and {system}" + (" (dry run)" if report.dry_run else ""))
    for column in ("problem", "our id", f"{system} id", "differences", "repair"):
        table.add_column(column)
    for drift in report.drifts[:limit]:
        table.add_row(describe(drift, report.system), str(drift.internal_id or "-"), drift.external_id or "-",
                      format_fields(drift) or drift.note, drift.repair)
    if report.drifts:
        console.print(table)
    if len(report.drifts) > limit:
        console.print(f"... and {len(report.drifts) - limit} more (--json lists all)")
    counts = ", ".join(f"{describe_code(k, report.system)}: {v}" for k, v in sorted(report.counts().items()))
    console.print(f"drift: {len(report.drifts)}" + (f" ({counts})" if counts else "") +
                  f"; scanned {report.scanned_external} in {system}, {report.scanned_internal} here")
    action = "enqueued nothing (dry run)" if report.dry_run else (
        f"enqueued {report.enqueued[OUTBOUND]} outbound, {report.enqueued[INBOUND]} inbound")
    console.print(f"{action}; {report.seconds:.1f} s, peak RSS {report.peak_rss_mb:.0f} MB")


def describe_code(problem: str, system: str) -> str:
    return PROBLEMS.get(problem, problem).format(system=system.title())
