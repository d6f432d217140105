"""A MetaKraftwerk API emulator for tests, demos and benchmarks.

It plays the Feathers.js server of ``/work/shared/api``: local login with real HS256 JWTs,
builds, downloads (whose bodies are real, deterministic ZIP files), projects and patterns,
Feathers error bodies, and every undocumented behaviour a client must cope with, chosen by
`EmulatorConfig` (HEAD or 405, Range honoured or ignored, chunked bodies, pagination) or
injected per request with `Emulator.fail_next`.

It also plays a server under fire, switchable per test: latency and jitter, bursts of errors
(`Emulator.fail_next`, ``config.fail_rate``), 429 with ``Retry-After``, a server that is down
(``config.down``, `EmulatorServer.stop`), bodies cut by a clean close or a reset, bodies that
stall, malformed JSON, expiring tokens, forbidden downloads, and builds and downloads that
appear, change and vanish (`Emulator.add_download`, `Emulator.remove_build`, ...).

`Emulator.handle` is the whole API, a function from an ``httpx.Request`` to an
``httpx.Response``. A download body is not bytes but a `FileBody` stream that describes it
(file, offset, length, throttle, stall, where and how the connection ends), and the delay
before a response is kept with it (`response_delay`): `Emulator.mock_transport` plays both
in process, raising the httpx exception a real socket would give, and `EmulatorServer` sends
them over a socket (bodies with ``sendfile``). No status, header, body or fault is decided
anywhere else.

Ids and names are fixed (see the module constants); ``config.seed`` drives the bodies' bytes.
Bodies are generated on first use into ``data_dir`` and reused across runs and processes.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import email.utils
import fcntl
import hashlib
import hmac
import html
import http.client
import io
import json
import logging
import math
import os
import random
import re
import secrets
import selectors
import signal
import socket
import socketserver
import struct
import sys
import termios
import threading
import time
import uuid
import weakref
import zipfile
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any, Final, Literal, Protocol
from urllib.parse import quote

import httpx
import trio

__all__ = [
    "ANY_ENDPOINT",
    "AWKWARD_BUILD",
    "BIG_BUILD",
    "BIG_ZIP",
    "BUILDING_BUILD",
    "CANCELED_BUILD",
    "DEMO_BUILD",
    "ENDPOINTS",
    "FAILED_BUILD",
    "FORBIDDEN_BUILD",
    "LARGE_BUILD",
    "MEDIUM_FILE",
    "MEDIUM_FILE_SIZE",
    "Emulator",
    "EmulatorConfig",
    "EmulatorServer",
    "FileBody",
    "Stall",
    "main",
    "response_delay",
    "serve_in_thread",
]

_log = logging.getLogger(__name__)

JSON = dict[str, Any]
FailureBody = Literal["json", "html", "empty", "malformed"]
#: How a connection ends after a cut body: a clean close (FIN) or a reset (RST).
Ending = Literal["close", "reset"]

DEMO_BUILD: Final = 5139  # FINISHED, 4 typical result ZIPs (few KB .. ~1 MB)
LARGE_BUILD: Final = 5140  # FINISHED, 1000 small ZIPs
BIG_BUILD: Final = 5141  # FINISHED, BIG_ZIP + MEDIUM_FILE
AWKWARD_BUILD: Final = 5142  # FINISHED, awkward names
BUILDING_BUILD: Final = 5143  # BUILDING, build_end null, 2 files
FAILED_BUILD: Final = 5144  # FAILED, 1 file
CANCELED_BUILD: Final = 5145  # CANCELED, no files
FORBIDDEN_BUILD: Final = 5146  # FINISHED, listing works, every download GET/HEAD -> 403

BIG_ZIP: Final = 5446  # download id of the big ZIP (config.big_file_size) in BIG_BUILD
MEDIUM_FILE: Final = 5447  # download id of the ~32 MiB ZIP in BIG_BUILD
MEDIUM_FILE_SIZE: Final = 32 * 2**20

#: `Emulator.fail_next`'s key for every request, whatever its endpoint.
ANY_ENDPOINT: Final = "*"
#: Every endpoint key of `Emulator.requests` and `Emulator.fail_next`.
ENDPOINTS: Final = frozenset(
    {
        "POST /authentication",
        "GET /api/v1/builds",
        "GET /api/v1/builds/:id",
        "GET /api/v1/downloads",
        "GET /api/v1/downloads/:id",
        "HEAD /api/v1/downloads/:id",
        "GET /api/v1/projects",
        "GET /api/v1/projects/:id",
        "GET /api/v1/patterns",
        "GET /api/v1/patterns/:id",
    }
)

#: Bumped whenever the body generator's code changes, so stale files in a data_dir are not
#: reused (changes of a download's `_BodySpec` are noticed without it).
_BODY_FORMAT: Final = 2
#: Largest piece of a download body read or sent at once.
_SEGMENT: Final = 2**20
#: Seconds between looks at a stall's release (and at a stopping server).
_POLL: Final = 0.01
#: At most this many seconds for a reset connection's peer to acknowledge what was sent.
_DRAIN_TIMEOUT: Final = 2.0
#: Where `Emulator.handle` keeps a response's delay (see `response_delay`).
_DELAY_KEY: Final = "mkwfs_emulator_delay"
_CUSTOMER_ID: Final = 1
#: The first id `Emulator.add_download` gives.
_ADDED_DOWNLOADS: Final = 7000
#: Issued tokens remembered before the expired ones are forgotten.
_TOKEN_RECORDS: Final = 4096
_ZIP_DATE: Final = (2026, 4, 2, 10, 14, 30)


@dataclass(frozen=True)
class EmulatorConfig:
    """How the emulated server behaves. ``seed``, ``big_file_size`` and ``data_dir`` are read
    when an `Emulator` is created; everything else on every request, so a test may swap the
    config of a running emulator with ``dataclasses.replace`` (setting ``down`` acts at once).

    Random choices (``jitter``, ``fail_rate``) come from one generator seeded with ``seed``,
    so the same requests in the same order meet the same faults."""

    seed: int = 5139
    #: Size of BIG_ZIP; the ZIP is this plus a few KB of small members and headers.
    big_file_size: int = 256 * 2**20
    #: Where generated bodies live; default $XDG_CACHE_HOME/mkwfs-emulator/<seed>-<size>.
    data_dir: Path | None = None
    email: str = "demo@metakraftwerk.example"
    password: str = "demo-password"
    #: Seconds a token is valid from its issue (to the server exactly; the ``exp`` claim is,
    #: like jsonwebtoken's, whole seconds from a whole-second ``iat``).
    token_lifetime: float = 86400.0
    #: None: lists are bare arrays; N: Feathers pages {"total","limit","skip","data"}.
    page_size: int | None = None
    #: False: HEAD -> 405 MethodNotAllowed (Feathers 5).
    head: bool = True
    #: True: Range -> 206 with Content-Range; False: Range ignored, 200 and the whole body.
    ranges: bool = True
    #: False: download bodies are sent chunked, without Content-Length.
    content_length: bool = True
    #: Bytes per second for download bodies; None: full speed.
    throttle: int | None = None
    #: Close the connection cleanly (FIN) after this many body bytes of each download GET: a
    #: body shorter than its Content-Length (or a chunked body without its last chunk).
    drop_after: int | None = None
    #: Reset the connection (RST) after this many body bytes of each download GET. When both
    #: are set, the smaller of ``drop_after`` and ``reset_after`` cuts (a tie: a clean close).
    reset_after: int | None = None
    #: Stop sending after this many body bytes of each download GET, the connection left
    #: open, until `Emulator.release_stalls`, ``stall_seconds`` or the server stops; then the
    #: rest follows. No stall when the body (or its cut) is not longer than this.
    stall_after: int | None = None
    #: None: a stall lasts until released.
    stall_seconds: float | None = None
    #: Seconds every response waits before its status line, plus a uniform random share of
    #: ``jitter`` seconds.
    latency: float = 0.0
    jitter: float = 0.0
    #: Probability that a request (any endpoint) is answered with a failure instead, of a
    #: status from ``fail_statuses`` and a body from ``fail_bodies`` (see `Emulator.fail_next`).
    fail_rate: float = 0.0
    fail_statuses: tuple[int, ...] = (500, 502, 503, 504)
    fail_bodies: tuple[FailureBody, ...] = ("json", "html", "empty")
    #: ``Retry-After`` of injected 429s: seconds, or an HTTP date.
    retry_after: int | str = 1
    #: 2xx JSON answers of the list and get endpoints cut in half (Content-Length fits the cut).
    malformed_json: bool = False
    #: Download ids whose GET and HEAD are answered 403, as every download of FORBIDDEN_BUILD.
    forbidden_downloads: frozenset[int] = frozenset()
    #: ``GET /api/v1/downloads?build_id=N`` for a build N that does not exist (or was removed):
    #: "empty": ``[]`` as Feathers' find; "404": NotFound, as a hook that checks the build would.
    missing_build_list: Literal["empty", "404"] = "empty"
    #: The server is down: every `EmulatorServer` of the emulator stops listening and cuts its
    #: connections (clients get ECONNREFUSED), and `Emulator.handle` raises
    #: ``httpx.ConnectError``. False again: the servers listen again on the same ports.
    down: bool = False


_DEFAULT_CONFIG: Final = EmulatorConfig()


# --- Feathers responses -------------------------------------------------------------------

_FEATHERS_ERRORS: Final[Mapping[int, tuple[str, str]]] = {
    400: ("BadRequest", "bad-request"),
    401: ("NotAuthenticated", "not-authenticated"),
    402: ("PaymentError", "payment-error"),
    403: ("Forbidden", "forbidden"),
    404: ("NotFound", "not-found"),
    405: ("MethodNotAllowed", "method-not-allowed"),
    406: ("NotAcceptable", "not-acceptable"),
    408: ("Timeout", "timeout"),
    409: ("Conflict", "conflict"),
    410: ("Gone", "gone"),
    411: ("LengthRequired", "length-required"),
    422: ("Unprocessable", "unprocessable"),
    429: ("TooManyRequests", "too-many-requests"),
    500: ("GeneralError", "general-error"),
    501: ("NotImplemented", "not-implemented"),
    502: ("BadGateway", "bad-gateway"),
    503: ("Unavailable", "unavailable"),
}

#: Feathers' service method for each HTTP method, as named in its MethodNotAllowed message.
_SERVICE_METHODS: Final[Mapping[tuple[str, bool], str]] = {
    ("GET", False): "find",
    ("GET", True): "get",
    ("POST", False): "create",
    ("POST", True): "create",
    ("PUT", False): "update",
    ("PUT", True): "update",
    ("PATCH", False): "patch",
    ("PATCH", True): "patch",
    ("DELETE", False): "remove",
    ("DELETE", True): "remove",
}


def _bytes_response(
    status: int,
    content: bytes,
    content_type: str | None,
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    """A response with an in-memory body; always with Content-Length (keep-alive needs it)."""
    all_headers = {"Content-Length": str(len(content))}
    if content_type is not None:
        all_headers["Content-Type"] = content_type
    all_headers.update(headers or {})
    return httpx.Response(status, headers=all_headers, content=content)


def _json_response(
    status: int, payload: object, headers: Mapping[str, str] | None = None
) -> httpx.Response:
    """JSON in UTF-8; a lone surrogate U+DC80..U+DCFF in a string (a name given to
    `Emulator.add_download`) goes out as the byte 0x80..0xFF, invalid UTF-8 as a broken
    server would send it."""
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    content = text.encode("utf-8", "surrogateescape")
    return _bytes_response(status, content, "application/json; charset=utf-8", headers)


def _error_response(
    status: int,
    message: str,
    *,
    data: JSON | None = None,
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    """A Feathers error: ``{"name", "message", "code", "className"}`` (+ ``data`` if given).
    Statuses Feathers has no class for are GeneralErrors that keep their code."""
    name, class_name = _FEATHERS_ERRORS.get(status, _FEATHERS_ERRORS[500])
    body: JSON = {"name": name, "message": message, "code": status, "className": class_name}
    if data is not None:
        body["data"] = data
    return _json_response(status, body, headers)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _cut_json(response: httpx.Response) -> httpx.Response:
    """``response`` with its (in-memory, JSON) body cut in half: malformed, yet whole as far
    as HTTP can tell."""
    content = response.content[: len(response.content) // 2]
    headers = httpx.Headers(response.headers)
    headers["Content-Length"] = str(len(content))
    return httpx.Response(response.status_code, headers=headers, content=content)


def _injected_response(status: int, kind: FailureBody, retry_after: int | str) -> httpx.Response:
    """What a failing server or the proxy in front of it answers (see `Emulator.fail_next`)."""
    headers = {"Retry-After": str(retry_after)} if status == 429 else {}
    if kind in ("json", "malformed"):
        response = _error_response(status, _phrase(status), headers=headers)
        return response if kind == "json" else _cut_json(response)
    if kind == "html":
        title = f"{status} {_phrase(status)}"
        page = (
            f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
            f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
            "</body>\r\n</html>\r\n"
        )
        return _bytes_response(status, page.encode(), "text/html", headers)
    return _bytes_response(status, b"", None, headers)


def _is_json_success(response: httpx.Response) -> bool:
    content_type = response.headers.get("Content-Type", "")
    return response.is_success and content_type.startswith("application/json")


def _content_disposition(filename: str) -> str:
    """``attachment; filename="..."`` as Express' content-disposition writes it: the basename,
    an ASCII fallback with ``?`` for what ASCII cannot say, and ``filename*`` if it differs."""
    basename = filename.rsplit("/", 1)[-1]
    fallback = "".join(c if " " <= c <= "~" else "?" for c in basename)
    quoted = fallback.replace("\\", "\\\\").replace('"', '\\"')
    header = f'attachment; filename="{quoted}"'
    if fallback != basename:
        header += f"; filename*=UTF-8''{quote(basename, safe='', errors='surrogateescape')}"
    return header


_UNSATISFIABLE: Final = "unsatisfiable"


def _parse_range(header: str, size: int) -> tuple[int, int] | Literal["unsatisfiable"] | None:
    """One ``bytes=a-b`` / ``a-`` / ``-n`` range as the inclusive ``(first, last)`` it selects
    of a ``size``-byte body, clamped as Express' range-parser does. None for what Express
    ignores (malformed, several ranges), ``"unsatisfiable"`` for what it answers with 416."""
    unit, _, spec = header.partition("=")
    first, dash, last = spec.strip().partition("-")
    if unit.strip().lower() != "bytes" or not dash or "," in spec:
        return None
    if not (first.isdigit() or not first) or not (last.isdigit() or not last):
        return None
    if not first:
        if not last:
            return None
        start, end = max(size - int(last), 0), size - 1
        if int(last) == 0:
            return _UNSATISFIABLE
    else:
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
    if start > end or start >= size:
        return _UNSATISFIABLE
    return start, end


# --- tokens -------------------------------------------------------------------------------


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _iso(moment: dt.datetime) -> str:
    """Feathers/Sequelize's timestamp format: ``2026-04-02T10:14:31.000Z``."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{moment.microsecond // 1000:03d}Z"
    )


