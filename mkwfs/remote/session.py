"""Sending API requests: authorized, counted, logged, their error statuses raised.

`ApiSession` is what every call of `ApiClient` goes through: it adds the token, logs in
again once after a 401 (when it can) and repeats the request once, counts each request by
endpoint and its bytes in `ApiStats`, and logs one line per request on ``mkwfs.api`` when
the response is closed (``GET /api/v1/downloads/5442 -> 206, 128076 bytes, 6 ms``; the
benchmark counts requests from these lines).
"""

from __future__ import annotations

import collections
import logging
import re
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx

from mkwfs.remote.auth import Authenticator, Credentials
from mkwfs.remote.errors import ApiError
from mkwfs.remote.failures import map_httpx_error, raise_for_status, where
from mkwfs.remote.transport import Head, Whole

__all__ = ["ApiSession", "ApiStats"]

logger = logging.getLogger("mkwfs.api")


@dataclass
class ApiStats:
    """What ``mkwfs status`` shows of the client's traffic. Times are ``time.time()``."""

    #: Response bytes received (bodies of every request, as sent on the wire).
    bytes_received: int = 0
    #: Failed requests by kind: ``"HTTP 503"``, or the transport failure (``"ConnectError"``).
    failures: collections.Counter[str] = field(default_factory=collections.Counter)
    last_success: float | None = None
    last_failure: float | None = None
    #: What the last failure was, without secrets (``GET /api/v1/builds -> 503``, ...).
    last_error: str | None = None

    def failed(self, kind: str, what: str) -> None:
        self.failures[kind] += 1
        self.last_failure = time.time()
        self.last_error = what


class ApiSession:
    """Requests to the API under ``base_url`` (no trailing slash) over ``http``.

    ``requests`` counts the requests sent, by the emulator's endpoint keys
    (``"GET /api/v1/downloads/:id"``), failed ones included.
    """

    def __init__(self, http: httpx.AsyncClient, base_url: str, credentials: Credentials) -> None:
        self.http = http
        self.base_url = base_url
        self.auth = Authenticator(http, self.url("/authentication"), credentials, self.sent)
        self.requests: collections.Counter[str] = collections.Counter()
        self.stats = ApiStats()

    def url(self, path: str) -> str:
        return self.base_url + path

    @asynccontextmanager
    async def exchange(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncIterator[httpx.Response]:
        """Send an authorized API request and yield its successful response, body unread.

        Logs in first when there is no token. A 401 with email and password: log in again
        (once for all requests refused the same token) and repeat once. Any error status
        is raised as the matching ``HTTPStatusError``; a 304 to a conditional request
        (``If-None-Match``, ``If-Modified-Since``) is yielded: "not modified".
        """
        can_login = self.auth.credentials.can_login
        token = await self.auth.current()
        request = self._api_request(method, path, token, params, headers)
        async with self.sent(request) as response:
            if response.status_code != 401 or not can_login:
                if not _not_modified(response):
                    await raise_for_status(response, can_login=can_login)
                yield response
                return
        token = await self.auth.current(stale=token)
        request = self._api_request(method, path, token, params, headers)
        async with self.sent(request) as response:
            if not _not_modified(response):
                await raise_for_status(response, can_login=can_login)
            yield response

    @asynccontextmanager
    async def sent(self, request: httpx.Request) -> AsyncIterator[httpx.Response]:
        """Send one request, count it, yield the streaming response, close and log it."""
        self.requests[_endpoint_key(request)] += 1
        started = time.perf_counter()
        try:
            response = await self.http.send(request, stream=True)
        except httpx.HTTPError as exc:
            _log_exchange(where(request), type(exc).__name__, 0, started)
            error = map_httpx_error(exc, request)
            self.stats.failed(type(exc).__name__, str(error))
            raise error from exc
        failure: ApiError | None = None
        try:
            yield response
        except ApiError as exc:  # an error status, or a body that failed on its way
            failure = exc
            raise
        finally:
            await response.aclose()
            self._count(request, response, failure)
            _log_exchange(
                where(request), response.status_code, response.num_bytes_downloaded, started
            )

    def count_head(self, what: str, head: Head, started: float) -> None:
        """Count and log one answer of a batch of ``HEAD`` requests (``what`` names it, as
        `failures.where` does a request), as `sent` does a request's."""
        self.requests["HEAD /api/v1/downloads/:id"] += 1
        if head.error is not None:
            _log_exchange(what, type(head.error).__name__, 0, started)
            self.stats.failed(type(head.error).__name__, f"{what}: {head.error}")
            return
        _log_exchange(what, head.status, 0, started)
        if head.status >= 400:
            self.stats.failed(f"HTTP {head.status}", f"{what}: {head.status}")
        else:
            self.stats.last_success = time.time()

    def count_whole(self, what: str, whole: Whole, started: float) -> None:
        """Count and log one `CurlTransport.get_whole` of a download (``what`` names it);
        its error status is counted as a failure by whoever raises it."""
        self.requests["GET /api/v1/downloads/:id"] += 1
        if whole.error is not None:
            _log_exchange(what, type(whole.error).__name__, len(whole.body), started)
            self.stats.failed(type(whole.error).__name__, f"{what}: {whole.error}")
            return
        _log_exchange(what, whole.status, len(whole.body), started)
        self.stats.bytes_received += len(whole.body)
        if whole.status >= 400:
            self.stats.failed(f"HTTP {whole.status}", f"{what}: {whole.status}")
        else:
            self.stats.last_success = time.time()

    def _count(
        self, request: httpx.Request, response: httpx.Response, failure: ApiError | None
    ) -> None:
        self.stats.bytes_received += response.num_bytes_downloaded
        if response.is_error:
            what = str(failure) if failure else f"{where(request)}: {response.status_code}"
            self.stats.failed(f"HTTP {response.status_code}", what)
        elif failure is not None:
            self.stats.failed(type(failure).__name__, str(failure))
        else:
            self.stats.last_success = time.time()

    def _api_request(
        self,
        method: str,
        path: str,
        token: str,
        params: Mapping[str, str | int] | None,
        headers: Mapping[str, str] | None,
    ) -> httpx.Request:
        return self.http.build_request(
            method,
            self.url(path),
            params=params,
            headers={**(headers or {}), "Authorization": f"Bearer {token}"},
        )


def _not_modified(response: httpx.Response) -> bool:
    """Whether ``response`` is a 304 to a conditional request (to any other it is an error)."""
    headers = response.request.headers
    return response.status_code == 304 and (
        "if-none-match" in headers or "if-modified-since" in headers
    )


_TRAILING_ID = re.compile(r"/\d+$")


def _endpoint_key(request: httpx.Request) -> str:
    """The emulator's endpoint key: ``GET /api/v1/downloads/:id``."""
    return f"{request.method} {_TRAILING_ID.sub('/:id', request.url.path)}"


def _log_exchange(what: str, outcome: int | str, size: int, started: float) -> None:
    logger.debug(
        "%s -> %s, %d bytes, %.0f ms",
        what,
        outcome,
        size,
        (time.perf_counter() - started) * 1000,
    )
