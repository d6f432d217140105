"""An httpx transport on libcurl, driven by trio: the wire under `ApiClient`.

httpx's own transport parses and copies every byte in Python on the trio thread, the thread
that also answers every FUSE request: a cold read was bound by it at about half the peer's
speed, and a size probe cost about 2 ms of it (h11, httpcore's pool, trio sockets).
`CurlTransport` gives the requests to one libcurl multi handle (pycurl), which does the
connections, TLS, HTTP parsing and buffering in C. libcurl's sockets are kept in an epoll
set of their own, which trio watches as one descriptor, and trio runs libcurl's timer;
Python runs only in the callbacks that pass header lines and body pieces over. httpx keeps
the policy (the client, headers, redirects, errors); this module is I/O only. Worker threads
were tried first: each 16 KiB callback then waits for the GIL, and the transfers ran at half
the speed.

``heads`` and ``get_whole`` are the two ways around httpx: a batch of ``HEAD`` requests (a
directory's size probes), and the ``GET`` of a small body into one buffer, with no httpx
request or response, no task per request and no streaming machinery: about a third of the
cost of each through the client.

libcurl keeps the connections (``max_connections`` at most, reused across requests) and
queues requests beyond them. When a body's reader falls behind, its transfer pauses and TCP
pushes back on the server, so an unread body never piles up in memory. Closing a response
early aborts its transfer.

Timeouts follow httpx's: ``connect`` bounds the connection, ``read`` each wait for the next
bytes (of the head or the body). Failures raise the matching ``httpx.TransportError``.

The transport lives in an ``async with`` block (an ``httpx.AsyncClient``'s): its socket and
timer tasks run in a nursery of its own.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import os
import select
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self

import certifi
import httpx
import pycurl
import trio

__all__ = ["BodyTooLong", "CurlTransport", "Head", "Whole"]

log = logging.getLogger("mkwfs.remote.transport")

#: Body bytes received for a reader before its transfer pauses: also the largest piece a
#: reader gets, joined into fresh memory (larger pieces cost more page faults than trips).
QUEUE_LIMIT: Final = 1 << 20
#: The same before the reader got its first bytes; then the limit grows with the bytes the
#: reader took, up to QUEUE_LIMIT; and HUNGRY_LIMIT at most while the reader waits. libcurl
#: reads what has arrived before it returns to trio: up to QUEUE_LIMIT at once keeps a
#: waiting reader waiting for it (about 5 ms on loopback, seen as a first read of 128 KiB
#: taking 15 ms instead of 4); a reader that is behind gets big pieces, fewer trips.
FIRST_LIMIT: Final = 64 << 10
HUNGRY_LIMIT: Final = 256 << 10
#: Handles kept set up for `CurlTransport.get_whole`, per setup (headers and timeouts:
#: about one per token), and how many setups at most.
WHOLE_SPARE: Final = 32
WHOLE_SETUPS: Final = 4
#: Bytes libcurl receives from a socket at once (it passes them on 16 KiB at a time).
RECEIVE_BUFFER: Final = 512 << 10

# libcurl codes that pycurl names only by their old (FTP) name or not at all.
_WEIRD_SERVER_REPLY: Final = 8
_HTTP2_STREAM: Final = 92
_CONNECT_ERRORS: Final = frozenset(
    {
        pycurl.E_COULDNT_RESOLVE_PROXY,
        pycurl.E_COULDNT_RESOLVE_HOST,
        pycurl.E_COULDNT_CONNECT,
        pycurl.E_SSL_CONNECT_ERROR,
        pycurl.E_PEER_FAILED_VERIFICATION,
        pycurl.E_SSL_CERTPROBLEM,
        pycurl.E_SSL_CIPHER,
        pycurl.E_SSL_CACERT_BADFILE,
    }
)
_PROTOCOL_ERRORS: Final = frozenset(
    {
        _WEIRD_SERVER_REPLY,
        _HTTP2_STREAM,
        pycurl.E_HTTP2,
        pycurl.E_PARTIAL_FILE,
        pycurl.E_GOT_NOTHING,
        pycurl.E_BAD_CONTENT_ENCODING,
    }
)
#: What epoll watches for libcurl's POLL_ values.
_EPOLL_MASKS: Final = {
    pycurl.POLL_IN: select.EPOLLIN,
    pycurl.POLL_OUT: select.EPOLLOUT,
    pycurl.POLL_INOUT: select.EPOLLIN | select.EPOLLOUT,
}
#: Request headers libcurl writes itself from the body it is given.
_OWN_HEADERS: Final = frozenset({b"content-length", b"transfer-encoding"})


class CurlTransport(httpx.AsyncBaseTransport):
    """`httpx.AsyncBaseTransport` over one libcurl multi handle. Use it in ``async with``
    (directly, or as the transport of an ``httpx.AsyncClient`` used so)."""

    def __init__(self, *, max_connections: int = 32) -> None:
        self._multi = pycurl.CurlMulti()
        self._multi.setopt(pycurl.M_MAX_TOTAL_CONNECTIONS, max_connections)
        self._multi.setopt(pycurl.M_MAXCONNECTS, max_connections)
        self._multi.setopt(pycurl.M_SOCKETFUNCTION, self._on_socket)
        self._multi.setopt(pycurl.M_TIMERFUNCTION, self._on_timer)
        self._idle: list[pycurl.Curl] = []
        #: Handles of finished `get_whole` requests, still set up, by their setup.
        self._whole_spare: dict[tuple[str | float | None, ...], list[pycurl.Curl]] = {}
        self._exchanges: dict[pycurl.Curl, _Exchange | _Probe | _WholeGet] = {}
        #: libcurl's sockets, watched in an epoll set of their own that trio watches: libcurl
        #: changes its interest twice per request, which this follows with one system call.
        self._epoll = select.epoll()
        self._interest: dict[int, int] = {}
        self._deadline = math.inf
        self._timer_waits_until = math.inf
        self._starting = False
        self._timer_changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._nursery_manager: contextlib.AbstractAsyncContextManager[trio.Nursery] | None = None

    async def __aenter__(self) -> Self:
        self._nursery_manager = trio.open_nursery()
        self._nursery = await self._nursery_manager.__aenter__()
        self._nursery.start_soon(self._serve_timer)
        self._nursery.start_soon(self._serve_sockets)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for exchange in list(self._exchanges.values()):
            self._drop(exchange)
        nursery, manager = self._nursery, self._nursery_manager
        self._nursery = self._nursery_manager = None
        if nursery is not None and manager is not None:
            nursery.cancel_scope.cancel()
            await manager.__aexit__(None, None, None)
        for handle in [*self._idle, *(h for spare in self._whole_spare.values() for h in spare)]:
            handle.close()
        self._idle.clear()
        self._whole_spare.clear()
        self._multi.close()
        self._epoll.close()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._nursery is None:
            raise RuntimeError("CurlTransport is used outside its async with block")
        timeouts = request.extensions.get("timeout", {})
        body = await request.aread() if request.method not in ("GET", "HEAD") else b""
        handle = self._idle.pop() if self._idle else pycurl.Curl()
        exchange = _Exchange(request, handle, timeouts.get("read"))
        exchange.configure(body, timeouts.get("connect"))
        self._exchanges[handle] = exchange
        self._start([handle])
        try:
            await exchange.wait_for_head()
        except BaseException:
            self._drop(exchange)
            raise
        return exchange.response(_Body(self, exchange))

    async def heads(
        self,
        urls: Sequence[str],
        headers: Mapping[str, str],
        *,
        at_once: int,
        per_request: httpx.Timeout,
    ) -> AsyncGenerator[tuple[int, Head], None]:
        """``HEAD`` each of ``urls`` with ``headers``, ``at_once`` at a time; yields the index
        of each URL with its answer, in the order they come. ``urls`` is read as the batch
        goes: URLs added to it meanwhile are taken too. Nothing but the requests and
        their heads: no httpx request or response, no task per request (the many size
        probes of a directory listing, at a fraction of the cost of ``send``).

        Each request is bounded by ``per_request``'s connect and read times together. Closing
        the iterator early aborts the requests still running.
        """
        if self._nursery is None:
            raise RuntimeError("CurlTransport is used outside its async with block")
        lines = [f"{name}: {value}" for name, value in headers.items()]
        connect, read = per_request.connect, per_request.read
        limit = _milliseconds((connect or 0) + read) if read is not None else 0
        answers: collections.deque[tuple[int, Head]] = collections.deque()
        arrived = trio.Event()
        running: list[_Probe] = []
        #: Handles of this batch's finished requests, still set up for the next one.
        spare: list[pycurl.Curl] = []
        launched = done = 0

        def answered(probe: _Probe, head: Head) -> None:
            running.remove(probe)
            answers.append((probe.index, head))
            arrived.set()

        def launch() -> None:
            nonlocal launched
            added = []
            while len(running) < at_once and launched < len(urls):
                index, launched = launched, launched + 1
                if spare:
                    handle = spare.pop()
                else:
                    handle = self._idle.pop() if self._idle else pycurl.Curl()
                    _prepare(handle, urls[index], lines, connect)
                    handle.setopt(pycurl.NOBODY, 1)
                    if limit:
                        handle.setopt(pycurl.TIMEOUT_MS, limit)
                probe = _Probe(index, handle, answered, spare)
                handle.setopt(pycurl.URL, urls[index])
                handle.setopt(pycurl.HEADERFUNCTION, probe.lines.append)
                self._exchanges[handle] = probe
                running.append(probe)
                added.append(handle)
            if added:
                self._start(added)

        try:
            while done < len(urls):
                launch()
                while not answers:
                    await arrived.wait()
                    arrived = trio.Event()
                while answers:
                    done += 1
                    yield answers.popleft()
        finally:
            for probe in list(running):
                self._drop(probe)
            for handle in spare:
                handle.reset()
            self._idle += spare

    async def get_whole(
        self,
        url: str,
        headers: Mapping[str, str],
        *,
        per_request: httpx.Timeout,
        max_size: int,
    ) -> Whole:
        """``GET`` ``url`` with ``headers`` and return its whole answer, the body in one
        buffer: for a body known to be small (a few KB of a build's result ZIP), without
        the cost of a stream. A body longer than ``max_size`` is aborted (``BodyTooLong``
        as the error). Failures come back as ``Whole.error``, never raised; the request is
        bounded by ``per_request``'s connect and read times together. Cancelling the call
        aborts the transfer."""
        if self._nursery is None:
            raise RuntimeError("CurlTransport is used outside its async with block")
        connect, read = per_request.connect, per_request.read
        setup = (*(f"{name}: {value}" for name, value in headers.items()), connect, read)
        spare = self._whole_spare.get(setup)
        if spare:  # set up by an earlier request with the same headers and times
            handle = spare.pop()
            handle.setopt(pycurl.URL, url)
        else:
            handle = self._idle.pop() if self._idle else pycurl.Curl()
            _prepare(handle, url, [f"{name}: {value}" for name, value in headers.items()], connect)
            handle.setopt(pycurl.HTTPGET, 1)
            if read is not None:
                handle.setopt(pycurl.TIMEOUT_MS, _milliseconds((connect or 0) + read))
        get = _WholeGet(url, handle, max_size, setup)
        handle.setopt(pycurl.HEADERFUNCTION, get.lines.append)
        handle.setopt(pycurl.WRITEFUNCTION, get.on_body)
        self._exchanges[handle] = get
        self._start([handle])
        try:
            await get.done.wait()
        except BaseException:
            self._drop(get)
            raise
        assert get.answer is not None
        return get.answer

    def _start(self, handles: list[pycurl.Curl]) -> None:
        """Give libcurl these transfers and let it start them now: added transfers are due
        at once (a timer of 0 ms), and the timer task would start them only on its next
        turn, a task switch later, for every request."""
        self._starting = True
        try:
            for handle in handles:
                self._multi.add_handle(handle)
        finally:
            self._starting = False
        self._act(pycurl.SOCKET_TIMEOUT, 0)
        self._hand_out()

    # -- libcurl's sockets and timer -----------------------------------------------------------

    def _on_socket(self, what: int, fd: int, multi: Any, data: Any) -> None:
        """libcurl wants ``fd`` watched for ``what`` (or no longer: POLL_REMOVE). Called
        inside socket_action: must not raise."""
        mask = _EPOLL_MASKS.get(what, 0)
        had = self._interest.pop(fd, 0)
        if mask:
            self._interest[fd] = mask
        try:
            try:
                if had and mask:
                    self._epoll.modify(fd, mask)
                elif mask:
                    self._epoll.register(fd, mask)
                elif had:
                    self._epoll.unregister(fd)
            except FileNotFoundError:  # closed behind libcurl's back: the kernel dropped it
                if mask:
                    self._epoll.register(fd, mask)
            except FileExistsError:  # a registration this set forgot
                self._epoll.modify(fd, mask)
        except OSError as exc:
            log.debug("socket %d cannot be watched: %s", fd, exc)
            self._interest.pop(fd, None)

    async def _serve_sockets(self) -> None:
        """Tell libcurl which of its sockets are ready, whenever some are."""
        while True:
            await trio.lowlevel.wait_readable(self._epoll.fileno())
            for fd, mask in self._epoll.poll(0):
                self._act(fd, _curl_events(mask))
            self._hand_out()

    def _on_timer(self, milliseconds: int) -> None:
        self._deadline = math.inf if milliseconds < 0 else trio.current_time() + milliseconds / 1e3
        if milliseconds == 0 and self._starting:
            return  # _start lets libcurl act right away
        if self._deadline < self._timer_waits_until:  # else it wakes in time, and waits on
            self._timer_changed.set()

    async def _serve_timer(self) -> None:
        while True:
            self._timer_changed = trio.Event()
            self._timer_waits_until = self._deadline
            with trio.move_on_at(self._deadline):
                await self._timer_changed.wait()
                continue
            if trio.current_time() < self._deadline:  # moved later meanwhile
                continue
            self._deadline = math.inf
            self._act(pycurl.SOCKET_TIMEOUT, 0)
            self._hand_out()

    def _act(self, fd: int, event: int) -> None:
        """Let libcurl work on ``fd`` (or, with SOCKET_TIMEOUT, on its timeouts)."""
        try:
            while self._multi.socket_action(fd, event)[0] == pycurl.E_CALL_MULTI_PERFORM:
                pass
        except pycurl.error:  # libcurl broke its own state: nothing to recover here
            log.exception("libcurl failed")

    def _hand_out(self) -> None:
        """Hand out the transfers libcurl has finished."""
        try:
            while True:
                queued, succeeded, failed = self._multi.info_read()
                for handle in succeeded:
                    self._finish(handle, pycurl.E_OK, "")
                for handle, code, message in failed:
                    self._finish(handle, code, message)
                if not queued:
                    break
        except pycurl.error:  # libcurl broke its own state: nothing to recover here
            log.exception("libcurl failed")

    def _finish(self, handle: pycurl.Curl, code: int, message: str) -> None:
        exchange = self._exchanges.get(handle)
        if exchange is not None:
            exchange.finish(code, message)
            self._release(exchange)

    def _drop(self, exchange: _Exchange | _Probe | _WholeGet) -> None:
        """Abort a transfer whose reader went away (nothing if it has finished)."""
        if self._exchanges.get(exchange.handle) is exchange:  # the handle may serve another
            exchange.abandon()
            self._release(exchange)

    def _release(self, exchange: _Exchange | _Probe | _WholeGet) -> None:
        handle = exchange.handle
        del self._exchanges[handle]
        self._multi.remove_handle(handle)
        if isinstance(exchange, _Probe) and not exchange.abandoned:
            exchange.spare.append(handle)  # set up for the batch's next request
            return
        if isinstance(exchange, _WholeGet) and not exchange.abandoned:
            spare = self._whole_spare.get(exchange.setup)
            if spare is None and len(self._whole_spare) < WHOLE_SETUPS:
                spare = self._whole_spare[exchange.setup] = []
            if spare is not None and len(spare) < WHOLE_SPARE:
                spare.append(handle)  # set up for the next get_whole with that setup
                return
        handle.reset()  # drops the callbacks, and with them the exchange
        self._idle.append(handle)

    def _resume(self, exchange: _Exchange) -> None:
        if self._exchanges.get(exchange.handle) is not exchange:
            return
        try:
            exchange.handle.pause(pycurl.PAUSE_CONT)
        except pycurl.error as exc:  # the transfer broke meanwhile: its reader gets the error
            code = exc.args[0] if isinstance(exc.args[0], int) else pycurl.E_RECV_ERROR
            exchange.finish(code, str(exc.args[-1]))
            self._release(exchange)


@dataclass(frozen=True, slots=True)
class Head:
    """The answer to one request of `CurlTransport.heads`."""

    #: The HTTP status; 0 when there was no answer (see ``error``).
    status: int
    #: The header fields, by lower-case name (the last of a repeated one).
    headers: Mapping[str, str]
    #: Why there was no answer, else None.
    error: httpx.TransportError | None = None


class _Probe:
    """One HEAD of a `CurlTransport.heads` batch. Its handle goes back to the batch's
    ``spare`` handles when it ends, unless the batch was closed (``abandon``)."""

    def __init__(
        self,
        index: int,
        handle: pycurl.Curl,
        answered: Callable[[_Probe, Head], None],
        spare: list[pycurl.Curl],
    ) -> None:
        self.index = index
        self.handle = handle
        self.spare = spare
        self.abandoned = False
        #: The head's lines as libcurl passes them (list.append is the callback: no Python
        #: frame per line).
        self.lines: list[bytes] = []
        self._answered = answered

    def finish(self, code: int, message: str) -> None:
        if code != pycurl.E_OK:
            request = httpx.Request("HEAD", self.handle.getinfo(pycurl.EFFECTIVE_URL))
            error = _mapped(self.handle, request, code, message or f"libcurl error {code}")
            self._answered(self, Head(0, {}, error))
            return
        self._answered(self, Head(*_head(self.lines)))

    def abandon(self) -> None:
        """The batch was closed: nobody waits for this answer."""
        self.abandoned = True


@dataclass(frozen=True, slots=True)
class Whole:
    """The answer to one `CurlTransport.get_whole`."""

    #: The HTTP status; 0 when there was no answer (see ``error``).
    status: int
    #: The header fields, by lower-case name (the last of a repeated one).
    headers: Mapping[str, str]
    #: The body as received (not decoded).
    body: bytes
    #: Why there was no (whole) answer, else None.
    error: httpx.TransportError | None = None


class BodyTooLong(httpx.TransportError):
    """A body that `CurlTransport.get_whole` was to take whole ran past its ``max_size``."""


class _WholeGet:
    """One ``GET`` of `CurlTransport.get_whole`: its head lines and body pieces gathered as
    libcurl passes them, the answer made once it ends."""

    def __init__(
        self, url: str, handle: pycurl.Curl, max_size: int, setup: tuple[str | float | None, ...]
    ) -> None:
        self.url = url
        self.handle = handle
        #: What the handle is set up with (headers, timeouts): its key among spare handles.
        self.setup = setup
        self.abandoned = False
        self.lines: list[bytes] = []
        self.answer: Whole | None = None
        self.done = trio.Event()
        self._pieces: list[bytes] = []
        self._received = 0
        self._max_size = max_size

    def on_body(self, data: bytes) -> int | None:
        self._received += len(data)
        if self._received > self._max_size:
            return 0  # libcurl aborts the transfer
        self._pieces.append(data)
        return None

    def finish(self, code: int, message: str) -> None:
        body = self._pieces[0] if len(self._pieces) == 1 else b"".join(self._pieces)
        status, headers = _head(self.lines)
        error: httpx.TransportError | None = None
        if self._received > self._max_size:
            error = BodyTooLong(f"the body is over {self._max_size} bytes")
        elif code != pycurl.E_OK:
            request = httpx.Request("GET", self.url)
            error = _mapped(self.handle, request, code, message or f"libcurl error {code}")
        self.answer = Whole(status if error is None else 0, headers, body, error)
        self.done.set()

    def abandon(self) -> None:
        """Nobody waits for this answer any more: the handle is reset, not kept set up."""
        self.abandoned = True


class _Exchange:
    """One request on one curl handle: its head and body as libcurl passes them over."""

    def __init__(self, request: httpx.Request, handle: pycurl.Curl, read: float | None) -> None:
        self.request = request
        self.handle = handle
        self.read_timeout = math.inf if read is None else read
        self._status_line = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._has_head = False
        self._chunks: list[bytes] = []
        self._queued = 0
        self._limit = FIRST_LIMIT
        self._taken = 0  # body bytes the reader took
        self._hungry = False  # the reader waits for bytes
        self.paused = False
        self._finished = False
        self._error: Exception | None = None
        self._abandoned = False
        self._changed = trio.Event()

    def configure(self, body: bytes, connect_timeout: float | None) -> None:
        request, handle = self.request, self.handle
        headers = [
            f"{name.decode('latin-1')}: {value.decode('latin-1')}"
            for name, value in request.headers.raw
            if name.lower() not in _OWN_HEADERS
        ]
        _prepare(handle, str(request.url), headers, connect_timeout)
        if request.method == "HEAD":
            handle.setopt(pycurl.NOBODY, 1)
        elif request.method == "GET":
            handle.setopt(pycurl.HTTPGET, 1)
        else:
            handle.setopt(pycurl.CUSTOMREQUEST, request.method)
            handle.setopt(pycurl.POSTFIELDS, body)
        handle.setopt(pycurl.HEADERFUNCTION, self._on_header_line)
        handle.setopt(pycurl.WRITEFUNCTION, self._on_body)

    # -- libcurl's callbacks (inside socket_action: they must not raise) ------------------------

    def _on_header_line(self, line: bytes) -> None:
        # Every response's head comes here: a 1xx's or a proxy's CONNECT answer before the
        # real one, and trailers after it. The head is complete at the first body byte or
        # at the end of the transfer.
        if line.startswith(b"HTTP/"):
            self._status_line, self._headers = line.rstrip(), []
        elif line.strip() and not self._has_head:
            name, _, value = line.partition(b":")
            self._headers.append((name.strip(), value.strip()))

    def _on_body(self, data: bytes) -> int | None:
        if self._abandoned:
            return 0  # libcurl aborts the transfer
        if self._queued >= (min(self._limit, HUNGRY_LIMIT) if self._hungry else self._limit):
            self.paused = True
            return pycurl.WRITEFUNC_PAUSE  # libcurl passes the same bytes again on resume
        self._has_head = True
        self._chunks.append(data)
        self._queued += len(data)
        self._wake()
        return None

    def finish(self, code: int, message: str) -> None:
        """The transfer is over: with ``code`` E_OK, or the libcurl error ``code``."""
        self._finished = True
        if code != pycurl.E_OK:
            self._error = _mapped(
                self.handle, self.request, code, message or f"libcurl error {code}"
            )
        self._wake()

    def abandon(self) -> None:
        self._abandoned = True
        self._chunks.clear()
        self._finished = True
        self._wake()

    def _wake(self) -> None:
        self._changed.set()

    async def _changes(self) -> None:
        self._changed = trio.Event()
        await self._changed.wait()

    # -- the reader's side ---------------------------------------------------------------------

    async def _wait_until(self, ready: Callable[[], bool], what: str) -> None:
        """Wait until ``ready()``; ``httpx.ReadTimeout`` after the read timeout."""
        with trio.move_on_after(self.read_timeout) as waited:
            while not ready():
                await self._changes()
        if waited.cancelled_caught:
            raise httpx.ReadTimeout(f"{what} for {self.read_timeout:g} s", request=self.request)

    async def wait_for_head(self) -> None:
        await self._wait_until(lambda: self._has_head or self._finished, "no answer")
        if self._error is not None and not self._has_head:
            raise self._error  # else the body that came is read first, then this is raised

    def response(self, stream: _Body) -> httpx.Response:
        version, _, rest = self._status_line.partition(b" ")
        _, _, reason = rest.partition(b" ")
        return httpx.Response(
            _status(self._status_line),
            headers=self._headers,
            stream=stream,
            extensions={"http_version": version, "reason_phrase": reason},
        )

    async def next_chunk(self, resume: Callable[[_Exchange], None]) -> bytes | None:
        """All the body that arrived since the last call (waiting for some); None at its end.
        ``resume`` restarts the transfer if it paused for this reader."""
        self._hungry = True
        try:
            await self._wait_until(lambda: bool(self._chunks) or self._finished, "nothing received")
        finally:
            self._hungry = False
        if self._chunks:
            chunk = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
            self._chunks = []
            self._queued = 0
            self._taken += len(chunk)
            self._limit = min(QUEUE_LIMIT, max(FIRST_LIMIT, self._taken))
            if self.paused:
                self.paused = False
                resume(self)
            return chunk
        if self._error is not None:
            raise self._error
        return None


class _Body(httpx.AsyncByteStream):
    def __init__(self, transport: CurlTransport, exchange: _Exchange) -> None:
        self._transport = transport
        self._exchange = exchange

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            while (chunk := await self._exchange.next_chunk(self._transport._resume)) is not None:
                yield chunk
        except httpx.ReadTimeout:
            self._transport._drop(self._exchange)
            raise

    async def aclose(self) -> None:
        self._transport._drop(self._exchange)


def _mapped(
    handle: pycurl.Curl, request: httpx.Request, code: int, message: str
) -> httpx.TransportError:
    """The httpx exception for a libcurl failure of ``handle``'s transfer."""
    if code == pycurl.E_OPERATION_TIMEDOUT:
        if handle.getinfo(pycurl.CONNECT_TIME) == 0:
            return httpx.ConnectTimeout(message, request=request)
        return httpx.ReadTimeout(message, request=request)
    if code in _CONNECT_ERRORS:
        return httpx.ConnectError(message, request=request)
    if code in _PROTOCOL_ERRORS:
        return httpx.RemoteProtocolError(message, request=request)
    if code == pycurl.E_SEND_ERROR:
        return httpx.WriteError(message, request=request)
    if code == pycurl.E_RECV_ERROR:
        return httpx.ReadError(message, request=request)
    return httpx.NetworkError(message, request=request)


def _prepare(
    handle: pycurl.Curl, url: str, headers: list[str], connect_timeout: float | None
) -> None:
    """What every request of this transport sets on its handle."""
    handle.setopt(pycurl.URL, url)
    handle.setopt(pycurl.PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
    handle.setopt(pycurl.NOSIGNAL, 1)
    _trust(handle)
    handle.setopt(pycurl.BUFFERSIZE, RECEIVE_BUFFER)
    handle.setopt(pycurl.TCP_KEEPALIVE, 1)
    if connect_timeout is not None:
        handle.setopt(pycurl.CONNECTTIMEOUT_MS, _milliseconds(connect_timeout))
    handle.setopt(pycurl.HTTPHEADER, [*headers, "Expect:"])


def _milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _trust(handle: pycurl.Curl) -> None:
    """The certificates https is checked against, chosen as httpx chooses them:
    ``$SSL_CERT_FILE``, else ``$SSL_CERT_DIR``, else certifi's bundle."""
    if cafile := os.environ.get("SSL_CERT_FILE"):
        handle.setopt(pycurl.CAINFO, cafile)
    elif capath := os.environ.get("SSL_CERT_DIR"):
        handle.setopt(pycurl.CAPATH, capath)
    else:
        handle.setopt(pycurl.CAINFO, certifi.where())


def _head(lines: list[bytes]) -> tuple[int, dict[str, str]]:
    """The status and the fields (by lower-case name) of the last head in ``lines``."""
    status, headers = 0, dict[str, str]()
    for line in lines:
        if line.startswith(b"HTTP/"):  # a 1xx's or a proxy's head came first: start again
            status, headers = _status(line.rstrip()), {}
        elif b":" in line:
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
    return status, headers


def _status(status_line: bytes) -> int:
    parts = status_line.split(None, 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def _curl_events(mask: int) -> int:
    """libcurl's CSELECT_ bits for what epoll reported."""
    events = 0
    if mask & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLRDHUP):
        events |= pycurl.CSELECT_IN
    if mask & select.EPOLLOUT:
        events |= pycurl.CSELECT_OUT
    if mask & select.EPOLLERR:
        events |= pycurl.CSELECT_ERR
    return events
