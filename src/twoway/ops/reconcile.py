"""Reconcile: compare both catalogs in full, kind by kind, and send every difference back through the normal
sync path.

Every registered kind the connector holds is scanned the same way, from the kind's data (`records.Kind`:
its table, its synced fields read as the engine reads them, its rules): no kind is named here. Memory is
bounded by the batch size, not the catalog. The external side is streamed page by page and our rows are
looked up per batch with one query; the external ids seen go into a temporary table on the scan's own
connection, so links whose external object vanished are found by SQL instead of by a set held in Python.
Only the drift itself (and the ids of lost links) is kept.

Repairs are hints, never side doors: an outbound message for records our side must push, an inbound
message for records whose external state must be re-read and merged. The handlers decide what to do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import resource
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from types import SimpleNamespace
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from twoway.connectors.base import Connector, ExternalRecord
from twoway.kit import records
from twoway.kit.db import make_sessionmaker, unit_of_work
from twoway.kit.outbox import enqueue_inbound, enqueue_outbound
from twoway.sync import sql
from twoway.syncstate.words import Direction

OUTBOUND, INBOUND, MANUAL = Direction.OUTBOUND, Direction.INBOUND, "manual"  # manual: for a person

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

# (phase, kind name, records scanned)
OnProgress = Callable[[str, str, int], None]

CREATE_SEEN = text("CREATE TEMP TABLE IF NOT EXISTS reconcile_seen (external_id text PRIMARY KEY)")
INSERT_SEEN = text("INSERT INTO reconcile_seen SELECT unnest(CAST(:ids AS text[])) ON CONFLICT DO NOTHING")
DROP_SEEN = text("DROP TABLE IF EXISTS reconcile_seen")


@cache
def statements(table: str) -> SimpleNamespace:
    """The scan's statements on one kind's table (the name comes from the kind registry, never from input)."""
    return SimpleNamespace(
        linked_by_external=text(f"""
            SELECT l.external_id, l.internal_id, l.base, c.id AS row_id, c.deleted_at IS NOT NULL AS deleted
            FROM links l LEFT JOIN {table} c ON c.id = l.internal_id
            WHERE l.kind = :kind AND l.system = :system AND l.external_id = ANY(CAST(:ids AS text[]))"""),
        claimed_rows=text(f"""
            SELECT c.id, l.external_id FROM {table} c
            LEFT JOIN links l ON l.kind = :kind AND l.system = :system AND l.internal_id = c.id
            WHERE c.id = ANY(CAST(:ids AS bigint[]))"""),
        our_page=text(f"""
            SELECT c.id, c.deleted_at IS NOT NULL AS deleted, l.external_id, l.base,
                   s.external_id IS NOT NULL AS seen
            FROM {table} c
            LEFT JOIN links l ON l.kind = :kind AND l.system = :system AND l.internal_id = c.id
            LEFT JOIN reconcile_seen s ON s.external_id = l.external_id
            WHERE c.id > :after ORDER BY c.id LIMIT :limit"""),
        dangling_links=text(f"""
            SELECT l.id, l.internal_id, l.external_id, l.base, s.external_id IS NOT NULL AS seen
            FROM links l
            LEFT JOIN {table} c ON c.id = l.internal_id
            LEFT JOIN reconcile_seen s ON s.external_id = l.external_id
            WHERE l.kind = :kind AND l.system = :system AND c.id IS NULL AND l.id > :after
            ORDER BY l.id LIMIT :limit"""),
        count_ours=text(f"SELECT count(*) FROM {table}"),
    )


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
    kind: str = ""


@dataclass
class KindScan:
    scanned_external: int = 0
    scanned_internal: int = 0
    enqueued: dict[str, int] = field(default_factory=lambda: {OUTBOUND: 0, INBOUND: 0})


@dataclass
class Report:
    """The whole run; the top-level counts add up every kind, `kinds` splits them."""

    system: str
    dry_run: bool
    drifts: list[Drift] = field(default_factory=list)
    kinds: dict[str, KindScan] = field(default_factory=dict)
    seconds: float = 0.0
    peak_rss_mb: float = 0.0

    @property
    def scanned_external(self) -> int:
        return sum(k.scanned_external for k in self.kinds.values())

    @property
    def scanned_internal(self) -> int:
        return sum(k.scanned_internal for k in self.kinds.values())

    @property
    def enqueued(self) -> dict[str, int]:
        return {d: sum(k.enqueued[d] for k in self.kinds.values()) for d in (OUTBOUND, INBOUND)}

    def counts(self, kind: str | None = None) -> dict[str, int]:
        out: dict[str, int] = {}
        for drift in self.drifts:
            if kind is None or drift.kind == kind:
                out[drift.problem] = out.get(drift.problem, 0) + 1
        return out

    def as_dict(self) -> dict[str, Any]:
        kinds = {name: {**asdict(scan), "counts": self.counts(name)} for name, scan in self.kinds.items()}
        return {"system": self.system, "dry_run": self.dry_run, "scanned_external": self.scanned_external,
                "scanned_internal": self.scanned_internal, "counts": self.counts(), "enqueued": self.enqueued,
                "kinds": kinds, "seconds": round(self.seconds, 3), "peak_rss_mb": round(self.peak_rss_mb, 1),
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
                 ours_deleted: bool, theirs: ExternalRecord, theirs_own: Iterable[str] = ()) -> list[Drift]:
    """A linked pair where both sides exist (theirs may be deleted): which side must move, if any.

    `theirs_own`: the fields the external side owns (the kind's rules); only a read brings those back."""
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
    owned = set(theirs_own)
    theirs_moved = any(v["theirs"] != v["base"] or name in owned for name, v in diff.items())
    # The inbound handler merges both sides (and pushes ours after), so it is the repair whenever theirs moved
    # (or a field only they write differs): pushing first would overwrite a field both sides changed instead
    # of resolving the conflict.
    return [Drift("drifted", internal_id, external_id, INBOUND if theirs_moved else OUTBOUND, diff)]


def compare_external(theirs: ExternalRecord, linked: _Linked | None,
                     claimed: tuple[int, str | None] | None, theirs_own: Iterable[str] = ()) -> list[Drift]:
    """One external record against our side. `claimed` is (row id, its external id) for metadata.internal_id."""
    if linked is None:
        return [_unlinked(theirs, claimed)]
    if linked.row_id is None:
        return []  # our row is gone: the dangling-link scan reports it once
    drifts: list[Drift] = []
    if theirs.internal_id is not None and theirs.internal_id != linked.internal_id:
        drifts.append(Drift("claims_other", linked.internal_id, theirs.external_id, MANUAL,
                            note=f"metadata.internal_id={theirs.internal_id}; the link wins"))
    drifts += compare_pair(linked.internal_id, theirs.external_id, linked.base, linked.ours, linked.deleted, theirs,
                           theirs_own)
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
    """One kind against one external system."""

    def __init__(self, engine: AsyncEngine, connector: Connector, kind: records.Kind, report: Report, *,
                 progress: OnProgress | None = None, batch_size: int = 500) -> None:
        self.engine = engine
        self.sessions = make_sessionmaker(engine)
        self.connector = connector
        self.kind = kind
        self.system = connector.system
        self.batch_size = batch_size
        self.progress = progress or (lambda _phase, _kind, _n: None)
        self.report = report
        self.scan = report.kinds.setdefault(kind.name, KindScan())
        self.sql = statements(kind.table)
        self.theirs_own = frozenset(name for name, owner in kind.rules.owned.items() if owner == "theirs")
        self._lost_links: set[int] = set()  # rows an external record will re-adopt: never create them twice

    @property
    def params(self) -> dict[str, Any]:
        return {"kind": self.kind.name, "system": self.system}

    async def run(self) -> None:
        async with self.engine.connect() as conn:  # one connection: the temp table lives on it
            await conn.execute(DROP_SEEN)  # the previous kind's ids are not this kind's
            await conn.execute(CREATE_SEEN)
            await conn.commit()
            try:
                await self._scan_external(conn)
                await self._scan_internal(conn)
                await self._scan_dangling_links(conn)
            finally:
                await conn.execute(DROP_SEEN)
                await conn.commit()

    async def count_internal(self) -> int:
        async with self.engine.connect() as conn:
            return int((await conn.execute(self.sql.count_ours)).scalar() or 0)

    async def _ours(self, ids: Sequence[int]) -> dict[int, dict[str, str]]:
        """Our synced fields, read as the engine reads them and put in the other side's terms (the parent field
        holds the parent's external id there), so they compare with `base` and theirs."""
        if not ids:
            return {}
        async with self.sessions() as session:
            rows = await sql.read_rows(session, self.kind, ids)
            out = {int(r.id): sql.field_values(self.kind, r) for r in rows}
            parent = self.kind.rules.parent
            if parent is not None:
                pids = {int(f[parent.field]) for f in out.values() if f.get(parent.field, "").isdigit()}
                linked = {r.internal_id: r.external_id for r in await session.execute(
                    sql.PARENT_LINKS, {"kind": parent.kind, "system": self.system, "iids": list(pids)})} if pids else {}
                for f in out.values():
                    pid = f.get(parent.field, "")
                    if pid.isdigit() and int(pid) in linked:
                        f[parent.field] = linked[int(pid)]
        return out

    # external side

    async def _scan_external(self, conn: AsyncConnection) -> None:
        batch: list[ExternalRecord] = []
        async for record in self.connector.list_all(self.kind.name):
            batch.append(record)
            if len(batch) >= self.batch_size:
                await self._check_external(conn, batch)
                batch = []
        if batch:
            await self._check_external(conn, batch)

    async def _check_external(self, conn: AsyncConnection, records_: list[ExternalRecord]) -> None:
        ids = [r.external_id for r in records_]
        await conn.execute(INSERT_SEEN, {"ids": ids})
        link_rows = (await conn.execute(self.sql.linked_by_external, {**self.params, "ids": ids})).all()
        listed = {r.external_id for r in link_rows}
        claims = [r.internal_id for r in records_ if r.external_id not in listed and r.internal_id is not None]
        claimed: dict[int, tuple[int, str | None]] = {}
        if claims:
            rows = await conn.execute(self.sql.claimed_rows, {**self.params, "ids": claims})
            claimed = {r.id: (r.id, r.external_id) for r in rows}
        await conn.commit()
        ours = await self._ours([r.row_id for r in link_rows if r.row_id is not None])
        linked = {r.external_id: _linked(r, ours) for r in link_rows}
        drifts: list[Drift] = []
        for record in records_:
            claim = claimed.get(record.internal_id) if record.internal_id is not None else None
            drifts += compare_external(record, linked.get(record.external_id), claim, self.theirs_own)
        self._lost_links.update(d.internal_id for d in drifts if d.problem == "lost_link" and d.internal_id)
        await self._record(drifts)
        self.scan.scanned_external += len(records_)
        self.progress("external", self.kind.name, len(records_))

    # our side: rows without links, and links whose external object was not listed

    async def _pages(self, conn: AsyncConnection, query: TextClause) -> AsyncIterator[Sequence[Any]]:
        """The rows of `query` a batch at a time, by id (keyset paging); each batch's snapshot is released."""
        after = 0
        while True:
            rows = (await conn.execute(query, {**self.params, "after": after, "limit": self.batch_size})).all()
            await conn.commit()
            if not rows:
                return
            yield rows
            after = rows[-1].id

    async def _scan_internal(self, conn: AsyncConnection) -> None:
        async for rows in self._pages(conn, self.sql.our_page):
            unseen = [r for r in rows if not r.seen and r.external_id is not None
                      and not (r.base or {}).get("deleted")]
            ours = await self._ours([r.id for r in unseen])
            drifts: list[Drift] = []
            for row in rows:
                drifts += await self._check_internal(row, ours.get(row.id, {}))
            await self._record(drifts)
            self.scan.scanned_internal += len(rows)
            self.progress("internal", self.kind.name, len(rows))

    async def _check_internal(self, row: Any, ours: dict[str, str]) -> list[Drift]:
        if row.seen:
            return []  # compared during the external scan
        if row.external_id is None:
            if row.deleted or row.id in self._lost_links:
                return []
            return [Drift("missing_external", row.id, None, OUTBOUND)]
        if (row.base or {}).get("deleted"):
            return []  # agreed deleted, and the external side no longer lists it
        # Not listed: gone, or created after the listing passed it. Only a read can tell, and these are few.
        theirs = await self.connector.fetch(self.kind.name, row.external_id)
        return compare_pair(row.id, row.external_id, row.base or {}, ours, row.deleted, theirs, self.theirs_own)

    async def _scan_dangling_links(self, conn: AsyncConnection) -> None:
        async for rows in self._pages(conn, self.sql.dangling_links):
            # No handler can repair this: the row was removed outside twoway. Someone must decide.
            await self._record([Drift("dangling_link", r.internal_id, r.external_id, MANUAL,
                                      note=f"{self.system} object {'exists' if r.seen else 'is gone'}")
                                for r in rows if r.seen or not (r.base or {}).get("deleted")])

    # repairs

    async def _record(self, drifts: list[Drift]) -> None:
        drifts = [dataclasses.replace(d, kind=self.kind.name) for d in drifts]
        self.report.drifts.extend(drifts)
        if self.report.dry_run or not drifts:
            return
        outbound = _unique(d.internal_id for d in drifts if d.repair == OUTBOUND)
        inbound = _unique(d.external_id for d in drifts if d.repair == INBOUND)
        async with unit_of_work(self.sessions) as session:
            for internal_id in outbound:
                await enqueue_outbound(session, self.kind.name, internal_id, reason="reconcile")
            for external_id in inbound:
                await enqueue_inbound(session, self.system, self.kind.name, external_id)
        self.scan.enqueued[OUTBOUND] += len(outbound)
        self.scan.enqueued[INBOUND] += len(inbound)


def kinds_of(connector: Connector, names: Iterable[str] | None = None) -> list[records.Kind]:
    """The registered kinds the connector holds, in registration order (parents first); `names` picks some.
    Raises ValueError for a name that is not one of them."""
    held = [k for k in records.all_kinds() if k.name in connector.kinds]
    if names is None:
        return held
    wanted = list(dict.fromkeys(names))
    unknown = [n for n in wanted if n not in {k.name for k in held}]
    if unknown:
        raise ValueError(f"{connector.system} holds no kind {', '.join(map(repr, unknown))} "
                         f"(it holds: {', '.join(k.name for k in held)})")
    return [k for k in held if k.name in wanted]


async def reconcile(engine: AsyncEngine, connector: Connector, *, dry_run: bool,
                    progress: OnProgress | None = None, batch_size: int = 500,
                    kinds: Iterable[str] | None = None) -> Report:
    """Every kind the connector holds (or those named in `kinds`), one after the other."""
    started = time.monotonic()
    report = Report(system=connector.system, dry_run=dry_run)
    for kind in kinds_of(connector, kinds):
        await Reconciler(engine, connector, kind, report, progress=progress, batch_size=batch_size).run()
    report.seconds = time.monotonic() - started
    report.peak_rss_mb = peak_rss_mb()
    return report


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


def _linked(row: Any, ours: Mapping[int, dict[str, str]]) -> _Linked:
    return _Linked(internal_id=row.internal_id, base=row.base or {}, row_id=row.row_id,
                   ours=ours.get(row.row_id, {}) if row.row_id is not None else {}, deleted=bool(row.deleted))


def _unique(values: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(v for v in values if v is not None))


# -- presentation ---------------------------------------------------------------------------------

PHASES = {"external": "Scanning {system} {kind}s", "internal": "Scanning our {kind}s"}


@contextlib.contextmanager
def progress_bars(console: Console, system: str) -> Iterator[OnProgress]:
    """Bars on `console` (stderr), one per kind and side, drawn only on a terminal so piped output stays clean."""
    bars = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=True, disable=not console.is_terminal)
    tasks: dict[tuple[str, str], Any] = {}

    def advance(phase: str, kind: str, n: int) -> None:
        if (phase, kind) not in tasks:
            label = PHASES.get(phase, phase).format(system=system.title(), kind=kind)
            tasks[(phase, kind)] = bars.add_task(label, total=None)
        bars.advance(tasks[(phase, kind)], n)

    with bars:
        yield advance


