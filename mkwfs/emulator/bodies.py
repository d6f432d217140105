"""Download bodies: `FileBody`, the stream that describes what is sent of a generated file
(offset, length, pace, stall, cut), and `BodyStore`, which generates each download's file
once into the data directory and reuses it."""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import httpx
import trio

from mkwfs.emulator import zips
from mkwfs.emulator.config import Ending
from mkwfs.emulator.zips import BodySpec

#: Bumped whenever the body generator's code changes, so stale files in a data_dir are not
#: reused (changes of a download's `BodySpec` are noticed without it).
_BODY_FORMAT: Final = 2
#: Largest piece of a download body read or sent at once.
SEGMENT: Final = 2**20
#: Seconds between looks at a stall's release (and at a stopping server).
POLL: Final = 0.01


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
    paced at ``throttle`` bytes per second when set, and sent in bursts of ``burst[0]``
    bytes with ``burst[1]`` seconds between them when ``burst`` is set. Read in process, a
    body raises what httpx raises on a real connection: ``RemoteProtocolError`` after a
    close, ``ReadError`` after a reset, ``ReadTimeout`` when a stall outlasts the request's
    read timeout. The HTTP server sends `paced` segments with ``sendfile`` instead. The async
    side runs under trio (a stall waits on trio's clock). ``on_sent`` is told every byte
    count that goes out.
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
        burst: tuple[int, float] | None = None,
    ) -> None:
        self.path = path
        self.offset = offset
        self.length = length
        self.limit = min(limit, length)
        self.throttle = throttle
        self.on_sent = on_sent
        self.ending = ending
        self.stall = stall if stall is not None and stall.at < self.limit else None
        self.burst = burst
        self._request = request

    @property
    def dropped(self) -> bool:
        """True when the connection ends before the whole body was sent."""
        return self.limit < self.length

    def segments(self) -> Iterator[tuple[int, int, float]]:
        """``(file offset, byte count, seconds after the start it may go out)`` covering the
        first ``limit`` bytes; small segments when throttled so the pace is smooth, and a
        segment boundary where the stall is."""
        step = SEGMENT if self.throttle is None else max(1, min(SEGMENT, self.throttle // 10))
        stall_at = None if self.stall is None else self.stall.at
        done = 0
        while done < self.limit:
            end = min(done + step, self.limit)
            if self.burst is not None:  # a segment never spans two bursts
                end = min(end, (done // self.burst[0] + 1) * self.burst[0])
            if stall_at is not None and done < stall_at < end:
                end = stall_at
            due = 0.0 if self.throttle is None else done / self.throttle
            if self.burst is not None:
                due += done // self.burst[0] * self.burst[1]
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
            self.stall.released.wait(min(POLL, left))

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


def default_data_dir(seed: int, big_file_size: int) -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "mkwfs-emulator" / f"{seed}-{big_file_size}"


class BodyStore:
    """The file of each download's body, generated on first use into ``data_dir`` (named by
    the seed and the `BodySpec`, so a stale file is never used) and reused across runs and
    processes. Thread-safe."""

    def __init__(self, data_dir: Path, seed: int) -> None:
        self.data_dir = data_dir
        self.seed = seed
        self._lock = threading.Lock()
        self._body_locks: dict[Path, threading.Lock] = {}
        self._sizes: dict[Path, int] = {}
        #: The file of each download's body spec, once generated (naming one costs a hash).
        self._paths: dict[tuple[int, BodySpec], Path] = {}

    def path(self, download_id: int, spec: BodySpec) -> Path:
        """The file holding the body ``spec`` describes, generated on first use. Generation
        happens once however many threads ask at the same time, writes a temporary file and
        renames it, and is skipped when the file exists."""
        with self._lock:
            known = self._paths.get((download_id, spec))
        if known is not None:
            return known
        # The name changes with anything that changes the bytes, so a stale file is never used.
        version = hashlib.sha256(f"{_BODY_FORMAT} {spec!r}".encode()).hexdigest()[:12]
        path = self.data_dir / f"{download_id}-seed{self.seed}-{version}.zip"
        with self._lock:
            body_lock = self._body_locks.setdefault(path, threading.Lock())
        with body_lock:
            if path not in self._sizes:
                if not path.exists():
                    self._generate(path, spec, random.Random(self.seed + download_id))
                self._sizes[path] = path.stat().st_size
        with self._lock:
            self._paths[download_id, spec] = path
        return path

    def size(self, path: Path) -> int:
        """The size of a file `path` returned."""
        with self._lock:
            return self._sizes[path]

    def known(self, download_id: int, spec: BodySpec) -> bool:
        """Whether `path` answers at once for this body (it was looked at before)."""
        with self._lock:
            return (download_id, spec) in self._paths

    def _generate(self, path: Path, spec: BodySpec, rng: random.Random) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.part")
        try:
            with partial.open("wb") as file:
                zips.write_zip(file, spec, rng)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
