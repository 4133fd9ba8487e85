"""The `twoway` command."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from twoway.logs import configure
from twoway.settings import Settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Two-way customer sync: PostgreSQL <-> Stripe.")
console = Console()

try:
    from twoway.emulators.salesforce.cli import salesforce as _salesforce_emulator
    from twoway.emulators.stripe.cli import emulator_app

    emulator_app.command("salesforce")(_salesforce_emulator)
    app.add_typer(emulator_app, name="emulator", help="Local emulators of external systems.")
except ImportError:  # pragma: no cover - the emulator ships with the package
    pass


DEV_JSON = Path(".twoway/dev.json")
_FROM_DEV = {"database_url": "database_url", "kafka_bootstrap_servers": "kafka_bootstrap_servers",
             "stripe_secret_key": "stripe_secret_key", "stripe_api_base": "stripe_api_base",
             "stripe_webhook_secret": "stripe_webhook_secret", "api_key": "twoway_api_keys",
             "salesforce_login_url": "salesforce_login_url", "salesforce_client_id": "salesforce_client_id",
             "salesforce_client_secret": "salesforce_client_secret", "salesforce_ca_file": "salesforce_ca_file"}


def _settings(*, use_dev_json: bool = True) -> Settings:
    """The environment's settings; what it leaves unset comes from a running `twoway dev`, if any."""
    settings = Settings()
    # Only when the environment names no database: then it is not configured, and `twoway dev` may be.
    if use_dev_json and not settings.database_url and DEV_JSON.exists():
        try:
            dev = json.loads(DEV_JSON.read_text())
        except ValueError:
            dev = {}
        fill = {field: dev[key] for key, field in _FROM_DEV.items()
                if dev.get(key) and (field not in settings.model_fields_set or not getattr(settings, field))}
        if fill:
            settings = Settings(**{**settings.model_dump(exclude_unset=True), **fill})
    configure(settings.log_level, settings.log_json)
    return settings


@app.command()
def migrate() -> None:
    """Bring the database schema up to date."""
    from twoway.kit.migrate import upgrade

    upgrade(_settings().require_database_url())
    console.print("migrations applied")


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Defaults to API_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="Defaults to API_PORT")] = None,
    workers: Annotated[int | None, typer.Option(help="API processes sharing the port (defaults to API_WORKERS, 1); "
                                                      "about one per core")] = None,
    insecure_no_auth: Annotated[bool, typer.Option("--insecure-no-auth",
                                                   help="Serve without API keys (local use only)")] = False,
) -> None:
    """Serve the HTTP API."""
    import os

    import uvicorn

    from twoway.api import create_app

    settings = _settings()
    if not settings.api_keys() and not insecure_no_auth:
        console.print("[red]TWOWAY_API_KEYS is not set.[/red] Set it, or pass --insecure-no-auth for local use.")
        raise typer.Exit(2)
    processes = workers or settings.api_workers
    options = {"host": host or settings.api_host, "port": port or settings.api_port, "log_level": "warning",
               "access_log": False, "timeout_graceful_shutdown": 5}
    if processes <= 1:
        uvicorn.run(create_app(settings), **options)  # type: ignore[arg-type]
        return
    # uvicorn's own supervisor: N processes accept on one socket, each builds its app from the
    # environment, so settings found in .twoway/dev.json are handed down through it.
    for field in _FROM_DEV.values():
        value = getattr(settings, field)
        if value and field.upper() not in os.environ:
            os.environ[field.upper()] = value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)
    uvicorn.run("twoway.api:create_app_from_env", factory=True, workers=processes, **options)  # type: ignore[arg-type]


@app.command()
def worker(
    only: Annotated[str | None, typer.Option(help="Comma-separated components: relay,outbound,inbound,"
                                                  "retry,sweeper,poller,retention")] = None,
) -> None:
    """Run the relay, the sync consumers, retries, the sweeper, the poller and retention. Run as many as you like."""
    import twoway.models  # noqa: F401  (registers every kind of record)
    from twoway.connectors import registry
    from twoway.sync.worker import COMPONENTS, Worker

    settings = _settings()
    components = [c.strip() for c in only.split(",")] if only else list(COMPONENTS)
    unknown = set(components) - set(COMPONENTS)
    if unknown:
        raise typer.BadParameter(f"unknown components: {', '.join(sorted(unknown))}")

    try:
        systems = registry.enabled_systems(settings)
    except ValueError as exc:  # an unknown name in TWOWAY_CONNECTORS
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2)
    if set(components) & {"outbound", "inbound", "poller"} and not systems:
        console.print("[red]No connector is configured.[/red] Set STRIPE_SECRET_KEY (and STRIPE_API_BASE for "
                      "the emulator) and/or SALESFORCE_CLIENT_ID with a secret or JWT key, or run only --only relay.")
        raise typer.Exit(2)

    async def main() -> None:
        w = Worker(settings, components=components)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, w.stop.set)
        await w.run()

    asyncio.run(main())


