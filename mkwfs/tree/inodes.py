"""Inode numbers: a kind in the bits from 40 up, the API's id below (``BUILD_BASE + build
id``), so they are stable across listings and remounts and never reused for something else
(tools such as rsync, tar and find rely on that). A build's link has one inode wherever it
appears (its target is the same). ZIP members have no id of their own: each archive gets a
block of numbers from ``MEMBER_BASE`` on (see ``archives.Archives``).
"""

from __future__ import annotations

ROOT_INODE = 1
BUILDS_INODE = 2
PROJECTS_INODE = 3
PATTERNS_INODE = 4
UNPACKED_INODE = 5
_KIND_SHIFT = 40
#: Ids at and above this have no inode: the API's ids of what the tree shows are below it.
ID_LIMIT = 1 << _KIND_SHIFT
BUILD_BASE = 1 << _KIND_SHIFT
FILE_BASE = 2 << _KIND_SHIFT
BUILD_JSON_BASE = 3 << _KIND_SHIFT
PROJECT_BASE = 4 << _KIND_SHIFT
PATTERN_BASE = 5 << _KIND_SHIFT
BUILD_LINK_BASE = 6 << _KIND_SHIFT
PROJECT_LATEST_BASE = 7 << _KIND_SHIFT
PATTERN_LATEST_BASE = 8 << _KIND_SHIFT
UNPACKED_BUILD_BASE = 9 << _KIND_SHIFT
ARCHIVE_BASE = 10 << _KIND_SHIFT
#: Member inodes count up from here, a block per archive (see the module docstring).
MEMBER_BASE = 16 << _KIND_SHIFT


def build_inode(build_id: int) -> int:
    return BUILD_BASE + build_id


def file_inode(download_id: int) -> int:
    return FILE_BASE + download_id


def parse_id(name: bytes) -> int | None:
    """An id as a directory shows it: decimal digits, no sign, no leading zero."""
    if not name.isdigit() or (name.startswith(b"0") and name != b"0"):
        return None
    value = int(name)
    return value if value < ID_LIMIT else None
