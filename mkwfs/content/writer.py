"""Writing a fetch's bytes into a ``.part`` file: ``O_DIRECT`` where the file system allows
it, in whole blocks staged in an aligned buffer. Blocking calls, for worker threads."""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import mmap
import os

log = logging.getLogger(__name__)

MiB = 1 << 20
#: Direct writes go in whole blocks of this size (a multiple of any device's block size),
#: copied to an aligned buffer of this size first.
BLOCK = 4096
DIRECT_STAGE = 4 * MiB


class DiskWriter:
    """Writes a fetch's bytes into a ``.part`` file, with ``O_DIRECT`` where the file system
    allows it. The mount's page cache already keeps what readers read; a second copy in the
    page cache of the ``.part`` file costs more than the disk write itself: measured on these
    machines, 275 MiB/s buffered and synced against 1400 MiB/s direct. Direct writes must be
    block-aligned: the bytes before the first block boundary go through the page cache, the
    last piece of a block is held back until more comes (``final`` writes it anyway).
    Runs in worker threads, one call at a time."""

    def __init__(self, path: str | None, fd: int) -> None:
        """Direct writes to ``path`` (None: none), the rest through ``fd``."""
        self._fd = fd
        self._direct: int | None = None
        self._stage: mmap.mmap | None = None
        if path is None:
            return
        with contextlib.suppress(OSError, AttributeError):  # tmpfs, or no O_DIRECT at all
            self._direct = os.open(path, os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC)
            self._stage = mmap.mmap(-1, DIRECT_STAGE)  # page-aligned, as O_DIRECT wants

    @property
    def direct(self) -> bool:
        """Whether writes go around the page cache."""
        return self._direct is not None

    def write(self, pieces: list[bytes], offset: int, final: bool) -> int:
        """Write a prefix of the ``pieces`` (one after the other) at ``offset``, all of them
        if ``final``; return its size. Taking pieces spares the trio thread a join."""
        source = _Pieces(pieces)
        done = 0
        if self._direct is not None and self._stage is not None:
            done = self._write_through(source.take(min(-offset % BLOCK, source.left)), offset)
            while source.left >= BLOCK:
                size = min(source.left, DIRECT_STAGE) // BLOCK * BLOCK
                at = 0
                for view in source.take(size):
                    self._stage[at : at + len(view)] = view
                    at += len(view)
                try:
                    with memoryview(self._stage) as staged:
                        write_all(self._direct, staged[:size], offset + done)
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        raise
                    log.info("direct writes refused (%s): writing through the page cache", exc)
                    self.close()
                    source.put_back(size)
                    break
                done += size
            if not final and self._direct is not None:
                return done
        return done + self._write_through(source.take(source.left), offset + done)

    def _write_through(self, views: list[memoryview], offset: int) -> int:
        """Write ``views`` one after the other through the page cache; return the bytes."""
        start = offset
        for view in views:
            write_all(self._fd, view, offset)
            offset += len(view)
        return offset - start

    def close(self) -> None:
        if self._direct is not None:
            os.close(self._direct)
            self._direct = None
        if self._stage is not None:
            self._stage.close()
            self._stage = None


def tail(pieces: list[bytes], size: int) -> bytes:
    """The last ``size`` bytes of the ``pieces`` one after the other."""
    parts: list[bytes] = []
    for piece in reversed(pieces):
        if size <= 0:
            break
        part = piece[-size:] if size < len(piece) else piece
        parts.append(part)
        size -= len(part)
    return b"".join(reversed(parts))


class _Pieces:
    """Bytes in pieces, taken from the front in runs of a given size, without joining."""

    def __init__(self, pieces: list[bytes]) -> None:
        self._views = collections.deque(memoryview(piece) for piece in pieces if piece)
        self._taken: list[memoryview] = []
        self.left = sum(len(view) for view in self._views)

    def take(self, size: int) -> list[memoryview]:
        """The next ``size`` bytes (at most ``left``), as views of the pieces."""
        taken = []
        while size > 0 and self._views:
            view = self._views.popleft()
            if len(view) > size:
                self._views.appendleft(view[size:])
                view = view[:size]
            taken.append(view)
            size -= len(view)
            self.left -= len(view)
        self._taken = taken
        return taken

    def put_back(self, size: int) -> None:
        """Undo the last ``take`` of ``size`` bytes."""
        self._views.extendleft(reversed(self._taken))
        self.left += size


def write_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """``pwrite`` all of ``data`` at ``offset``."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written
