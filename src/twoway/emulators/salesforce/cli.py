"""`twoway emulator salesforce ...`: run the Salesforce emulator."""

from __future__ import annotations

import typer

from twoway.emulators.salesforce.config import DEFAULT_CLIENT_ID, DEFAULT_USERNAME, SalesforceConfig


def salesforce(
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(12112, help="Port to bind (0 picks a free one)."),
    tls_dir: str | None = typer.Option(None, help="Serve https with a local CA kept in this directory "
                                                  "(simple-salesforce needs https)."),
    ca_file: str | None = typer.Option(None, help="Also copy the CA certificate here (with --tls-dir)."),
    client_id: str = typer.Option(DEFAULT_CLIENT_ID, help="The connected app's client id."),
    client_secret: str | None = typer.Option(None, envvar="SALESFORCE_EMULATOR_CLIENT_SECRET",
                                             help="Client secret for client credentials (generated when unset)."),
    jwt_public_key_file: str | None = typer.Option(None, help="PEM public key or certificate for JWT bearer."),
    integration_username: str = typer.Option(DEFAULT_USERNAME, help="The user client credentials run as."),
    token_ttl: float = typer.Option(7200.0, help="Seconds an access token stays valid."),
    daily_api_requests: int = typer.Option(15_000, help="Daily API allowance (403 REQUEST_LIMIT_EXCEEDED after)."),
    error_rate: float = typer.Option(0.0, help="Fraction of API requests answered 500/503."),
    latency_ms: float = typer.Option(0.0, help="Added latency per API request (+-25% jitter)."),
    outage: bool = typer.Option(False, help="Answer every API request 503 until turned off."),
    reject_pattern: str | None = typer.Option(None, help="Regex: matching Name/Email__c gets a 400."),
    state_file: str | None = typer.Option(None, help="JSON file to load at start and save while running."),
) -> None:
    """Serve a stateful Salesforce REST API emulator (Accounts, SOQL, composite, OAuth, limits)."""
    from twoway.emulators.salesforce.app import run  # deferred: keeps `twoway --help` fast

    knobs = {"error_rate": error_rate, "latency_ms": latency_ms, "outage": outage, "reject_pattern": reject_pattern}
    config = SalesforceConfig(startup_faults=knobs, client_id=client_id, client_secret=client_secret,
                              jwt_public_key_file=jwt_public_key_file, integration_username=integration_username,
                              token_ttl_seconds=token_ttl, daily_api_requests=daily_api_requests,
                              state_file=state_file, tls_dir=tls_dir)
    try:
        config.faults()  # validate the knobs before binding anything
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if ca_file and not tls_dir:
        raise typer.BadParameter("--ca-file needs --tls-dir")
    run(host, port, config, ca_file)
