"""Serve an emulator's ASGI app with uvicorn (optionally over TLS) and print one readiness line."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import uvicorn
from starlette.applications import Starlette

from twoway.emulators.kit.tls import TlsFiles


def run(app: Starlette, name: str, host: str, port: int, tls: TlsFiles | None = None,
        after_start: Callable[[str], None] | None = None, date_header: bool = True) -> None:
    """Serve until interrupted; prints `<name> emulator listening on <url>` once the socket is bound."""
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, loop="auto",
                            timeout_graceful_shutdown=2, date_header=date_header,
                            ssl_certfile=str(tls.cert_file) if tls else None,
                            ssl_keyfile=str(tls.key_file) if tls else None)
    server = uvicorn.Server(config)
    # uvloop when installed, as uvicorn.run would pick.
    with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
        runner.run(_serve(server, name, "https" if tls else "http", after_start))


async def _serve(server: uvicorn.Server, name: str, scheme: str,
                 after_start: Callable[[str], None] | None) -> None:
    task = asyncio.create_task(server.serve())
    while not server.started and not task.done():
        await asyncio.sleep(0.01)
    if server.started:
        host, port = server.servers[0].sockets[0].getsockname()[:2]
        url = f"{scheme}://{host}:{port}"
        print(f"{name} emulator listening on {url}", flush=True)
        if after_start is not None:
            after_start(url)
    await task
