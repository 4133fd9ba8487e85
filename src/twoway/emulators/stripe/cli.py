"""`twoway emulator stripe ...`: run the Stripe emulator."""

from __future__ import annotations

import typer

from twoway.emulators.stripe.config import EmulatorConfig
from twoway.emulators.stripe.limits import parse_endpoint_limit

emulator_app = typer.Typer(help="Local emulators of external services.", no_args_is_help=True)


@emulator_app.command("stripe")
def stripe(
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(12111, help="Port to bind (0 picks a free one)."),
    error_rate: float = typer.Option(0.0, help="Fraction of /v1 requests answered 500/503."),
    rate_limit_per_second: float = typer.Option(
        0.0, help="Requests/s before 429s, every endpoint together (0: unlimited, or with --limits its number)."),
    limits: str = typer.Option(
        "off", help="Stripe's limiters: off (only --rate-limit-per-second), live (100/s), sandbox (25/s) or key "
        "(by the API key's mode); besides the global limit, 25/s per endpoint, 20/s per search endpoint."),
    endpoint_rate_limit: float = typer.Option(25.0, help="With --limits: requests/s per endpoint (0: none)."),
    search_rate_limit: float = typer.Option(20.0, help="With --limits: requests/s per search endpoint."),
    endpoint_limit: list[str] = typer.Option(
        [], help="With --limits: one endpoint's requests/s, as 'POST /v1/customers=10' (repeatable)."),
    concurrency_limit: int = typer.Option(
        0, help="Requests in flight at once per account and key mode before 429s (0: none)."),
    latency_ms: float = typer.Option(0.0, help="Added latency per /v1 request (+-25% jitter)."),
    webhook_drop_rate: float = typer.Option(0.0, help="Fraction of events never delivered."),
    webhook_duplicate_rate: float = typer.Option(0.0, help="Fraction of events delivered twice."),
    webhook_reorder: int = typer.Option(0, help="Shuffle deliveries in windows of N events (0 = off)."),
    webhook_delay_ms: float = typer.Option(0.0, help="Delay before each event is delivered."),
    reject_pattern: str | None = typer.Option(None, help="Regex: matching customer name/email gets a 400."),
    invoice_lock_timeout: bool = typer.Option(False, help="Overlapping writes to one invoice get 429 lock_timeout."),
    real_retry_schedule: bool = typer.Option(False, help="Stripe's 3-day retry schedule, not the short one."),
    webhook_timeout: float = typer.Option(10.0, help="Seconds before a delivery attempt times out."),
    webhook_url: str | None = typer.Option(None, help="Register a webhook endpoint for all events at start."),
    webhook_secret: str | None = typer.Option(None, help="Signing secret (whsec_...) for --webhook-url."),
    state_file: str | None = typer.Option(None, help="JSON file to load at start and save while running."),
    auto_finalize_seconds: float = typer.Option(3600.0, help="Seconds until an auto_advance draft invoice finalizes."),
) -> None:
    """Serve a stateful Stripe API emulator (customers, invoices, events, webhooks)."""
    from twoway.emulators.stripe.app import run  # deferred: keeps `twoway --help` fast

    try:
        endpoint_limits = dict(parse_endpoint_limit(text) for text in endpoint_limit)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    knobs = {
        "error_rate": error_rate, "rate_limit_per_second": rate_limit_per_second, "latency_ms": latency_ms,
        "limits": limits, "endpoint_rate_limit_per_second": endpoint_rate_limit,
        "search_rate_limit_per_second": search_rate_limit, "endpoint_limits": endpoint_limits,
        "concurrency_limit": concurrency_limit,
        "webhook_drop_rate": webhook_drop_rate, "webhook_duplicate_rate": webhook_duplicate_rate,
        "webhook_reorder": webhook_reorder, "webhook_delay_ms": webhook_delay_ms, "reject_pattern": reject_pattern,
        "invoice_lock_timeout": invoice_lock_timeout,
    }
    config = EmulatorConfig(
        startup_faults=knobs,
        real_retry_schedule=real_retry_schedule,
        webhook_timeout=webhook_timeout,
        webhook_url=webhook_url,
        webhook_secret=webhook_secret,
        state_file=state_file,
        auto_finalize_seconds=auto_finalize_seconds,
    )
    try:
        config.faults()  # validate the knobs before binding anything
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    run(host, port, config)
