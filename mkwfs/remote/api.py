"""The MetaKraftwerk API client: the calls (lists, probes, downloads) over one session.

``ApiClient`` is the only code that talks HTTP. It sends every request through one injected
``httpx.AsyncClient`` (the caller owns its pooling, timeouts and lifetime) and turns whatever
goes wrong into the exceptions of :mod:`mkwfs.remote.errors`. Its rooms:

* :mod:`~mkwfs.remote.auth` — credentials, the token, login and re-login after a 401;
* :mod:`~mkwfs.remote.session` — sending: authorization, counting, the log line per request;
* :mod:`~mkwfs.remote.failures` — httpx failures and error statuses as mkwfs errors;
* :mod:`~mkwfs.remote.headers`, :mod:`~mkwfs.remote.payloads` — reading headers and JSON;
* :mod:`~mkwfs.remote.retry` — retries of idempotent calls (``RetryPolicy``).

Idempotent metadata calls are retried on transport failures, 429 and 502/503/504; download
bodies are not (the content layer resumes them). This module keeps exporting the names the
other layers import (``Credentials``, ``RetryPolicy``, ``is_transient``, ...).

Neither a token nor a password ever appears in a message, a log line or a ``repr``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar, cast, runtime_checkable

import httpx

from mkwfs.remote.auth import Credentials
from mkwfs.remote.errors import ConfigError, Offline, ProtocolError
from mkwfs.remote.failures import (
    map_httpx_error,
    protocol_error,
    public_url,
    raise_for_status,
    read_body,
    where,
)
from mkwfs.remote.headers import MAX_BODY_SIZE, content_info, content_range
from mkwfs.remote.models import Build, ContentInfo, Download, parse_build, parse_download
from mkwfs.remote.payloads import (
    JSON_BODY_LIMIT,
    JSON_DEPTH_LIMIT,
    PAGE_LIMIT,
    ItemParser,
    Listing,
    decode_json,
    decode_list,
    feathers_page,
    json_object,
)
from mkwfs.remote.probes import NO_HEAD_STATUSES, HeadBatches, SizeProbes
from mkwfs.remote.retry import RETRYABLE_STATUSES, RetryPolicy, is_transient, retrying
from mkwfs.remote.session import ApiSession, ApiStats
from mkwfs.remote.transport import BodyTooLong, Whole
from mkwfs.remote.validators import Answer, Validator

__all__ = [
    "JSON_BODY_LIMIT",
    "JSON_DEPTH_LIMIT",
    "MAX_BODY_SIZE",
    "NO_HEAD_STATUSES",
    "PAGE_LIMIT",
    "RETRYABLE_STATUSES",
    "Answer",
    "ApiClient",
    "ApiStats",
    "Credentials",
    "DownloadStream",
    "HeadBatches",
    "RetryPolicy",
    "Validator",
    "WholeBodies",
    "is_transient",
]

T = TypeVar("T")

_DEFAULT_RETRY = RetryPolicy()
_NO_RETRY = RetryPolicy(attempts=1)
#: The bytes of `ApiClient.check_builds`'s answer read (a page of no builds is about 50).
CHECK_BYTES = 64 * 1024


@runtime_checkable
class WholeBodies(Protocol):
    """A transport's ``GET`` of a small body into one buffer (`CurlTransport.get_whole`)."""

    async def get_whole(
        self,
        url: str,
        headers: Mapping[str, str],
        *,
        per_request: httpx.Timeout,
        max_size: int,
    ) -> Whole: ...


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
            raise map_httpx_error(exc, self._response.request) from exc
        if self.length is not None and received < self.length:
            raise ProtocolError(
                f"{self._where}: the body ended after {received} of {self.length} bytes",
                url=public_url(self._response.request),
            )