# --- download bodies ----------------------------------------------------------------------


@dataclass(eq=False)
class Stall:
    """A pause before byte ``at`` of a body: until `release` or ``seconds`` pass (None: until
    released). Threads wait on ``released``; trio tasks are woken by `release` itself."""

    at: int
    seconds: float | None
    released: threading.Event = field(default_factory=threading.Event)
    _trio_waiters: set[tuple[trio.lowlevel.TrioToken, trio.Event]] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def release(self) -> None:
        """End the stall, for those waiting and those to come; from any thread."""
        self.released.set()
        with self._lock:
            waiters = list(self._trio_waiters)
        for token, event in waiters:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(event.set)

    async def wait_released(self, deadline: float) -> bool:
        """Wait (in trio) until `release` or trio's clock reaches ``deadline``; whether it
        was released."""
        waiter = (trio.lowlevel.current_trio_token(), trio.Event())
        with self._lock:
            self._trio_waiters.add(waiter)
        try:
            with trio.move_on_at(deadline):
                if not self.released.is_set():  # checked after joining: no release is missed
                    await waiter[1].wait()
        finally:
            with self._lock:
                self._trio_waiters.discard(waiter)
        return self.released.is_set()

    def wait_limit(self, read_timeout: float | None) -> tuple[float | None, bool]:
        """How long a reader with ``read_timeout`` waits (None: for ever), and whether the
        read timeout, not the stall's end, is what stops the wait."""
        if read_timeout is not None and (self.seconds is None or read_timeout < self.seconds):
            return read_timeout, True
        return self.seconds, False


def _never() -> bool:
    return False