@app.command()
def dev(
    state_dir: Annotated[Path, typer.Option(help="Where embedded data and logs live")] = Path(".twoway"),
) -> None:
    """Run the whole system: embedded PostgreSQL, broker and Stripe emulator when not configured."""
    from twoway.dev import DevSystem

    settings = _settings(use_dev_json=False)
    system = DevSystem(state=state_dir, settings=settings)

    def _stop(*_: object) -> None:
        system.stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        info = system.start()
        console.print(f"[bold green]twoway is up[/bold green]\n  API        {info['api_url']}  (docs at /docs)"
                      f"\n  Dashboard  {info['api_url']}/?key={info['api_key']}\n  API key    {info['api_key']}")
        console.print(f"  Metrics    {info['api_url']}/metrics (API), "
                      f"http://{settings.api_host}:{system.env['WORKER_METRICS_PORT']}/metrics (worker)")
        if info.get("stripe_api_base"):
            console.print(f"  Stripe emulator  {info['stripe_api_base']}/")
        if info.get("salesforce_instance_url"):
            console.print(f"  Salesforce emulator  {info['salesforce_instance_url']}/"
                          f"  (CA {info['salesforce_ca_file']})")
        console.print(f"  Settings for scripts: {state_dir / 'dev.json'}\nPress Ctrl-C to stop.")
        system.supervise()
    finally:
        console.print("stopping...")
        system.stop()


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Everything, as JSON (for scripts)")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh in place until Ctrl-C")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes with --watch")] = 2.0,
) -> None:
    """One row per connector, direction and kind: backlog, consumer lag, breaker, dead letters, last success."""
    from rich.live import Live

    import twoway.models  # noqa: F401  (registers every kind of record: counts per kind)
    from twoway.kit.db import make_engine, make_sessionmaker
    from twoway.ops.lag import LagReader
    from twoway.ops.status import full_status
    from twoway.ops.status_table import render_status

    if watch and as_json:
        raise typer.BadParameter("--watch refreshes a table; use --json without it")
    settings = _settings()

    async def main() -> dict[str, object] | None:
        engine = make_engine(settings.require_database_url(), pool_size=2)
        sessions = make_sessionmaker(engine)
        lag = LagReader()  # one broker connection for every refresh
        try:
            if not watch:
                return await full_status(sessions, settings, lag)
            # Ctrl-C sets a flag the loop reads, instead of cancelling whatever await it lands in: on
            # Python 3.11 such a cancel can be lost (`wait_for` returns the result of an inner wait that
            # finished as the cancel came), and a watch that outlived Ctrl-C was seen in the suite under load.
            stop = asyncio.Event()
            asyncio.get_running_loop().add_signal_handler(signal.SIGINT, stop.set)
            with Live(render_status(await full_status(sessions, settings, lag)), console=console,
                      auto_refresh=False) as live:
                while not await _stopped(stop, interval):
                    live.update(render_status(await full_status(sessions, settings, lag)), refresh=True)
                return None
        finally:
            await lag.close()
            await engine.dispose()

    try:
        result = asyncio.run(main())
    except KeyboardInterrupt:
        return
    if as_json:
        print(json.dumps(result, default=str, indent=2))
    elif result is not None:
        console.print(render_status(result))


async def _stopped(stop: asyncio.Event, seconds: float) -> bool:
    """Wait up to `seconds`; True when `stop` was set meanwhile (or before)."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass
    return stop.is_set()


@app.command()
def replay(
    failure_id: Annotated[int | None, typer.Argument(help="A dead letter's id")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Replay every dead letter")] = False,
) -> None:
    """Send dead letters back through the normal sync path."""
    import twoway.models  # noqa: F401  (registers every kind of record)
    from twoway.kit.db import make_engine, make_sessionmaker, unit_of_work
    from twoway.sync import replay as replays

    if failure_id is None and not all_:
        raise typer.BadParameter("give a dead letter id or --all")
    settings = _settings()

    async def main() -> int:
        engine = make_engine(settings.require_database_url(), pool_size=2)
        try:
            async with unit_of_work(make_sessionmaker(engine)) as session:
                if all_:
                    return await replays.replay_all(session)
                return int(await replays.replay(session, failure_id or 0))
        finally:
            await engine.dispose()

    count = asyncio.run(main())
    console.print(f"replayed {count} dead letter(s)")
    if failure_id is not None and count == 0:
        sys.exit(1)


@app.command()
def reconcile(
    system: Annotated[str, typer.Argument(help="The external system to compare with")] = "stripe",
    kind: Annotated[list[str] | None, typer.Option("--kind", help="Only this kind of record (customer, invoice); "
                                                                 "repeat for several. Default: every kind")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report the drift; enqueue nothing")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the drift report as JSON")] = False,
    limit: Annotated[int, typer.Option(help="Rows shown in the table (--json shows all)")] = 200,
) -> None:
    """Compare both catalogs in full, kind by kind, and send every difference through the normal sync path
    (also backfill)."""
    import twoway.models  # noqa: F401  (registers every kind of record)
    from twoway.connectors import registry
    from twoway.kit.db import make_engine
    from twoway.ops import reconcile as rec

    settings = _settings()
    if system not in registry.enabled_systems(settings):
        raise typer.BadParameter(f"{system!r} is not configured (enabled: {registry.enabled_systems(settings)})")
    # "invoices" reads as well as "invoice"
    kinds = [k.strip().lower().removesuffix("s") for k in kind] if kind else None

    async def main() -> rec.Report:
        engine = make_engine(settings.require_database_url(), pool_size=2)
        connector = registry.build(system, settings)
        try:
            try:
                rec.kinds_of(connector, kinds)
            except ValueError as exc:
                raise typer.BadParameter(str(exc), param_hint="--kind") from None
            with rec.progress_bars(Console(stderr=True), system) as progress:
                return await rec.reconcile(engine, connector, dry_run=dry_run, progress=progress, kinds=kinds)
        finally:
            await connector.close()
            await engine.dispose()

    report = asyncio.run(main())
    if as_json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        rec.print_report(console, report, limit=limit)
