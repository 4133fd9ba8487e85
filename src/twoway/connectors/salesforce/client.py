"""One place where calls to Salesforce happen: simple-salesforce (synchronous, on `requests`) run in a
bounded thread pool, under a rate limit, with a new token on INVALID_SESSION_ID, the daily API
allowance watched through `Sforce-Limit-Info`, and errors translated into ConnectorError."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import requests
from requests.adapters import HTTPAdapter
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceError, SalesforceExpiredSession

from twoway.connectors.base import ConnectorError, NotFound
from twoway.connectors.salesforce.auth import Token, TokenSource
from twoway.kit import metrics
from twoway.kit.ratelimit import Limiter, TokenBucket
from twoway.logs import get_logger

T = TypeVar("T")
log = get_logger(__name__)
CALL_OPTIONS = "client=twoway"
_USAGE = re.compile(r"api-usage=(\d+)/(\d+)")
# Per-record codes in composite answers that say "try again", not "this record is wrong".
TRANSIENT_CODES = frozenset({"UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE", "REQUEST_RUNNING_TOO_LONG",
                             "ALL_OR_NONE_OPERATION_ROLLED_BACK"})
LIMIT_CODE = "REQUEST_LIMIT_EXCEEDED"


class _TimeoutAdapter(HTTPAdapter):
    def __init__(self, timeout: float, pool: int) -> None:
        super().__init__(pool_connections=4, pool_maxsize=pool)
        self.timeout = timeout

    def send(self, request: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        return super().send(request, **kwargs)


def make_session(ca_file: str | None, timeout: float, pool: int) -> requests.Session:
    session = requests.Session()
    adapter = _TimeoutAdapter(timeout, pool)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    # Marks every call as ours (Salesforce records it as the change origin).
    session.headers["Sforce-Call-Options"] = CALL_OPTIONS
    if ca_file:
        session.verify = ca_file
        # REQUESTS_CA_BUNDLE in the environment would otherwise override `verify`.
        session.trust_env = False
    return session


class SalesforceClient:
    def __init__(self, source: TokenSource, *, version: str, ca_file: str | None = None, timeout: float = 30.0,
                 max_in_flight: int = 8, limiter: Limiter | None = None, reserve_fraction: float = 0.1,
                 limit_pause_seconds: float = 300.0) -> None:
        self.source = source
        self.version = version
        self.session = make_session(ca_file, timeout, max_in_flight)
        self.session.hooks["response"].append(self._observe)
        self.pool = ThreadPoolExecutor(max_in_flight, thread_name_prefix="salesforce")
        self.in_flight = asyncio.Semaphore(max_in_flight)
        self.limiter: Limiter = limiter or TokenBucket(20.0)
        self.reserve_fraction = reserve_fraction
        self.limit_pause_seconds = limit_pause_seconds
        self.sf: Salesforce | None = None
        self.used: int | None = None
        self.allowed: int | None = None
        self.paused_until = 0.0  # monotonic; the daily allowance (or its reserve) is used up until then
        self.clock_offset = 0.0  # server time - our time, from the Date header
        self.calls = 0
        self._token_lock = asyncio.Lock()
        self._ready: Callable[[Salesforce], None] | None = None

    # -- the one call path ---------------------------------------------------------------------

    async def call(self, op: str, fn: Callable[[Salesforce], T]) -> T:
        self._check_allowance()
        await self.limiter.acquire()
        async with self.in_flight:
            sf = await self._session()
            loop = asyncio.get_running_loop()
            for attempt in (0, 1):
                try:
                    result = await loop.run_in_executor(self.pool, fn, sf)
                    metrics.SALESFORCE_CALLS.labels(op=op, status="ok").inc()
                    return result
                except SalesforceExpiredSession as exc:
                    metrics.SALESFORCE_CALLS.labels(op=op, status="401").inc()
                    if attempt:
                        raise self.translate(exc)
                    sf = await self._renew(sf)
                except SalesforceError as exc:
                    metrics.SALESFORCE_CALLS.labels(op=op, status=str(exc.status)).inc()
                    raise self.translate(exc)
                except requests.RequestException as exc:
                    metrics.SALESFORCE_CALLS.labels(op=op, status="network").inc()
                    raise ConnectorError(f"salesforce network error: {type(exc).__name__}", transient=True,
                                         outage=True)
        raise AssertionError("unreachable")

    async def composite(self, op: str, method: str, path: str,
                        records: list[dict[str, Any]]) -> list[dict[str, Any] | ConnectorError]:
        """One `composite/sobjects` call (allOrNone=false): each record's result, or its error."""
        n = len(records)
        body = {"allOrNone": False, "records": records}
        try:
            answer = await self.call(op, lambda sf: sf.restful(path, method=method, json=body))
        except ConnectorError as exc:
            return [exc] * n  # the whole call failed: every record in it carries the error
        results = answer if isinstance(answer, list) else []
        if len(results) != n:
            err = ConnectorError(f"salesforce composite answered {len(results)} results for {n}", transient=True)
            return [err] * n
        return [r if r.get("success") else record_error((r.get("errors") or [{}])[0]) for r in results]

    async def query_all_pages(self, op: str, first: Any) -> AsyncIterator[dict[str, Any]]:
        """The records of a query answer and of the pages after it."""
        page = first
        while True:
            for raw in page["records"]:
                yield raw
            if page.get("done", True) or not page.get("nextRecordsUrl"):
                return
            page = await self._query_more(op, page["nextRecordsUrl"])

    async def _query_more(self, op: str, url: str) -> Any:
        def more(sf: Salesforce) -> Any:
            return sf.query_more(url, identifier_is_url=True)
        return await self.call(op, more)

    def server_now(self) -> float:
        """Salesforce's clock (epoch seconds), as its Date headers tell it."""
        return time.time() + self.clock_offset

    # -- session -------------------------------------------------------------------------------

    async def _session(self) -> Salesforce:
        if self.sf is not None:
            return self.sf
        async with self._token_lock:
            if self.sf is None:
                token = await self._token()
                sf = Salesforce(instance_url=token.instance_url, session_id=token.access_token,
                                session=self.session, version=self.version)
                if self._ready is not None:
                    await asyncio.get_running_loop().run_in_executor(self.pool, self._ready, sf)
                self.sf = sf
        return self.sf

    async def _renew(self, stale: Salesforce) -> Salesforce:
        """A new token, once for all the calls that saw the old one expire."""
        async with self._token_lock:
            assert self.sf is not None
            if self.sf.session_id == stale.session_id:
                token = await self._token()
                self.sf.session_id = token.access_token
                self.sf._generate_headers()
                log.info("salesforce session renewed", flow=self.source.flow)
        return self.sf

    async def _token(self) -> Token:
        return await asyncio.get_running_loop().run_in_executor(self.pool, self.source.fetch, self.session)

    # -- limits --------------------------------------------------------------------------------

    def _observe(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        """Every answer: the daily usage, and the server's clock."""
        self.calls += 1
        info = response.headers.get("Sforce-Limit-Info")
        m = _USAGE.search(info or "")
        if m:
            self.used, self.allowed = int(m.group(1)), int(m.group(2))
            metrics.SALESFORCE_API_USAGE.labels(what="used").set(self.used)
            metrics.SALESFORCE_API_USAGE.labels(what="allowed").set(self.allowed)
            if self.in_reserve() and time.monotonic() >= self.paused_until:
                self.paused_until = time.monotonic() + self.limit_pause_seconds
                log.warning("salesforce daily API allowance at its reserve; pausing", used=self.used,
                            allowed=self.allowed, pause_seconds=self.limit_pause_seconds)
        date = response.headers.get("Date")
        if date:
            try:
                self.clock_offset = parsedate_to_datetime(date).timestamp() - time.time()
            except (TypeError, ValueError):
                pass

    def in_reserve(self) -> bool:
        if self.used is None or not self.allowed:
            return False
        return self.used >= self.allowed - int(self.allowed * self.reserve_fraction)

    def _check_allowance(self) -> None:
        wait = self.paused_until - time.monotonic()
        if wait > 0:
            raise limit_error("salesforce daily API allowance used up to its reserve; paused", wait)

    # -- errors --------------------------------------------------------------------------------

    def translate(self, exc: SalesforceError) -> ConnectorError:
        code, message = _first_error(exc.content)
        status = exc.status
        text = f"salesforce {status} {code or ''}: {message or type(exc).__name__}"[:500]
        if status == 403 and code == LIMIT_CODE:
            self.paused_until = time.monotonic() + self.limit_pause_seconds
            log.warning("salesforce daily API limit exceeded; pausing", pause_seconds=self.limit_pause_seconds)
            return limit_error(text, self.limit_pause_seconds)
        if status == 404:
            return NotFound(text)
        if status >= 500:
            return ConnectorError(text, transient=True, status=status, code=code, outage=True)
        if status in (409, 412, 429):
            return ConnectorError(text, transient=True, status=status, code=code, outage=False)
        return ConnectorError(text, transient=False, status=status, code=code)

    async def close(self) -> None:
        await self.limiter.close()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.session.close()


def limit_error(message: str, retry_after: float) -> ConnectorError:
    """Not the record's failure and never a dead letter: the connector waits for the allowance."""
    return ConnectorError(message, transient=True, status=403, code=LIMIT_CODE, rate_limited=True, outage=True,
                          retry_after=max(0.0, retry_after))


def record_error(error: Any) -> ConnectorError:
    """One record's error inside a composite answer (`statusCode`, not `errorCode`)."""
    code = str(error.get("statusCode") or error.get("errorCode") or "UNKNOWN") if isinstance(error, dict) else "UNKNOWN"
    message = f"salesforce {code}: {error.get('message') if isinstance(error, dict) else error}"[:500]
    if code in ("ENTITY_IS_DELETED", "NOT_FOUND", "INVALID_CROSS_REFERENCE_KEY"):
        return NotFound(message)
    if code == LIMIT_CODE:
        return limit_error(message, 60.0)
    return ConnectorError(message, transient=code in TRANSIENT_CODES, code=code, outage=False)


def _first_error(content: Any) -> tuple[str | None, str | None]:
    if isinstance(content, list) and content and isinstance(content[0], dict):
        return content[0].get("errorCode"), content[0].get("message")
    return None, None
