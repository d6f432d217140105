"""Keeping the bodies on disk within ``max_bytes``: the least recently used go first, never
one that is open, being read or fetched, or read just now (their sizes are kept)."""

from __future__ import annotations

import collections
import logging
import math
import os
import time
from collections.abc import Callable, Container
from pathlib import Path

import trio

log = logging.getLogger(__name__)


class Evictor:
    """Bytes on disk per download id and when each was last used, and the eviction they
    call for. ``forget`` is told of each body it deletes."""

    def __init__(
        self,
        directory: Path,
        max_bytes: int | None,
        *,
        grace: float,
        forget: Callable[[int], None],
    ) -> None:
        self._dir = directory
        #: Bound on the bytes of cached bodies (least recently used go first); None: no bound.
        self.max_bytes = max_bytes
        self._grace = grace
        self._forget = forget
        #: Open files per download id: their bodies are not evicted.
        self._held: collections.Counter[int] = collections.Counter()
        #: Bytes on disk per download id and when it was last used (None: not scanned yet).
        self._usage: dict[int, tuple[int, float]] | None = None

    def hold(self, download_id: int) -> None:
        """A file of this body is open: keep the body in the cache until ``release``."""
        self._held[download_id] += 1

    def release(self, download_id: int) -> None:
        self._held[download_id] -= 1
        if self._held[download_id] <= 0:
            del self._held[download_id]

    def cached_bytes(self) -> int | None:
        """Bytes of complete and partial bodies on disk; None until the first scan."""
        if self._usage is None:
            return None
        return sum(b for b, _ in self._usage.values())

    def touch(self, download_id: int, size: int | None = None) -> None:
        """The body was used now; ``size``: it holds that many bytes on disk now."""
        if self._usage is None:
            return
        known = self._usage.get(download_id)
        if size is None:
            if known is None:
                return
            size = known[0]
        self._usage[download_id] = (size, trio.current_time())

    async def evict(self, busy: Container[int]) -> None:
        """Delete the least recently used bodies, except the ``busy`` ones, while the bodies
        take more than ``max_bytes``."""
        if self._usage is None:
            try:
                scanned = await trio.to_thread.run_sync(_scan, self._dir)
            except OSError as exc:
                log.warning("cannot look through the cache %s: %s", self._dir, exc)
                return
            offset = trio.current_time() - time.time()  # wall clock -> trio clock
            self._usage = {i: (b, when + offset) for i, (b, when) in scanned.items()}
        if self.max_bytes is None:
            return
        total = sum(b for b, _ in self._usage.values())
        if total <= self.max_bytes:
            return
        recent = trio.current_time() - self._grace
        for download_id, (used, when) in sorted(self._usage.items(), key=lambda kv: kv[1][1]):
            if total <= self.max_bytes:
                break
            if download_id in busy or download_id in self._held or when > recent:
                continue  # Open, being read or fetched, or read just now.
            del self._usage[download_id]
            self._forget(download_id)
            total -= used
            try:
                await trio.to_thread.run_sync(_delete_body, self._dir, download_id)
            except OSError as exc:
                log.warning("cannot evict download %d: %s", download_id, exc)
            log.debug("evicted download %d (%d bytes)", download_id, used)


def _scan(directory: Path) -> dict[int, tuple[int, float]]:
    """Bytes on disk per download id, and when (wall clock) each was last used or written."""
    found: dict[int, tuple[int, float]] = {}
    for entry in os.scandir(directory):
        stem, _, suffix = entry.name.partition(".")
        if not stem.isdigit() or suffix not in ("", "part"):
            continue
        try:
            info = entry.stat()
        except FileNotFoundError:
            continue  # Renamed (completed) or evicted since the listing.
        used, when = found.get(int(stem), (0, -math.inf))
        latest = max(when, info.st_atime, info.st_mtime)
        found[int(stem)] = (used + info.st_blocks * 512, latest)
    return found


def _delete_body(directory: Path, download_id: int) -> None:
    for suffix in ("", ".part", ".map"):
        (directory / f"{download_id}{suffix}").unlink(missing_ok=True)
