"""`twoway status` for people: one row per connector and direction, from the same data as `--json`."""

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


def _count(n: int | None, bad: str) -> Text:
    if n is None:
        return Text("?", style="bold red")
    return Text(str(n), style=bad if n else "")


def render_status(status: dict[str, Any]) -> Group:
    table = Table(title="twoway status", title_justify="left")
    for name, justify in (("connector", "left"), ("direction", "left"), ("backlog", "right"),
                          ("consumer lag", "right"), ("retrying", "right"), ("dead letters", "right"),
                          ("breaker", "left"), ("last success", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in status.get("connectors", []):
        breaker = row.get("breaker")
        table.add_row(row["system"], row["direction"], _count(row["backlog"], "yellow"),
                      _count(row["consumer_lag"], "yellow"), _count(row["retrying"], "yellow"),
                      _count(row["dead_letters"], "bold red"),
                      Text(breaker or "-", style=_BREAKER_STYLE.get(breaker or "", "")),
                      age(row.get("last_success_age_seconds")))
    if not status.get("connectors"):
        table.add_row("(no connector configured)", "", "", "", "", "", "", "")
    customers = status.get("customers", {})
    links = ", ".join(f"{system} {n}" for system, n in sorted(status.get("links", {}).items())) or "none"
    summary = Text(f"customers {customers.get('live', 0)} live ({customers.get('total', 0)} with deleted) · "
                   f"links {links} · outbox {status.get('outbox_backlog', 0)} unpublished · "
                   f"inbox {status.get('inbox_backlog', 0)} unhandled", style="dim")
    parts: list[Any] = [table, summary]
    lag = status.get("consumer_lag", {})
    if isinstance(lag, dict) and "error" in lag:
        parts.append(Text(f"consumer lag unknown: {lag['error']}", style="bold red"))
    return Group(*parts)
