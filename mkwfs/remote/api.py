"""The MetaKraftwerk API client: authentication, retries and the error boundary.

``ApiClient`` is the only code that talks HTTP. It sends every request through one injected
``httpx.AsyncClient`` (the caller owns its pooling, timeouts and lifetime) and turns whatever
goes wrong into the exceptions of :mod:`mkwfs.errors`:

* no HTTP answer (refused, reset, timeout, truncated stream)   -> ``TransportError``
* an answer that is not what the API promises (bad JSON/shape)  -> ``ProtocolError``
* an error status                                              -> an ``HTTPStatusError`` subclass

Authentication: a token is used as given; with email and password the client logs in lazily
on the first request, and on a 401 logs in again once (one login shared by every request that
was refused the same token) and repeats the request once. Idempotent metadata calls are
retried on transport failures, 429 and 502/503/504 (:class:`RetryPolicy`); download bodies
are not (the content layer resumes them).

Neither a token nor a password ever appears in a message, a log line or a ``repr``.
"""

from __future__ import annotations

import collections
import datetime as dt
import email.utils
import html
import json
import logging
import math
import random
import re
import time
import urllib.parse
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Mapping,
    Sequence,
)
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeGuard, TypeVar, overload

import httpx
import trio

from mkwfs.remote.errors import (
    ApiError,
    AuthenticationError,
    ConfigError,
    HTTPStatusError,
    LoginFailed,
    NotFound,
    PermissionDenied,
    ProtocolError,
    RateLimited,
    ServerError,
    TokenRejected,
    TransportError,
)
from mkwfs.remote.models import Build, ContentInfo, Download, parse_build, parse_download
from mkwfs.remote.transport import Head

__all__ = ["ApiClient", "ApiStats", "Credentials", "DownloadStream", "RetryPolicy"]

logger = logging.getLogger("mkwfs.remote.api")

T = TypeVar("T")

#: Statuses worth another try of an idempotent request: a proxy or upstream hiccup.
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
#: Statuses with which a server says it does not do ``HEAD``.
NO_HEAD_STATUSES = frozenset({405, 501})
#: How much of an error body is read to find the server's message.
ERROR_BODY_LIMIT = 64 * 1024
#: How long ``server_message`` may get.
SERVER_MESSAGE_LIMIT = 200
#: The largest JSON answer read (a list of many thousand builds is a few MB): a bigger one
#: is a ``ProtocolError``, not a daemon out of memory.
JSON_BODY_LIMIT = 64 * 1024 * 1024
#: How deeply an answer's JSON may nest (the API's objects nest three levels): deeper is a
#: ``ProtocolError``, not a ``RecursionError`` in whatever walks it later.
JSON_DEPTH_LIMIT = 32
#: The largest body size believed (256 TiB): a bigger ``Content-Length`` or
#: ``Content-Range`` total is a broken header (and would not fit ``st_size``).
MAX_BODY_SIZE = 1 << 48


@dataclass(frozen=True)
class Credentials:
    """A token, or an email and password to log in with (or both: the token is tried first)."""

    token: str | None = None
    email: str | None = None
    password: str | None = None

    @property
    def can_login(self) -> bool:
        return bool(self.email) and bool(self.password)

    def __repr__(self) -> str:
        token = None if self.token is None else "***"
        password = None if self.password is None else "***"
        return f"Credentials(token={token!r}, email={self.email!r}, password={password!r})"


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of idempotent metadata requests; ``attempts=1`` disables them.

    The delay before retry ``n`` (0-based) is full-jitter exponential backoff,
    ``uniform(0, min(max_delay, base_delay * 2**n))``, or the server's ``Retry-After``
    capped by ``max_delay`` for a 429 that gave one.
    """

    attempts: int = 4
    base_delay: float = 0.25
    max_delay: float = 8.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be at least 1, not {self.attempts}")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("RetryPolicy delays must not be negative")

    def delay(self, retry: int, error: ApiError) -> float:
        """Seconds to wait before retry number ``retry`` (0-based) after ``error``."""
        if isinstance(error, RateLimited) and error.retry_after is not None:
            return min(self.max_delay, error.retry_after)
        return random.uniform(0, min(self.max_delay, self.base_delay * 2**retry))


def is_transient(error: ApiError) -> bool:
    """True for failures that another try of the same idempotent request may not meet."""
    if isinstance(error, TransportError):
        return True
    return isinstance(error, HTTPStatusError) and error.status in RETRYABLE_STATUSES


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


class HeadBatches(Protocol):
    """A transport's batch of ``HEAD`` requests (`CurlTransport.heads`)."""

    def heads(
        self,
        urls: Sequence[str],
        headers: Mapping[str, str],
        *,
        at_once: int,
        per_request: httpx.Timeout,
    ) -> AsyncGenerator[tuple[int, Head], None]: ...


