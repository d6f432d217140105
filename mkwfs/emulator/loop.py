"""`LoopServer`: an `HttpApp` served over HTTP/1.1 from one thread with a selector, as an
event-loop server runs, with a thread of its own for each answer that takes time."""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
from dataclasses import dataclass, field
from typing import Final, Protocol

import httpx

from mkwfs.emulator.bodies import FileBody
from mkwfs.emulator.responses import error_response, response_delay
from mkwfs.emulator.wire import (
    DRAIN_TIMEOUT,
    HEADER_COUNT_LIMIT,
    HEADER_LINE_LIMIT,
    HTTP_VERSION,
    LISTEN_BACKLOG,
    cut,
    error_page,
    response_head,
    send_response,
    too_long,
)

_log = logging.getLogger("mkwfs.emulator")

#: Bytes the loop server reads from a connection at once.
_RECEIVE_SIZE: Final = 65536


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


def _next_request(connection: _Connection, due: list[bytes]) -> _Request | bytes | None:
    """The next complete request received, taken off the buffer; the answer that refuses
    it (bytes); or None until more comes."""
    received = connection.received
    head = _head_end(received)
    if head is None or isinstance(head, bytes):
        return head
    end, skip = head
    lines = bytes(received[: end + 1]).split(b"\n")
    for index, line in enumerate(lines):
        if len(line) + 1 > HEADER_LINE_LIMIT:
            return too_long(first=index == 0)
    request_line = str(lines[0], "iso-8859-1").rstrip("\r\n")
    words = request_line.split()
    if not words:
        return b""
    if len(words) != 3 or HTTP_VERSION.fullmatch(words[2]) is None:
        return error_page(400, f"Bad request line {request_line!r}")
    method, target, version = words
    headers = _headers(lines[1:])
    if isinstance(headers, bytes):
        return headers
    fields = {name.lower(): value for name, value in headers}
    close = {"close": True, "keep-alive": False}.get(
        fields.get("connection", "").lower(), version == "HTTP/1.0"
    )
    length = fields.get("content-length") or "0"
    if not length.isdigit():
        return error_page(400, "Bad Content-Length")
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


def _head_end(received: bytearray) -> tuple[int, int] | bytes | None:
    """Where the head of the first request in ``received`` ends: the offset of its last
    line's newline and how many bytes the blank line after takes; the answer that refuses
    it (bytes); or None until more comes."""
    end = received.find(b"\n\r\n")
    bare = received.find(b"\n\n")
    if bare != -1 and (end == -1 or bare < end):
        return bare, 2
    if end != -1:
        return end, 3
    if received and received.lstrip(b"\r\n") == b"":
        # http.server reads a blank request line as the end of the connection.
        return b""
    line_start = received.rfind(b"\n") + 1
    if len(received) - line_start > HEADER_LINE_LIMIT:  # a line without an end
        return too_long(first=line_start == 0)
    return None


def _headers(lines: list[bytes]) -> list[tuple[str, str]] | bytes:
    """The header fields of a request head's ``lines`` (after its request line), up to the
    blank line; or the answer that refuses them."""
    headers: list[tuple[str, str]] = []
    for line in lines:
        if len(headers) >= HEADER_COUNT_LIMIT:
            return too_long(first=False)
        if line in (b"\r", b""):
            break
        name, colon, value = line.decode("iso-8859-1").partition(":")
        if not colon or not name.strip():
            return error_page(400, f"Bad header line {line!r}")
        headers.append((name.strip(), value.strip()))
    return headers


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
        cut(c.sock for c in connections)
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
        while (request := _next_request(connection, due)) is not None:
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
            head, close = response_head(response.status_code, response.headers.multi_items())
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
            return error_response(500, "Internal emulator error")

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
            connection.sock.settimeout(DRAIN_TIMEOUT)
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
                close = send_response(sock, request.method, response, self.stopping, before=before)
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
