"""The Starlette app around an emulator: started and stopped with the server, reachable from tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from starlette.applications import Starlette
from starlette.routing import BaseRoute


class Lifecycle(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def emulator_app(emu: Lifecycle, routes: Sequence[BaseRoute]) -> Starlette:
    """`routes` served while `emu` runs (its background work lives as long as the server); `app.state.emulator`."""

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await emu.start()
        try:
            yield
        finally:
            await emu.stop()

    app = Starlette(routes=list(routes), lifespan=lifespan)
    app.state.emulator = emu
    return app
