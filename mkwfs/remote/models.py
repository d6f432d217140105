"""Frozen records parsed from the API's JSON. No I/O here.

``parse_build`` and ``parse_download`` accept what a real server may send (missing optional
fields, nulls, extra fields) and raise ``ValueError`` for what no server should send (an
object without an integer ``id``); the API client turns that into ``ProtocolError``.

A `Build` is compact: the fields the tree needs, and the object's JSON text as the server
sent it (``source``, often a view of the list's body), decoded again only for
``.build.json``, extended attributes and its embedded downloads. A list of 10,000 builds
of 10 downloads each (31 MB of JSON) then costs the body, not a dict tree of 20 KB a build.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from mkwfs.remote.payloads import JSON_DEPTH_LIMIT, nesting_exceeds

JSONObject = Mapping[str, Any]

#: Build statuses after which a build's downloads never change.
FINAL_STATUSES = frozenset({"FINISHED", "FAILED", "CANCELED"})


@dataclass(frozen=True)
class Build:
    id: int
    status: str
    name: str
    project_id: int | None
    #: Seconds since the epoch, or None when the server did not say.
    build_end: float | None
    updated_at: float | None
    created_at: float | None
    #: The object's JSON text (UTF-8) as the server sent it.
    source: bytes | memoryview = field(repr=False, compare=False)
    #: The ``patterns`` ids, or None when the object has no such list.
    patterns: tuple[int, ...] | None = field(default=None, compare=False)
    #: Whether the object carries its ``downloads`` (real build objects do).
    has_downloads: bool = field(default=False, compare=False)

    @functools.cached_property
    def raw(self) -> JSONObject:
        """The object as the server sent it (decoded from ``source`` once, then kept)."""
        return self._decoded()

    def _decoded(self) -> JSONObject:
        decoded = json.loads(bytes(self.source).decode("utf-8", "replace"))
        if nesting_exceeds(decoded, JSON_DEPTH_LIMIT - 1):
            # What walks it (the JSON encoder, the views) must not recurse without bound.
            raise ValueError(f"build {self.id}'s object nests more than {JSON_DEPTH_LIMIT} levels")
        return cast(JSONObject, decoded)

    def embedded_downloads(self) -> list[Download] | None:
        """The downloads the object carries, or None when it has no ``downloads`` list.
        ``ValueError`` for one that is not a download object."""
        if not self.has_downloads:
            return None
        whole = self.__dict__.get("raw") or self._decoded()  # not kept for this
        entries = whole.get("downloads")
        return [parse_download(entry) for entry in entries] if isinstance(entries, list) else None

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def mtime(self) -> float:
        """The time its files were last written: end of build, else last update, else 0."""
        for value in (self.build_end, self.updated_at, self.created_at):
            if value is not None:
                return value
        return 0.0

    @property
    def has_indented_json(self) -> bool:
        """Whether ``indented_json`` is encoded already."""
        return "indented_json" in self.__dict__

    @functools.cached_property
    def indented_json(self) -> bytes:
        """The object as the API sent it, indented (``.build.json``). Kept: a listing of a
        build needs its size, and a build with 1000 downloads takes milliseconds to encode."""
        return (json.dumps(self.raw, indent=2, ensure_ascii=False) + "\n").encode(
            "utf-8", "replace"
        )


@dataclass(frozen=True)
class Download:
    id: int
    build_id: int | None
    #: Display name; may be None, empty, repeated within a build or contain ``/``.
    name: str | None
    #: Server-side path; its basename is the fallback for a missing name.
    file_name: str | None
    pattern_id: int | None
    type: str | None
    version: int | None
    raw: JSONObject = field(repr=False, compare=False)


@dataclass(frozen=True)
class ContentInfo:
    """What the headers of a download response say about its body."""

    #: The whole body's length in bytes, or None when the server did not say.
    size: int | None
    #: True when the server answered a ``Range`` request with 206.
    accepts_ranges: bool
    #: The filename from ``Content-Disposition``, if any (never trusted as a path).
    filename: str | None = None


def parse_timestamp(value: object) -> float | None:
    """ISO 8601 (``2026-04-02T10:14:00.000Z`` and friends) to epoch seconds; None if absent
    or unreadable. A time without a zone is taken as UTC, as Feathers/Sequelize send it."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


def _require_id(obj: object, kind: str) -> tuple[JSONObject, int]:
    if not isinstance(obj, Mapping):
        raise ValueError(f"{kind} is not a JSON object: {type(obj).__name__}")
    ident = obj.get("id")
    if isinstance(ident, bool) or not isinstance(ident, int) or ident < 0:
        raise ValueError(f"{kind} has no valid integer id: {ident!r}")
    return obj, ident


def _opt_int(obj: JSONObject, key: str) -> int | None:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _opt_str(obj: JSONObject, key: str) -> str | None:
    value = obj.get(key)
    return value if isinstance(value, str) else None


def parse_build(obj: object, source: bytes | memoryview | None = None) -> Build:
    """The build ``obj``; ``source`` is its JSON text as sent (encoded from ``obj`` when
    not given)."""
    mapping, ident = _require_id(obj, "build")
    if source is None:
        source = json.dumps(mapping, ensure_ascii=False, separators=(",", ":")).encode(
            "utf-8", "replace"
        )
    patterns = mapping.get("patterns")
    return Build(
        id=ident,
        status=_opt_str(mapping, "status") or "UNKNOWN",
        name=_opt_str(mapping, "name") or "",
        project_id=_opt_int(mapping, "project_id"),
        build_end=parse_timestamp(mapping.get("build_end")),
        updated_at=parse_timestamp(mapping.get("updated_at")),
        created_at=parse_timestamp(mapping.get("created_at")),
        source=source,
        patterns=tuple(p for p in patterns if isinstance(p, int))
        if isinstance(patterns, list)
        else None,
        has_downloads=isinstance(mapping.get("downloads"), list),
    )


def parse_download(obj: object) -> Download:
    mapping, ident = _require_id(obj, "download")
    return Download(
        id=ident,
        build_id=_opt_int(mapping, "build_id"),
        name=_opt_str(mapping, "name"),
        file_name=_opt_str(mapping, "file_name"),
        pattern_id=_opt_int(mapping, "pattern_id"),
        type=_opt_str(mapping, "type"),
        version=_opt_int(mapping, "version"),
        raw=mapping,
    )
