"""File names for downloads: safe, unique within a build, stable, at most 255 bytes.

A download's ``name`` is only a display name: it may be missing, empty, repeated within a
build, or hold characters a path cannot (``/``, NUL) or should not (control characters).
``file_names`` turns a build's downloads into one file name each:

1. the display name; if it is missing, empty, ``.`` or ``..``: the basename of
   ``file_name``; failing that ``download-<id>``;
2. ``/``, NUL and other control characters become ``_``;
3. names longer than 255 bytes of UTF-8 are shortened, keeping the extension;
4. where names repeat, the download with the lowest id keeps the name and each other gets
   ``~<id>`` before its extension (``X.zip``, ``X~5443.zip``). Ids only grow, so a file
   that appears later in a running build never renames one that was there before.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Sequence

from mkwfs.models import Download

NAME_MAX = 255

_UNSAFE = re.compile(r"[\x00-\x1f\x7f/]")


def _candidate(download: Download) -> str:
    for raw in (download.name, posixpath.basename(download.file_name or "")):
        if raw:
            name = _UNSAFE.sub("_", raw)
            if name not in (".", ".."):
                return name
    return f"download-{download.id}"


def _encode(name: str) -> bytes:
    # Lone surrogates (from JSON "\udc80") cannot be UTF-8: they become U+FFFD.
    return name.encode("utf-8", "replace")


def _split_extension(name: str) -> tuple[str, str]:
    stem, ext = posixpath.splitext(name)
    if len(_encode(ext)) > 32:  # Not an extension, just a dot late in a long name.
        return name, ""
    return stem, ext


def _fit(stem: str, tail: str) -> bytes:
    """``stem + tail`` in at most NAME_MAX bytes, shortening the stem at a character edge."""
    tail_bytes = _encode(tail)
    budget = NAME_MAX - len(tail_bytes)
    stem_bytes = _encode(stem)
    if len(stem_bytes) > budget:
        stem_bytes = stem_bytes[:budget].decode("utf-8", "ignore").encode("utf-8")
    return stem_bytes + tail_bytes


def file_name(download: Download, marker: str = "") -> bytes:
    """The file name of one download, with ``marker`` (such as ``~5443``) before its
    extension when it must be told apart."""
    stem, ext = _split_extension(_candidate(download))
    return _fit(stem, marker + ext)


def file_names(downloads: Iterable[Download]) -> list[tuple[bytes, Download]]:
    """One unique file name per download, in order of download id."""
    ordered: Sequence[Download] = sorted(downloads, key=lambda d: d.id)
    taken: set[bytes] = set()
    result: list[tuple[bytes, Download]] = []
    plain = [file_name(d) for d in ordered]
    plain_names = set(plain)
    for download, name in zip(ordered, plain, strict=True):
        if name in taken:
            name = file_name(download, f"~{download.id}")
            # A real name may already look like a disambiguated one: count on.
            count = 1
            while name in taken or name in plain_names:
                count += 1
                name = file_name(download, f"~{download.id}.{count}")
        taken.add(name)
        result.append((name, download))
    return result
