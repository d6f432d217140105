"""Download bodies: lazy, streamed to disk, one transfer per download, served as bytes arrive.

Nothing is fetched until ``read`` (or ``size`` on a server that will not tell a size without
the body). A download id's bytes never change, so a body once complete is served from disk
for good. Layout of ``<cache dir>/content``:

``<id>``
    a complete body. It is renamed into place only after its byte count was checked against
    the server's ``Content-Length`` and the data synced, so a crash never leaves a short file
    under this name.
``<id>.part``
    a body being received, or left behind by a crash or a failed transfer; the next transfer
    resumes it with ``Range`` (or starts over when the server ignores ``Range``).
``<id>.size``
    the body's size in bytes as decimal text, from a probe or a transfer's headers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import trio

from mkwfs.api import ApiClient, DownloadStream
from mkwfs.cache import SingleFlight
from mkwfs.errors import ContentError, MkwfsError, ProtocolError

log = logging.getLogger(__name__)

#: Chunks queued between the network and the disk writer; bounds memory per transfer.
_QUEUED_CHUNKS = 16
#: Size probes sent at once by ``prefetch_sizes``.
_CONCURRENT_PROBES = 16


class _Transfer:
    """One download in progress: how far it got, and a way to wait for more."""

    def __init__(self, download_id: int) -> None:
        self.download_id = download_id
        #: Bytes on disk in the ``.part`` file, contiguous from offset 0.
        self.received = 0
        self.size: int | None = None
        self.done = False
        self.error: MkwfsError | None = None
        self._changed = trio.Event()

    def notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def clamp(self, end: int) -> int:
        return end if self.size is None else min(end, self.size)

    async def wait_for(self, end: int) -> None:
        """Return once the first ``end`` bytes (or the whole body, if shorter) are on disk,
        or the transfer is over."""
        while self.received < self.clamp(end) and not self.done:
            await self._changed.wait()


@dataclass
class ContentStats:
    """Counters for ``mkwfs status``."""

    #: Transfers started (each is one GET of a body, or of a part of one).
    transfers: int = 0
    #: Body bytes received from the server.
    bytes_received: int = 0
    #: Transfers that ended in an error.
    failed_transfers: int = 0
    #: Reads answered (from disk, or after waiting for a transfer).
    reads: int = 0
    #: Bytes in complete and partial bodies on disk, as far as this process knows.
    cached_bytes: int = 0


class ContentStore:
    """The on-disk content cache. Background transfers run in the nursery given."""

    def __init__(
        self,
        api: ApiClient,
        cache_dir: Path,
        nursery: trio.Nursery,
        *,
        max_bytes: int | None = None,
    ) -> None:
        self._api = api
        #: Bound on the bytes of cached bodies (least recently used go first); None: no bound.
        self.max_bytes = max_bytes
        self._stats = ContentStats()
        self._dir = cache_dir / "content"
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._nursery = nursery
        self._sizes: dict[int, int] = {}
        self._complete: set[int] = set()
        self._transfers: dict[int, _Transfer] = {}
        self._size_flights = SingleFlight[int, int]()
        self._probe_limiter = trio.CapacityLimiter(_CONCURRENT_PROBES)
        self._queued: set[int] = set()

    def stats(self) -> ContentStats:
        """A snapshot of the counters."""
        return replace(self._stats)

    def _path(self, download_id: int, suffix: str = "") -> Path:
        return self._dir / f"{download_id}{suffix}"

    def known_size(self, download_id: int) -> int | None:
        """The size if this process already knows it; never does I/O."""
        return self._sizes.get(download_id)

    async def size(self, download_id: int) -> int:
        """The body's true size: from memory, the disk cache, a probe, or the body itself."""
        known = self._sizes.get(download_id)
        if known is not None:
            return known
        return await self._size_flights.run(download_id, lambda: self._find_size(download_id))

    async def load_stored_sizes(self, download_ids: Iterable[int]) -> None:
        """Learn the sizes the disk cache holds for these downloads, in one thread hop, so a
        listing after a remount can carry every size without a probe."""
        wanted = [i for i in download_ids if i not in self._sizes]
        if not wanted:
            return
        stored = await trio.to_thread.run_sync(lambda: [self._stored_size(i) for i in wanted])
        for download_id, size in zip(wanted, stored, strict=True):
            if size is not None:
                self._sizes[download_id] = size

    def prefetch_sizes(self, download_ids: Iterable[int]) -> None:
        """Probe these sizes in the background, a bounded number at a time. A ``size`` call
        for one of them meanwhile joins its probe rather than sending another."""
        wanted = [i for i in download_ids if i not in self._sizes and i not in self._queued]
        if wanted:
            self._queued.update(wanted)
            self._nursery.start_soon(self._probe_all, wanted)

    async def _probe_all(self, download_ids: list[int]) -> None:
        async def probe(download_id: int) -> None:
            try:
                async with self._probe_limiter:
                    await self.size(download_id)
            except MkwfsError as exc:
                log.debug("size probe of download %d failed: %s", download_id, exc)
            finally:
                self._queued.discard(download_id)

        async with trio.open_nursery() as nursery:
            for download_id in download_ids:
                nursery.start_soon(probe, download_id)

    async def _find_size(self, download_id: int) -> int:
        stored = await trio.to_thread.run_sync(self._stored_size, download_id)
        if stored is not None:
            self._sizes[download_id] = stored
            return stored
        info = await self._api.probe_download(download_id)
        if info.size is not None:
            await self._remember_size(download_id, info.size)
            return info.size
        # The server will not tell the size without sending the body: take the body.
        transfer = self._transfer(download_id)
        await transfer.wait_for(2**63)
        if transfer.error is not None:
            raise transfer.error
        return self._sizes[download_id]

    def _stored_size(self, download_id: int) -> int | None:
        try:
            return self._path(download_id).stat().st_size
        except FileNotFoundError:
            pass
        try:
            text = self._path(download_id, ".size").read_text(encoding="ascii")
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("cannot read the stored size of download %d: %s", download_id, exc)
            return None
        return int(text) if text.strip().isdigit() else None

    async def _remember_size(self, download_id: int, size: int) -> None:
        if self._sizes.get(download_id) == size:
            return
        self._sizes[download_id] = size
        try:
            await trio.to_thread.run_sync(
                _write_atomically, self._path(download_id, ".size"), str(size).encode()
            )
        except OSError as exc:
            log.warning("cannot store the size of download %d: %s", download_id, exc)

    async def read(self, download_id: int, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset``; fewer only at the end of the body."""
        self._stats.reads += 1
        if download_id not in self._complete:
            transfer = self._transfers.get(download_id)
            if transfer is None:
                if await trio.to_thread.run_sync(self._path(download_id).exists):
                    self._complete.add(download_id)
                else:
                    transfer = self._transfer(download_id)
            if transfer is not None:
                await transfer.wait_for(offset + length)
                if transfer.error is not None and transfer.received < transfer.clamp(
                    offset + length
                ):
                    raise transfer.error
        try:
            return await trio.to_thread.run_sync(
                _pread_either,
                self._path(download_id),
                self._path(download_id, ".part"),
                offset,
                length,
            )
        except OSError as exc:
            raise ContentError(f"cannot read cached download {download_id}: {exc}") from exc

    def _transfer(self, download_id: int) -> _Transfer:
        """The transfer of this body, started now unless one is running."""
        transfer = self._transfers.get(download_id)
        if transfer is None:
            transfer = self._transfers[download_id] = _Transfer(download_id)
            self._stats.transfers += 1
            self._nursery.start_soon(self._run_transfer, transfer)
        return transfer

    async def _run_transfer(self, transfer: _Transfer) -> None:
        download_id = transfer.download_id
        try:
            await self._download(transfer)
        except MkwfsError as exc:
            log.debug("download %d failed: %s", download_id, exc)
            self._stats.failed_transfers += 1
            transfer.error = exc
        except OSError as exc:
            self._stats.failed_transfers += 1
            transfer.error = ContentError(f"cannot store download {download_id}: {exc}")
            log.warning("%s", transfer.error)
        finally:
            transfer.done = True
            del self._transfers[download_id]
            transfer.notify()

    async def _download(self, transfer: _Transfer) -> None:
        download_id = transfer.download_id
        part = self._path(download_id, ".part")
        fd = await trio.to_thread.run_sync(_open_part, part)
        try:
            start = os.fstat(fd).st_size
            known = self._sizes.get(download_id)
            if known is not None and start >= known:
                start = 0  # A stale or overlong partial body: start over.
            async with self._api.open_download(download_id, start=start) as stream:
                if stream.offset != start:
                    log.debug("download %d: server ignored Range, starting over", download_id)
                await trio.to_thread.run_sync(os.ftruncate, fd, stream.offset)
                transfer.received = stream.offset
                if stream.info.size is not None:
                    transfer.size = stream.info.size
                    await self._remember_size(download_id, stream.info.size)
                transfer.notify()
                await self._copy(stream, fd, transfer)
            if transfer.size is None:
                transfer.size = transfer.received
                await self._remember_size(download_id, transfer.received)
            elif transfer.received != transfer.size:
                raise ProtocolError(
                    f"download {download_id}: got {transfer.received} of {transfer.size} bytes",
                    url=f"/api/v1/downloads/{download_id}",
                )
            await trio.to_thread.run_sync(_finish, fd, part, self._path(download_id))
            fd = -1
            self._complete.add(download_id)
        finally:
            if fd >= 0:
                os.close(fd)

    async def _copy(self, stream: DownloadStream, fd: int, transfer: _Transfer) -> None:
        """Network to disk, the disk writes batched while the network keeps going."""
        send, receive = trio.open_memory_channel[bytes](_QUEUED_CHUNKS)
        write_error: list[OSError] = []

        async def write_batches() -> None:
            async with receive:
                async for chunk in receive:
                    batch = [chunk]
                    while True:
                        try:
                            batch.append(receive.receive_nowait())
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                    data = b"".join(batch) if len(batch) > 1 else chunk
                    try:
                        await trio.to_thread.run_sync(_write_all, fd, data, transfer.received)
                    except OSError as exc:
                        write_error.append(exc)
                        return
                    transfer.received += len(data)
                    self._stats.bytes_received += len(data)
                    transfer.notify()

        network_error: MkwfsError | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write_batches)
            try:
                async with send:
                    async for chunk in stream.iter_chunks():
                        await send.send(chunk)
            except trio.BrokenResourceError:
                pass  # The writer stopped on a disk error, raised below.
            except MkwfsError as exc:
                network_error = exc
        if write_error:
            raise write_error[0]
        if network_error is not None:
            raise network_error


def _open_part(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def _finish(fd: int, part: Path, final: Path) -> None:
    """Make a complete body durable, then give it its final name."""
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)
    os.replace(part, final)


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _pread_either(final: Path, part: Path, offset: int, length: int) -> bytes:
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
