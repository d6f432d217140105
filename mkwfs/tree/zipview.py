"""ZIP archives seen as directories, read through ``ContentStore.read``: no FUSE here.

The bytes come from a ``ByteSource``: the mount's ``ContentStore``, or anything else with its
``size`` and ``read`` (tests use archives in memory).

``read_index`` reads an archive's central directory and turns it into an ``ArchiveIndex``:
a tree of directories and files with safe, unique names, sizes and times from the archive.
Python's ``zipfile`` parses it in a worker thread, over a file object whose reads call back
into trio (``ContentStore.read``), so only what ``zipfile`` asks for is read: the end of
central directory record (the last 22 bytes, or up to 64 KiB more when the archive has a
comment) and the central directory itself — never the members.

``MemberReader`` reads one member, fetching only that member's local header and compressed
bytes. The local header is read alone, before the first data: for that read the content
store fetches only a big member's head (see the planner), which is all a content-type sniff
needs. Stored members map offsets directly. Deflated members are inflated sequentially by a
few cached ``_Inflater`` objects, one per member being read, each keeping a window of the
last decompressed bytes and taking compressed bytes in steps that start small (a sniff stays
in the member's head) and grow: sequential reads (``cat``, ``cp``, ``diff``) and the
kernel's readahead, which may arrive somewhat out of order, continue where the previous read
ended;
a read before the window restarts that member from its first byte. That bounds memory to a
few MiB however big the member, at the price of quadratic work for a reader that jumps
backwards through a big deflated member (rare for the files in build results).

Whatever is wrong with an archive (not a ZIP, truncated, corrupt data, CRC mismatch,
encryption, a compression method other than stored or deflated) raises ``ArchiveError``;
errors of the content store (403, network) pass through unchanged.
"""

from __future__ import annotations

import io
import struct
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Protocol

import cachetools
import trio

from mkwfs.remote.errors import ArchiveError, MkwfsError
from mkwfs.tree.names import safe_name, unique_names

#: Compressed bytes fetched per step when inflating a member: small at first, so that a
#: sniff of a member's first 16 KiB reads only its head (see the planner's ``head_window``),
#: twice as many each step after, up to the most.
_FIRST_INPUT = 16 * 1024
_INPUT_CHUNK = 256 * 1024
#: Decompressed bytes produced per step at most (bounds a step's memory for any ratio).
_OUTPUT_STEP = 1024 * 1024
#: Decompressed bytes an inflater keeps behind its position for out-of-order reads.
_WINDOW = 2 * 1024 * 1024
#: Members being inflated at the same time, and local headers remembered.
_INFLATERS = 8
_DATA_OFFSETS = 4096
#: A local file header (APPNOTE 4.3.7, as zipfile's ``structFileHeader``): signature,
#: versions, flags, method, time, date, CRC, sizes, then the name and extra field lengths.
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")
_LOCAL_SIGNATURE = b"PK\x03\x04"
_SUPPORTED_METHODS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED})


