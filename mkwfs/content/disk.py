"""The bodies on disk, under ``<cache dir>/content``.

``<id>``       a complete body: renamed into place only once every byte is on disk and
               synced, so a crash never leaves a short file under this name;
``<id>.part``  a body in progress (sparse);
``<id>.map``   which ranges of ``<id>.part`` are on disk, written after syncing them, so
               after a crash only bytes that were really written are trusted.

A body in progress is open (a ``Body``) while something reads or fetches it; once nobody
has used it for ``idle_rest`` seconds it is put to rest: a complete one is synced and
renamed, a partial one has its map recorded and is closed. The ``Evictor`` then keeps the
bodies within the cache's bound.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from mkwfs.catalog.cache import SingleFlight
from mkwfs.content.body import Body
from mkwfs.content.config import ContentConfig
from mkwfs.content.eviction import Evictor
from mkwfs.content.extents import Extents
from mkwfs.content.tasks import guarded
from mkwfs.content.writer import DiskWriter
from mkwfs.remote.errors import ContentError

log = logging.getLogger(__name__)


class DiskStore:
    """The ``content`` directory: complete bodies, and the bodies in progress, open while
    used. Background work (maps, renames) runs in the nursery given."""

    def __init__(
        self,
        directory: Path,
        nursery: trio.Nursery,
        config: ContentConfig,
        *,
        max_bytes: int | None,
        known_size: Callable[[int], int | None],
    ) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        directory.chmod(0o700)  # mkwfs's own directory: private even if it existed before
        self._nursery = nursery
        self._config = config
        self._known_size = known_size
        self._prefix = f"{os.fspath(directory)}/"
        #: Bodies in progress, open while something uses them.
        self.bodies: dict[int, Body] = {}
        #: Bodies known to be complete on disk.
        self.complete: set[int] = set()
        self._flights = SingleFlight[int, None]()
        self.eviction = Evictor(
            directory, max_bytes, grace=config.eviction_grace, forget=self.complete.discard
        )

    def path(self, download_id: int, suffix: str = "") -> str:
        # A plain string: pathlib costs more than the read it names, on the hot path.
        return f"{self._prefix}{download_id}{suffix}"

    def complete_sizes(self) -> dict[int, int]:
        """The sizes of the complete bodies on disk (blocking: for a worker thread)."""
        sizes: dict[int, int] = {}
        for entry in os.scandir(self.directory):
            if entry.name.isdigit():
                with contextlib.suppress(FileNotFoundError):
                    sizes[int(entry.name)] = entry.stat().st_size
        return sizes

    @asynccontextmanager
    async def using(self, download_id: int) -> AsyncIterator[Body | None]:
        """The body in progress, loaded from disk if need be, held (``users``) so that it is
        not put to rest meanwhile; None once it is complete."""
        while True:
            body = self.bodies.get(download_id)
            if body is None:
                if download_id in self.complete:
                    break
                await self._flights.run(download_id, lambda: self._load_body(download_id))
            elif body.resting:
                await body.rested.wait()
            else:
                body.users += 1  # no checkpoint between the look and the hold
                break
        if body is None:
            yield None
            return
        try:
            yield body
        finally:
            body.users -= 1
            await self.settle(body)

    async def _load_body(self, download_id: int) -> None:
        if download_id in self.complete or download_id in self.bodies:
            return
        try:
            state = await trio.to_thread.run_sync(
                _load_part,
                self.path(download_id),
                self.path(download_id, ".part"),
                self.path(download_id, ".map"),
            )
        except OSError as exc:
            raise ContentError(f"cannot open the cache of download {download_id}: {exc}") from exc
        if state is None:
            self.complete.add(download_id)
            return
        fd, extents = state
        size = self._known_size(download_id)
        self.bodies[download_id] = Body(download_id, fd, extents, size, self._config)

    async def read_complete(self, download_id: int, offset: int, length: int) -> bytes:
        """Bytes of a body that is complete (or was complete when the caller looked)."""
        return await trio.to_thread.run_sync(
            _pread_either,
            self.path(download_id),
            self.path(download_id, ".part"),
            offset,
            length,
        )

    async def open_writer(self, body: Body, *, direct: bool) -> DiskWriter:
        """A writer into the body's ``.part`` file; ``direct``: around the page cache, if
        the file system allows it."""
        if not direct:
            return DiskWriter(None, body.fd)
        path = self.path(body.download_id, ".part")
        return await trio.to_thread.run_sync(DiskWriter, path, body.fd)

    def wrote(self, body: Body) -> None:
        """The body's extents grew: record its map once ``map_interval`` more bytes are on
        disk."""
        if body.extents.total - body.mapped >= self._config.map_interval:
            self._map_soon(body)

    def _map_soon(self, body: Body) -> None:
        """Record the map in the background: the fsync it waits for is nobody's wait. The
        body counts it as a user, so that its descriptor stays open until it is done."""
        if body.mapping:
            return
        body.mapping = True
        body.users += 1
        self._nursery.start_soon(guarded, self._map_in_background, body)

    async def _map_in_background(self, body: Body) -> None:
        try:
            await self._record_map(body)
        finally:
            body.mapping = False
            body.users -= 1
            await self.settle(body)

    async def _record_map(self, body: Body) -> None:
        """Sync the body, then record which ranges are on disk."""
        ranges = body.extents.ranges
        payload = json.dumps({"size": body.size, "ranges": ranges}).encode()
        await trio.to_thread.run_sync(
            _sync_and_write, body.fd, self.path(body.download_id, ".map"), payload
        )
        body.mapped = sum(e - s for s, e in ranges)

    async def settle(self, body: Body) -> None:
        """After a fetch or a read: finish a complete body (in the background: its fsync is
        nobody's wait); put a partial one to rest once nobody used it for ``idle_rest``
        seconds (reopening it costs disk work)."""
        if body.fetches or body.users or body.resting:
            return
        if body.complete:
            if not body.finishing:
                body.finishing = True
                self._nursery.start_soon(guarded, self._finish_soon, body)
        elif not body.rest_planned:
            body.rest_planned = True
            self._nursery.start_soon(guarded, self._rest_when_idle, body)

    async def _finish_soon(self, body: Body) -> None:
        body.finishing = False
        # Taken again meanwhile? Then its last user settles it again.
        if not (body.fetches or body.users or body.resting):
            with trio.CancelScope(shield=True):
                await self._put_to_rest(body)

    async def _rest_when_idle(self, body: Body) -> None:
        idle_since = trio.current_time()
        while not body.resting:
            await trio.sleep_until(idle_since + self._config.idle_rest)
            if body.fetches or body.users:
                idle_since = trio.current_time()
            elif not body.resting:
                with trio.CancelScope(shield=True):
                    await self._put_to_rest(body)

    async def aclose(self) -> None:
        """Record what is on disk of every partial body and close it (shielded)."""
        with trio.CancelScope(shield=True):
            for body in list(self.bodies.values()):
                if not body.resting:
                    await self._put_to_rest(body)

    async def _put_to_rest(self, body: Body) -> None:
        """Finish or close a body. Meanwhile ``using`` waits for it, so nobody uses a
        descriptor being closed or loads a map being written."""
        download_id = body.download_id
        body.resting = True
        try:
            if body.complete:
                # From now on reads go to the file, whichever of its two names it has.
                self.complete.add(download_id)
                await trio.to_thread.run_sync(
                    _finish,
                    body.fd,
                    self.path(download_id, ".part"),
                    self.path(download_id),
                    self.path(download_id, ".map"),
                )
            else:
                if body.extents.total != body.mapped:
                    await self._record_map(body)
                os.close(body.fd)
        except OSError as exc:
            log.warning("cannot store download %d: %s", download_id, exc)
            with contextlib.suppress(OSError):
                os.close(body.fd)
        finally:
            del self.bodies[download_id]
            body.rested.set()
        self.eviction.touch(download_id, body.extents.total)
        await self.eviction.evict(self.bodies)


def _load_part(final: str, part: str, ranges: str) -> tuple[int, Extents] | None:
    """Open a partial body, trusting only the ranges its map records; None if complete."""
    if os.path.exists(final):
        return None
    fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    extents = Extents()
    try:
        with open(ranges, "rb") as recorded_file:
            recorded = json.load(recorded_file)
        length = os.fstat(fd).st_size
        for start, end in recorded["ranges"]:
            if isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= length:
                extents.add(start, end)
    except (OSError, ValueError, KeyError, TypeError):
        pass  # No usable map: nothing on disk is trusted.
    return fd, extents


def _sync_and_write(fd: int, path: str, payload: bytes) -> None:
    os.fdatasync(fd)
    _write_atomically(path, payload)


def _finish(fd: int, part: str, final: str, ranges: str) -> None:
    """Make a complete body durable, then give it its final name."""
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)
    os.replace(part, final)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(ranges)


def _write_atomically(path: str, data: bytes) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as file:
        file.write(data)
    os.replace(tmp, path)


def _pread_either(final: str, part: str, offset: int, length: int) -> bytes:
    """Read from the complete body, or from the partial one if it is not yet renamed.

    The rename is atomic, so one of the two names exists unless the cache was wiped.
    """
    for path in (final, part, final):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            return os.pread(fd, length, offset)
        finally:
            os.close(fd)
    raise FileNotFoundError(f"{final} is gone")
