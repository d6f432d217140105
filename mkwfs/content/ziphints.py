"""Where the members of a ZIP body begin, from its end of central directory and central
directory: hints for fetching byte ranges that match what a ZIP reader will read next.

Readers of ZIPs (unzip, 7z, Python's zipfile, Informatica's import) read the end of the
file, then the central directory, then jump to the members they want. Knowing where members
begin lets a ranged fetch stop at the end of the member being read instead of guessing.
These are hints only: anything unexpected gives None, and the caller fetches without them.
"""

from __future__ import annotations

import struct

_EOCD = struct.Struct("<4s4H2LH")
_EOCD_SIGNATURE = b"PK\x05\x06"
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_LOCATOR_SIGNATURE = b"PK\x06\x07"
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
_ZIP64_EOCD_SIGNATURE = b"PK\x06\x06"
_CENTRAL = struct.Struct("<4s6H3L5H2L")
_CENTRAL_SIGNATURE = b"PK\x01\x02"

#: The fixed part of a member's local header (APPNOTE 4.3.7), before its name and extra field.
LOCAL_HEADER_SIZE = 30

#: An end of central directory record lies within this many bytes of the end of the file.
TAIL_SEARCH = _EOCD.size + 0xFFFF


def central_directory(tail: bytes, tail_offset: int) -> tuple[int, int] | None:
    """``(offset, size)`` of the central directory, from the last bytes of a ZIP (``tail``,
    which starts at file offset ``tail_offset``), or None if they do not describe one."""
    at = tail.rfind(_EOCD_SIGNATURE)
    while at >= 0:
        if at + _EOCD.size <= len(tail):
            fields = _EOCD.unpack_from(tail, at)
            comment_length = fields[7]
            if at + _EOCD.size + comment_length == len(tail):
                return _locate(tail, tail_offset, at, size=fields[5], offset=fields[6])
        at = tail.rfind(_EOCD_SIGNATURE, 0, at)
    return None


def _locate(
    tail: bytes, tail_offset: int, eocd_at: int, *, size: int, offset: int
) -> tuple[int, int] | None:
    if offset != 0xFFFFFFFF and size != 0xFFFFFFFF:
        return offset, size
    locator_at = eocd_at - _ZIP64_LOCATOR.size
    if locator_at < 0:
        return None
    signature, _, record_offset, _ = _ZIP64_LOCATOR.unpack_from(tail, locator_at)
    record_at = record_offset - tail_offset
    if signature != _ZIP64_LOCATOR_SIGNATURE or not 0 <= record_at <= locator_at - _ZIP64_EOCD.size:
        return None
    record = _ZIP64_EOCD.unpack_from(tail, record_at)
    if record[0] != _ZIP64_EOCD_SIGNATURE:
        return None
    return record[9], record[8]


def member_offsets(directory: bytes) -> list[int] | None:
    """The local header offsets of the members a central directory lists."""
    offsets: list[int] = []
    at = 0
    while at < len(directory):
        if at + _CENTRAL.size > len(directory):
            return None
        fields = _CENTRAL.unpack_from(directory, at)
        if fields[0] != _CENTRAL_SIGNATURE:
            return None
        name_length, extra_length, comment_length = fields[10], fields[11], fields[12]
        offset = fields[16]
        extra_at = at + _CENTRAL.size + name_length
        if extra_at + extra_length + comment_length > len(directory):
            return None
        if offset == 0xFFFFFFFF:
            found = _zip64_offset(
                directory[extra_at : extra_at + extra_length],
                sizes_in_extra=(fields[9] == 0xFFFFFFFF) + (fields[8] == 0xFFFFFFFF),
            )
            if found is None:
                return None
            offset = found
        offsets.append(offset)
        at = extra_at + extra_length + comment_length
    return offsets


def _zip64_offset(extra: bytes, *, sizes_in_extra: int) -> int | None:
    at = 0
    while at + 4 <= len(extra):
        tag, length = struct.unpack_from("<2H", extra, at)
        if tag == 0x0001:
            position = at + 4 + 8 * sizes_in_extra
            if position + 8 <= at + 4 + length:
                value: int = struct.unpack_from("<Q", extra, position)[0]
                return value
            return None
        at += 4 + length
    return None


def member_boundaries(directory: bytes, directory_offset: int) -> list[int] | None:
    """Offsets where members begin, and where the central directory begins (the end of the
    last member), sorted; None if the directory cannot be read."""
    offsets = member_offsets(directory)
    if offsets is None or any(o > directory_offset for o in offsets):
        return None
    return sorted({*offsets, directory_offset})
