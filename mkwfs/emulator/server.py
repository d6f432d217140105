"""`EmulatorServer`: an `Emulator` over real HTTP/1.1 from a daemon thread (a `LoopServer`),
as a server that can go down and come back; `serve_in_thread` for code that needs only the
URL."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from mkwfs.emulator.loop import LoopServer

if TYPE_CHECKING:
    from mkwfs.emulator.app import Emulator


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
