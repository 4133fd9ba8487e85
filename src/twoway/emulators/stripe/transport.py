"""A minimal keep-alive HTTP/1.1 POST client for webhook deliveries.

httpx costs ~2 ms of CPU per request, which capped deliveries at a few hundred
per second and starved the API; this does only what delivery needs (POST, read
the status, drain the body) on a connection each delivery worker keeps open.
An aiohttp session costs 3x the CPU per delivery (0.13 ms against 0.04 ms;
`python -m bench.client_costs`, bench/README.md), so this stays.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

_MAX_HEAD = 64 * 1024


@dataclass(frozen=True, slots=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"unsupported webhook url: {url}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(parts.scheme, parts.hostname, port, path)

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


class Connection:
    """One connection, used by one worker at a time (so no locking)."""

    def __init__(self) -> None:
        self._target: Target | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
        """Status code of the answer; raises OSError/TimeoutError/ValueError on failure."""
        target = Target.parse(url)
        request = _encode(target, body, headers)
        reused = self._writer is not None and self._target == target
        try:
            async with asyncio.timeout(timeout):
                try:
                    return await self._exchange(target, request)
                except (asyncio.IncompleteReadError, ConnectionError):
                    if not reused:
                        raise
                    # The receiver closed an idle keep-alive connection: retry once, fresh.
                    self.close()
                    return await self._exchange(target, request)
        except BaseException:
            self.close()
            raise

    async def _exchange(self, target: Target, request: bytes) -> int:
        if self._writer is None or self._target != target:
            await self._connect(target)
        assert self._reader is not None and self._writer is not None
        self._writer.write(request)
        await self._writer.drain()
        status, keep_alive = await _read_response(self._reader)
        if not keep_alive:
            self.close()
        return status

    async def _connect(self, target: Target) -> None:
        self.close()
        context = ssl.create_default_context() if target.scheme == "https" else None
        self._reader, self._writer = await asyncio.open_connection(target.host, target.port, ssl=context)
        self._target = target

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None
        self._target = None


def _encode(target: Target, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {target.path} HTTP/1.1", f"Host: {target.host_header}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bool]:
    """Status, lower-cased header fields and whether the connection stays open."""
    head = await reader.readuntil(b"\r\n\r\n")
    if len(head) > _MAX_HEAD:
        raise ValueError("response head too large")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    status = int(rest[:3])
    fields: dict[str, str] = {}
    for line in header_lines:
        name, sep, value = line.partition(":")
        if sep:
            fields[name.strip().lower()] = value.strip().lower()
    return status, fields, fields.get("connection") != "close" and version == "HTTP/1.1"


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    status, fields, keep_alive = await read_head(reader)
    if status in (204, 304) or 100 <= status < 200:
        return status, keep_alive
    if fields.get("transfer-encoding", "").endswith("chunked"):
        await _drain_chunked(reader)
    elif "content-length" in fields:
        await reader.readexactly(int(fields["content-length"]))
    else:
        await reader.read()  # body runs to end of stream
        keep_alive = False
    return status, keep_alive


async def _drain_chunked(reader: asyncio.StreamReader) -> None:
    while True:
        size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
        if size == 0:
            # Trailers, if any, end with an empty line.
            while (await reader.readline()).strip():
                pass
            return
        await reader.readexactly(size + 2)
