"""What the tree hands to the FUSE edge: a node's attributes, and how to serve an open file."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Kind(enum.Enum):
    DIR = "dir"
    FILE = "file"
    SYMLINK = "symlink"


@dataclass(frozen=True)
class Attributes:
    ino: int
    kind: Kind
    size: int
    mtime: float
    nlink: int
    #: Seconds the kernel may keep these attributes (0: ask again before using them).
    attr_timeout: float
    #: Seconds the kernel may keep the name -> inode mapping.
    entry_timeout: float

    @property
    def is_dir(self) -> bool:
        return self.kind is Kind.DIR


@dataclass(frozen=True)
class OpenFile:
    """How to serve an opened file. ``snapshot`` is set for generated files whose bytes may
    change (``.build.json``): the handle reads these bytes, not the size the kernel knows."""

    ino: int
    keep_cache: bool
    snapshot: bytes | None = None
    #: The kernel must pass every read on, up to the end of the body, rather than stop at
    #: the size it knows: a body opened before its size was known (``--size-probes off``).
    direct_io: bool = False
    #: The download whose body this handle reads, held in the cache until ``close``.
    download_id: int | None = None
