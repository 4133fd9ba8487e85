"""`twoway status` for people: one row per connector, direction and kind, and one per table (its size, oldest
row kept and retention window), from the same data as `--json`."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

_BREAKER_STYLE = {"closed": "green", "half_open": "yellow", "open": "bold red"}


def age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    if seconds < 172800:
        return f"{seconds / 3600:.0f}h ago"
    return f"{seconds / 86400:.0f}d ago"


def size(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB"):
        if value < 1024:
            return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def window(seconds: float) -> str:
    """A retention window in its largest whole unit: 31d, 24h, 1h, 90s."""
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length and seconds % length == 0:
            return f"{seconds / length:.0f}{unit}"
    return f"{seconds:g}s"


def retention(part: dict[str, Any]) -> str:
    kept = part.get("retention")
    return f"{window(kept['seconds'])} ({kept['setting']})" if kept else "kept (the data)"


def _count(n: int | None, bad: str) -> Text:
    if n is None:
        return Text("?", style="bold red")
    return Text(str(n), style=bad if n else "")


def render_status(status: dict[str, Any]) -> Group:
    """A row per connector, direction and kind of record it has dealt with. Consumer lag and the breaker belong
    to the connector and direction, so they are shown once, on its first row."""
    table = Table(title="twoway status", title_justify="left")
    for name, justify in (("connector", "left"), ("direction", "left"), ("kind", "left"), ("backlog", "right"),
                          ("consumer lag", "right"), ("retrying", "right"), ("dead letters", "right"),
                          ("breaker", "left"), ("last success", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in status.get("connectors", []):
        breaker = row.get("breaker")
        shared = (_count(row["consumer_lag"], "yellow"),
                  Text(breaker or "-", style=_BREAKER_STYLE.get(breaker or "", "")))
        kinds = row.get("kinds") or {}
        if not kinds:  # nothing of any kind yet: the connector's totals
            table.add_row(row["system"], row["direction"], "-", _count(row["backlog"], "yellow"), shared[0],
                          _count(row["retrying"], "yellow"), _count(row["dead_letters"], "bold red"), shared[1],
                          age(row.get("last_success_age_seconds")), end_section=True)
            continue
        for n, (kind, part) in enumerate(kinds.items()):
            lag, brk = shared if n == 0 else (Text(""), Text(""))
            table.add_row(row["system"], row["direction"], kind, _count(part["backlog"], "yellow"), lag,
                          _count(part["retrying"], "yellow"), _count(part["dead_letters"], "bold red"), brk,
                          age(part.get("last_success_age_seconds")), end_section=n == len(kinds) - 1)
    if not status.get("connectors"):
        table.add_row("(no connector configured)", "", "", "", "", "", "", "", "")
    links = ", ".join(f"{system} {n}" for system, n in sorted(status.get("links", {}).items())) or "none"
    kinds_line = status.get("records") or {"customer": status.get("customers", {})}
    counts = " · ".join(f"{kind}s {c.get('live', 0)} live ({c.get('total', 0)} with deleted)"
                        for kind, c in kinds_line.items())
    summary = Text(f"{counts} · links {links} · outbox {status.get('outbox_backlog', 0)} unpublished · "
                   f"inbox {status.get('inbox_backlog', 0)} unhandled", style="dim")
    parts: list[Any] = [table, summary]
    if status.get("tables"):
        parts.append(_tables(status["tables"]))
    lag = status.get("consumer_lag", {})
    if isinstance(lag, dict) and "error" in lag:
        parts.append(Text(f"consumer lag unknown: {lag['error']}", style="bold red"))
    return Group(*parts)


def _tables(tables: dict[str, dict[str, Any]]) -> Table:
    """Rows are the planner's estimate; the oldest row is by the column retention goes by."""
    table = Table(title="tables", title_justify="left")
    for name, justify in (("table", "left"), ("size", "right"), ("rows (est.)", "right"),
                          ("oldest kept", "left"), ("retention", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for name, part in tables.items():
        rows = part["rows_estimate"]
        table.add_row(name, size(part["bytes"]), "?" if rows is None else f"{rows:,}", _oldest(part),
                      retention(part))
        if "payloads" in part:
            table.add_row("  payloads", "", "", _oldest(part["payloads"]), retention(part["payloads"]))
    return table


def _oldest(part: dict[str, Any]) -> str:
    oldest = part["oldest"]
    return "none" if oldest["at"] is None else f"{age(oldest['age_seconds'])} ({oldest['column']})"
