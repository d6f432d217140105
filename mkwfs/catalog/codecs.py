"""How the catalog's facts are written down in a store on disk: the JSON objects the server
sent (a build's JSON text as it came, ``source``; the others' ``raw``), parsed again when
read. Keys are their JSON (``5139``, ``"project"``,
``["pattern", 3]``, ``null``). ``ValueError`` for bytes that are not what was written."""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any, TypeVar

from mkwfs.catalog.store import Codec
from mkwfs.remote.models import Build, Download, parse_build, parse_download
from mkwfs.remote.payloads import decode_list

T = TypeVar("T")

__all__ = ["BUILD", "BUILDS_BY_ID", "DOWNLOADS", "RECORDS"]


def _key(key: Hashable) -> str:
    return json.dumps(key)


def _dump(data: object) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def _items(data: bytes, parse: Callable[[object], T]) -> list[T]:
    items = json.loads(data)
    if not isinstance(items, list):
        raise ValueError("not a JSON array")
    return [parse(item) for item in items]


def _record(item: object) -> Mapping[str, Any]:
    if not isinstance(item, dict):
        raise ValueError("not a JSON object")
    return item


def _dump_builds(builds: Iterable[Build]) -> bytes:
    """The builds' JSON texts as sent, in one array: no build is decoded to write it (a
    list of 10,000 builds would take 200 MB as dicts)."""
    return b"[" + b",".join(bytes(build.source) for build in builds) + b"]"


def _load_builds(data: bytes) -> dict[int, Build]:
    builds = decode_list(data, parse_build)
    if not isinstance(builds, list):
        raise ValueError("not a JSON array")
    return {build.id: build for build in builds}


#: Builds by id (the list of builds, a group's builds).
BUILDS_BY_ID: Codec[Any, dict[int, Build]] = Codec(
    _key, lambda builds: _dump_builds(builds.values()), _load_builds
)
#: One build's record.
BUILD: Codec[Any, Build] = Codec(
    _key, lambda build: bytes(build.source), lambda data: parse_build(json.loads(data), data)
)
#: A build's downloads, in the API's order.
DOWNLOADS: Codec[Any, list[Download]] = Codec(
    _key,
    lambda downloads: _dump([download.raw for download in downloads]),
    lambda data: _items(data, parse_download),
)
#: Records as the API sent them (projects, patterns).
RECORDS: Codec[Any, list[Mapping[str, Any]]] = Codec(
    _key, _dump, lambda data: _items(data, _record)
)