class ByteSource(Protocol):
    """Where archive bytes come from (``ContentStore`` is one)."""

    async def size(self, download_id: int) -> int:
        """The body's size in bytes."""
        ...

    async def read(self, download_id: int, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset``; fewer only at the end of the body."""
        ...


@dataclass(frozen=True)
class Member:
    """Where a file's bytes are in the archive, as the central directory says."""

    header_offset: int
    compress_type: int
    compress_size: int
    crc: int
    encrypted: bool


@dataclass(frozen=True)
class Entry:
    """One directory or file of an archive. ``index`` is its position in the index
    (0 is the archive's root), stable for the same archive bytes."""

    index: int
    #: Its path inside the archive as shown (for log lines); ``""`` for the root.
    path: str
    is_dir: bool
    size: int
    mtime: float
    #: Where a file's bytes are; None for a directory.
    member: Member | None = None


@dataclass(frozen=True)
class ArchiveIndex:
    """The directory tree of one archive. ``children[i]`` maps the names in directory
    ``entries[i]`` to entry indices, in the order the archive lists them."""

    download_id: int
    entries: list[Entry]
    children: dict[int, dict[bytes, int]] = field(repr=False)


class _ContentFile(io.RawIOBase):
    """A read-only, seekable file over ``ByteSource.read``, for a worker thread: every
    read runs in the trio thread and waits for it."""

    def __init__(self, content: ByteSource, download_id: int, size: int) -> None:
        super().__init__()
        self._content = content
        self._download_id = download_id
        self._size = size
        self._position = 0
        #: Bytes the archive parser asked for, for tests and log lines.
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise OSError(f"seek to {base + offset}, before the start")
        self._position = base + offset
        return self._position

    def read(self, size: int = -1, /) -> bytes:
        if size < 0:
            size = self._size - self._position
        size = max(0, min(size, self._size - self._position))
        if size == 0:
            return b""
        data: bytes = trio.from_thread.run(
            self._content.read, self._download_id, self._position, size
        )
        self._position += len(data)
        self.bytes_read += len(data)
        return data


def _zip_time(date_time: tuple[int, int, int, int, int, int]) -> float:
    """A ZIP's DOS time, which has no zone, read as local time (as ``unzip`` does)."""
    try:
        return time.mktime((*date_time, 0, 0, -1))
    except (OverflowError, ValueError):
        return 0.0


def _parse(file: _ContentFile, download_id: int, mtime: float) -> ArchiveIndex:
    """Read the central directory (in a worker thread) and build the directory tree."""
    with zipfile.ZipFile(file) as archive:
        infos = archive.infolist()
    entries: list[Entry] = [Entry(0, "", True, 0, mtime)]
    #: For each directory: its subdirectories by raw name, and its children's safe names.
    subdirs: dict[int, dict[str, int]] = {0: {}}
    named: dict[int, list[tuple[int, str]]] = {0: []}

    def add(parent: int, name: str, entry: Entry) -> int:
        entries.append(entry)
        named[parent].append((entry.index, name))
        return entry.index

    def directory(parts: list[str]) -> int:
        parent, path = 0, ""
        for part in parts:
            path = f"{path}{part}/"
            known = subdirs[parent].get(part)
            if known is None:
                known = add(parent, part, Entry(len(entries), path, True, 0, mtime))
                subdirs[parent][part] = known
                subdirs[known], named[known] = {}, []
            parent = known
        return parent

    for info in infos:
        names = (safe_name(c, avoid_probes=False) for c in info.filename.split("/"))
        parts = [name for name in names if name is not None]
        if not parts:
            continue
        when = _zip_time(info.date_time)
        if info.is_dir():
            index = directory(parts)
            entries[index] = Entry(index, entries[index].path, True, 0, when)
            continue
        parent = directory(parts[:-1])
        member = Member(
            header_offset=info.header_offset,
            compress_type=info.compress_type,
            compress_size=info.compress_size,
            crc=info.CRC,
            encrypted=bool(info.flag_bits & 0x1),
        )
        path = "/".join(parts)
        add(parent, parts[-1], Entry(len(entries), path, False, info.file_size, when, member))
    children = {
        directory_index: {name: index for name, index in unique_names(names)}
        for directory_index, names in named.items()
    }
    return ArchiveIndex(download_id, entries, children)


async def read_index(content: ByteSource, download_id: int, *, mtime: float) -> ArchiveIndex:
    """The archive's directory tree, from its central directory only. ``mtime`` is the time
    of directories the archive does not list itself. ``ArchiveError`` for an archive that
    cannot be read."""
    size = await content.size(download_id)
    file = _ContentFile(content, download_id, size)
    try:
        return await trio.to_thread.run_sync(_parse, file, download_id, mtime)
    except MkwfsError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError,
            struct.error, UnicodeDecodeError) as exc:  # fmt: skip
        raise ArchiveError(
            f"download {download_id} is not a readable ZIP archive: {exc}",
            download_id=download_id,
        ) from exc


