"""The control socket of a mount: how ``mkwfs status`` and ``mkwfs refresh`` reach its daemon.

Each daemon listens on a Unix stream socket in Linux's abstract namespace, named after its
mount point (:func:`address`). An abstract socket needs no file, so nothing is left behind
when a daemon dies, and the name can be found from the mount point alone. Binding it is
also the lock that refuses a second mkwfs on the same mount point.

Protocol: the client sends one JSON object on one line (``{"command": "status"}``), the
daemon answers one JSON object on one line and closes. A long command (``prefetch``) may
send progress first: lines ``{"progress": {...}}``, then the answer line as usual. Only the
daemon's own user and root may connect (checked with ``SO_PEERCRED``).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import trio

from mkwfs.remote.errors import MkwfsError

log = logging.getLogger(__name__)

#: The longest request or answer, in bytes.
MESSAGE_LIMIT = 1 << 20
#: Seconds a client has to send its request.
REQUEST_TIMEOUT = 5.0

#: Sends one progress line (``{"progress": ...}``) to the client before the answer;
#: ``trio.BrokenResourceError`` when the client went away.
SendProgress = Callable[[dict[str, Any]], Awaitable[None]]
#: Answers a request; it may send progress on the way.
Handler = Callable[[dict[str, Any], SendProgress], Awaitable[dict[str, Any]]]


class ControlError(MkwfsError):
    """No daemon answers on the mount point's control socket, or it answered nonsense."""


class AlreadyServed(MkwfsError):
    """Another mkwfs daemon already serves this mount point."""


def address(mountpoint: Path) -> bytes:
    """The abstract socket address of the daemon serving ``mountpoint`` (an absolute path)."""
    digest = hashlib.sha256(os.fsencode(os.path.abspath(mountpoint))).hexdigest()[:32]
    return b"\0mkwfs-control/" + digest.encode()


async def serve_control(
    mountpoint: Path,
    handler: Handler,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Bind the control socket (``AlreadyServed`` if taken), report started, then answer
    requests with ``handler`` until cancelled. A failing request never stops the server."""
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await sock.bind(address(mountpoint))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise AlreadyServed(
                f"{mountpoint} is already served by another mkwfs; "
                f"unmount it first (mkwfs umount {mountpoint})"
            ) from exc
        raise ControlError(f"cannot open the control socket: {exc}") from exc
    sock.listen(8)
    listener = trio.SocketListener(sock)

    async def answer(stream: trio.SocketStream) -> None:
        async with stream:
            try:
                await _answer(stream, handler)
            except (trio.BrokenResourceError, trio.TooSlowError, ValueError) as exc:
                log.debug("control request dropped: %r", exc)

    async with listener:
        task_status.started()
        await trio.serve_listeners(answer, [listener])


async def _answer(stream: trio.SocketStream, handler: Handler) -> None:
    uid = _peer_uid(stream.socket)
    if uid not in (0, os.geteuid()):
        await stream.send_all(_encode({"error": "permission denied"}))
        return
    data = b""
    with trio.fail_after(REQUEST_TIMEOUT):
        while b"\n" not in data and len(data) < MESSAGE_LIMIT:
            chunk = await stream.receive_some()
            if not chunk:
                break
            data += chunk
    if not data.strip():
        return  # a client that only checked that someone listens (``is_served``)
    request = json.loads(data.split(b"\n", 1)[0])
    if not isinstance(request, dict):
        raise ValueError("a request must be a JSON object")

    async def send_progress(progress: dict[str, Any]) -> None:
        await stream.send_all(_encode({"progress": progress}))

    try:
        answer = await handler(request, send_progress)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        raise  # the client went away: nobody to answer
    except MkwfsError as exc:
        answer = {"error": str(exc)}
    except Exception as exc:
        log.exception("control request %r failed", request.get("command"))
        answer = {"error": f"the daemon failed: {exc!r}"}
    await stream.send_all(_encode(answer))


def _peer_uid(sock: trio.socket.SocketType) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def _encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\n"


def request(
    mountpoint: Path,
    message: dict[str, Any],
    *,
    timeout: float = 30.0,
    on_progress: Callable[[dict[str, Any]], None] = lambda _progress: None,
) -> dict[str, Any]:
    """Send ``message`` to the daemon serving ``mountpoint`` and return its answer (blocking;
    for the command line), calling ``on_progress`` with each progress line before it.
    ``timeout`` bounds each wait for the daemon (to connect, for the next line).
    ``ControlError`` when no mkwfs daemon serves it, or it failed the request."""
    if len(_encode(message)) > MESSAGE_LIMIT:
        raise ControlError(f"the request is longer than {MESSAGE_LIMIT} bytes")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(address(mountpoint))
            sock.sendall(_encode(message))
            for line in _lines(sock):
                answer = _decode(line, mountpoint)
                progress = answer.get("progress")
                if not isinstance(progress, dict):
                    break
                on_progress(progress)
            else:
                raise ControlError(f"the mkwfs daemon of {mountpoint} ended without an answer")
        except (ConnectionRefusedError, FileNotFoundError) as exc:
            raise ControlError(f"no mkwfs daemon serves {mountpoint}") from exc
        except OSError as exc:
            raise ControlError(f"the mkwfs daemon of {mountpoint} did not answer: {exc}") from exc
    if "error" in answer:
        raise ControlError(f"the mkwfs daemon of {mountpoint}: {answer['error']}")
    return answer


def _lines(sock: socket.socket) -> Iterator[bytes]:
    """The lines the daemon sends, the last one perhaps without its newline."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
        *lines, data = data.split(b"\n")
        yield from lines
        if len(data) > MESSAGE_LIMIT:
            break
    if data.strip():
        yield data


def _decode(line: bytes, mountpoint: Path) -> dict[str, Any]:
    try:
        answer = json.loads(line)
    except ValueError as exc:
        raise ControlError(f"the mkwfs daemon of {mountpoint} answered nonsense") from exc
    if not isinstance(answer, dict):
        raise ControlError(f"the mkwfs daemon of {mountpoint} answered nonsense")
    return answer


def is_served(mountpoint: Path) -> bool:
    """Whether a daemon listens on the control socket of ``mountpoint`` (never blocks long)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
        sock.settimeout(2.0)
        try:
            sock.connect(address(mountpoint))
        except OSError:
            return False
    return True