class DownloadStream:
    """The body of a download response, open until its ``open_download`` block exits.

    ``offset`` is the file offset of the body's first byte: the requested start when the
    server answered 206, 0 when it ignored the range and sent the whole file (the caller
    skips). ``info.size`` is the whole file's size, ``length`` this body's, when known.
    """

    def __init__(
        self,
        response: httpx.Response,
        *,
        where: str,
        offset: int,
        info: ContentInfo,
        length: int | None,
    ) -> None:
        self._response = response
        self._where = where
        self.offset = offset
        self.info = info
        self.length = length

    def __repr__(self) -> str:
        return f"DownloadStream({self._where!r}, offset={self.offset}, length={self.length})"

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """Yield the body as it arrives: the bytes as sent, decoded only when the server
        applied a ``Content-Encoding`` (it is asked not to).

        Raises ``TransportError`` when the connection fails and ``ProtocolError`` when the
        body ends before ``length`` bytes.
        """
        received = 0
        try:
            # Without a Content-Encoding this is the raw body, chunk for chunk; unlike
            # aiter_raw() it also works for a response an in-process transport pre-read.
            async for chunk in self._response.aiter_bytes():
                received += len(chunk)
                yield chunk
        except httpx.HTTPError as exc:
            raise _map_httpx_error(exc, self._response.request) from exc
        if self.length is not None and received < self.length:
            raise ProtocolError(
                f"{self._where}: the body ended after {received} of {self.length} bytes",
                url=_public_url(self._response.request),
            )