class FileBody(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A download body: ``length`` bytes of the file ``path`` from ``offset``.

    Only the first ``limit`` bytes are ever produced; when that is less than ``length`` the
    connection then ends as ``ending`` says (`dropped`): ``"close"``, cleanly, or ``"reset"``.
    With a ``stall``, sending pauses before byte ``stall.at`` and then goes on; bytes are
    paced at ``throttle`` bytes per second when set. Read in process, a body raises what httpx
    raises on a real connection: ``RemoteProtocolError`` after a close, ``ReadError`` after a
    reset, ``ReadTimeout`` when a stall outlasts the request's read timeout. The HTTP server
    sends `paced` segments with ``sendfile`` instead. The async side runs under trio (a stall
    waits on trio's clock). ``on_sent`` is told every byte count that goes out.
    """

    def __init__(
        self,
        path: Path,
        offset: int,
        length: int,
        *,
        limit: int,
        throttle: int | None,
        on_sent: Callable[[int], None],
        request: httpx.Request,
        ending: Ending = "close",
        stall: Stall | None = None,
    ) -> None:
        self.path = path
        self.offset = offset
        self.length = length
        self.limit = min(limit, length)
        self.throttle = throttle
        self.on_sent = on_sent
        self.ending = ending
        self.stall = stall if stall is not None and stall.at < self.limit else None
        self._request = request

    @property
    def dropped(self) -> bool:
        """True when the connection ends before the whole body was sent."""
        return self.limit < self.length

    def segments(self) -> Iterator[tuple[int, int, float]]:
        """``(file offset, byte count, seconds after the start it may go out)`` covering the
        first ``limit`` bytes; small segments when throttled so the pace is smooth, and a
        segment boundary where the stall is."""
        step = _SEGMENT if self.throttle is None else max(1, min(_SEGMENT, self.throttle // 10))
        stall_at = None if self.stall is None else self.stall.at
        done = 0
        while done < self.limit:
            end = min(done + step, self.limit)
            if stall_at is not None and done < stall_at < end:
                end = stall_at
            due = 0.0 if self.throttle is None else done / self.throttle
            yield self.offset + done, end - done, due
            done = end

    def _stalls_before(self, offset: int) -> bool:
        return self.stall is not None and offset - self.offset == self.stall.at

    def paced(
        self, read_timeout: float | None = None, stopping: Callable[[], bool] = _never
    ) -> Iterator[tuple[int, int]]:
        """``(file offset, byte count)`` of each segment, each yielded when it may go out:
        blocks for the throttle and the stall (whose time does not count against the pace).
        A stall ends early once ``stopping()``; one that outlasts ``read_timeout`` raises
        ``httpx.ReadTimeout``."""
        started = time.monotonic()
        for offset, count, due in self.segments():
            if self._stalls_before(offset):
                paused = time.monotonic()
                self._wait_stall(read_timeout, stopping)
                started += time.monotonic() - paused
            time.sleep(max(0.0, started + due - time.monotonic()))
            yield offset, count

    def _wait_stall(self, read_timeout: float | None, stopping: Callable[[], bool]) -> None:
        assert self.stall is not None
        seconds, timed_out = self.stall.wait_limit(read_timeout)
        deadline = math.inf if seconds is None else time.monotonic() + seconds
        while not self.stall.released.is_set() and not stopping():
            left = deadline - time.monotonic()
            if left <= 0:
                if timed_out:
                    raise httpx.ReadTimeout("timed out", request=self._request)
                return
            self.stall.released.wait(min(_POLL, left))

    async def _wait_stall_async(self, read_timeout: float | None) -> None:
        assert self.stall is not None
        seconds, timed_out = self.stall.wait_limit(read_timeout)
        deadline = math.inf if seconds is None else trio.current_time() + seconds
        if not await self.stall.wait_released(deadline) and timed_out:
            raise httpx.ReadTimeout("timed out", request=self._request)

    @property
    def _read_timeout(self) -> float | None:
        """The read timeout the client gave the request (httpx's ``timeout`` extension)."""
        timeouts = self._request.extensions.get("timeout") or {}
        read = timeouts.get("read")
        return float(read) if read is not None else None

    def _ending_error(self) -> httpx.TransportError:
        if self.ending == "reset":
            return httpx.ReadError("[Errno 104] Connection reset by peer", request=self._request)
        return httpx.RemoteProtocolError(
            "peer closed connection without sending complete message body: "
            f"received {self.limit} bytes, expected {self.length}",
            request=self._request,
        )

    def __iter__(self) -> Iterator[bytes]:
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for offset, count in self.paced(self._read_timeout):
                data = os.pread(fd, count, offset)
                self.on_sent(len(data))
                yield data
        finally:
            os.close(fd)
        if self.dropped:
            raise self._ending_error()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        fd = await trio.to_thread.run_sync(os.open, self.path, os.O_RDONLY)
        try:
            started = trio.current_time()
            for offset, count, due in self.segments():
                if self._stalls_before(offset):
                    paused = trio.current_time()
                    await self._wait_stall_async(self._read_timeout)
                    started += trio.current_time() - paused
                await trio.sleep_until(started + due)
                data = await trio.to_thread.run_sync(os.pread, fd, count, offset)
                self.on_sent(len(data))
                yield data
        finally:
            os.close(fd)
        if self.dropped:
            raise self._ending_error()


BodyKind = Literal["iics", "powercenter", "ddl", "synapse", "bulk"]


@dataclass(frozen=True)
class _BodySpec:
    """What one download's ZIP holds; the bytes also depend on the seed."""

    kind: BodyKind
    project: str
    pattern: str
    #: Number of generated tables (each gives .sql/.xml/.json members).
    tables: int
    #: bulk only: incompressible payload bytes in total, and in how many stored members.
    payload: int = 0
    parts: int = 0


@dataclass(frozen=True)
class _Table:
    name: str
    columns: tuple[tuple[str, str], ...]


_TABLE_KINDS: Final = ("HUB", "SAT", "LNK", "STG", "DIM", "FCT")
_ENTITIES: Final = (
    "CUSTOMER", "ORDER", "PRODUCT", "INVOICE", "SUPPLIER", "EMPLOYEE", "CONTRACT", "ACCOUNT",
    "PAYMENT", "SHIPMENT", "STORE", "REGION", "CAMPAIGN", "TICKET", "ASSET", "PARTNER",
)  # fmt: skip
_COLUMN_WORDS: Final = (
    "ID", "CODE", "NAME", "STATUS", "AMOUNT", "QUANTITY", "PRICE", "VALID_FROM", "VALID_TO",
    "CREATED", "CHANGED", "CURRENCY", "COUNTRY", "CITY", "STREET", "EMAIL", "PHONE", "TYPE",
)  # fmt: skip
_COLUMN_TYPES: Final = (
    "VARCHAR2(100)", "VARCHAR2(255)", "NUMBER(18)", "NUMBER(12,2)", "DATE", "TIMESTAMP(6)",
    "CHAR(32)",
)  # fmt: skip


def _tables(rng: random.Random, count: int) -> list[_Table]:
    tables = []
    for index in range(count):
        name = f"{rng.choice(_TABLE_KINDS)}_{rng.choice(_ENTITIES)}_{index:03d}"
        columns = [("HK_" + name.split("_")[1], "CHAR(32)"), ("LOAD_DTS", "TIMESTAMP(6)")]
        columns += [
            (f"{rng.choice(_COLUMN_WORDS)}_{column:02d}", rng.choice(_COLUMN_TYPES))
            for column in range(rng.randint(4, 24))
        ]
        tables.append(_Table(name, tuple(columns)))
    return tables


def _guid(rng: random.Random) -> str:
    value = f"{rng.getrandbits(128):032x}"
    return f"{value[:8]}-{value[8:12]}-{value[12:16]}-{value[16:20]}-{value[20:]}"


def _ddl(table: _Table, pattern: str) -> str:
    columns = ",\n".join(
        f"    {name} {kind}{' NOT NULL' if i < 2 else ''}"
        for i, (name, kind) in enumerate(table.columns)
    )
    return (
        f"-- Generated by MetaKraftwerk, pattern {pattern}\n"
        f"CREATE TABLE DWH.{table.name} (\n{columns},\n"
        f"    CONSTRAINT PK_{table.name} PRIMARY KEY ({table.columns[0][0]}, LOAD_DTS)\n);\n\n"
        f"COMMENT ON TABLE DWH.{table.name} IS 'Generated from pattern {pattern}';\n"
    )


def _mapping_xml(table: _Table, pattern: str, rng: random.Random) -> str:
    fields = "\n".join(
        f'      <TRANSFORMFIELD NAME="{name}" DATATYPE="{kind}" PORTTYPE="INPUT/OUTPUT" '
        f'EXPRESSION="LTRIM(RTRIM({name}))" GUID="{_guid(rng)}" '
        f'CHECKSUM="{rng.getrandbits(64):016x}"/>'
        for name, kind in table.columns
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<!DOCTYPE POWERMART SYSTEM "powrmart.dtd">\n'
        '<POWERMART CREATION_DATE="04/02/2026 10:14:30" REPOSITORY_VERSION="187.96">\n'
        '<REPOSITORY NAME="REP_DWH" VERSION="187" CODEPAGE="UTF-8" DATABASETYPE="Oracle">\n'
        f'<FOLDER NAME="{pattern}" OWNER="metakraftwerk" SHARED="NOTSHARED">\n'
        f'  <MAPPING NAME="m_{table.name}" ISVALID="YES" GUID="{_guid(rng)}">\n'
        f'    <TRANSFORMATION NAME="EXP_{table.name}" TYPE="Expression">\n{fields}\n'
        "    </TRANSFORMATION>\n  </MAPPING>\n</FOLDER>\n</REPOSITORY>\n</POWERMART>\n"
    )


def _pipeline_json(table: _Table, pattern: str, rng: random.Random) -> str:
    pipeline = {
        "name": f"pl_load_{table.name.lower()}",
        "properties": {
            "activities": [
                {
                    "name": f"Copy {table.name}",
                    "type": "Copy",
                    "typeProperties": {"sink": {"type": "SqlDWSink", "table": table.name}},
                    "columns": [name for name, _ in table.columns],
                }
            ],
            "annotations": [pattern],
            "etag": _guid(rng),
        },
    }
    return json.dumps(pipeline, indent=2)


class _ZipWriter:
    """Adds members with fixed metadata, so that equal inputs give equal archive bytes."""

    def __init__(self, archive: zipfile.ZipFile) -> None:
        self.archive = archive

    def _info(self, name: str, compress: int) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
        info.compress_type = compress
        info.create_system = 3  # Unix, whatever the host is
        info.external_attr = 0o644 << 16
        return info

    def add(self, name: str, data: str | bytes, compress: int = zipfile.ZIP_DEFLATED) -> None:
        self.archive.writestr(self._info(name, compress), data)

    def add_random(self, name: str, size: int, rng: random.Random) -> None:
        """A stored member of ``size`` incompressible bytes, written in big blocks."""
        info = self._info(name, zipfile.ZIP_STORED)
        info.file_size = size  # lets zipfile choose ZIP64 up front for huge members
        with self.archive.open(info, "w") as member:
            for start in range(0, size, 8 * _SEGMENT):
                member.write(rng.randbytes(min(8 * _SEGMENT, size - start)))


def _write_zip(target: IO[bytes], spec: _BodySpec, rng: random.Random) -> None:
    """Write the ZIP that ``spec`` describes, drawing every choice from ``rng``."""
    with zipfile.ZipFile(target, "w") as archive:
        writer = _ZipWriter(archive)
        tables = _tables(rng, spec.tables)
        if spec.kind == "iics":
            rows = ["objectName,objectType,path,id"]
            for table in tables:
                folder = f"Explore/{spec.project}/{spec.pattern}"
                inner = io.BytesIO()
                with zipfile.ZipFile(inner, "w") as nested:
                    nested_writer = _ZipWriter(nested)
                    nested_writer.add(f"m_{table.name}.xml", _mapping_xml(table, spec.pattern, rng))
                    nested_writer.add(f"{table.name}.sql", _ddl(table, spec.pattern))
                writer.add(f"{folder}/m_{table.name}.DTEMPLATE.zip", inner.getvalue(),
                           zipfile.ZIP_STORED)  # fmt: skip
                rows.append(f"m_{table.name},DTEMPLATE,{folder},{_guid(rng)}")
            writer.add(f"ContentsofExportPackage_{spec.pattern}.csv", "\n".join(rows) + "\n")
            metadata = {"name": spec.pattern, "project": spec.project, "objects": len(tables)}
            writer.add("exportMetadata.v2.json", json.dumps(metadata, indent=2))
        for table in tables if spec.kind != "iics" else ():
            writer.add(f"ddl/{table.name}.sql", _ddl(table, spec.pattern))
            if spec.kind in ("powercenter", "bulk"):
                writer.add(f"{spec.pattern}/m_{table.name}.xml",
                           _mapping_xml(table, spec.pattern, rng))  # fmt: skip
            if spec.kind == "synapse":
                writer.add(f"pipeline/pl_load_{table.name.lower()}.json",
                           _pipeline_json(table, spec.pattern, rng))  # fmt: skip
        for part in range(spec.parts):
            share = spec.payload // spec.parts + (part < spec.payload % spec.parts)
            writer.add_random(f"payload/part-{part:02d}.bin", share, rng)


# --- the dataset --------------------------------------------------------------------------

_PROJECTS: Final = (
    (402, "DEMO_PROJECT"),
    (403, "DWH_CORE"),
    (404, "ODD_NAMES"),
    (405, "RESTRICTED"),
    (406, "ARCHIVE"),
)
#: id, name, type, description, release group
_PATTERNS: Final = (
    (808, "CORE_DV_HLS", "IICS", "Data Vault hubs, links and satellites", 3),
    (809, "CORE_DV_SAT", "IICS", "Data Vault satellites", 3),
    (810, "STAGE_PC", "PowerCenter", "Staging mappings", 4),
    (811, "DWH_DDL", "DDL", "Target table DDL", 3),
    (812, "SYNAPSE_LOAD", "Synapse", "Synapse pipelines", 5),
)
_KIND_OF_TYPE: Final[Mapping[str, BodyKind]] = {
    "IICS": "iics",
    "PowerCenter": "powercenter",
    "DDL": "ddl",
    "Synapse": "synapse",
}
#: release id -> (release group, release name), for the ``releases`` filter.
_RELEASES: Final[Mapping[int, tuple[str, str]]] = {
    31: ("DWH_GROUP", "R1"),
    32: ("DWH_GROUP", "R2"),
    41: ("STAGE_GROUP", "R1"),
}
_BOT_USER: Final = (2, "build-bot@metakraftwerk.example")

#: AWKWARD_BUILD: (download id, pattern id, display name, file_name stem)
_AWKWARD: Final[tuple[tuple[int, int, str | None, str], ...]] = (
    (5448, 808, "CORE_DV.zip", "CORE_DV_HLS_dup"),
    (5449, 809, "CORE_DV.zip", "CORE_DV_SAT_dup"),
    (5450, 811, "DDL/Oracle.zip", "DWH_DDL_slash"),
    (5451, 810, "Übergabe Größe März.zip", "STAGE_PC_umlaut"),
    (5452, 811, None, "DWH_DDL_null_name"),
    (5453, 811, "", "DWH_DDL_empty_name"),
    (5454, 812, ".hidden_result.zip", "SYNAPSE_LOAD_dot"),
    (5455, 811, "LONG_NAME_" + "ä" * 143 + ".zip", "DWH_DDL_long"),  # 300 bytes in UTF-8
    (5456, 811, "NUL\x00BYTE.zip", "DWH_DDL_nul"),
)


_PATTERN_OF: Final = {pattern[0]: pattern for pattern in _PATTERNS}
_PROJECT_NAMES: Final = dict(_PROJECTS)
#: A build's message when it ends with a status.
_END_MESSAGES: Final[Mapping[str, str]] = {
    "FINISHED": "Build finished successfully",
    "FAILED": "Build failed",
    "CANCELED": "Build canceled by user",
}


def _outcome_fields(status: str, end: dt.datetime | None, updated: dt.datetime) -> JSON:
    """The fields of a build record that follow from its status and times."""
    done = int(status == "FINISHED")
    return {
        "status": status, "build_end": None if end is None else _iso(end),
        "updated_at": _iso(updated), "history_commited": done, "deliveries_calculated": done,
        "mts": int(updated.timestamp() * 1000),
    }  # fmt: skip


@dataclass
class _Dataset:
    """The server's records; a build's ``downloads`` are the same objects as in
    ``downloads``, whose bodies ``bodies`` describes."""

    projects: list[JSON]
    patterns: list[JSON]
    builds: list[JSON] = field(default_factory=list)
    downloads: dict[int, JSON] = field(default_factory=dict)
    bodies: dict[int, _BodySpec] = field(default_factory=dict)

    def add_build(
        self,
        ident: int,
        project_id: int,
        status: str,
        start: dt.datetime,
        seconds: int,
        pattern_ids: Sequence[int],
        *,
        user_id: int = 1,
        progress: int = 100,
        message: str = _END_MESSAGES["FINISHED"],
        releases: Sequence[int] = (31,),
    ) -> JSON:
        end = None if status == "BUILDING" else start + dt.timedelta(seconds=seconds)
        record: JSON = {
            "id": ident, "customer_id": _CUSTOMER_ID, "user_id": user_id,
            "project_id": project_id, "progress": progress, "message": message,
            "build_start": _iso(start), "created_at": _iso(start - dt.timedelta(seconds=2)),
            **_outcome_fields(status, end, end or start + dt.timedelta(seconds=seconds)),
            "active": 1, "commit_ind": 0, "deleted": 0, "version": ident - 5100,
            "instances": 3 * len(pattern_ids), "name": f"{_PROJECT_NAMES[project_id]} #{ident}",
            "description": f"Build of {', '.join(_PATTERN_OF[p][1] for p in pattern_ids)}",
            "patterns": list(pattern_ids), "releases": list(releases), "downloads": [],
        }  # fmt: skip
        self.builds.append(record)
        return record

    def add_download(
        self,
        record: JSON,
        ident: int,
        pattern_id: int,
        tables: int,
        *,
        stem: str | None = None,
        name: str | Literal[False] | None = False,
        payload: int = 0,
        parts: int = 0,
    ) -> JSON:
        """Add a download to the build ``record``; ``name=False`` means the usual
        ``<stem>.zip``. The build's ``downloads`` becomes a new list, so that a reader that
        holds the old one is not disturbed."""
        _, pattern, kind, _, _ = _PATTERN_OF[pattern_id]
        moment = dt.datetime.fromisoformat(record["build_end"] or record["build_start"])
        stamp = f"{moment:%Y}-{moment.month}-{moment.day}_{moment:%H_%M}"
        stem = stem or f"{pattern}_{stamp}"
        body_kind: BodyKind = "bulk" if parts else _KIND_OF_TYPE[kind]
        entry: JSON = {
            "id": ident, "customer_id": _CUSTOMER_ID, "pattern_id": pattern_id,
            "name": f"{stem}.zip" if name is False else name,
            "file_name": f"/files/results/{record['id']}_{pattern_id}_{kind.lower()}_{stem}.zip",
            "type": kind, "build_id": record["id"], "project_id": record["project_id"],
            "version": 1, "upload_id": 1359 + record["id"] - DEMO_BUILD, "file_id": None,
            "downloaded": 0, "instance_id": None,
        }  # fmt: skip
        record["downloads"] = [*record["downloads"], entry]
        self.downloads[ident] = entry
        self.bodies[ident] = _BodySpec(
            body_kind, _PROJECT_NAMES[record["project_id"]], pattern, tables, payload, parts
        )
        return entry


def _make_dataset(big_file_size: int) -> _Dataset:
    """The fixed builds, downloads, projects and patterns; bodies are only described here."""
    projects = [
        {"id": ident, "name": name, "deleted": False, "disabled": ident == 406}
        for ident, name in _PROJECTS
    ]
    patterns = [
        {"id": ident, "name": name, "description": description, "type": kind, "vers_no": "1",
         "status": "FINISHED", "active": True, "deleted": False, "disabled": False,
         "release_group_id": group}
        for ident, name, kind, description, group in _PATTERNS
    ]  # fmt: skip
    data = _Dataset(projects, patterns)
    build, download = data.add_build, data.add_download

    day = dt.datetime(2026, 4, 2, 10, 12, 5, tzinfo=dt.UTC)
    demo = build(DEMO_BUILD, 402, "FINISHED", day, 146, (808, 810, 811, 812))
    download(demo, 5442, 808, 60)
    download(demo, 5443, 810, 540)
    download(demo, 5444, 811, 6)
    download(demo, 5445, 812, 40)

    large = build(LARGE_BUILD, 403, "FINISHED", day + dt.timedelta(hours=2), 1260, (811,),
                  user_id=_BOT_USER[0], releases=(31, 32))  # fmt: skip
    for index in range(1000):
        download(large, 6000 + index, 811, 4 + index % 5, stem=f"DWH_DDL_T{index:04d}")

    big = build(BIG_BUILD, 402, "FINISHED", day + dt.timedelta(hours=4), 611, (812, 810))
    download(big, BIG_ZIP, 812, 3, stem="SYNAPSE_LOAD_FULL_EXPORT",
             payload=big_file_size, parts=8)  # fmt: skip
    download(big, MEDIUM_FILE, 810, 3, stem="STAGE_PC_HISTORY",
             payload=MEDIUM_FILE_SIZE, parts=4)  # fmt: skip

    awkward = build(AWKWARD_BUILD, 404, "FINISHED", day + dt.timedelta(days=1), 95,
                    (808, 809, 810, 811, 812), releases=(41,))  # fmt: skip
    for ident, pattern_id, name, stem in _AWKWARD:
        download(awkward, ident, pattern_id, 2, stem=stem, name=name)

    building = build(BUILDING_BUILD, 402, "BUILDING", day + dt.timedelta(days=2), 40,
                     (808, 811, 810), progress=45,
                     message="Generating pattern STAGE_PC (3/3)")  # fmt: skip
    download(building, 5457, 808, 4)
    download(building, 5458, 811, 4)

    failed = build(FAILED_BUILD, 403, "FAILED", day + dt.timedelta(days=2, hours=1), 33,
                   (811, 810), progress=70, user_id=_BOT_USER[0],
                   message="Build failed: pattern STAGE_PC: missing source definition")  # fmt: skip
    download(failed, 5459, 811, 3)

    build(CANCELED_BUILD, 402, "CANCELED", day + dt.timedelta(days=2, hours=2), 12, (808,),
          progress=10, message=_END_MESSAGES["CANCELED"])  # fmt: skip

    forbidden = build(FORBIDDEN_BUILD, 405, "FINISHED", day + dt.timedelta(days=3), 80,
                      (811, 812), releases=(32,))  # fmt: skip
    download(forbidden, 5460, 811, 3)
    download(forbidden, 5461, 812, 3)
    return data


# --- the API ------------------------------------------------------------------------------


class _BadQuery(ValueError):
    """A query parameter the server cannot use: answered with 400 BadRequest."""


def _int_param(params: httpx.QueryParams, name: str) -> int | None:
    value = params.get(name)
    if value is None:
        return None
    if not value.isdigit():
        raise _BadQuery(f"Invalid value for query parameter '{name}': {value!r}")
    return int(value)


@dataclass(frozen=True)
class _Route:
    #: Endpoint key for `Emulator.requests` and `Emulator.fail_next`.
    key: str
    #: "authentication", "builds", "downloads", "projects" or "patterns"; None: no such page.
    resource: str | None
    #: The ``:id`` path segment, if any.
    ident: str | None


_RESOURCES: Final = ("builds", "downloads", "projects", "patterns")


def _route(method: str, path: str) -> _Route:
    parts = [part for part in path.split("/") if part]
    if parts == ["authentication"]:
        return _Route(f"{method} /authentication", "authentication", None)
    if len(parts) in (3, 4) and parts[:2] == ["api", "v1"] and parts[2] in _RESOURCES:
        ident = parts[3] if len(parts) == 4 else None
        template = f"/api/v1/{parts[2]}" + ("" if ident is None else "/:id")
        return _Route(f"{method} {template}", parts[2], ident)
    return _Route(f"{method} {path}", None, None)


def _default_data_dir(seed: int, big_file_size: int) -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "mkwfs-emulator" / f"{seed}-{big_file_size}"


@dataclass
class _Failure:
    """Queued by `Emulator.fail_next`: the next ``remaining`` requests of ``endpoints``
    (None: any) are answered with ``status`` and a ``body`` of that kind."""

    endpoints: frozenset[str] | None
    status: int
    body: FailureBody
    remaining: int


def response_delay(response: httpx.Response) -> float:
    """Seconds a transport waits before sending ``response``'s status line, as
    `Emulator.handle` decided (latency and jitter); 0 for any other response."""
    delay = response.extensions.get(_DELAY_KEY, 0.0)
    return float(delay)


class _MockTransport(httpx.MockTransport):
    """`Emulator.handle` without a network: waits out each response's delay (on trio's clock
    for an ``AsyncClient``) and lets the httpx errors of a refused connection and of bodies
    through, as a real connection would raise them."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        time.sleep(response_delay(response))
        return response

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        await trio.sleep(response_delay(response))
        return response


class Emulator:
    """The MetaKraftwerk API in process; thread-safe, for `EmulatorServer`'s threads.

    ``builds``, ``downloads``, ``projects`` and ``patterns`` are the server's data (a build's
    ``downloads`` are the same objects as in ``downloads``); change them with the methods
    below while a server runs. ``requests`` counts every request by endpoint key (see
    `ENDPOINTS`; other paths count as ``"<METHOD> <path>"``), including failed and injected
    ones but not refused connections; ``bytes_sent`` counts download body bytes that went out.
    """

    def __init__(self, config: EmulatorConfig = _DEFAULT_CONFIG) -> None:
        self._config = config
        self._big_file_size = config.big_file_size
        dataset = _make_dataset(config.big_file_size)
        self.builds: list[JSON] = dataset.builds
        self.downloads: dict[int, JSON] = dataset.downloads
        self.projects: list[JSON] = dataset.projects
        self.patterns: list[JSON] = dataset.patterns
        self.requests: Counter[str] = Counter()
        self.bytes_sent = 0
        #: Connections open to the HTTP servers now, and the most at once.
        self.connections = 0
        self.peak_connections = 0
        self._data = dataset
        self._seed = config.seed
        self._data_dir = config.data_dir or _default_data_dir(config.seed, config.big_file_size)
        self._secret = secrets.token_bytes(32)
        #: Guards the counters, the data, _failures, _rng, _token_expiry, _removed,
        #: _next_download_id and _body_locks.
        self._lock = threading.Lock()
        self._failures: list[_Failure] = []
        self._rng = random.Random(config.seed)
        #: jti -> time.time() when the server stops accepting that token.
        self._token_expiry: dict[str, float] = {}
        #: Builds taken away by remove_build, for restore_build.
        self._removed: dict[int, JSON] = {}
        self._next_download_id = _ADDED_DOWNLOADS
        self._stalls: weakref.WeakSet[Stall] = weakref.WeakSet()
        self._servers: weakref.WeakSet[EmulatorServer] = weakref.WeakSet()
        self._body_locks: dict[Path, threading.Lock] = {}
        self._sizes: dict[Path, int] = {}
        #: The file of each download's body spec, once generated (naming one costs a hash).
        self._paths: dict[tuple[int, _BodySpec], Path] = {}
        #: Tokens whose signature checked out, and their claims (a check costs two JSON
        #: decodes and an HMAC, on every request).
        self._verified: dict[str, JSON] = {}

    @property
    def config(self) -> EmulatorConfig:
        """How the server behaves; assign a new one at any time (``dataclasses.replace``).
        A change of ``down`` stops or restarts every `EmulatorServer` of this emulator before
        the assignment returns."""
        return self._config

    @config.setter
    def config(self, config: EmulatorConfig) -> None:
        self._config = config
        for server in list(self._servers):
            server._follow_emulator()

    # -- test controls --

    def issue_token(self, lifetime: float | None = None) -> str:
        """A new JWT as the server issues at login (each with its own ``jti``), valid for
        ``lifetime`` seconds from now (default ``config.token_lifetime``; negative gives an
        already expired token)."""
        moment = time.time()
        now = int(moment)
        seconds = self.config.token_lifetime if lifetime is None else lifetime
        jti = str(uuid.uuid4())
        header = {"alg": "HS256", "typ": "access"}
        claims = {"iat": now, "exp": now + math.ceil(seconds), "sub": "1", "jti": jti}
        signing_input = ".".join(
            _b64encode(json.dumps(part, separators=(",", ":")).encode())
            for part in (header, claims)
        )
        with self._lock:
            if len(self._token_expiry) >= _TOKEN_RECORDS:  # only the expired ones go
                self._token_expiry = {k: v for k, v in self._token_expiry.items() if v > moment}
            self._token_expiry[jti] = moment + seconds
        return f"{signing_input}.{_b64encode(self._sign(signing_input))}"

    def fail_next(
        self,
        endpoint: str | Iterable[str],
        status: int,
        count: int = 1,
        body: FailureBody = "json",
    ) -> None:
        """Answer the next ``count`` requests of ``endpoint`` with ``status`` instead of the
        real answer. ``endpoint`` is a key of `ENDPOINTS`, several keys (whose requests share
        the ``count``), or `ANY_ENDPOINT` for every request. ``body`` is a Feathers JSON
        error, an nginx-style HTML page, an empty body, or a Feathers error cut in half
        ("malformed"); 429s carry ``Retry-After: config.retry_after``. Calls queue up behind
        each other: a request meets the oldest queued failure that matches it."""
        keys = {endpoint} if isinstance(endpoint, str) else set(endpoint)
        unknown = keys - ENDPOINTS - {ANY_ENDPOINT}
        if unknown or not keys:
            raise ValueError(
                f"unknown endpoint key {sorted(unknown)!r}; one of {sorted(ENDPOINTS)} "
                f"or {ANY_ENDPOINT!r}"
            )
        if body not in ("json", "html", "empty", "malformed"):
            raise ValueError(f"unknown failure body {body!r}")
        endpoints = None if ANY_ENDPOINT in keys else frozenset(keys)
        if count > 0:
            with self._lock:
                self._failures.append(_Failure(endpoints, status, body, count))

    def clear_failures(self) -> None:
        """Forget the failures `fail_next` queued and release every stalled body."""
        with self._lock:
            self._failures.clear()
        self.release_stalls()

    def release_stalls(self) -> None:
        """Let every body stalled by ``config.stall_after`` go on (later ones stall again)."""
        with self._lock:
            stalls = list(self._stalls)
        for stall in stalls:
            stall.release()

    def reset_counters(self) -> None:
        """Zero ``requests``, ``bytes_sent`` and every download's ``downloaded``; the peak
        of connections starts again from those open now."""
        with self._lock:
            self.requests.clear()
            self.bytes_sent = 0
            self.peak_connections = self.connections
            for entry in self.downloads.values():
                entry["downloaded"] = 0

    def add_download(
        self, build_id: int, name: str | None, size: int = 0, *, pattern_id: int | None = None
    ) -> int:
        """Add a download named ``name`` to build ``build_id`` (KeyError if the build is not
        there) and return its new id (never one used before). It is listed from now on;
        its body is a ZIP of ``size`` random bytes in one stored member (of a few KB of DDL
        when 0), made on first use. ``pattern_id`` defaults to the build's first pattern."""
        with self._lock:
            record = self._build(build_id)
            pattern = record["patterns"][0] if pattern_id is None else pattern_id
            ident = self._next_download_id
            self._next_download_id += 1
            self._data.add_download(
                record, ident, pattern, 3, stem=f"ADDED_{ident}", name=name,
                payload=size, parts=1 if size else 0,
            )  # fmt: skip
        return ident

    def remove_download(self, download_id: int) -> None:
        """Take the download away (KeyError if it is not there): no longer listed, and its
        GET and HEAD answer 404."""
        with self._lock:
            entry = self.downloads.pop(download_id)
            record = self._build(entry["build_id"])
            record["downloads"] = [d for d in record["downloads"] if d is not entry]

    def remove_build(self, build_id: int) -> None:
        """Take the build away with its downloads (KeyError if it is not there): not listed,
        ``GET /builds/:id`` and its downloads' GET and HEAD answer 404, its downloads list
        answers as ``config.missing_build_list`` says. `restore_build` brings it back."""
        with self._lock:
            record = self._build(build_id)
            self.builds[:] = [b for b in self.builds if b is not record]
            for entry in record["downloads"]:
                del self.downloads[entry["id"]]
            self._removed[build_id] = record

    def restore_build(self, build_id: int) -> None:
        """Bring back a build that `remove_build` took away, as it was (KeyError if none)."""
        with self._lock:
            record = self._removed.pop(build_id)
            position = sum(1 for b in self.builds if b["id"] < build_id)
            self.builds.insert(position, record)
            self.downloads.update((entry["id"], entry) for entry in record["downloads"])

    def finish_build(self, build_id: int, status: str = "FINISHED") -> None:
        """End the build (KeyError if it is not there) with ``status``: ``build_end`` and
        ``updated_at`` now (at least a second after its start), the flags and message that go
        with the status, and progress 100 when FINISHED."""
        if status not in _END_MESSAGES:
            raise ValueError(f"a build ends {sorted(_END_MESSAGES)}, not {status!r}")
        with self._lock:
            record = self._build(build_id)
            start = dt.datetime.fromisoformat(record["build_start"])
            end = max(dt.datetime.now(dt.UTC), start + dt.timedelta(seconds=1))
            record.update(_outcome_fields(status, end, end), message=_END_MESSAGES[status])
            if status == "FINISHED":
                record["progress"] = 100

    def reset_data(self) -> None:
        """Builds and downloads as they were when the emulator was made: undoes
        `add_download`, `remove_download`, `remove_build` and `finish_build`, and zeroes the
        ``downloaded`` counts. Ids that `add_download` gave are not given again."""
        fresh = _make_dataset(self._big_file_size)
        with self._lock:
            self.builds[:] = fresh.builds
            self.downloads.clear()
            self.downloads.update(fresh.downloads)
            self._data.bodies.clear()
            self._data.bodies.update(fresh.bodies)
            self._removed.clear()

    def downloads_of(self, build_id: int) -> list[JSON]:
        """The download objects ``GET /api/v1/downloads?build_id=`` returns, as copies."""
        with self._lock:
            return [dict(d) for d in self.downloads.values() if d["build_id"] == build_id]

    def body_path(self, download_id: int) -> Path:
        """The file holding the download's body, generated on first use (KeyError for an
        unknown id). Generation happens once however many threads ask at the same time,
        writes a temporary file and renames it, and is skipped when the file exists."""
        with self._lock:
            spec = self._data.bodies[download_id]
            known = self._paths.get((download_id, spec))
        if known is not None:
            return known
        # The name changes with anything that changes the bytes, so a stale file is never used.
        version = hashlib.sha256(f"{_BODY_FORMAT} {spec!r}".encode()).hexdigest()[:12]
        path = self._data_dir / f"{download_id}-seed{self._seed}-{version}.zip"
        with self._lock:
            body_lock = self._body_locks.setdefault(path, threading.Lock())
        with body_lock:
            if path not in self._sizes:
                if not path.exists():
                    self._generate(path, spec, random.Random(self._seed + download_id))
                self._sizes[path] = path.stat().st_size
        with self._lock:
            self._paths[download_id, spec] = path
        return path

    def body_sha256(self, download_id: int) -> str:
        with self.body_path(download_id).open("rb") as file:
            return hashlib.file_digest(file, "sha256").hexdigest()

    def mock_transport(self) -> httpx.MockTransport:
        """An httpx transport answering with `handle`, without a network: it waits each
        response's `response_delay` (with ``trio.sleep`` for an ``AsyncClient``) and raises
        ``ConnectError`` while ``config.down``; bodies raise as `FileBody` says. Requests run
        on the caller's thread (including a body's generation on first use); download bodies
        are read through trio threads by an ``AsyncClient``."""
        return _MockTransport(self.handle)

    # -- the API --

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer one request as the server would. A download body is a `FileBody`; the
        delay before the answer is `response_delay` of it. While ``config.down`` no server
        answers: raises ``httpx.ConnectError`` and counts nothing."""
        config = self.config
        if config.down:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        method = request.method.upper()
        route = _route(method, request.url.path)
        with self._lock:
            self.requests[route.key] += 1
            injected = self._next_failure(route.key, config)
            delay = config.latency + (self._rng.uniform(0, config.jitter) if config.jitter else 0)
        if injected is not None:
            response = _injected_response(*injected, config.retry_after)
        else:
            response = self._dispatch(method, route, request)
            if method == "HEAD" and not isinstance(response.stream, FileBody) and response.content:
                response = httpx.Response(response.status_code, headers=response.headers)
            elif (
                config.malformed_json
                and route.resource in _RESOURCES
                and _is_json_success(response)
            ):
                response = _cut_json(response)
        response.extensions[_DELAY_KEY] = delay
        return response

    def _next_failure(self, key: str, config: EmulatorConfig) -> tuple[int, FailureBody] | None:
        """The failure to answer a request of endpoint ``key`` with: the oldest queued one
        that matches, else one drawn with ``config.fail_rate``. Call with the lock held."""
        for failure in self._failures:
            if failure.endpoints is None or key in failure.endpoints:
                failure.remaining -= 1
                if not failure.remaining:
                    self._failures.remove(failure)
                return failure.status, failure.body
        if config.fail_rate and self._rng.random() < config.fail_rate:
            return self._rng.choice(config.fail_statuses), self._rng.choice(config.fail_bodies)
        return None

    def _build(self, build_id: int) -> JSON:
        """The build record with id ``build_id`` (KeyError if none). Call with the lock held."""
        for record in self.builds:
            if record["id"] == build_id:
                return record
        raise KeyError(build_id)

    def _dispatch(self, method: str, route: _Route, request: httpx.Request) -> httpx.Response:
        if route.resource is None:
            return _error_response(404, "Page not found", data={"url": request.url.path})
        if route.resource == "authentication":
            allowed = {"POST"}
        else:
            allowed = {"GET", "HEAD"} if self.config.head else {"GET"}
        if method not in allowed:
            service_method = _SERVICE_METHODS.get((method, route.ident is not None))
            return _error_response(
                405,
                f"Method `{service_method or method.lower()}` is not supported by this endpoint.",
            )
        if route.resource == "authentication":
            return self._login(request)
        rejection = self._authenticate(request)
        if rejection is not None:
            return rejection
        if route.resource == "downloads" and route.ident is not None:
            return self._download(request, route.ident)
        if route.ident is not None:
            return self._get(route.resource, route.ident)
        try:
            missing = self._missing_build(route.resource, request.url.params)
            if missing is not None:
                return _error_response(404, f"No record found for id '{missing}'")
            items = self._find(route.resource, request.url.params)
            return self._page(items, request.url.params)
        except _BadQuery as exc:
            return _error_response(400, str(exc))

    def _missing_build(self, resource: str, params: httpx.QueryParams) -> int | None:
        """The ``build_id`` of a downloads list to answer with 404: one of no build, when
        ``config.missing_build_list`` says so."""
        if resource != "downloads" or self.config.missing_build_list != "404":
            return None
        build_id = _int_param(params, "build_id")
        if build_id is None or self._record("builds", str(build_id)) is not None:
            return None
        return build_id

    def _login(self, request: httpx.Request) -> httpx.Response:
        try:
            body = json.loads(request.content or b"{}")
        except ValueError:
            return _error_response(400, "Unexpected token in JSON body")
        if not isinstance(body, dict):
            body = {}
        strategy = body.get("strategy")
        if not strategy:
            return _error_response(401, "Invalid authentication information (no `strategy` set)")
        if strategy != "local":
            return _error_response(
                401, "Invalid authentication information (strategy not allowed in authStrategies)"
            )
        email, password = body.get("email"), body.get("password")
        for field_name, value in (("email", email), ("password", password)):
            if not isinstance(value, str) or not value:
                return _error_response(400, f"'{field_name}' is required")
        config = self.config
        if not (
            hmac.compare_digest(str(email).encode(), config.email.encode())
            & hmac.compare_digest(str(password).encode(), config.password.encode())
        ):
            return _error_response(401, "Invalid login")
        token = self.issue_token()
        return _json_response(
            201,
            {
                "accessToken": token,
                "authentication": {"strategy": "local", "accessToken": token},
                "user": {"id": 1, "email": config.email},
            },
        )

    def _sign(self, signing_input: str) -> bytes:
        return hmac.new(self._secret, signing_input.encode(), hashlib.sha256).digest()

    def _authenticate(self, request: httpx.Request) -> httpx.Response | None:
        """None for a valid ``Authorization: Bearer <JWT>``, else the 401 to answer with,
        worded as Feathers/jsonwebtoken words it."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() not in ("bearer", "jwt") or not token:
            return _error_response(401, "Not authenticated")
        with self._lock:
            claims = self._verified.get(token)
        if claims is None:
            claims_or_error = self._verify(token)
            if isinstance(claims_or_error, httpx.Response):
                return claims_or_error
            claims = claims_or_error
            with self._lock:
                if len(self._verified) >= _TOKEN_RECORDS:
                    self._verified.clear()
                self._verified[token] = claims
        expires = claims.get("exp")
        if not isinstance(expires, int | float):
            return _error_response(401, "invalid exp value")
        with self._lock:  # the exact expiry of a token issued here; exp is whole seconds
            expires = self._token_expiry.get(str(claims.get("jti")), expires)
        if time.time() >= expires:
            expired_at = _iso(dt.datetime.fromtimestamp(expires, dt.UTC))
            data = {"name": "TokenExpiredError", "message": "jwt expired", "expiredAt": expired_at}
            return _error_response(401, "jwt expired", data=data)
        return None

    def _verify(self, token: str) -> JSON | httpx.Response:
        """The claims of a JWT signed here, else the 401 to answer with."""
        parts = token.split(".")
        try:
            header, claims = (json.loads(_b64decode(part)) for part in parts[:2])
            signature = _b64decode(parts[2])
        except (ValueError, IndexError):
            return _error_response(401, "jwt malformed")
        if not isinstance(header, dict) or not isinstance(claims, dict) or len(parts) != 3:
            return _error_response(401, "jwt malformed")
        if header.get("alg") != "HS256":
            return _error_response(401, "invalid algorithm")
        if not hmac.compare_digest(signature, self._sign(f"{parts[0]}.{parts[1]}")):
            return _error_response(401, "invalid signature")
        return claims

    def _records(self, resource: str) -> list[JSON]:
        """A snapshot of the records of ``resource``."""
        with self._lock:
            if resource == "downloads":
                return list(self.downloads.values())
            return list(
                {"builds": self.builds, "projects": self.projects, "patterns": self.patterns}[
                    resource
                ]
            )

    def _record(self, resource: str, ident: str) -> JSON | None:
        if not ident.isdigit():
            return None
        if resource == "downloads":
            with self._lock:
                return self.downloads.get(int(ident))
        return next((r for r in self._records(resource) if r["id"] == int(ident)), None)

    def _get(self, resource: str, ident: str) -> httpx.Response:
        record = self._record(resource, ident)
        if record is None:
            return _error_response(404, f"No record found for id '{ident}'")
        return _json_response(200, record)

    def _ids_named(self, records: Sequence[JSON], name: str) -> set[int]:
        return {r["id"] for r in records if r["name"] == name}

    def _find(self, resource: str, params: httpx.QueryParams) -> list[JSON]:
        """The records of ``resource`` that match the documented filters in ``params``."""
        checks: list[Callable[[JSON], bool]] = []

        def equal(field_name: str, wanted: int | None) -> None:
            if wanted is not None:
                checks.append(lambda r: r[field_name] == wanted)

        def member_of(field_name: str, wanted: set[int]) -> None:
            checks.append(lambda r: r[field_name] in wanted)

        if "name" in params and resource in ("projects", "patterns"):
            checks.append(lambda r: r["name"] == params["name"])
        if resource == "builds":
            equal("project_id", _int_param(params, "project_id"))
            equal("user_id", _int_param(params, "user_id"))
            pattern_id = _int_param(params, "pattern_id")
            if pattern_id is not None:
                checks.append(lambda r: pattern_id in r["patterns"])
            if "project" in params:
                member_of("project_id", self._ids_named(self.projects, params["project"]))
            if "user" in params:
                users = {1: self.config.email, _BOT_USER[0]: _BOT_USER[1]}
                member_of("user_id", {i for i, email in users.items() if email == params["user"]})
            if "pattern" in params:
                named = self._ids_named(self.patterns, params["pattern"])
                checks.append(lambda r: not named.isdisjoint(r["patterns"]))
            if "releases" in params:
                checks.append(self._releases_check(params["releases"]))
        if resource == "downloads":
            equal("build_id", _int_param(params, "build_id"))
            equal("pattern_id", _int_param(params, "pattern_id"))
            if "pattern" in params:
                member_of("pattern_id", self._ids_named(self.patterns, params["pattern"]))
        return [r for r in self._records(resource) if all(check(r) for check in checks)]

    @staticmethod
    def _releases_check(text: str) -> Callable[[JSON], bool]:
        """``releases={"GROUP": "NAME", ...}``: builds that contain every named release."""
        try:
            wanted = json.loads(text)
        except ValueError:
            wanted = None
        if not isinstance(wanted, dict):
            raise _BadQuery(f"Invalid value for query parameter 'releases': {text!r}")
        ids = [
            {i for i, release in _RELEASES.items() if release == (group, name)}
            for group, name in wanted.items()
        ]
        return lambda r: all(not match.isdisjoint(r["releases"]) for match in ids)

    def _page(self, items: list[JSON], params: httpx.QueryParams) -> httpx.Response:
        """Feathers' ``$skip``/``$limit``: a bare array, or a page when paginating (with
        ``$limit`` capped at ``page_size``)."""
        skip = _int_param(params, "$skip") or 0
        limit = _int_param(params, "$limit")
        page_size = self.config.page_size
        if page_size is None:
            return _json_response(200, items[skip:] if limit is None else items[skip:][:limit])
        limit = page_size if limit is None else min(limit, page_size)
        page = {"total": len(items), "limit": limit, "skip": skip, "data": items[skip:][:limit]}
        return _json_response(200, page)

    def _download(self, request: httpx.Request, ident: str) -> httpx.Response:
        """GET or HEAD of a body: 403 in FORBIDDEN_BUILD and for ``config.forbidden_downloads``,
        Range per ``config.ranges``, Content-Length or chunked per ``config.content_length``,
        cut and stalled per ``config``; a GET counts as a download."""
        entry = self._record("downloads", ident)
        if entry is None:
            return _error_response(404, f"No record found for id '{ident}'")
        config = self.config
        download_id = entry["id"]
        if entry["build_id"] == FORBIDDEN_BUILD or download_id in config.forbidden_downloads:
            return _error_response(403, "You don't have permissions to download build results!")
        path = self.body_path(download_id)
        size = self._sizes[path]
        status, offset, length = 200, 0, size
        filename = entry["name"] or entry["file_name"] or f"{download_id}.zip"
        headers = {
            "Content-Type": "application/zip",
            "Content-Disposition": _content_disposition(filename),
        }
        if config.ranges:
            headers["Accept-Ranges"] = "bytes"
            wanted = _parse_range(request.headers.get("range", ""), size)
            if wanted == _UNSATISFIABLE:
                return _error_response(
                    416, "Range Not Satisfiable", headers={"Content-Range": f"bytes */{size}"}
                )
            if isinstance(wanted, tuple):
                status, offset, length = 206, wanted[0], wanted[1] - wanted[0] + 1
                headers["Content-Range"] = f"bytes {wanted[0]}-{wanted[1]}/{size}"
        if config.content_length:
            headers["Content-Length"] = str(length)
        else:
            headers["Transfer-Encoding"] = "chunked"
        if request.method.upper() != "GET":
            return httpx.Response(status, headers=headers)
        with self._lock:
            entry["downloaded"] += 1
        cuts: list[tuple[int, Ending]] = [(length, "close")]
        if config.drop_after is not None:
            cuts.append((config.drop_after, "close"))
        if config.reset_after is not None:
            cuts.append((config.reset_after, "reset"))
        limit, ending = min(cuts)
        body = FileBody(
            path, offset, length, limit=limit, ending=ending, throttle=config.throttle,
            stall=self._stall(config), on_sent=self._count_sent, request=request,
        )  # fmt: skip
        return httpx.Response(status, headers=headers, stream=body)

    def _stall(self, config: EmulatorConfig) -> Stall | None:
        """A new stall per ``config.stall_after``, which `release_stalls` can release."""
        if config.stall_after is None:
            return None
        stall = Stall(config.stall_after, config.stall_seconds)
        with self._lock:
            self._stalls.add(stall)
        return stall

    def answers_at_once(self, target: str) -> bool:
        """Whether `handle` answers a request for ``target`` without waiting: not one for a
        download whose body this process has not looked at yet (it may be generated)."""
        match = _DOWNLOAD_TARGET.match(target)
        if match is None:
            return True
        download_id = int(match[1])
        with self._lock:
            spec = self._data.bodies.get(download_id)
            return spec is None or (download_id, spec) in self._paths

    def count_connection(self, change: int) -> None:
        with self._lock:
            self.connections += change
            self.peak_connections = max(self.peak_connections, self.connections)

    def _count_sent(self, count: int) -> None:
        with self._lock:
            self.bytes_sent += count

    def _generate(self, path: Path, spec: _BodySpec, rng: random.Random) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.part")
        try:
            with partial.open("wb") as file:
                _write_zip(file, spec, rng)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)


# --- the HTTP server ----------------------------------------------------------------------


def _unacknowledged(connection: socket.socket) -> int:
    """Bytes sent on ``connection`` that its peer has not acknowledged yet (Linux' SIOCOUTQ;
    0 where that cannot be asked)."""
    try:
        raw = fcntl.ioctl(connection.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except (OSError, AttributeError):
        return 0
    return int(struct.unpack("i", raw)[0])


_HTTP_VERSION: Final = re.compile(r"HTTP/1\.[0-9]")
#: http.client's limits on a request's head.
_HEADER_LINE_LIMIT: Final = 65536
_HEADER_COUNT_LIMIT: Final = 100
#: The servers' listen backlog. socketserver's default of 5 drops the SYNs of a burst of new
#: connections (16 concurrent size probes, 8 parallel readers): each then waits a 1 s
#: retransmit, a figure of the test server, not of the client.
LISTEN_BACKLOG: Final = 128
#: A request for a download's body (or its head).
_DOWNLOAD_TARGET: Final = re.compile(r"/api/v1/downloads/(\d+)(?:[?#]|$)")
#: Bytes the loop server reads from a connection at once.
_RECEIVE_SIZE: Final = 65536


_SERVER_HEADER: Final = "MetaKraftwerk-emulator "


def _response_head(status: int, headers: Iterable[tuple[str, str]]) -> tuple[bytes, bool | None]:
    """A response's status line and headers, as ``http.server`` writes them (``Server`` and
    ``Date`` first); and what a ``Connection`` header among them says: True for close,
    False for keep-alive, None for neither."""
    reason = BaseHTTPRequestHandler.responses.get(status, ("",))[0]
    date = email.utils.formatdate(usegmt=True)
    lines = [
        f"HTTP/1.1 {status} {reason}\r\n",
        f"Server: {_SERVER_HEADER}\r\n",
        f"Date: {date}\r\n",
    ]
    close = None
    for name, value in headers:
        lines.append(f"{name}: {value}\r\n")
        if name.lower() == "connection" and value.lower() in ("close", "keep-alive"):
            close = value.lower() == "close"
    lines.append("\r\n")
    return "".join(lines).encode("latin-1"), close


def _error_page(status: int, message: str) -> bytes:
    """What ``http.server``'s ``send_error`` sends for a request it refuses (then it closes)."""
    text = html.escape(f"{status} {message}")
    body = f"<html><body><h1>{text}</h1></body></html>\n".encode()
    head, _ = _response_head(
        status,
        [
            ("Connection", "close"),
            ("Content-Type", "text/html;charset=utf-8"),
            ("Content-Length", str(len(body))),
        ],
    )
    return head + body


def _too_long(*, first: bool) -> bytes:
    """The refusal of a request line (414) or head (431) over ``http.client``'s limits."""
    if first:
        return _error_page(414, "Request-URI Too Long")
    return _error_page(431, "Request Header Fields Too Large")


def _send_file(
    connection: socket.socket, body: FileBody, chunked: bool, stopping: threading.Event
) -> bool:
    """Send ``body`` with sendfile, paced, stalled and chunk-framed as asked; after a cut,
    close or reset the connection so the client sees a short body. Whether the connection
    goes on (False after a cut)."""
    with body.path.open("rb") as file:
        for offset, count in body.paced(stopping=stopping.is_set):
            if chunked:
                connection.sendall(b"%X\r\n" % count)
            body.on_sent(connection.sendfile(file, offset, count))
            if chunked:
                connection.sendall(b"\r\n")
    if body.dropped:
        if body.ending == "reset":
            _reset(connection)
        else:
            connection.shutdown(socket.SHUT_RDWR)
        return False
    if chunked:
        connection.sendall(b"0\r\n\r\n")
    return True


def _reset(connection: socket.socket) -> None:
    """Abort the connection with a RST (SO_LINGER 0), once the client has acknowledged
    what was sent (bounded), so that it can read those bytes before the reset."""
    deadline = time.monotonic() + _DRAIN_TIMEOUT
    while _unacknowledged(connection) and time.monotonic() < deadline:
        time.sleep(_POLL / 2)
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    # The file descriptor closes now; the detached socket object stays harmless.
    os.close(connection.detach())


def _send_response(
    connection: socket.socket,
    method: str,
    response: httpx.Response,
    stopping: threading.Event,
    *,
    before: bytes = b"",
) -> bool | None:
    """Send ``response`` (after ``before``, answers already due on the connection), once its
    `response_delay` is over: blocking, for the responses that take time. Whether the
    connection must close: what its ``Connection`` header says, as `_response_head`; True
    when the body was cut."""
    if before:
        connection.sendall(before)
    if delay := response_delay(response):
        time.sleep(delay)
    head, close = _response_head(response.status_code, response.headers.multi_items())
    connection.sendall(head)
    if method == "HEAD":
        return close
    if isinstance(response.stream, FileBody):
        chunked = response.headers.get("Transfer-Encoding", "").lower() == "chunked"
        if not _send_file(connection, response.stream, chunked, stopping):
            return True
    else:
        connection.sendall(response.read())
    return close


def _cut(connections: Iterable[socket.socket]) -> None:
    """End these connections both ways: their clients see them closed, their threads fail."""
    for connection in connections:
        with contextlib.suppress(OSError):  # already closed by the client
            connection.shutdown(socket.SHUT_RDWR)


class _HTTPServer(ThreadingHTTPServer):
    """Serves an `Emulator` from a thread per connection and remembers its connections, so
    that stopping it really disconnects keep-alive clients (and ends their stalls: see
    ``stopping``). `EmulatorServer` uses `LoopServer`; this one serves what a selector
    loop cannot take as it is (a TLS socket, in the tests)."""

    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, address: tuple[str, int], emulator: Emulator) -> None:
        self.emulator = emulator
        self.stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _RequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (getfqdn), which can take seconds.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away is normal; anything else is logged, not printed."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            _log.exception("emulator: connection from %s failed", client_address)

    def track(self, connection: socket.socket, is_open: bool) -> None:
        with self._connections_lock:
            if is_open:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)
        self.emulator.count_connection(1 if is_open else -1)

    def close_connections(self) -> None:
        self.stopping.set()
        with self._connections_lock:
            connections = list(self._connections)
        _cut(connections)