class MemberReader:
    """Reads members of archives; holds the decompression state worth keeping."""

    def __init__(self, content: ByteSource) -> None:
        self._content = content
        self._data_offsets: cachetools.LRUCache[tuple[int, int], int] = cachetools.LRUCache(
            _DATA_OFFSETS
        )
        self._inflaters: cachetools.LRUCache[tuple[int, int], _MemberInflater] = (
            cachetools.LRUCache(_INFLATERS)
        )

    async def read(self, download_id: int, entry: Entry, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes of the member at ``offset``; fewer only at its end."""
        member = entry.member
        if member is None:
            raise ArchiveError(f"{entry.path!r} is a directory", download_id=download_id)
        end = min(offset + length, entry.size)
        if offset >= end:
            return b""
        if member.encrypted:
            raise ArchiveError(
                f"download {download_id}: {entry.path!r} is encrypted", download_id=download_id
            )
        if member.compress_type not in _SUPPORTED_METHODS:
            raise ArchiveError(
                f"download {download_id}: {entry.path!r} uses compression method "
                f"{member.compress_type}; only stored and deflated are supported",
                download_id=download_id,
            )
        start = await self._data_offset(download_id, entry, member)
        if member.compress_type == zipfile.ZIP_STORED:
            if entry.size > member.compress_size:
                raise ArchiveError(
                    f"download {download_id}: stored {entry.path!r} claims {entry.size} bytes "
                    f"in {member.compress_size}",
                    download_id=download_id,
                )
            data = await self._content.read(download_id, start + offset, end - offset)
            if len(data) < end - offset:
                raise _truncated(download_id, entry)
            return data
        key = (download_id, entry.index)
        inflater = self._inflaters.get(key)
        if inflater is None:
            inflater = self._inflaters[key] = _MemberInflater(
                self._content, download_id, entry, start
            )
        return await inflater.read(offset, end)

    async def _data_offset(self, download_id: int, entry: Entry, member: Member) -> int:
        """Where the member's data starts: after its local header, whose name and extra
        field may differ in length from the central directory's."""
        key = (download_id, entry.index)
        known = self._data_offsets.get(key)
        if known is not None:
            return known
        # The fixed header alone, as ziphints.LOCAL_HEADER_SIZE: a read of no more at a big
        # member's start makes the content store fetch only the member's head.
        header = await self._content.read(download_id, member.header_offset, _LOCAL_HEADER.size)
        if len(header) < _LOCAL_HEADER.size or header[:4] != _LOCAL_SIGNATURE:
            raise ArchiveError(
                f"download {download_id}: no local header for {entry.path!r} "
                f"at offset {member.header_offset}",
                download_id=download_id,
            )
        *_, name_length, extra_length = _LOCAL_HEADER.unpack(header)
        start: int = member.header_offset + _LOCAL_HEADER.size + name_length + extra_length
        self._data_offsets[key] = start
        return start


def _truncated(download_id: int, entry: Entry) -> ArchiveError:
    return ArchiveError(
        f"download {download_id}: the data of {entry.path!r} ends early", download_id=download_id
    )


class _MemberInflater:
    """Inflates one deflated member from its start; serves reads from a window of recent
    output, going forward as needed and back to the start for a read before the window."""

    def __init__(self, content: ByteSource, download_id: int, entry: Entry, start: int) -> None:
        assert entry.member is not None
        self._content = content
        self._download_id = download_id
        self._entry = entry
        self._member = entry.member
        self._start = start
        self._lock = trio.Lock()
        self._restart()

    def _restart(self) -> None:
        self._inflate = zlib.decompressobj(-zlib.MAX_WBITS)
        #: Compressed bytes consumed, decompressed bytes produced, CRC so far.
        self._consumed = 0
        self._chunk = _FIRST_INPUT
        self._produced = 0
        self._crc = 0
        #: Decompressed bytes [_window_start, _produced).
        self._window = bytearray()
        self._window_start = 0

    async def read(self, offset: int, end: int) -> bytes:
        async with self._lock:
            if offset < self._window_start:
                self._restart()
            try:
                while self._produced < end:
                    await self._step()
                    keep_from = max(self._window_start, min(offset, self._produced - _WINDOW))
                    del self._window[: keep_from - self._window_start]
                    self._window_start = keep_from
            except ArchiveError:
                self._restart()
                raise
            return bytes(self._window[offset - self._window_start : end - self._window_start])

    async def _step(self) -> None:
        """Produce the next piece of output, fetching compressed bytes when needed."""
        pending = self._inflate.unconsumed_tail
        if not pending:
            if self._inflate.eof or self._consumed >= self._member.compress_size:
                raise _truncated(self._download_id, self._entry)
            want = min(self._chunk, self._member.compress_size - self._consumed)
            self._chunk = min(2 * self._chunk, _INPUT_CHUNK)
            pending = await self._content.read(
                self._download_id, self._start + self._consumed, want
            )
            if not pending:
                raise _truncated(self._download_id, self._entry)
            self._consumed += len(pending)
        try:
            output = await trio.to_thread.run_sync(self._inflate.decompress, pending, _OUTPUT_STEP)
        except zlib.error as exc:
            raise ArchiveError(
                f"download {self._download_id}: {self._entry.path!r} is corrupt: {exc}",
                download_id=self._download_id,
            ) from exc
        self._produced += len(output)
        self._crc = zlib.crc32(output, self._crc)
        self._window += output
        if self._produced > self._entry.size:
            raise ArchiveError(
                f"download {self._download_id}: {self._entry.path!r} inflates to more than "
                f"its {self._entry.size} bytes",
                download_id=self._download_id,
            )
        if self._produced == self._entry.size and self._crc != self._member.crc:
            raise ArchiveError(
                f"download {self._download_id}: {self._entry.path!r} fails its CRC check",
                download_id=self._download_id,
            )
