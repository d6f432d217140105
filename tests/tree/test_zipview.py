"""ZIP archives as directories: indexes from the central directory only, members read
streaming, broken archives as ``ArchiveError``. Archives are built in memory here (so that
broken ones can be made) and served by ``MemorySource``, which counts what is read; the
emulator's real archives go through the real ``ContentStore``."""

from __future__ import annotations

import io
import random
import zipfile
import zlib
from pathlib import Path

import pytest
import trio

from mkwfs.content.config import ContentConfig
from mkwfs.content.ziphints import LOCAL_HEADER_SIZE
from mkwfs.emulator import DEMO_BUILD, MEDIUM_FILE, Emulator
from mkwfs.remote.errors import ArchiveError, PermissionDenied
from mkwfs.tree.zipview import ArchiveIndex, Entry, MemberReader, read_index
from tests.helpers import open_content

ARCHIVE = 7
MTIME = 1_700_000_000.0
DATE = (2026, 4, 2, 10, 14, 30)


class MemorySource:
    """Bodies in memory, by download id; ``read_bytes`` counts the bytes handed out."""

    def __init__(self, bodies: dict[int, bytes]) -> None:
        self.bodies = bodies
        self.read_bytes = 0
        self.reads: list[tuple[int, int]] = []

    async def size(self, download_id: int) -> int:
        return len(self.bodies[download_id])

    async def read(self, download_id: int, offset: int, length: int) -> bytes:
        await trio.lowlevel.checkpoint()
        data = self.bodies[download_id][offset : offset + length]
        self.read_bytes += len(data)
        self.reads.append((offset, len(data)))
        return data


def make_zip(members: list[tuple[str, bytes, int]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data, method in members:
            info = zipfile.ZipInfo(name, date_time=DATE)
            info.compress_type = method
            archive.writestr(info, data)
    return buffer.getvalue()


def paths(index: ArchiveIndex) -> dict[str, Entry]:
    """Every entry by its path of safe names, walking the index from its root."""
    found: dict[str, Entry] = {}

    def walk(position: int, prefix: str) -> None:
        for name, child in index.children.get(position, {}).items():
            path = prefix + name.decode()
            entry = index.entries[child]
            found[path + ("/" if entry.is_dir else "")] = entry
            if entry.is_dir:
                walk(child, path + "/")

    walk(0, "")
    return found


async def test_index_mirrors_the_archive_and_reads_only_its_tail() -> None:
    payload = random.Random(1).randbytes(8 * 2**20)
    text = b"CREATE TABLE X (ID NUMBER);\n" * 2000
    body = make_zip(
        [
            ("payload/big.bin", payload, zipfile.ZIP_STORED),
            ("ddl/", b"", zipfile.ZIP_STORED),
            ("ddl/create_x.sql", text, zipfile.ZIP_DEFLATED),
            ("Explore/P/nested.zip", make_zip([("a.txt", b"a", 8)]), zipfile.ZIP_STORED),
        ]
    )
    source = MemorySource({ARCHIVE: body})
    index = await read_index(source, ARCHIVE, mtime=MTIME)
    assert source.read_bytes < 70_000  # the end record and the central directory
    found = paths(index)
    assert sorted(found) == [
        "Explore/", "Explore/P/", "Explore/P/nested.zip", "ddl/", "ddl/create_x.sql",
        "payload/", "payload/big.bin",
    ]  # fmt: skip
    assert found["payload/big.bin"].size == len(payload)
    assert found["ddl/create_x.sql"].size == len(text)
    assert not found["Explore/P/nested.zip"].is_dir  # nested archives stay files
    assert found["Explore/"].mtime == MTIME  # implicit directory: the time given
    local = found["ddl/create_x.sql"].mtime
    assert found["ddl/"].mtime == local  # explicit directory: its own time
    assert abs(local - found["payload/big.bin"].mtime) < 1
    assert [e.index for e in index.entries] == list(range(len(index.entries)))

    source.read_bytes = 0
    reader = MemberReader(source)
    data = await reader.read(ARCHIVE, found["ddl/create_x.sql"], 0, 1 << 20)
    assert data == text
    assert source.read_bytes < len(text)  # its compressed bytes and local header only
    middle = await reader.read(ARCHIVE, found["payload/big.bin"], 3_000_000, 5000)
    assert middle == payload[3_000_000:3_005_000]
    assert source.read_bytes < 3 * len(text) + 5000


async def test_deflated_members_serve_any_offset_with_bounded_restarts() -> None:
    text = b"".join(b"%08d some repetitive line of generated SQL\n" % i for i in range(200_000))
    body = make_zip([("big.sql", text, zipfile.ZIP_DEFLATED)])
    source = MemorySource({ARCHIVE: body})
    index = await read_index(source, ARCHIVE, mtime=MTIME)
    entry = paths(index)["big.sql"]
    reader = MemberReader(source)
    # Sequential reads, as cat does: the compressed bytes are fetched once.
    source.read_bytes = 0
    pieces = [
        await reader.read(ARCHIVE, entry, o, 128 * 1024) for o in range(0, len(text), 128 * 1024)
    ]
    assert b"".join(pieces) == text
    compressed = entry.member.compress_size if entry.member else 0
    assert source.read_bytes <= compressed + 100
    # Slightly out of order (readahead), far ahead, back to the start, past the end.
    for offset, length in [(1000, 10), (500, 700), (len(text) - 5, 100), (7, 3), (len(text), 9)]:
        assert await reader.read(ARCHIVE, entry, offset, length) == text[offset : offset + length]


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"this is not a zip file at all" * 100, "not a ZIP"),
        (b"", "empty"),
        (make_zip([("a.txt", b"hello" * 100, 8)])[:-30], "truncated end record"),
    ],
)
async def test_unreadable_archives_are_archive_errors(body: bytes, why: str) -> None:
    with pytest.raises(ArchiveError, match="not a readable ZIP"):
        await read_index(MemorySource({ARCHIVE: body}), ARCHIVE, mtime=MTIME)


