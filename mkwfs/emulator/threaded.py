"""`_HTTPServer`: an `HttpApp` served from a thread per connection (``http.server``), for
what a selector loop cannot take as it is (a TLS socket, in the tests)."""

from __future__ import annotations

import http.client
import logging
import socket
import socketserver
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from mkwfs.emulator.loop import HttpApp
from mkwfs.emulator.responses import error_response
from mkwfs.emulator.wire import (
    HEADER_COUNT_LIMIT,
    HEADER_LINE_LIMIT,
    HTTP_VERSION,
    LISTEN_BACKLOG,
    cut,
    send_response,
)

_log = logging.getLogger("mkwfs.emulator")


class _HTTPServer(ThreadingHTTPServer):
    """Serves an `Emulator` from a thread per connection and remembers its connections, so
    that stopping it really disconnects keep-alive clients (and ends their stalls: see
    ``stopping``). `EmulatorServer` uses `LoopServer`; this one serves what a selector
    loop cannot take as it is (a TLS socket, in the tests)."""

    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, address: tuple[str, int], emulator: HttpApp) -> None:
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
        cut(connections)


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
        if len(words) != 3 or HTTP_VERSION.fullmatch(words[2]) is None:
            self.request_version = "HTTP/1.0"  # an answer with a status line, then close
            self.send_error(HTTPStatus.BAD_REQUEST, f"Bad request line {self.requestline!r}")
            return False
        self.command, self.path, self.request_version = words
        self.close_connection = self.request_version == "HTTP/1.0"
        headers = self.headers = http.client.HTTPMessage()
        while True:
            line = self.rfile.readline(HEADER_LINE_LIMIT + 1)
            if len(line) > HEADER_LINE_LIMIT or len(headers) >= HEADER_COUNT_LIMIT:
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
            response = error_response(500, "Internal emulator error")
        try:
            close = send_response(self.connection, self.command, response, self.server.stopping)
        except ConnectionError:  # the client went away, or the server was stopped
            close = True
        if close is not None:
            self.close_connection = close

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET
