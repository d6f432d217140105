"""Fetches: the GETs that bring a body's bytes, from the network to readers and the disk.

A fetch puts what arrives in the body's recent bytes at once (readers get them there) and
hands it to a disk writer that runs beside the network. An open-ended fetch runs at most
``readahead`` bytes ahead of what readers asked for (several at once share a budget, so that
memory does not grow with the number of readers), and gives up its connection when they
stay away for ``idle_close`` seconds. A read joins a fetch by the bytes that arrived, not
by those on disk, which may lag them by megabytes; a fetch ends where the bytes that follow
are on disk (``run_through`` of them at least, or all it is for).

A small body of known size (``small_max``) is fetched whole instead (`fetch_small`): one
GET into one buffer, served from memory, written to disk in the background.

Transient failures (connection lost, timeouts, 429, 502/503/504, a body cut short) are
retried with exponential backoff and jitter, resuming at the byte reached. A read fails
once its bytes made no progress for ``stall_timeout`` seconds, or with the error of the
fetch that was to bring them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import trio

from mkwfs.catalog.cache import SingleFlight
from mkwfs.content.body import Body, Fetch
from mkwfs.content.config import ContentConfig
from mkwfs.content.disk import DiskStore
from mkwfs.content.tasks import guarded
from mkwfs.content.writer import DiskWriter, tail
from mkwfs.remote.api import ApiClient, DownloadStream, is_transient
from mkwfs.remote.errors import ApiError, ContentError, MkwfsError, ProtocolError, TransportError

log = logging.getLogger(__name__)

EVERYTHING = 1 << 62


class Fetcher:
    """Starts and runs the fetches of the bodies in ``disk``, in the nursery given."""

    def __init__(
        self,
        api: ApiClient,
        disk: DiskStore,
        nursery: trio.Nursery,
        config: ContentConfig,
        *,
        remember_size: Callable[[int, int], None],
        stall_timeout: float,
    ) -> None:
        self._api = api
        self._disk = disk
        self._nursery = nursery
        self._config = config
        self._remember_size = remember_size
        self.stall_timeout = stall_timeout
        #: Whether the server honours Range: None until a ranged request tells.
        self.ranges: bool | None = None
        #: Set by ``stop``: fetches take no more bytes from the network.
        self.stopping = False
        #: Fetches started (each is one GET), retries included; of them, those that failed.
        self.transfers = 0
        self.failed_transfers = 0
        #: Body bytes received from the server and put on disk.
        self.bytes_received = 0
        self._small_flights = SingleFlight[int, bytes | None]()
        #: Open-ended fetches copying now: they share ``stream_budget``.
        self._streams = 0

    async def stop(self, bodies: Iterable[Body]) -> None:
        """Stop taking bytes from the network, and return once what arrived is on disk."""
        self.stopping = True
        for body in list(bodies):
            body.notify()
            while body.fetches:  # a fetch notifies as it ends
                await body.changed()

    async def fetch_small(self, download_id: int, size: int) -> bytes | None:
        """The whole body of ``size`` bytes, in one GET (concurrent callers share it), kept
        for the disk (`DiskStore.store_whole`); None when it must take the streaming way,
        which retries: after a transient failure, or no whole answer in ``stall_timeout``
        (a body slow but moving is never cut). Call it after `DiskStore.ready`."""
        return await self._small_flights.run(
            download_id, lambda: self._fetch_small(download_id, size)
        )

    async def _fetch_small(self, download_id: int, size: int) -> bytes | None:
        if (data := self._disk.unwritten.get(download_id)) is not None:
            return data  # fetched just before
        self.transfers += 1
        with trio.move_on_after(self.stall_timeout):
            try:
                data = await self._api.download_whole(download_id, max_size=size)
            except ApiError as exc:
                if not _retryable(exc):
                    self.failed_transfers += 1
                    raise
                log.info("download %d: trying again as a stream after: %s", download_id, exc)
                return None
            if len(data) != size:
                self.failed_transfers += 1
                raise ContentError(
                    f"download {download_id} is {len(data)} bytes now, but {size} before: "
                    "its bytes changed on the server"
                )
            self.bytes_received += size
            self._disk.store_whole(download_id, data)
            return data
        log.info("download %d: no whole answer in %g s, trying as a stream", download_id,
                 self.stall_timeout)  # fmt: skip
        return None

    def fetch_for(self, body: Body, offset: int, until: int) -> Fetch:
        """The fetch that will bring the byte at ``offset`` (for a read that needs the bytes
        up to ``until``): a running one, or a new one."""
        for fetch in body.fetches:
            if self._joins(body, fetch, offset) or (self.ranges is False and not fetch.done):
                return fetch
        start, end = body.planner.plan(
            offset,
            until,
            size=body.size,
            ranges=self.ranges,
            extents=body.extents,
            fetch_starts=[f.start for f in body.fetches],
        )
        log.debug("download %d: fetching %d-%s for a read at %d", body.download_id, start,
                  "" if end is None else end, offset)  # fmt: skip
        fetch = Fetch(start, end)
        body.fetches.append(fetch)
        self._nursery.start_soon(guarded, self._run, body, fetch)
        return fetch

    def serves(self, body: Body, offset: int) -> bool:
        """Whether a running fetch is about to bring the byte at ``offset``."""
        return any(self._joins(body, f, offset) for f in body.fetches)

    def _joins(self, body: Body, fetch: Fetch, offset: int) -> bool:
        """Whether a read at ``offset`` joins ``fetch``: it comes within the join distance of
        the fetch's front."""
        return fetch.serves(offset, self._config.join_distance, self._front(body, fetch))

    def _front(self, body: Body, fetch: Fetch) -> int:
        """How far the fetch's stream soon reaches: what arrived, and past it the bytes
        already on disk that it runs through rather than end at (see `_reached_end`). A
        reader that went through those from disk faster than the stream came is still
        behind the stream, not a random read of its own."""
        present = body.extents.present_until(fetch.arrived)
        return present if present - fetch.arrived < self._config.run_through else fetch.arrived

    async def wait_for_progress(self, body: Body, fetch: Fetch) -> None:
        """Wait for the body to change; raise if ``fetch`` failed, or nothing came in time."""
        with trio.move_on_after(self.stall_timeout) as waited:
            await body.changed()
        if fetch.done and fetch.error is not None:
            raise fetch.error
        if waited.cancelled_caught:
            raise TransportError(
                f"download {body.download_id}: no data for {self.stall_timeout:g} s",
                url=f"/api/v1/downloads/{body.download_id}",
            )

    def _finished(self, body: Body, fetch: Fetch) -> bool:
        return fetch.idle or self._reached_end(body, fetch)

    def _reached_end(self, body: Body, fetch: Fetch) -> bool:
        """Whether the fetch wrote all it is for (an idle one writes what arrived)."""
        if fetch.end is not None and fetch.position >= fetch.end:
            return True
        if body.size is not None and fetch.position >= body.size:
            return True
        # Ran into bytes already on disk (a server ignoring Range resends them: go on). It
        # ends only where the bytes that follow are really there: not at a few of them that
        # another fetch put there, nor before bytes that this one already brought.
        if self.ranges is False or fetch.position <= fetch.start:
            return False
        present = body.extents.present_until(fetch.position)
        if present == fetch.position or fetch.arrived > present:
            return False
        wanted = EVERYTHING if fetch.end is None else fetch.end
        if body.size is not None:
            wanted = min(wanted, body.size)
        return present >= min(wanted, fetch.position + self._config.run_through)

    async def _run(self, body: Body, fetch: Fetch) -> None:
        download_id = body.download_id
        try:
            await self._run_with_retries(body, fetch)
        except MkwfsError as exc:
            self.failed_transfers += 1
            fetch.error = exc
            log.debug("download %d failed: %s", download_id, exc)
        except OSError as exc:
            self.failed_transfers += 1
            fetch.error = ContentError(f"cannot store download {download_id}: {exc}")
            log.warning("%s", fetch.error)
        finally:
            fetch.done = True
            body.fetches.remove(fetch)
            body.notify()
            await self._disk.settle(body)

    async def _run_with_retries(self, body: Body, fetch: Fetch) -> None:
        failures = 0
        last_progress = trio.current_time()
        while not self._finished(body, fetch):
            reached = fetch.position
            try:
                self.transfers += 1
                await self._fetch_once(body, fetch)
            except ApiError as exc:
                if fetch.position > reached:
                    last_progress = trio.current_time()
                    failures = 0
                retry = _retryable(exc) and (
                    trio.current_time() - last_progress < self.stall_timeout
                )
                if not retry:
                    raise
                delay = self._config.backoff.delay(failures, exc)
                failures += 1
                log.info("download %d: retry in %.2f s after: %s", body.download_id, delay, exc)
                await trio.sleep(delay)
            else:
                if body.size is None and fetch.end is None and not fetch.idle:
                    body.size = fetch.position  # No size was given: the body ended here.
                    self._remember_size(body.download_id, fetch.position)

    async def _fetch_once(self, body: Body, fetch: Fetch) -> None:
        download_id = body.download_id
        async with self._api.open_download(
            download_id, start=fetch.position, end=fetch.end
        ) as stream:
            if stream.offset != fetch.position:
                if self.ranges is not False:
                    log.info("the server ignores Range: one sequential download per file")
                self.ranges = False
                fetch.start = fetch.position = stream.offset
                fetch.end = None
            elif fetch.position > 0 or fetch.end is not None:
                self.ranges = True
            total = stream.info.size
            if total is not None:
                if body.size is not None and total != body.size:
                    raise ContentError(
                        f"download {download_id} is {total} bytes now, but {body.size} "
                        "before: its bytes changed on the server"
                    )
                body.size = total
                self._remember_size(download_id, total)
            await self._copy(stream, body, fetch)

    async def _copy(self, stream: DownloadStream, body: Body, fetch: Fetch) -> None:
        """Network to disk, the disk writes batched while the network keeps going; stops
        when the range is done, runs into bytes on disk, or readers stay away."""
        send, receive = trio.open_memory_channel[bytes](self._config.queued_chunks)
        failure: list[Exception] = []
        streams = 1 if fetch.end is None else 0
        self._streams += streams
        try:
            await self._copy_through(stream, body, fetch, send, receive, failure)
        finally:
            self._streams -= streams
            body.recent.limit = self._config.recent_limit
        if failure:
            raise failure[0]

    def _share(self, body: Body) -> int:
        """How far an open-ended fetch of ``body`` may run ahead now: ``readahead`` for one
        alone, else its share of ``stream_budget``; its recent bytes are sized to match."""
        config = self._config
        share = config.stream_budget // max(self._streams, 1)
        readahead = min(config.readahead, max(config.min_readahead, share))
        body.recent.limit = readahead * config.recent_limit // config.readahead
        return readahead

    async def _copy_through(
        self,
        stream: DownloadStream,
        body: Body,
        fetch: Fetch,
        send: trio.MemorySendChannel[bytes],
        receive: trio.MemoryReceiveChannel[bytes],
        failure: list[Exception],
    ) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._write_batches, body, fetch, receive, nursery.cancel_scope,
                               failure)  # fmt: skip
            arrived = fetch.arrived = fetch.position
            try:
                async with send:
                    async for chunk in stream.iter_chunks():
                        chunk = chunk[: _room(body, fetch, arrived)]
                        if not chunk:
                            break
                        if fetch.end is None:
                            self._share(body)
                        # Readers get the bytes now; the writer puts them on disk meanwhile.
                        body.recent.keep(arrived, chunk)
                        arrived = fetch.arrived = arrived + len(chunk)
                        body.notify()
                        await send.send(chunk)
                        if self.stopping:
                            fetch.idle = True
                            break
                        if fetch.end is None:
                            await self._hold_back(body, fetch, arrived)
                            if fetch.idle:
                                break
            except MkwfsError as exc:
                # The writer still puts what arrived on disk: the retry resumes after it.
                failure.append(exc)

    async def _write_batches(
        self,
        body: Body,
        fetch: Fetch,
        receive: trio.MemoryReceiveChannel[bytes],
        cancel: trio.CancelScope,
        failure: list[Exception],
    ) -> None:
        """The disk side of ``_copy``: what queued up meanwhile goes in one write."""
        writer: DiskWriter | None = None
        held = b""  # what the writer held back: a piece of a block, until more comes
        try:
            # Opened here, so that the first bytes reach readers without waiting for it.
            direct = _room(body, fetch, fetch.position) >= self._config.direct_min
            writer = await self._disk.open_writer(body, direct=direct)
            async for chunk in receive:
                batch = [held, chunk]
                while True:
                    try:
                        batch.append(receive.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                held = await self._write(body, fetch, writer, batch, final=False)
                if self._reached_end(body, fetch):
                    break
            if held:
                await self._write(body, fetch, writer, [held], final=True)
        except OSError as exc:
            failure.append(exc)
        finally:
            if writer is not None:
                writer.close()
            # Stop the network side before it can see the channel closed.
            cancel.cancel()
            receive.close()

    async def _write(
        self, body: Body, fetch: Fetch, writer: DiskWriter, batch: list[bytes], *, final: bool
    ) -> bytes:
        """Write ``batch`` at the fetch's position; return what the writer held back."""
        if (rate := self._config.disk_write_rate) is not None:
            await trio.sleep(sum(map(len, batch)) / rate)  # a slow disk
        written = await trio.to_thread.run_sync(writer.write, batch, fetch.position, final)
        body.extents.add(fetch.position, fetch.position + written)
        fetch.position += written
        self.bytes_received += written
        body.notify()
        self._disk.wrote(body)
        return tail(batch, sum(map(len, batch)) - written)

    async def _hold_back(self, body: Body, fetch: Fetch, arrived: int) -> None:
        """Pause an open-ended fetch that ran far ahead of its readers; give it up (close the
        connection) when they stay away."""
        while arrived > body.demand + self._share(body) and not self.stopping:
            with trio.move_on_after(self._config.idle_close):
                await body.changed()
                continue
            log.debug("download %d: no reader, pausing at %d", body.download_id, fetch.position)
            fetch.idle = True
            return


def _room(body: Body, fetch: Fetch, position: int) -> int:
    """How many bytes from ``position`` the fetch still wants (a server may send more)."""
    room = EVERYTHING
    if fetch.end is not None:
        room = fetch.end - position
    if body.size is not None:
        room = min(room, body.size - position)
    return max(room, 0)


def _retryable(error: ApiError) -> bool:
    """Worth another try of a body fetch: what is transient for any request, and a body
    that ended short."""
    return isinstance(error, ProtocolError) or is_transient(error)