class ApiClient:
    """The MetaKraftwerk API over one injected ``httpx.AsyncClient``.

    ``base_url`` is the server root (``https://app.metakraftwerk.com``); the client adds
    ``/authentication`` and ``/api/v1/...``. ``ConfigError`` for a URL that is not plain
    http(s) without user info, or credentials with neither a token nor email and password.

    ``requests`` counts the requests sent, by the emulator's endpoint keys
    (``"GET /api/v1/downloads/:id"``), failed ones included; ``stats`` sums them up.

    ``heads``, the batch path of the client's transport (`CurlTransport.heads`), makes
    `probe_downloads` cheap; without it that method leaves every probe to `probe_download`.
    When it also takes small bodies whole (`WholeBodies`), so does `download_whole`.

    ``page_limit`` is the ``$limit`` lists ask for (the server may send smaller pages).

    ``offline`` (set by the catalog while the mount is offline): bodies and size probes
    fail at once with ``Offline``, without a request; lists are the catalog's to hold back.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        credentials: Credentials,
        retry: RetryPolicy = _DEFAULT_RETRY,
        *,
        heads: HeadBatches | None = None,
        page_limit: int = PAGE_LIMIT,
    ) -> None:
        url = httpx.URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ConfigError(f"the API URL must be http(s)://HOST[:PORT], not {base_url!r}")
        if url.userinfo:
            raise ConfigError("the API URL must not contain a user name or password")
        if not credentials.token and not credentials.can_login:
            raise ConfigError("the API needs a token, or an email and a password")
        self._session = ApiSession(http, str(url).rstrip("/"), credentials)
        self._probes = SizeProbes(self._session, retry, heads)
        self._wholes: WholeBodies | None = heads if isinstance(heads, WholeBodies) else None
        self._credentials = credentials
        self._retry = retry
        self._page_limit = page_limit
        self.requests = self._session.requests
        self.stats = self._session.stats
        self.offline = False

    def __repr__(self) -> str:
        return f"ApiClient({self.base_url!r}, {self._credentials!r})"

    @property
    def base_url(self) -> str:
        """The server root requests go to (never with credentials)."""
        return self._session.base_url

    @property
    def token(self) -> str | None:
        """The token in use, the one from the last login if there was one (for ``mkwfs
        login`` to keep); None before the first login. Never logged."""
        return self._session.auth.token

    # -- metadata -------------------------------------------------------------------------

    async def login(self) -> None:
        """Log in with the email and password (``POST /authentication``) and use the new
        token from now on. ``LoginFailed`` when the server refuses them (401/400)."""
        await self._session.auth.login()

    async def list_builds(self, **filters: str | int) -> list[Build]:
        """``GET /api/v1/builds`` with the given filters (``project_id=402``, ...)."""
        return _changed(await self.builds_if_changed(None, filters))

    async def get_build(self, build_id: int) -> Build:
        """``GET /api/v1/builds/:id``; ``NotFound`` for an unknown id."""
        return _changed(await self.build_if_changed(build_id, None))

    async def list_downloads(self, build_id: int) -> list[Download]:
        """``GET /api/v1/downloads?build_id=N``: the build's result files, without bodies."""
        return _changed(await self.downloads_if_changed(build_id, None))

    async def list_projects(self) -> list[Mapping[str, Any]]:
        """``GET /api/v1/projects``: the raw JSON objects."""
        return _changed(await self.projects_if_changed(None))

    async def list_patterns(self) -> list[Mapping[str, Any]]:
        """``GET /api/v1/patterns``: the raw JSON objects."""
        return _changed(await self.patterns_if_changed(None))

    # -- conditional metadata: a 304 costs no body and no parse ----------------------------
    #
    # Each takes the validator of the copy the caller holds (None: it holds none) and gives
    # an `Answer`: the new value and its validator, or "not modified". ``retry=False`` sends
    # the request once: a refused connection is believed at once (the mount's start).

    async def builds_if_changed(
        self,
        validator: Validator | None,
        filters: Mapping[str, str | int] | None = None,
        *,
        retry: bool = True,
    ) -> Answer[list[Build]]:
        """`list_builds` with ``filters``, conditional."""
        filters = filters or {}
        return await self._list("/api/v1/builds", filters, parse_build, validator, retry)

    async def check_builds(self, *, retry: bool = True) -> None:
        """Ask for a page of no builds (``$limit=0``): whether the server answers as the API
        and takes the token, in one small request where the list of builds takes seconds.
        Raises as a list request would (``ProtocolError`` for an answer that is no list).
        A server that ignores ``$limit`` sends its whole list: past ``CHECK_BYTES``, only its
        start is checked, and the rest is cut off unread."""

        async def once() -> None:
            exchange = self._session.exchange("GET", "/api/v1/builds", params={"$limit": 0})
            async with exchange as response:
                head, complete = await _read_head(response, CHECK_BYTES)
            try:
                _check_list_start(head, complete=complete)
            except ValueError as exc:
                raise protocol_error(response.request, exc) from exc

        await retrying(self._retry if retry else _NO_RETRY, once)

    async def build_if_changed(
        self, build_id: int, validator: Validator | None, *, retry: bool = True
    ) -> Answer[Build]:
        """`get_build`, conditional."""
        path = f"/api/v1/builds/{build_id}"
        request = self._session.http.build_request("GET", self._session.url(path))
        answer = await self._get_json(path, None, validator, retry)
        if answer.value is None:
            return Answer(None, answer.validator)
        return Answer(_parsed(parse_build, answer.value, request), answer.validator)

    async def downloads_if_changed(
        self, build_id: int, validator: Validator | None, *, retry: bool = True
    ) -> Answer[list[Download]]:
        """`list_downloads`, conditional."""
        params = {"build_id": build_id}
        parse = _whole(parse_download)
        return await self._list("/api/v1/downloads", params, parse, validator, retry)

    async def projects_if_changed(
        self, validator: Validator | None, *, retry: bool = True
    ) -> Answer[list[Mapping[str, Any]]]:
        """`list_projects`, conditional."""
        return await self._list("/api/v1/projects", {}, _whole(json_object), validator, retry)

    async def patterns_if_changed(
        self, validator: Validator | None, *, retry: bool = True
    ) -> Answer[list[Mapping[str, Any]]]:
        """`list_patterns`, conditional."""
        return await self._list("/api/v1/patterns", {}, _whole(json_object), validator, retry)

    async def _list(
        self,
        path: str,
        params: Mapping[str, str | int],
        parse: ItemParser[T],
        validator: Validator | None,
        retry: bool,
    ) -> Answer[list[T]]:
        """GET a list in pages of the largest size the server allows (`payloads.Listing`).
        ``ProtocolError`` for pages that do not add up. Each item is parsed as it is read,
        with its JSON text (`decode_list`). Only the first page is asked conditionally, and a
        list that took more than one page gets no validator: one page's ETag says nothing of
        the others."""
        first_page = self._session.http.build_request("GET", self._session.url(path), params=params)
        listing = Listing(self._page_limit)
        answer: Answer[Any] = Answer(None, None)
        pages = 0
        while not listing.done:
            conditional = validator if pages == 0 else None
            answer = await self._get_json(
                path, {**params, **listing.params()}, conditional, retry, parse
            )
            pages += 1
            if answer.value is None:
                return Answer(None, answer.validator)
            try:
                listing.add(answer.value)
            except ValueError as exc:
                raise protocol_error(first_page, exc) from exc
        return Answer(cast(list[T], listing.items), answer.validator if pages == 1 else None)

    async def _get_json(
        self,
        path: str,
        params: Mapping[str, str | int] | None,
        validator: Validator | None,
        retry: bool,
        parse_items: ItemParser[Any] | None = None,
    ) -> Answer[Any]:
        """GET ``path`` and decode its JSON body (a list's items with ``parse_items``, see
        `decode_list`), with its validator; asked with ``validator``'s conditions, a 304 gives
        "not modified" without reading a body. Retried per the policy (``retry``) or sent
        once."""
        headers = validator.headers() if validator is not None else None

        async def once() -> Answer[Any]:
            exchange = self._session.exchange("GET", path, params=params, headers=headers)
            async with exchange as response:
                if response.status_code == 304:
                    return Answer(None, Validator.of(response.headers) or validator)
                body = await read_body(response)
                try:
                    value = (
                        decode_json(body)
                        if parse_items is None
                        else decode_list(body, parse_items)
                    )
                    return Answer(value, Validator.of(response.headers))
                except ValueError as exc:
                    raise protocol_error(response.request, exc) from exc

        return await retrying(self._retry if retry else _NO_RETRY, once)

    # -- sizes ----------------------------------------------------------------------------

    async def probe_download(self, download_id: int) -> ContentInfo:
        """Size, range support and filename of a download, without downloading its body.

        ``HEAD``; when the server does not do ``HEAD`` (405/501), a ``GET`` with
        ``Range: bytes=0-0`` of which at most the one byte is read (`probes`).
        """
        self._check_online()
        return await self._probes.probe(download_id)

    def probe_downloads(
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
        if self.offline:
            return _none_for(download_ids)
        return self._probes.probe_many(download_ids, at_once=at_once)

    def _check_online(self) -> None:
        if self.offline:
            raise Offline("offline: the server was out of reach at mount time", url=self.base_url)

    # -- bodies ---------------------------------------------------------------------------

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
        self._check_online()
        path = f"/api/v1/downloads/{download_id}"
        headers = {"Accept-Encoding": "identity"}
        wants_range = start > 0 or end is not None
        if wants_range:
            headers["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        async with self._session.exchange("GET", path, headers=headers) as response:
            info = _content_info(response, asked_range=wants_range)
            offset, length = 0, info.size
            if response.status_code == 206:
                first, last, _ = _content_range(response)
                if first != start:
                    raise protocol_error(
                        response.request, f"asked for bytes from {start}, got them from {first}"
                    )
                offset, length = first, last - first + 1
            yield DownloadStream(
                response, where=where(response.request), offset=offset, info=info, length=length
            )

    async def download_whole(self, download_id: int, *, max_size: int) -> bytes:
        """The whole body of a download known to be small, in one buffer: one ``GET`` on the
        transport's lean path (`WholeBodies`), without a stream; through `open_download`
        when the transport has none. Errors as `open_download`'s (a 401 logs in again
        once, when it can); a body over ``max_size`` bytes, or shorter than its
        ``Content-Length``, is a ``ProtocolError``; nothing is retried."""
        path = f"/api/v1/downloads/{download_id}"
        if self._wholes is None:
            return await self._download_streamed(download_id, max_size)
        self._check_online()
        session = self._session
        can_login = session.auth.credentials.can_login
        token = await session.auth.current()
        whole = await self._get_whole(path, token, max_size)
        if whole.status == 401 and can_login:
            token = await session.auth.current(stale=token)
            whole = await self._get_whole(path, token, max_size)
        if whole.error is not None or whole.status != 200:
            request = session.http.build_request("GET", session.url(path))
            if isinstance(whole.error, BodyTooLong):
                raise protocol_error(request, whole.error) from whole.error
            if whole.error is not None:
                raise map_httpx_error(whole.error, request) from whole.error
            response = httpx.Response(
                whole.status, headers=whole.headers, content=whole.body, request=request
            )
            await raise_for_status(response, can_login=can_login)
            raise protocol_error(request, f"answered {whole.status} to a plain GET")
        encoding = whole.headers.get("content-encoding", "identity").lower()
        if encoding == "identity":
            return whole.body
        # Asked not to, the server applied an encoding anyway: httpx decodes it.
        request = session.http.build_request("GET", session.url(path))
        response = httpx.Response(
            200, headers=whole.headers, stream=httpx.ByteStream(whole.body), request=request
        )
        try:
            return await response.aread()
        except httpx.HTTPError as exc:
            raise map_httpx_error(exc, request) from exc

    async def _get_whole(self, path: str, token: str, max_size: int) -> Whole:
        """One counted, logged `WholeBodies.get_whole` of ``path``."""
        assert self._wholes is not None
        session = self._session
        headers = {
            **session.http.headers,
            "Accept-Encoding": "identity",
            "Authorization": f"Bearer {token}",
        }
        started = time.perf_counter()
        whole = await self._wholes.get_whole(
            session.url(path), headers, per_request=session.http.timeout, max_size=max_size
        )
        session.count_whole(f"GET {path}", whole, started)
        return whole

    async def _download_streamed(self, download_id: int, max_size: int) -> bytes:
        """`download_whole` through `open_download`."""
        parts: list[bytes] = []
        received = 0
        async with self.open_download(download_id) as stream:
            async for chunk in stream.iter_chunks():
                received += len(chunk)
                if received > max_size:
                    raise ProtocolError(
                        f"GET /api/v1/downloads/{download_id}: the body is over {max_size} bytes",
                        url=self._session.url(f"/api/v1/downloads/{download_id}"),
                    )
                parts.append(chunk)
        return b"".join(parts)


# -- helpers without state --------------------------------------------------------------------


async def _none_for(
    download_ids: Sequence[int],
) -> AsyncGenerator[tuple[int, ContentInfo | None], None]:
    """Every id with None: what a batch of probes gives that asked nothing."""
    for download_id in list(download_ids):
        yield download_id, None


async def _read_head(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """The body, or its first ``limit`` bytes or so; and whether that is the whole body."""
    head = bytearray()
    try:
        async for chunk in response.aiter_bytes():
            head += chunk
            if len(head) >= limit:
                return bytes(head), False
    except httpx.HTTPError as exc:
        raise map_httpx_error(exc, response.request) from exc
    return bytes(head), True


def _check_list_start(head: bytes, *, complete: bool) -> None:
    """``ValueError`` unless ``head`` is a list answer (a JSON array or a Feathers page), or,
    not ``complete``, starts as one."""
    if not complete:
        if head.lstrip()[:1] not in (b"[", b"{"):
            raise ValueError("the answer is not JSON")
        return
    data = decode_json(head)
    if not isinstance(data, list):
        feathers_page(data, skip=0)


def _whole(parse: Callable[[object], T]) -> ItemParser[T]:
    """An item parser that needs the item's value only, not its JSON text."""
    return lambda item, _source: parse(item)


def _changed(answer: Answer[T]) -> T:
    """The value of an unconditional call's answer (which cannot be "not modified")."""
    assert answer.value is not None, "a 304 to a request without conditions"
    return answer.value


def _parsed(parse: Callable[[object], T], item: object, request: httpx.Request) -> T:
    """``parse(item)``; its ``ValueError`` as the ``ProtocolError`` of ``request``."""
    try:
        return parse(item)
    except ValueError as exc:
        raise protocol_error(request, exc) from exc


def _content_info(response: httpx.Response, *, asked_range: bool) -> ContentInfo:
    """`headers.content_info` of a response; ``ProtocolError`` for unreadable headers."""
    try:
        return content_info(response.status_code, response.headers, asked_range=asked_range)
    except ValueError as exc:
        raise protocol_error(response.request, exc) from exc


def _content_range(response: httpx.Response) -> tuple[int, int, int | None]:
    """`headers.content_range` of a 206; ``ProtocolError`` for an unreadable one."""
    try:
        return content_range(response.headers.get("Content-Range", ""))
    except ValueError as exc:
        raise protocol_error(response.request, exc) from exc