def corrupt(body: bytes, member: str, change: str) -> bytes:
    """``body`` with the data, CRC or flags of ``member`` spoiled."""
    data = bytearray(body)
    info = zipfile.ZipFile(io.BytesIO(body)).getinfo(member)
    header = info.header_offset
    start = header + 30 + len(info.filename.encode()) + len(info.extra)
    match change:
        case "data":
            data[start : start + 20] = bytes(20)
        case "crc":  # the member is the archive's first: the first central header
            central = body.index(b"PK\x01\x02")
            data[central + 16 : central + 20] = (info.CRC ^ 1).to_bytes(4, "little")
    return bytes(data)


@pytest.mark.parametrize("change", ["data", "crc"])
async def test_corrupt_members_are_archive_errors_and_others_still_read(change: str) -> None:
    text = bytes(range(256)) * 400
    body = corrupt(
        make_zip([("bad.bin", text, zipfile.ZIP_DEFLATED), ("good.txt", b"fine", 8)]),
        "bad.bin",
        change,
    )
    source = MemorySource({ARCHIVE: body})
    found = paths(await read_index(source, ARCHIVE, mtime=MTIME))
    reader = MemberReader(source)
    with pytest.raises(ArchiveError):
        await reader.read(ARCHIVE, found["bad.bin"], 0, len(text))
    with pytest.raises(ArchiveError):  # again: the failed state was not kept
        await reader.read(ARCHIVE, found["bad.bin"], 0, len(text))
    assert await reader.read(ARCHIVE, found["good.txt"], 0, 100) == b"fine"


async def test_encrypted_and_unsupported_members_are_archive_errors() -> None:
    body = bytearray(make_zip([("secret.txt", b"x" * 100, 8), ("b.txt", b"y" * 100, 8)]))
    # Mark the first member encrypted in the central directory (flag bit 0).
    central = body.index(b"PK\x01\x02")
    body[central + 8] |= 1
    # And the second as bzip2-compressed (method 12).
    second = body.index(b"PK\x01\x02", central + 4)
    body[second + 10 : second + 12] = (12).to_bytes(2, "little")
    source = MemorySource({ARCHIVE: bytes(body)})
    found = paths(await read_index(source, ARCHIVE, mtime=MTIME))
    reader = MemberReader(source)
    with pytest.raises(ArchiveError, match="encrypted"):
        await reader.read(ARCHIVE, found["secret.txt"], 0, 10)
    with pytest.raises(ArchiveError, match="compression method 12"):
        await reader.read(ARCHIVE, found["b.txt"], 0, 10)