class ApiClient:
    """The MetaKraftwerk API over one injected ``httpx.AsyncClient``.

    ``base_url`` is the server root (``https://app.metakraftwerk.com``); the client adds
    ``/authentication`` and ``/api/v1/...``. ``ConfigError`` for a URL that is not plain
    http(s) without user info, or credentials with neither a token nor email and password.

    ``requests`` counts the requests sent, by the emulator's endpoint keys
    (``"GET /api/v1/downloads/:id"``), failed ones included.

    ``heads``, the batch path of the client's transport (`CurlTransport.heads`), makes
    `probe_downloads` cheap; without it that method leaves every probe to `probe_download`.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        credentials: Credentials,
        retry: RetryPolicy = RetryPolicy(),
        *,
        heads: HeadBatches | None = None,
    ) -> None:
        url = httpx.URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ConfigError(f"the API URL must be http(s)://HOST[:PORT], not {base_url!r}")
        if url.userinfo:
            raise ConfigError("the API URL must not contain a user name or password")
        if not credentials.token and not credentials.can_login:
            raise ConfigError("the API needs a token, or an email and a password")
        self._http = http
        self._heads = heads
        #: The server answered a HEAD with 405 or 501: probes go straight to a GET.
        self._no_head = False
        self._base_url = str(url).rstrip("/")
        self._credentials = credentials
        self._retry = retry
        self._token = credentials.token or None
        self._login_lock = trio.Lock()
        self.requests: collections.Counter[str] = collections.Counter()
        self.stats = ApiStats()

    def __repr__(self) -> str:
        return f"ApiClient({self._base_url!r}, {self._credentials!r})"

    @property
    def base_url(self) -> str:
        """The server root requests go to (never with credentials)."""
        return self._base_url

    @property
    def token(self) -> str | None:
        """The token in use, the one from the last login if there was one (for ``mkwfs
        login`` to keep); None before the first login. Never logged."""
        return self._token

    # -- public API ---------------------------------------------------------------------

    async def login(self) -> None:
        """Log in with the email and password (``POST /authentication``) and use the new
        token from now on. ``LoginFailed`` when the server refuses them (401/400)."""
        async with self._login_lock:
            self._token = await self._post_login()

    async def list_builds(self, **filters: str | int) -> list[Build]:
        """``GET /api/v1/builds`` with the given filters (``project_id=402``, ...)."""
        return await self._list("/api/v1/builds", filters, parse_build)

    async def get_build(self, build_id: int) -> Build:
        """``GET /api/v1/builds/:id``; ``NotFound`` for an unknown id."""
        path = f"/api/v1/builds/{build_id}"
        return _parsed(parse_build, await self._get_json(path), f"GET {path}", self._url(path))

    async def list_downloads(self, build_id: int) -> list[Download]:
        """``GET /api/v1/downloads?build_id=N``: the build's result files, without bodies."""
        return await self._list("/api/v1/downloads", {"build_id": build_id}, parse_download)

    async def list_projects(self) -> list[Mapping[str, Any]]:
        """``GET /api/v1/projects``: the raw JSON objects."""
        return await self._list("/api/v1/projects", {}, _json_object)

    async def list_patterns(self) -> list[Mapping[str, Any]]:
        """``GET /api/v1/patterns``: the raw JSON objects."""
        return await self._list("/api/v1/patterns", {}, _json_object)

    async def probe_download(self, download_id: int) -> ContentInfo:
        """Size, range support and filename of a download, without downloading its body.

        ``HEAD``; when the server does not do ``HEAD`` (405/501), a ``GET`` with
        ``Range: bytes=0-0`` whose body is never read.
        """
        path = f"/api/v1/downloads/{download_id}"
        if not self._no_head:
            try:
                return await self._retrying(lambda: self._probe(path, "HEAD", {}))
            except HTTPStatusError as exc:
                if exc.status not in NO_HEAD_STATUSES:
                    raise
                self._no_head = True
        return await self._retrying(lambda: self._probe(path, "GET", {"Range": "bytes=0-0"}))

    async def probe_downloads(
        self, download_ids: Sequence[int], *, at_once: int
    ) -> AsyncGenerator[tuple[int, ContentInfo | None], None]:
        """Probe many downloads, ``at_once`` at a time (a directory's sizes), yielding each
        id with what `probe_download` would say, in the order the answers come. Ids added
        to ``download_ids`` (a list) while the batch runs are probed too.

        One ``HEAD`` each on the transport's batch path, and nothing more: an answer that
        is not a plain 200 with a size (an error status, a 405, a failure, a token to log
        in again for) yields None for its id, and stops the batch: the ids not answered
        yet are yielded with None too. Ask `probe_download` for those; it knows logins,
        retries and servers without ``HEAD``. Without a batch path, or once the server
        refused ``HEAD``, every id is yielded with None.
        """
        heads = self._heads
        if heads is None or self._no_head or not download_ids:
            for download_id in download_ids:
                yield download_id, None
            return
        token = await self._current_token()
        headers = {
            **self._http.headers,
            "Accept-Encoding": "identity",
            "Authorization": f"Bearer {token}",
        }
        answered: set[int] = set()
        started = time.perf_counter()
        batch = heads.heads(
            _DownloadUrls(download_ids, self._url("/api/v1/downloads/")),
            headers,
            at_once=at_once,
            per_request=self._http.timeout,
        )
        async with aclosing(batch) as answers:
            async for index, head in answers:
                answered.add(index)
                download_id = download_ids[index]
                info = self._batch_answer(f"HEAD /api/v1/downloads/{download_id}", head, started)
                yield download_id, info
                if info is None:
                    break
        for index, download_id in enumerate(download_ids):
            if index not in answered:
                yield download_id, None

    @asynccontextmanager
    async def open_download(
        self, download_id: int, *, start: int = 0, end: int | None = None
    ) -> AsyncIterator[DownloadStream]:
        """Open the body of a download, from byte ``start`` to ``end`` (exclusive) or EOF.

        Sends ``Range: bytes=start-(end-1)`` when ``start > 0`` or ``end`` is given. Errors
        before the body (401, 403, 404, 5xx, transport) are raised here; nothing is retried.
        A 206 must start at ``start`` (else ``ProtocolError``); a 200 means the server sent
        the whole file, ``offset`` 0.
        """
        if start < 0 or (end is not None and end <= start):
            raise ValueError(f"invalid byte range {start}..{end}")
        path = f"/api/v1/downloads/{download_id}"
        headers = {"Accept-Encoding": "identity"}
        wants_range = start > 0 or end is not None
        if wants_range:
            headers["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        async with self._exchange("GET", path, headers=headers) as response:
            where = _where(response.request)
            length: int | None
            info = _content_info(response, where, asked_range=wants_range)
            if response.status_code == 206:
                first, last, _ = _content_range(response, where)
                if first != start:
                    raise ProtocolError(
                        f"{where}: asked for bytes from {start}, got them from {first}",
                        url=_public_url(response.request),
                    )
                offset, length = first, last - first + 1
            else:
                offset, length = 0, info.size
            yield DownloadStream(response, where=where, offset=offset, info=info, length=length)

    # -- requests -------------------------------------------------------------------------

    async def _list(
        self, path: str, params: Mapping[str, str | int], parse: Callable[[object], T]
    ) -> list[T]:
        """GET a list: a bare JSON array, or Feathers pages followed with ``$skip`` until
        their ``total``. ``ProtocolError`` for pages that do not add up."""
        first_page = self._http.build_request("GET", self._url(path), params=params)
        where, url = _where(first_page), _public_url(first_page)
        items: list[object] = []
        page_params: dict[str, str | int] = dict(params)
        while True:
            data = await self._get_json(path, page_params)
            if isinstance(data, list) and "$skip" not in page_params:
                items = data
                break
            total, page = _feathers_page(data, where, url, skip=len(items))
            items.extend(page)
            if len(items) >= total:
                break
            if not page:
                raise ProtocolError(
                    f"{where}: an empty page after {len(items)} of {total} items", url=url
                )
            page_params = {**params, "$skip": len(items)}
        return [_parsed(parse, item, where, url) for item in items]

    async def _get_json(self, path: str, params: Mapping[str, str | int] | None = None) -> Any:
        """GET ``path`` and decode its JSON body; retried per the policy."""

        async def once() -> Any:
            async with self._exchange("GET", path, params=params) as response:
                return _decode_json(await _read(response), response)

        return await self._retrying(once)

    async def _probe(self, path: str, method: str, headers: Mapping[str, str]) -> ContentInfo:
        """One probe request. A whole body is never read; an empty one (HEAD) or a one-byte
        range is, so that the connection goes back to the pool instead of being closed."""
        async with self._exchange(
            method, path, headers={"Accept-Encoding": "identity", **headers}
        ) as response:
            info = _content_info(response, _where(response.request), asked_range="Range" in headers)
            if method == "HEAD" or response.status_code == 206:
                await _read(response)
            return info

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        """Await ``call()``, again after a transient failure, up to the policy's attempts."""
        failures = 0
        while True:
            try:
                return await call()
            except ApiError as exc:
                failures += 1
                if failures >= self._retry.attempts or not is_transient(exc):
                    raise
                delay = self._retry.delay(failures - 1, exc)
                logger.info("retry %d in %.2f s after: %s", failures, delay, exc)
                await trio.sleep(delay)

    @asynccontextmanager
    async def _exchange(
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
        is raised as the matching ``HTTPStatusError``.
        """
        token = await self._current_token()
        request = self._api_request(method, path, token, params, headers)
        async with self._sent(request) as response:
            if response.status_code != 401 or not self._credentials.can_login:
                await self._raise_for_status(response)
                yield response
                return
        token = await self._current_token(stale=token)
        request = self._api_request(method, path, token, params, headers)
        async with self._sent(request) as response:
            await self._raise_for_status(response)
            yield response

    @asynccontextmanager
    async def _sent(self, request: httpx.Request) -> AsyncIterator[httpx.Response]:
        """Send one request, count it, yield the streaming response, close and log it."""
        self.requests[_endpoint_key(request)] += 1
        started = time.perf_counter()
        try:
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            _log_exchange(_where(request), type(exc).__name__, 0, started)
            error = _map_httpx_error(exc, request)
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
                _where(request), response.status_code, response.num_bytes_downloaded, started
            )

    def _batch_answer(self, where: str, head: Head, started: float) -> ContentInfo | None:
        """Count and log one answer of a batch, as ``_sent`` does a request's."""
        self.requests["HEAD /api/v1/downloads/:id"] += 1
        if head.error is not None:
            _log_exchange(where, type(head.error).__name__, 0, started)
            self.stats.failed(type(head.error).__name__, f"{where}: {head.error}")
            return None
        _log_exchange(where, head.status, 0, started)
        if head.status >= 400:
            self.stats.failed(f"HTTP {head.status}", f"{where}: {head.status}")
        else:
            self.stats.last_success = time.time()
        if head.status in NO_HEAD_STATUSES:
            self._no_head = True
        return _plain_head_info(head)

    def _count(
        self, request: httpx.Request, response: httpx.Response, failure: ApiError | None
    ) -> None:
        self.stats.bytes_received += response.num_bytes_downloaded
        if response.is_error:
            what = str(failure) if failure else f"{_where(request)}: {response.status_code}"
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
        return self._http.build_request(
            method,
            self._url(path),
            params=params,
            headers={**(headers or {}), "Authorization": f"Bearer {token}"},
        )

    def _url(self, path: str) -> str:
        return self._base_url + path

    async def _raise_for_status(self, response: httpx.Response) -> None:
        if response.is_success:
            return
        status = response.status_code
        error_class: type[HTTPStatusError]
        if status == 401 and not self._credentials.can_login:
            prefix = "the API rejected the token; get a new one (or use email and password)"
            error_class = TokenRejected
        elif status == 401:
            prefix, error_class = "the API rejected a token fresh from login", AuthenticationError
        else:
            prefix, error_class = "", _ERROR_CLASSES.get(status, ServerError)
        raise await _status_error(response, error_class, prefix=prefix)

    # -- authentication -------------------------------------------------------------------

    async def _current_token(self, *, stale: str | None = None) -> str:
        """The token to send: the current one, or a new one from a login when there is none
        yet or it is ``stale`` (refused with a 401). Concurrent callers share one login."""
        if self._token is not None and self._token != stale:
            return self._token
        async with self._login_lock:
            if self._token is None or self._token == stale:
                self._token = await self._post_login()
            token: str = self._token
        return token

    async def _post_login(self) -> str:
        """``POST /authentication`` and return the new access token."""
        email, password = self._credentials.email, self._credentials.password
        if not email or not password:
            raise ConfigError("cannot log in to the API without an email and a password")
        request = self._http.build_request(
            "POST",
            self._url("/authentication"),
            json={"strategy": "local", "email": email, "password": password},
        )
        async with self._sent(request) as response:
            if response.status_code in (400, 401):
                raise await _status_error(
                    response,
                    LoginFailed,
                    prefix=f"the server refused the credentials of {email}",
                    secret=password,
                )
            await self._raise_for_status(response)
            body = _decode_json(await _read(response), response)
        token = body.get("accessToken") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise ProtocolError(
                f"{_where(request)}: the answer has no accessToken", url=_public_url(request)
            )
        return token


_ERROR_CLASSES: Mapping[int, type[HTTPStatusError]] = {
    403: PermissionDenied,
    404: NotFound,
    429: RateLimited,
}


# -- helpers without state --------------------------------------------------------------------


class _DownloadUrls(Sequence[str]):
    """The URLs of ``download_ids`` under ``prefix``, made as they are read: a batch of
    probes reads them as it goes, and takes ids added to the list meanwhile."""

    def __init__(self, download_ids: Sequence[int], prefix: str) -> None:
        self._ids = download_ids
        self._prefix = prefix

    def __len__(self) -> int:
        return len(self._ids)

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...
    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        if isinstance(index, slice):
            return [f"{self._prefix}{i}" for i in self._ids[index]]
        return f"{self._prefix}{self._ids[index]}"


def _public_url(request: httpx.Request) -> str:
    """The request's URL for messages: no user info (the API URL never has any)."""
    return str(request.url.copy_with(userinfo=b""))


def _where(request: httpx.Request) -> str:
    """``GET /api/v1/downloads?build_id=5139``: how messages and logs name a request."""
    return f"{request.method} {request.url.raw_path.decode('ascii')}"


_TRAILING_ID = re.compile(r"/\d+$")


def _endpoint_key(request: httpx.Request) -> str:
    """The emulator's endpoint key: ``GET /api/v1/downloads/:id``."""
    return f"{request.method} {_TRAILING_ID.sub('/:id', request.url.path)}"


def _log_exchange(where: str, outcome: int | str, size: int, started: float) -> None:
    logger.debug(
        "%s -> %s, %d bytes, %.0f ms",
        where,
        outcome,
        size,
        (time.perf_counter() - started) * 1000,
    )


def _map_httpx_error(exc: httpx.HTTPError, request: httpx.Request) -> ApiError:
    """The mkwfs error for an httpx failure: a body it could not decode is a protocol
    error, everything else means there was no (complete) answer."""
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    where, url = _where(request), _public_url(request)
    if isinstance(exc, httpx.DecodingError):
        return ProtocolError(f"{where}: undecodable body ({detail})", url=url)
    return TransportError(f"{where}: connection failed ({detail})", url=url)


async def _read(response: httpx.Response) -> bytes:
    """The whole body of a successful metadata response; ``ProtocolError`` beyond
    ``JSON_BODY_LIMIT`` bytes (whatever ``Content-Length`` claims)."""
    body = bytearray()
    try:
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > JSON_BODY_LIMIT:
                raise ProtocolError(
                    f"{_where(response.request)}: an answer of more than {JSON_BODY_LIMIT} bytes",
                    url=_public_url(response.request),
                )
    except httpx.HTTPError as exc:
        raise _map_httpx_error(exc, response.request) from exc
    return bytes(body)


async def _read_error_body(response: httpx.Response) -> bytes:
    """Up to ``ERROR_BODY_LIMIT`` bytes of an error body; what arrived if the connection
    fails (the status says enough)."""
    body = bytearray()
    try:
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) >= ERROR_BODY_LIMIT:
                break
    except httpx.HTTPError:
        logger.debug("%s: error body cut short", _where(response.request))
    return bytes(body)


async def _status_error(
    response: httpx.Response,
    error_class: type[HTTPStatusError],
    *,
    prefix: str = "",
    secret: str | None = None,
) -> HTTPStatusError:
    """The error for an error response: ``GET /x: 503 Service Unavailable (upstream down)``.
    A ``secret`` the server might echo is masked."""
    server_message = _server_message(await _read_error_body(response), response)
    if secret:
        server_message = server_message.replace(secret, "***")
    status = response.status_code
    status_line = f"{status} {response.reason_phrase}".rstrip()
    message = f"{_where(response.request)}: {status_line}"
    if server_message.lower() not in status_line.lower():  # a proxy page just repeating it
        message += f" ({server_message})"
    if prefix:
        message = f"{prefix}: {message}"
    url = _public_url(response.request)
    if error_class is RateLimited:
        return RateLimited(
            message,
            url=url,
            status=status,
            server_message=server_message,
            retry_after=_retry_after(response.headers.get("Retry-After")),
        )
    return error_class(message, url=url, status=status, server_message=server_message)


def _server_message(body: bytes, response: httpx.Response) -> str:
    """The server's own words in an error body: a Feathers ``message``, an HTML page's
    title or text, or a plain text; shortened, ``""`` for an empty body."""
    text = body.decode(response.charset_encoding or "utf-8", errors="replace").strip()
    if not text:
        return ""
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        text = data["message"]
    elif "html" in response.headers.get("Content-Type", "") or text.startswith("<"):
        text = _html_text(text)
    return _shorten(" ".join(text.split()))


_HTML_TITLE = re.compile(r"<title[^>]*>(.*?)</title\s*>", re.IGNORECASE | re.DOTALL)
_HTML_NOISE = re.compile(r"<(script|style|head)\b.*?</\1\s*>|<!--.*?-->", re.IGNORECASE | re.DOTALL)
_HTML_TAG = re.compile(r"<[^>]*>")


def _html_text(page: str) -> str:
    title = _HTML_TITLE.search(page)
    text = title.group(1) if title else _HTML_TAG.sub(" ", _HTML_NOISE.sub(" ", page))
    return html.unescape(text)


def _shorten(text: str) -> str:
    if len(text) <= SERVER_MESSAGE_LIMIT:
        return text
    return text[: SERVER_MESSAGE_LIMIT - 1].rstrip() + "…"


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds from now: delta seconds or an HTTP date; None if absent
    or unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        seconds = when.timestamp() - time.time()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _decode_json(body: bytes, response: httpx.Response) -> Any:
    """The JSON of an answer. Bytes that are not UTF-8 (a broken server) become U+FFFD, so
    one bad name does not hide a whole list; JSON nested beyond ``JSON_DEPTH_LIMIT`` is a
    ``ProtocolError``."""
    where, url = _where(response.request), _public_url(response.request)
    try:
        try:
            data = json.loads(body)
        except UnicodeDecodeError:
            data = json.loads(body.decode("utf-8", "replace"))
    except ValueError as exc:
        raise ProtocolError(f"{where}: the answer is not valid JSON ({exc})", url=url) from exc
    except RecursionError as exc:
        raise ProtocolError(f"{where}: the answer's JSON nests too deeply", url=url) from exc
    if _nesting_exceeds(data, JSON_DEPTH_LIMIT):
        raise ProtocolError(
            f"{where}: the answer's JSON nests more than {JSON_DEPTH_LIMIT} levels", url=url
        )
    return data


def _nesting_exceeds(data: object, limit: int) -> bool:
    """Whether ``data`` has arrays or objects nested more than ``limit`` deep (level by
    level: no recursion however deep it is, and only containers are kept)."""
    level: list[Any] = [data] if isinstance(data, dict | list) else []
    for _ in range(limit):
        level = [
            child
            for value in level
            for child in (value.values() if isinstance(value, dict) else value)
            if isinstance(child, (dict, list))  # a tuple: faster than dict | list here
        ]
        if not level:
            return False
    return bool(level)


def _feathers_page(data: object, where: str, url: str, *, skip: int) -> tuple[int, list[object]]:
    """``(total, data)`` of a Feathers page that must start at item ``skip``."""
    if not isinstance(data, dict):
        raise ProtocolError(f"{where}: expected a JSON array or a page, got {_kind(data)}", url=url)
    total, page, page_skip = data.get("total"), data.get("data"), data.get("skip", skip)
    if not _is_count(total) or not isinstance(page, list) or not _is_count(page_skip):
        raise ProtocolError(f"{where}: a page without valid total, skip and data", url=url)
    if page_skip != skip:
        raise ProtocolError(
            f"{where}: asked for items from {skip}, got a page from {page_skip}", url=url
        )
    return total, page


def _is_count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _kind(value: object) -> str:
    return "a JSON object" if isinstance(value, dict) else type(value).__name__


def _json_object(item: object) -> Mapping[str, Any]:
    if not isinstance(item, dict):
        raise ValueError(f"expected a JSON object, got {_kind(item)}")
    return item


def _parsed(parse: Callable[[object], T], item: object, where: str, url: str) -> T:
    try:
        return parse(item)
    except ValueError as exc:
        raise ProtocolError(f"{where}: {exc}", url=url) from exc


def _is_identity(headers: Mapping[str, str]) -> bool:
    """Whether a body is sent as is. ``headers`` by lower-case name, or ``httpx.Headers``."""
    return headers.get("content-encoding", "identity").strip().lower() in ("", "identity")


_CONTENT_RANGE = re.compile(r"bytes\s+([0-9]+)-([0-9]+)/([0-9]+|\*)", re.IGNORECASE)
_DIGITS = re.compile(r"[0-9]+")


def _content_range(response: httpx.Response, where: str) -> tuple[int, int, int | None]:
    """``(first, last, total)`` of a 206's ``Content-Range``; ``total`` None for ``*``."""
    value = response.headers.get("Content-Range", "")
    match = _CONTENT_RANGE.fullmatch(value.strip())
    if match is None or int(match[2]) < int(match[1]) or int(match[2]) >= MAX_BODY_SIZE:
        raise ProtocolError(
            f"{where}: 206 with an unreadable Content-Range {value!r}",
            url=_public_url(response.request),
        )
    total = None if match[3] == "*" else int(match[3])
    if total is not None and not int(match[2]) < total <= MAX_BODY_SIZE:
        raise ProtocolError(
            f"{where}: 206 with an impossible Content-Range {value!r}",
            url=_public_url(response.request),
        )
    return int(match[1]), int(match[2]), total


def _content_length(response: httpx.Response, where: str) -> int | None:
    """``Content-Length`` of a body sent as is; None when absent or content-encoded."""
    value = response.headers.get("Content-Length")
    if value is None or not _is_identity(response.headers):
        return None
    length = _readable_length(value)
    if length is None:
        raise ProtocolError(
            f"{where}: unreadable Content-Length {value!r}", url=_public_url(response.request)
        )
    return length


def _readable_length(value: str) -> int | None:
    """A ``Content-Length`` value as a size; None unless it is digits, at most
    ``MAX_BODY_SIZE``."""
    value = value.strip()
    if _DIGITS.fullmatch(value) is None or int(value) > MAX_BODY_SIZE:
        return None
    return int(value)


def _content_info(response: httpx.Response, where: str, *, asked_range: bool) -> ContentInfo:
    """What a download response's headers say about the whole file. A 200 to a ``Range``
    request means the server ignores ranges, whatever its ``Accept-Ranges`` claims."""
    filename = _disposition_filename(response.headers.get("Content-Disposition", ""))
    if response.status_code == 206:
        return ContentInfo(_content_range(response, where)[2], True, filename)
    accepts = not asked_range and response.headers.get("Accept-Ranges", "").lower() == "bytes"
    return ContentInfo(_content_length(response, where), accepts, filename)


def _plain_head_info(head: Head) -> ContentInfo | None:
    """What a plain answer of a batch ``HEAD`` says: a 200 with a readable size of a body
    sent as is. None for anything else, which `ApiClient.probe_download` then handles
    (and explains: ``_content_info`` names what is wrong)."""
    headers = head.headers
    length = _readable_length(headers.get("content-length", ""))
    if head.status != 200 or not _is_identity(headers) or length is None:
        return None
    accepts = headers.get("accept-ranges", "").lower() == "bytes"
    return ContentInfo(
        length, accepts, _disposition_filename(headers.get("content-disposition", ""))
    )


_DISPOSITION_PARAM = re.compile(r';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')
#: What servers send nearly always: one quoted filename, nothing to unescape.
_PLAIN_DISPOSITION = re.compile(r'\s*attachment\s*;\s*filename\s*=\s*"([^"\\]+)"\s*;?\s*', re.I)


def _disposition_filename(value: str) -> str | None:
    """The filename of a ``Content-Disposition``: ``filename*=UTF-8''...`` (RFC 5987)
    before ``filename="..."``. Informational only, never trusted as a path."""
    if (simple := _PLAIN_DISPOSITION.fullmatch(value)) is not None:
        return simple[1]  # a directory's worth of probes: a fifth of the time
    params = {name.lower(): raw.strip() for name, raw in _DISPOSITION_PARAM.findall(value)}
    extended = params.get("filename*")
    if extended and extended.count("'") >= 2:
        charset, _language, encoded = extended.split("'", 2)
        try:
            return urllib.parse.unquote(encoded, encoding=charset or "utf-8", errors="replace")
        except LookupError:
            pass
    plain = params.get("filename")
    if plain is None:
        return None
    if len(plain) >= 2 and plain[0] == plain[-1] == '"':
        plain = re.sub(r"\\(.)", r"\1", plain[1:-1])
    return plain or None