def print_report(console: Console, report: Report, *, limit: int = 200) -> None:
    system = report.system.title()
    table = Table(title=f"Drift between our catalog and {system}" + (" (dry run)" if report.dry_run else ""))
    for column in ("kind", "problem", "our id", f"{system} id", "differences", "repair"):
        table.add_column(column)
    for drift in report.drifts[:limit]:
        table.add_row(drift.kind, describe(drift, report.system), str(drift.internal_id or "-"),
                      drift.external_id or "-", format_fields(drift) or drift.note, drift.repair)
    if report.drifts:
        console.print(table)
    if len(report.drifts) > limit:
        console.print(f"... and {len(report.drifts) - limit} more (--json lists all)")
    for name, scan in report.kinds.items():
        counts = report.counts(name)
        shown = ", ".join(f"{describe_code(k, report.system)}: {v}" for k, v in sorted(counts.items()))
        console.print(f"{name}s: drift {sum(counts.values())}" + (f" ({shown})" if shown else "") +
                      f"; scanned {scan.scanned_external} in {system}, {scan.scanned_internal} here")
    action = "enqueued nothing (dry run)" if report.dry_run else (
        f"enqueued {report.enqueued[OUTBOUND]} outbound, {report.enqueued[INBOUND]} inbound")
    console.print(f"drift: {len(report.drifts)}; {action}; {report.seconds:.1f} s, "
                  f"peak RSS {report.peak_rss_mb:.0f} MB")


def describe_code(problem: str, system: str) -> str:
    return PROBLEMS.get(problem, problem).format(system=system.title())
