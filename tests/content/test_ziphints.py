"""Member boundaries from a ZIP's end of central directory and central directory."""

from __future__ import annotations

import io
import zipfile

import pytest

from mkwfs.content.ziphints import TAIL_SEARCH, central_directory, member_boundaries


def make_zip(comment: bytes = b"", *, force_zip64: bool = False) -> tuple[bytes, list[int]]:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.comment = comment
        for index in range(5):
            data = bytes([index]) * (1000 * (index + 1))
            info = zipfile.ZipInfo(f"dir/member-{index}.sql", date_time=(2026, 4, 2, 10, 14, 0))
            with archive.open(info, "w", force_zip64=force_zip64) as member:
                member.write(data)
    data = buffer.getvalue()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        offsets = [i.header_offset for i in archive.infolist()]
    return data, offsets


@pytest.mark.parametrize("comment", [b"", b"build 5139, pattern CORE_DV_HLS"])
@pytest.mark.parametrize("force_zip64", [False, True])
def test_boundaries_match_zipfile(comment: bytes, force_zip64: bool) -> None:
    data, offsets = make_zip(comment, force_zip64=force_zip64)
    tail_offset = max(len(data) - TAIL_SEARCH, 0)
    located = central_directory(data[tail_offset:], tail_offset)
    assert located is not None
    offset, size = located
    assert member_boundaries(data[offset : offset + size], offset) == [*offsets, offset]


def test_a_tail_that_is_only_part_of_the_file() -> None:
    data, _ = make_zip()
    tail_offset = len(data) - 200
    located = central_directory(data[tail_offset:], tail_offset)
    assert located is not None and located[0] + located[1] <= len(data)


@pytest.mark.parametrize(
    "blob", [b"", b"not a zip at all", b"PK\x05\x06" + b"\x00" * 10, bytes(range(256)) * 100]
)
def test_anything_else_gives_none(blob: bytes) -> None:
    located = central_directory(blob, 0)
    if located is not None:  # a lucky record: the directory then fails to parse
        offset, size = located
        assert member_boundaries(blob[offset : offset + size], offset) in (None, [offset])


def test_a_corrupt_directory_gives_none() -> None:
    data, _ = make_zip()
    offset, size = central_directory(data, 0) or (0, 0)
    corrupt = bytearray(data[offset : offset + size])
    corrupt[0:4] = b"XXXX"
    assert member_boundaries(bytes(corrupt), offset) is None
    assert member_boundaries(data[offset : offset + size - 3], offset) is None
