"""HTTP/1.1 on a socket, shared by both servers: the head of a response, the pages that
refuse a request, and sending a response (a `FileBody` with ``sendfile``, paced, stalled,
chunked, and cut by a close or a reset as it says)."""

from __future__ import annotations

import contextlib
import email.utils
import fcntl
import html
import os
import re
import socket
import struct
import termios
import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler
from typing import Final

import httpx

from mkwfs.emulator.bodies import POLL, FileBody
from mkwfs.emulator.responses import response_delay

#: At most this many seconds for a reset connection's peer to acknowledge what was sent.
DRAIN_TIMEOUT: Final = 2.0


def _unacknowledged(connection: socket.socket) -> int:
    """Bytes sent on ``connection`` that its peer has not acknowledged yet (Linux' SIOCOUTQ;
    0 where that cannot be asked)."""
    try:
        raw = fcntl.ioctl(connection.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except (OSError, AttributeError):
        return 0
    return int(struct.unpack("i", raw)[0])


HTTP_VERSION: Final = re.compile(r"HTTP/1\.[0-9]")
#: http.client's limits on a request's head.
HEADER_LINE_LIMIT: Final = 65536
HEADER_COUNT_LIMIT: Final = 100
#: The servers' listen backlog. socketserver's default of 5 drops the SYNs of a burst of new
#: connections (16 concurrent size probes, 8 parallel readers): each then waits a 1 s
#: retransmit, a figure of the test server, not of the client.
LISTEN_BACKLOG: Final = 128


_SERVER_HEADER: Final = "MetaKraftwerk-emulator "


def response_head(status: int, headers: Iterable[tuple[str, str]]) -> tuple[bytes, bool | None]:
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


def error_page(status: int, message: str) -> bytes:
    """What ``http.server``'s ``send_error`` sends for a request it refuses (then it closes)."""
    text = html.escape(f"{status} {message}")
    body = f"<html><body><h1>{text}</h1></body></html>\n".encode()
    head, _ = response_head(
        status,
        [
            ("Connection", "close"),
            ("Content-Type", "text/html;charset=utf-8"),
            ("Content-Length", str(len(body))),
        ],
    )
    return head + body


def too_long(*, first: bool) -> bytes:
    """The refusal of a request line (414) or head (431) over ``http.client``'s limits."""
    if first:
        return error_page(414, "Request-URI Too Long")
    return error_page(431, "Request Header Fields Too Large")


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
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while _unacknowledged(connection) and time.monotonic() < deadline:
        time.sleep(POLL / 2)
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    # The file descriptor closes now; the detached socket object stays harmless.
    os.close(connection.detach())


def send_response(
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
    head, close = response_head(response.status_code, response.headers.multi_items())
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


def cut(connections: Iterable[socket.socket]) -> None:
    """End these connections both ways: their clients see them closed, their threads fail."""
    for connection in connections:
        with contextlib.suppress(OSError):  # already closed by the client
            connection.shutdown(socket.SHUT_RDWR)
