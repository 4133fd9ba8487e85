"""A minimal keep-alive HTTP/1.1 client for the load generators, modelled on `twoway.emulators.stripe.transport`.

httpx costs about 2 ms of CPU per request: on 2 cores a load generator built on it measured itself
(an httpx client at 32 in flight used 76 % of a core for ~130 req/s). This does only what the
benchmarks need: any method, a body, the status and the body of the answer, on a connection kept open.
One `Connection` serves one request at a time; a `Pool` hands them out to concurrent lanes.
aiohttp would do it at 3x the CPU per request (0.19 ms against 0.06 ms; `python -m bench.client_costs`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

from twoway.emulators.stripe.transport import Target, read_head


class HTTPError(Exception):
    def __init__(self, method: str, path: str, status: int, body: bytes) -> None:
        super().__init__(f"{method} {path} -> {status}: {body[:300]!r}")
        self.status = status
        self.body = body


class Connection:
    """One keep-alive connection to one origin, used by one lane at a time (so no locking)."""

    def __init__(self, base_url: str, headers: dict[str, str] | None = None) -> None:
        self.target = Target.parse(base_url)
        self.prefix = self.target.path.rstrip("/")
        self.headers = headers or {}
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
                      timeout: float = 30) -> tuple[int, bytes]:
        """(status, body); raises OSError/TimeoutError/ValueError on a transport failure."""
        request = self._encode(method, self.prefix + path, body, headers)
        reused = self._writer is not None
        try:
            async with asyncio.timeout(timeout):
                try:
                    return await self._exchange(request)
                except (asyncio.IncompleteReadError, ConnectionError):
                    if not reused:
                        raise
                    # uvicorn closed an idle keep-alive connection under us: resend once, fresh.
                    self.close()
                    return await self._exchange(request)
        except BaseException:
            self.close()
            raise

    async def send_json(self, method: str, path: str, payload: Any = None, headers: dict[str, str] | None = None,
                        expect: int | None = None) -> Any:
        """JSON in, JSON out; any status >= 400 (or not `expect`) raises HTTPError."""
        body = b"" if payload is None else json.dumps(payload).encode()
        status, raw = await self.request(method, path, body, {"Content-Type": "application/json", **(headers or {})})
        return _decoded(method, path, status, raw, expect)

    async def send_form(self, method: str, path: str, fields: dict[str, str] | list[tuple[str, str]],
                        expect: int | None = None) -> Any:
        """Form-encoded in (as Stripe takes it), JSON out."""
        body = urlencode(fields).encode()
        status, raw = await self.request(method, path, body, {"Content-Type": "application/x-www-form-urlencoded"})
        return _decoded(method, path, status, raw, expect)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def _exchange(self, request: bytes) -> tuple[int, bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.target.host, self.target.port)
        assert self._reader is not None and self._writer is not None
        self._writer.write(request)
        await self._writer.drain()
        status, body, keep_alive = await _read_response(self._reader)
        if not keep_alive:
            self.close()
        return status, body

    def _encode(self, method: str, path: str, body: bytes, headers: dict[str, str] | None) -> bytes:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.target.host_header}", f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in {**self.headers, **(headers or {})}.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Pool:
    """Connections handed out one per concurrent job; grows to the peak concurrency, never beyond."""

    def __init__(self, base_url: str, headers: dict[str, str] | None = None) -> None:
        self.base_url = base_url
        self.headers = headers or {}
        self._idle: list[Connection] = []
        self._all: list[Connection] = []

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        if self._idle:
            conn = self._idle.pop()
        else:
            conn = Connection(self.base_url, self.headers)
            self._all.append(conn)
        try:
            yield conn
        finally:
            self._idle.append(conn)

    async def __aenter__(self) -> Pool:
        return self

    async def __aexit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        for conn in self._all:
            conn.close()
        self._idle.clear()
        self._all.clear()


def _decoded(method: str, path: str, status: int, raw: bytes, expect: int | None) -> Any:
    if status >= 400 or (expect is not None and status != expect):
        raise HTTPError(method, path, status, raw)
    return json.loads(raw) if raw else None


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    status, fields, keep_alive = await read_head(reader)
    if status in (204, 304) or 100 <= status < 200:
        return status, b"", keep_alive
    if fields.get("transfer-encoding", "").endswith("chunked"):
        return status, await _read_chunked(reader), keep_alive
    if "content-length" in fields:
        return status, await reader.readexactly(int(fields["content-length"])), keep_alive
    return status, await reader.read(), False  # body runs to end of stream


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while (await reader.readline()).strip():  # trailers, if any, end with an empty line
                pass
            return b"".join(parts)
        parts.append((await reader.readexactly(size + 2))[:-2])