class _RequestHandler(BaseHTTPRequestHandler):
    """Turns each HTTP request into `Emulator.handle` and writes its response back, after
    its `response_delay`, ending the connection as a cut `FileBody` says."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "MetaKraftwerk-emulator"
    sys_version = ""
    server: _HTTPServer
    raw_requestline: bytes  # set by handle_one_request

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests and benchmarks keep their output for themselves."""

    def parse_request(self) -> bool:
        """``BaseHTTPRequestHandler.parse_request`` for HTTP/1.x, without the email parser
        it reads headers with (which took about a quarter of the emulator's time per
        request: a cold ``ls -l`` is a thousand requests). Refuses what it refuses."""
        self.command = ""
        self.request_version = self.default_request_version
        self.close_connection = True
        self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        words = self.requestline.split()
        if not words:
            return False
        if len(words) != 3 or _HTTP_VERSION.fullmatch(words[2]) is None:
            self.request_version = "HTTP/1.0"  # an answer with a status line, then close
            self.send_error(HTTPStatus.BAD_REQUEST, f"Bad request line {self.requestline!r}")
            return False
        self.command, self.path, self.request_version = words
        self.close_connection = self.request_version == "HTTP/1.0"
        headers = self.headers = http.client.HTTPMessage()
        while True:
            line = self.rfile.readline(_HEADER_LINE_LIMIT + 1)
            if len(line) > _HEADER_LINE_LIMIT or len(headers) >= _HEADER_COUNT_LIMIT:
                self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
                return False
            if line in (b"\r\n", b"\n", b""):
                break
            name, colon, value = line.decode("iso-8859-1").partition(":")
            if not colon or not name.strip():
                self.send_error(HTTPStatus.BAD_REQUEST, f"Bad header line {line!r}")
                return False
            headers[name.strip()] = value.strip()
        connection = headers.get("Connection", "").lower()
        if connection == "close":
            self.close_connection = True
        elif connection == "keep-alive":
            self.close_connection = False
        if headers.get("Expect", "").lower() == "100-continue" and not self.close_connection:
            return self.handle_expect_100()
        return True

    def do_GET(self) -> None:
        length = self.headers.get("Content-Length") or "0"
        if not length.isdigit():
            self.send_error(400, "Bad Content-Length")
            return
        request = httpx.Request(
            self.command,
            f"http://{self.server.server_name}:{self.server.server_port}{self.path}",
            headers=list(self.headers.items()),
            content=self.rfile.read(int(length)),
        )
        try:
            response = self.server.emulator.handle(request)
        except httpx.TransportError:  # the server went down while the request was in flight
            self.close_connection = True
            return
        except Exception:
            _log.exception("emulator failed on %s %s", self.command, self.path)
            response = _error_response(500, "Internal emulator error")
        try:
            close = _send_response(self.connection, self.command, response, self.server.stopping)
        except ConnectionError:  # the client went away, or the server was stopped
            close = True
        if close is not None:
            self.close_connection = close

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET


@dataclass(eq=False)
class _Connection:
    sock: socket.socket
    received: bytearray = field(default_factory=bytearray)
    #: A worker thread is sending on it; the loop leaves it alone meanwhile.
    busy: bool = False
    #: ``100 Continue`` was sent for the request whose body is awaited.
    continued: bool = False


@dataclass
class _Request:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    close: bool


@dataclass(frozen=True)
class _Answer:
    """What a thread sends on a connection for the loop: ``before`` (answers already due),
    then the answer to ``request``: ``response``, or with None what the app says (which may
    take time). Without a request, ``before`` alone."""

    request: _Request | None
    response: httpx.Response | None
    before: bytes


class HttpApp(Protocol):
    """What `LoopServer` serves: `Emulator`, or the benchmark's directory server."""

    def handle(self, request: httpx.Request) -> httpx.Response:
        """The answer to ``request``: its body bytes, or a `FileBody` to send; it may keep
        a `response_delay`. ``httpx.TransportError``: close without an answer."""
        ...

    def answers_at_once(self, target: str) -> bool:
        """Whether `handle` answers a request for ``target`` without blocking."""
        ...

    def count_connection(self, change: int) -> None:
        """A connection opened (+1) or closed (-1)."""
        ...


class LoopServer:
    """An `HttpApp` over HTTP/1.1 from one thread with a selector, the way an event-loop
    server runs: quick requests (a ``HEAD``, a listing, a login) are read, answered and
    written by that thread, without a thread per connection. A thread switch per request
    was about a third of the emulator's CPU in a cold ``ls -l`` (1000 ``HEAD``s, 16 at a
    time), and the floor the benchmark compares with. A response that takes time (a body,
    a delay, one ``answers_at_once`` says no to) is sent by a thread of its own, after which
    the connection comes back.

    Requests are parsed as `_RequestHandler.parse_request` does, and refused with the same
    statuses; its interface is the part of ``socketserver``'s that `EmulatorServer` uses."""

    def __init__(self, address: tuple[str, int], app: HttpApp) -> None:
        self.app = app
        self.stopping = threading.Event()
        self.socket = socket.create_server(address, backlog=LISTEN_BACKLOG)
        self.socket.setblocking(False)
        host, port = self.socket.getsockname()[:2]
        self.server_name, self.server_port = str(host), int(port)
        self._selector = selectors.DefaultSelector()
        self._wake_in, self._wake_out = socket.socketpair()
        self._wake_in.setblocking(False)
        self._selector.register(self.socket, selectors.EVENT_READ)
        self._selector.register(self._wake_in, selectors.EVENT_READ)
        #: Every open connection; guarded by ``_lock``, like ``_returned`` and ``_stopped``.
        self._connections: set[_Connection] = set()
        self._returned: list[_Connection] = []
        self._stopped = False
        self._lock = threading.Lock()
        self._done = threading.Event()

    # -- socketserver's interface --------------------------------------------------------------

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        try:
            while not self._stopped:
                for key, _ in self._selector.select(poll_interval):
                    if key.fileobj is self.socket:
                        self._accept()
                    elif key.fileobj is self._wake_in:
                        self._take_back()
                    else:
                        self._receive(key.data)
        finally:
            self._done.set()

    def shutdown(self) -> None:
        """Stop `serve_forever` and wait for it; open connections stay (see
        `close_connections`)."""
        with self._lock:
            self._stopped = True
        self._wake()
        self._done.wait()

    def server_close(self) -> None:
        self._selector.close()
        self.socket.close()
        self._wake_in.close()
        self._wake_out.close()

    def close_connections(self) -> None:
        """Cut every connection; those a worker sends on end with its next write."""
        self.stopping.set()
        with self._lock:
            connections = list(self._connections)
        _cut(c.sock for c in connections)
        for connection in connections:
            if not connection.busy:
                self._close(connection)

    # -- the loop ----------------------------------------------------------------------------

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_out.send(b"\0")

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # out of descriptors, or the peer gave up: next time
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            connection = _Connection(sock)
            with self._lock:
                self._connections.add(connection)
            self.app.count_connection(1)
            self._selector.register(sock, selectors.EVENT_READ, connection)

    def _take_back(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_in.recv(4096)
        with self._lock:
            returned, self._returned = self._returned, []
        for connection in returned:
            self._selector.register(connection.sock, selectors.EVENT_READ, connection)
            self._answer(connection)

    def _receive(self, connection: _Connection) -> None:
        try:
            data = connection.sock.recv(_RECEIVE_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(connection)
            return
        connection.received += data
        self._answer(connection)

    def _answer(self, connection: _Connection) -> None:
        """Answer the complete requests received; hand the connection to a worker at the
        first answer that takes time."""
        due: list[bytes] = []
        while (request := self._next_request(connection, due)) is not None:
            if isinstance(request, bytes):  # refused: the connection ends with it
                due.append(request)
                self._send_and_close(connection, b"".join(due))
                return
            if not self.app.answers_at_once(request.target):
                self._hand_over(connection, _Answer(request, None, b"".join(due)))
                return
            response = self._handle(request)
            if response is None:  # the server went down while the request was in flight
                self._send_and_close(connection, b"".join(due))
                return
            if isinstance(response.stream, FileBody) or response_delay(response):
                self._hand_over(connection, _Answer(request, response, b"".join(due)))
                return
            head, close = _response_head(response.status_code, response.headers.multi_items())
            due.append(head if request.method == "HEAD" else head + response.read())
            if close if close is not None else request.close:
                self._send_and_close(connection, b"".join(due))
                return
        if due:
            self._send(connection, b"".join(due))

    def _handle(self, request: _Request) -> httpx.Response | None:
        """The app's answer; None when the server went down meanwhile."""
        try:
            return self.app.handle(
                httpx.Request(
                    request.method,
                    f"http://{self.server_name}:{self.server_port}{request.target}",
                    headers=request.headers,
                    content=request.body,
                )
            )
        except httpx.TransportError:
            return None
        except Exception:
            _log.exception("emulator failed on %s %s", request.method, request.target)
            return _error_response(500, "Internal emulator error")

    def _next_request(self, connection: _Connection, due: list[bytes]) -> _Request | bytes | None:
        """The next complete request received, taken off the buffer; the answer that refuses
        it (bytes); or None until more comes."""
        received = connection.received
        end = received.find(b"\n\r\n")
        bare = received.find(b"\n\n")
        if bare != -1 and (end == -1 or bare < end):
            end, skip = bare, 2
        else:
            skip = 3
        if end == -1:
            if received and received.lstrip(b"\r\n") == b"":
                # http.server reads a blank request line as the end of the connection.
                return b""
            line_start = received.rfind(b"\n") + 1
            if len(received) - line_start > _HEADER_LINE_LIMIT:  # a line without an end
                return _too_long(first=line_start == 0)
            return None
        lines = bytes(received[: end + 1]).split(b"\n")
        for index, line in enumerate(lines):
            if len(line) + 1 > _HEADER_LINE_LIMIT:
                return _too_long(first=index == 0)
        request_line = str(lines[0], "iso-8859-1").rstrip("\r\n")
        words = request_line.split()
        if not words:
            return b""
        if len(words) != 3 or _HTTP_VERSION.fullmatch(words[2]) is None:
            return _error_page(400, f"Bad request line {request_line!r}")
        method, target, version = words
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            if len(headers) >= _HEADER_COUNT_LIMIT:
                return _too_long(first=False)
            if line in (b"\r", b""):
                break
            name, colon, value = line.decode("iso-8859-1").partition(":")
            if not colon or not name.strip():
                return _error_page(400, f"Bad header line {line!r}")
            headers.append((name.strip(), value.strip()))
        fields = {name.lower(): value for name, value in headers}
        close = version == "HTTP/1.0"
        connection_header = fields.get("connection", "").lower()
        if connection_header == "close":
            close = True
        elif connection_header == "keep-alive":
            close = False
        length = fields.get("content-length") or "0"
        if not length.isdigit():
            return _error_page(400, "Bad Content-Length")
        start = end + skip
        if len(received) < start + int(length):
            expect = fields.get("expect", "").lower()
            if expect == "100-continue" and not close and not connection.continued:
                connection.continued = True
                due.append(b"HTTP/1.1 100 Continue\r\n\r\n")
            return None
        body = bytes(received[start : start + int(length)])
        del received[: start + int(length)]
        connection.continued = False
        return _Request(method, target, headers, body, close)

    def _send(self, connection: _Connection, data: bytes) -> None:
        """Send what is due; what the socket does not take at once, a worker sends."""
        try:
            sent = connection.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._close(connection)
            return
        if sent < len(data):
            self._hand_over(connection, _Answer(None, None, data[sent:]))

    def _send_and_close(self, connection: _Connection, data: bytes) -> None:
        with contextlib.suppress(OSError):
            connection.sock.setblocking(True)
            connection.sock.settimeout(_DRAIN_TIMEOUT)
            connection.sock.sendall(data)
            connection.sock.shutdown(socket.SHUT_WR)
        self._close(connection)

    def _close(self, connection: _Connection) -> None:
        with self._lock:
            if connection not in self._connections:
                return
            self._connections.discard(connection)
        with contextlib.suppress(KeyError, ValueError, RuntimeError, OSError):
            self._selector.unregister(connection.sock)
        connection.sock.close()
        self.app.count_connection(-1)

    def _hand_over(self, connection: _Connection, answer: _Answer) -> None:
        """Let a thread send ``answer``, blocking on delays and bodies; the connection comes
        back to the loop after, unless it ends."""
        self._selector.unregister(connection.sock)
        connection.busy = True
        threading.Thread(
            target=self._send_in_thread,
            args=(connection, answer),
            daemon=True,
            name=f"mkwfs-emulator-{self.server_port}-send",
        ).start()

    def _send_in_thread(self, connection: _Connection, answer: _Answer) -> None:
        request, response, before = answer.request, answer.response, answer.before
        sock = connection.sock
        close: bool | None = True
        try:
            sock.setblocking(True)
            if request is None:
                sock.sendall(before)
                close = False
            elif response is None and (response := self._handle(request)) is None:
                sock.sendall(before)  # the server went down meanwhile: no answer
            else:
                close = _send_response(sock, request.method, response, self.stopping, before=before)
                if close is None:
                    close = request.close
            if sock.fileno() != -1:
                sock.setblocking(False)
        except OSError:  # the client went away, or the server was stopped
            close = True
        except Exception:  # the connection must end all the same
            _log.exception("emulator failed sending an answer")
            close = True
        connection.busy = False
        with self._lock:
            back = not close and not self._stopped and sock.fileno() != -1
            if back:
                self._returned.append(connection)
        if back:
            self._wake()
            return
        if sock.fileno() != -1:  # after a reset the descriptor is gone already
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
        self._close(connection)


class EmulatorServer:
    """Serves an `Emulator` over real HTTP/1.1 (keep-alive) on ``host:port`` from a daemon
    thread (`LoopServer`), as a server that can go down and come back.

    It listens while it is started and ``emulator.config.down`` is false. `stop` closes the
    listening socket and cuts every open connection (clients then get ECONNREFUSED), `start`
    listens again on the same port (port 0 picks a free one at the first start; `url` keeps
    it). A context manager: `start` on entry, `close` on exit. Thread-safe."""

    def __init__(self, emulator: Emulator, host: str = "127.0.0.1", port: int = 0) -> None:
        self.emulator = emulator
        self.host = host
        self.port = port
        self._started = False
        self._server: LoopServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """The base URL ``http://HOST:PORT``; its port is known after the first `start`."""
        return f"http://{self.host}:{self.port}"

    @property
    def listening(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        """Listen on the port (again); returns once connections are accepted, or at once
        while the emulator is down (then it listens when the emulator comes up). OSError
        when the port is taken."""
        with self._lock:
            self._started = True
            self.emulator._servers.add(self)
            if self.port == 0:  # pick the port now, so that url is right even while down
                self._listen()
            self._follow_locked()

    def stop(self) -> None:
        """Stop listening and cut every open connection; returns once new connections are
        refused. Idempotent."""
        with self._lock:
            self._started = False
            self._follow_locked()

    def close(self) -> None:
        """`stop`, for good: the emulator's ``down`` no longer restarts it."""
        self.stop()
        self.emulator._servers.discard(self)

    def __enter__(self) -> EmulatorServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _follow_emulator(self) -> None:
        """Listen or not, as the emulator's ``config.down`` now says (see `Emulator.config`)."""
        with self._lock:
            self._follow_locked()

    def _follow_locked(self) -> None:
        wanted = self._started and not self.emulator.config.down
        if wanted and self._server is None:
            self._listen()
        elif not wanted and self._server is not None:
            self._shut()

    def _listen(self) -> None:
        server = LoopServer((self.host, self.port), self.emulator)
        self.host, self.port = server.server_name, server.server_port
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
            name=f"mkwfs-emulator-{self.port}",
        )  # fmt: skip
        self._thread.start()
        self._server = server

    def _shut(self) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._server.close_connections()
        self._thread.join()
        self._server = self._thread = None


@contextlib.contextmanager
def serve_in_thread(emulator: Emulator, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``emulator`` over real HTTP/1.1 (keep-alive) from a daemon thread; yield the base
    URL ``http://HOST:PORT``. On exit the server stops and open connections are cut. An
    `EmulatorServer` used as a context manager, for code that needs only the URL."""
    with EmulatorServer(emulator, host, port) as server:
        yield server.url


# --- python -m mkwfs.emulator -------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Serve an emulator until SIGINT or SIGTERM; print its URL, credentials and a token."""
    parser = argparse.ArgumentParser(
        prog="python -m mkwfs.emulator", description="Serve the MetaKraftwerk API emulator."
    )
    defaults = EmulatorConfig()
    parser.add_argument("--port", type=int, default=0, help="TCP port (0: any free port)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--big-file-size", type=int, default=defaults.big_file_size,
                        metavar="BYTES")  # fmt: skip
    parser.add_argument("--no-head", action="store_true", help="answer HEAD with 405")
    parser.add_argument("--no-ranges", action="store_true", help="ignore Range headers")
    parser.add_argument("--no-content-length", action="store_true",
                        help="send download bodies chunked")  # fmt: skip
    parser.add_argument("--page-size", type=int, metavar="N", help="paginate lists")
    parser.add_argument("--throttle", type=int, metavar="BPS", help="bytes per second")
    faults = parser.add_argument_group("faults")
    faults.add_argument("--token-lifetime", type=float, default=defaults.token_lifetime,
                        metavar="SECONDS", help="how long a login's token is valid")  # fmt: skip
    faults.add_argument("--latency", type=float, default=0.0, metavar="SECONDS",
                        help="delay before every response")  # fmt: skip
    faults.add_argument("--jitter", type=float, default=0.0, metavar="SECONDS",
                        help="plus a random delay of up to this (seeded)")  # fmt: skip
    faults.add_argument("--fail-rate", type=float, default=0.0, metavar="P",
                        help="answer this share of requests with 500/502/503/504 "
                        "(JSON, HTML or empty bodies)")  # fmt: skip
    faults.add_argument(
        "--drop-after",
        type=int,
        metavar="BYTES",
        help="close each download's connection after this many body bytes",
    )
    faults.add_argument(
        "--reset-after",
        type=int,
        metavar="BYTES",
        help="reset each download's connection after this many body bytes",
    )
    faults.add_argument(
        "--stall-after",
        type=int,
        metavar="BYTES",
        help="stop sending each download's body after this many bytes",
    )
    faults.add_argument("--stall-seconds", type=float, metavar="SECONDS",
                        help="for this long (default: until the server stops)")  # fmt: skip
    faults.add_argument("--malformed-json", action="store_true",
                        help="cut the JSON of list and get answers in half")  # fmt: skip
    args = parser.parse_args(argv)
    config = EmulatorConfig(
        seed=args.seed,
        big_file_size=args.big_file_size,
        page_size=args.page_size,
        head=not args.no_head,
        ranges=not args.no_ranges,
        content_length=not args.no_content_length,
        throttle=args.throttle,
        token_lifetime=args.token_lifetime,
        latency=args.latency,
        jitter=args.jitter,
        fail_rate=args.fail_rate,
        drop_after=args.drop_after,
        reset_after=args.reset_after,
        stall_after=args.stall_after,
        stall_seconds=args.stall_seconds,
        malformed_json=args.malformed_json,
    )
    emulator = Emulator(config)
    stop_signals = {signal.SIGINT, signal.SIGTERM}
    # Blocked before the server threads start, so they inherit the mask and sigwait sees them.
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    with serve_in_thread(emulator, args.host, args.port) as url:
        print(f"MKWFS_API_URL={url}")
        print(f"MKWFS_EMAIL={config.email}")
        print(f"MKWFS_PASSWORD={config.password}")
        print(f"MKWFS_TOKEN={emulator.issue_token()}", flush=True)
        signal.sigwait(stop_signals)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