@pytest.mark.filterwarnings("ignore:Duplicate name")
async def test_awkward_member_names_become_safe_unique_names() -> None:
    body = make_zip(
        [
            ("../../etc/passwd", b"1", 0),
            ("/abs/file.txt", b"2", 0),
            ("a//b/./c.txt", b"3", 0),
            ("dup.txt", b"first", 0),
            ("dup.txt", b"second", 0),
            ("x", b"a file named like a directory", 0),
            ("x/inside.txt", b"4", 0),
            ("ctl\x01name.txt", b"5", 0),
            (".hidden", b"6", 0),
        ]
    )
    source = MemorySource({ARCHIVE: body})
    found = paths(await read_index(source, ARCHIVE, mtime=MTIME))
    reader = MemberReader(source)
    contents = {
        path: await reader.read(ARCHIVE, entry, 0, 100)
        for path, entry in found.items()
        if not entry.is_dir
    }
    assert contents == {
        "etc/passwd": b"1",
        "abs/file.txt": b"2",
        "a/b/c.txt": b"3",
        "dup.txt": b"first",
        "dup~9.txt": b"second",  # the entry's position in the index tells it apart
        "x": b"a file named like a directory",
        "x~11/inside.txt": b"4",  # the directory x/ comes later than the file x
        "ctl_name.txt": b"5",
        ".hidden": b"6",  # archives are shown as they are
    }


async def test_errors_of_the_source_pass_through(emulator: Emulator, tmp_path: Path) -> None:
    from mkwfs.emulator import FORBIDDEN_BUILD

    forbidden = emulator.downloads_of(FORBIDDEN_BUILD)[0]["id"]
    async with open_content(emulator, tmp_path) as content:
        with pytest.raises(PermissionDenied):
            await read_index(content, forbidden, mtime=MTIME)


async def test_emulator_archives_match_zipfile(emulator: Emulator, tmp_path: Path) -> None:
    async with open_content(emulator, tmp_path) as content:
        reader = MemberReader(content)
        for download in emulator.downloads_of(DEMO_BUILD):
            index = await read_index(content, download["id"], mtime=MTIME)
            found = paths(index)
            with zipfile.ZipFile(emulator.body_path(download["id"])) as original:
                names = [i.filename for i in original.infolist() if not i.is_dir()]
                assert sorted(p for p, e in found.items() if not e.is_dir) == sorted(names)
                for name in names[:20]:
                    data = await reader.read(download["id"], found[name], 0, 1 << 30)
                    assert data == original.read(name), name
                    assert zlib.crc32(data) == original.getinfo(name).CRC


async def test_a_sniff_of_a_big_member_reads_only_its_header_then_its_head() -> None:
    """GIO reads a member's first 16 KiB to sniff its type: the local header is read alone
    (a read the planner answers with the member's head, ``head_window`` bytes), and a
    deflated member's first compressed bytes are taken in small steps, within that head."""
    rng = random.Random(3)
    text = b"".join(b"%08d %s\n" % (i, rng.randbytes(20).hex().encode()) for i in range(100_000))
    noise = rng.randbytes(2 * 2**20)
    body = make_zip([("a.bin", noise, zipfile.ZIP_DEFLATED), ("b.bin", text, 8), ("c", noise, 0)])
    source = MemorySource({ARCHIVE: body})
    found = paths(await read_index(source, ARCHIVE, mtime=MTIME))
    reader = MemberReader(source)
    head = ContentConfig().head_window
    for name, original in [("a.bin", noise), ("b.bin", text), ("c", noise)]:
        member = found[name].member
        assert member is not None
        source.reads.clear()
        assert await reader.read(ARCHIVE, found[name], 0, 16384) == original[:16384]
        assert source.reads[0] == (member.header_offset, LOCAL_HEADER_SIZE)
        assert all(member.header_offset <= o and o + n <= member.header_offset + head
                   for o, n in source.reads), (name, source.reads)  # fmt: skip


async def test_sniffing_the_members_of_an_emulator_archive_fetches_their_heads(
    emulator: Emulator, tmp_path: Path
) -> None:
    """Through the real content store: after the directory's GET, a sniff of each of the
    four 8 MiB members costs one GET of its head, and a whole member one more GET."""
    async with open_content(emulator, tmp_path) as content:
        index = await read_index(content, MEDIUM_FILE, mtime=MTIME)
        members = [e for p, e in paths(index).items() if p.startswith("payload/part-")]
        reader = MemberReader(content)
        gets, sent = emulator.stats.body_gets, emulator.stats.bytes_sent
        for entry in members:
            assert len(await reader.read(MEDIUM_FILE, entry, 0, 16384)) == 16384
        assert len(members) == 4
        assert emulator.stats.body_gets - gets == 4
        assert emulator.stats.bytes_sent - sent == 4 * ContentConfig().head_window
        whole = members[1]
        pieces = [await reader.read(MEDIUM_FILE, whole, o, 128 * 1024)
                  for o in range(0, whole.size, 128 * 1024)]  # fmt: skip
        assert sum(map(len, pieces)) == whole.size
        assert emulator.stats.body_gets - gets == 5  # the rest of it, in one GET

