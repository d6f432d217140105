"""Which complete bodies on disk can be trusted after a crash, without a sync per body.

A complete body ``<id>`` is renamed into place only after its last byte was written, so
while the kernel that wrote it runs, the name alone proves the bytes: ``kill -9`` of the
daemon loses no written byte (the page cache keeps it). Only a crash of the machine can
leave a file short or wrong under its final name, if it was not synced yet. So:

- ``boot`` holds the kernel's boot id (``/proc/sys/kernel/random/boot_id``) under which
  the bodies not synced yet were written; it is written, synced, before any such body;
- bodies are synced in batches in the background (one ``syncfs`` of the cache's file
  system, not a sync per body), and then noted in ``durable``, one line
  ``<id> <inode> <size> <mtime ns>`` each, appended;
- on start (`Durability.recover`), under the same boot id every ``<id>`` is trusted; after
  a reboot only those whose inode, size and modification time are still what ``durable``
  noted when they were synced (a body fetched again after an eviction is a new file, with
  another time), and the rest are deleted. A cache without ``boot`` was written by a
  version that synced every body before its rename: all of it is trusted.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import threading
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

BOOT_ID = "/proc/sys/kernel/random/boot_id"

#: ``(inode, size, mtime in ns)``: what identifies a file synced once.
Identity = tuple[int, int, int]


def identity(info: os.stat_result) -> Identity:
    return (info.st_ino, info.st_size, info.st_mtime_ns)


@dataclass
class Recovered:
    """What the cache directory held at start, once untrusted bodies were dropped."""

    #: Complete bodies, by download id, with their sizes.
    complete: dict[int, int] = field(default_factory=dict)
    #: Download ids with a partial body (``<id>.part``).
    partial: set[int] = field(default_factory=set)
    #: Complete bodies deleted: written under another boot and never synced.
    dropped: list[int] = field(default_factory=list)


class Durability:
    """The boot id and the journal of synced bodies of one cache directory. Blocking
    methods, for worker threads; one at a time (a lock)."""

    def __init__(self, directory: str, boot_id_file: str = BOOT_ID) -> None:
        self._directory = directory
        self._boot_id_file = boot_id_file
        self._lock = threading.Lock()
        self.recovered: Recovered | None = None

    def _path(self, name: str) -> str:
        return os.path.join(self._directory, name)

    def recover(self) -> Recovered:
        """Check the cache against the boot id once (later calls return the first answer):
        drop what a machine crash may have left short, and what a killed daemon left half
        written (``<id>.new``); note the boot id for the bodies written from now on."""
        with self._lock:
            if self.recovered is None:
                self.recovered = self._recover()
            return self.recovered

    def _recover(self) -> Recovered:
        # No boot id to read: as if the machine restarted each time (only synced is trusted).
        boot = _read_text(self._boot_id_file) or f"unknown {os.urandom(8).hex()}"
        noted = _read_text(self._path("boot"))
        trusted: dict[int, Identity] | None = None  # None: all
        if noted is not None and noted != boot:
            trusted = self._journal()
            log.info("the machine restarted: trusting only the cached bodies synced before")
        found = Recovered()
        for entry in os.scandir(self._directory):
            stem, _, suffix = entry.name.partition(".")
            if not stem.isdigit():
                continue
            download_id = int(stem)
            try:
                if suffix == "part":
                    found.partial.add(download_id)
                elif suffix == "new":
                    os.unlink(entry.path)
                elif not suffix:
                    info = entry.stat()
                    if trusted is not None and trusted.get(download_id) != identity(info):
                        os.unlink(entry.path)
                        found.dropped.append(download_id)
                    else:
                        found.complete[download_id] = info.st_size
            except FileNotFoundError:
                continue
        if trusted is not None:
            _sync_directory(self._directory)  # the drops, before the new boot id says "trust"
            lines = "".join(
                f"{i} {' '.join(map(str, trusted[i]))}\n" for i in found.complete if i in trusted
            )
            _write_durably(self._path("durable"), lines.encode())
        if noted != boot:
            _write_durably(self._path("boot"), boot.encode())
        return found

    def _journal(self) -> dict[int, Identity]:
        """The last identity the journal noted for each body."""
        noted: dict[int, Identity] = {}
        with contextlib.suppress(FileNotFoundError), open(self._path("durable"), "rb") as file:
            for line in file:
                parts = line.split()
                if len(parts) == 4 and all(p.isdigit() for p in parts):
                    download_id, ino, size, mtime = map(int, parts)
                    noted[download_id] = (ino, size, mtime)
        return noted

    def note_synced(self, synced: list[tuple[int, Identity]]) -> None:
        """Sync the cache's file system (the bodies written so far), then note ``synced``
        in the journal. A note lost to a crash only costs a body fetched again."""
        if not synced:
            return
        with self._lock:
            _syncfs(self._directory)
            lines = "".join(f"{i} {ino} {size} {mtime}\n" for i, (ino, size, mtime) in synced)
            fd = os.open(
                self._path("durable"), os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
            try:
                os.write(fd, lines.encode())
                os.fdatasync(fd)
            finally:
                os.close(fd)


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as file:
            return file.read().strip()
    except FileNotFoundError:
        return None


def _write_durably(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _sync_directory(os.path.dirname(path))


def _sync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_libc = ctypes.CDLL(None, use_errno=True)


def _syncfs(directory: str) -> None:
    """``syncfs(2)`` of the file system of ``directory``: one journal commit for a batch of
    bodies, where an ``fdatasync`` of each would cost one each."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if _libc.syncfs(fd) != 0:
            error = ctypes.get_errno()
            raise OSError(error, os.strerror(error))
    finally:
        os.close(fd)
