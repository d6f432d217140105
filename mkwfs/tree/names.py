"""Names in the tree: safe, unique within a directory, stable, at most 255 bytes.

A download's ``name`` is only a display name: it may be missing, empty, repeated within a
build, or hold characters a path cannot (``/``, NUL) or should not (control characters).
``file_names`` turns a build's downloads into one file name each:

1. the display name; if it is missing, empty, ``.`` or ``..``: the basename of
   ``file_name``; failing that ``download-<id>``;
2. ``/``, NUL and other control characters become ``_``;
3. a name that file managers and shells probe for (``is_probe_name``: ``.hidden``,
   ``desktop.ini``, ``._*``, ...) gets a leading ``_``, so that such lookups can be
   answered ``ENOENT`` without asking the server;
4. names longer than 255 bytes of UTF-8 are shortened, keeping the extension;
5. where names repeat, the download with the lowest id keeps the name and each other gets
   ``~<id>`` before its extension (``X.zip``, ``X~5443.zip``). Ids only grow, so a file
   that appears later in a running build never renames one that was there before.

``unique_names`` applies steps 4 and 5 to any (id, name) pairs: project and pattern names,
and the members of a ZIP directory (with their position in the archive as the id).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable

from mkwfs.remote.models import Download

NAME_MAX = 255

_UNSAFE = re.compile(r"[\x00-\x1f\x7f/]")

#: Names that desktops and shells look up in every directory they show (compared in lower
#: case), besides ``.Trash-<uid>`` and AppleDouble files ``._*``.
_PROBE_NAMES = frozenset(
    {b".hidden", b".trash", b".xdg-volume-info", b"autorun.inf", b".directory",
     b".ds_store", b"desktop.ini"}
)  # fmt: skip
_PROBE_PATTERN = re.compile(rb"\.trash-[0-9]+|\._.*", re.DOTALL)


def is_probe_name(name: bytes) -> bool:
    """Whether ``name`` is one that file managers and shells probe for on their own."""
    lowered = name.lower()
    return lowered in _PROBE_NAMES or _PROBE_PATTERN.fullmatch(lowered) is not None


def safe_name(raw: str | None, *, avoid_probes: bool = True) -> str | None:
    """``raw`` as a name a directory can hold, or None when nothing usable is left
    (missing, empty, ``.`` or ``..``). With ``avoid_probes``, a name desktops probe for
    gets a leading ``_``."""
    if not raw:
        return None
    name = _UNSAFE.sub("_", raw)
    if name in (".", ".."):
        return None
    return "_" + name if avoid_probes and is_probe_name(_encode(name)) else name


def _candidate(download: Download) -> str:
    for raw in (download.name, posixpath.basename(download.file_name or "")):
        name = safe_name(raw)
        if name is not None:
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


def fit_name(name: str, marker: str = "") -> bytes:
    """``name`` in at most NAME_MAX bytes of UTF-8, with ``marker`` (such as ``~5443``)
    before its extension; a long name is shortened, keeping the extension."""
    stem, ext = _split_extension(name)
    return _fit(stem, marker + ext)


def file_name(download: Download, marker: str = "") -> bytes:
    """The file name of one download, with ``marker`` before its extension."""
    return fit_name(_candidate(download), marker)


def unique_names(candidates: Iterable[tuple[int, str]]) -> list[tuple[bytes, int]]:
    """One unique name per ``(id, safe name)``, in order of id: where names repeat, the
    lowest id keeps the name and each other gets ``~<id>`` before its extension."""
    ordered = sorted(candidates, key=lambda candidate: candidate[0])
    taken: set[bytes] = set()
    result: list[tuple[bytes, int]] = []
    plain = [fit_name(name) for _, name in ordered]
    plain_names = set(plain)
    for (ident, candidate), name in zip(ordered, plain, strict=True):
        if name in taken:
            name = fit_name(candidate, f"~{ident}")
            # A real name may already look like a disambiguated one: count on.
            count = 1
            while name in taken or name in plain_names:
                count += 1
                name = fit_name(candidate, f"~{ident}.{count}")
        taken.add(name)
        result.append((name, ident))
    return result


def file_names(downloads: Iterable[Download]) -> list[tuple[bytes, Download]]:
    """One unique file name per download, in order of download id."""
    by_id = {d.id: d for d in downloads}
    named = unique_names((d.id, _candidate(d)) for d in by_id.values())
    return [(name, by_id[ident]) for name, ident in named]
