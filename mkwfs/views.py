"""The pieces of the views beyond ``/builds`` that need no tree: no FUSE, no I/O.

* ``StateAwareCache``: results kept long when they can no longer change (a finished build's
  files) and briefly while they may (a running build's), the loader saying which;
* ``Group``/``groups``: projects and patterns as directories with safe, unique names;
* ``newest_finished``: the build ``latest`` points to;
* ``xattrs`` and ``build_json``: the API's fields as extended attributes and as the bytes of
  ``.build.json``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

import trio

from mkwfs.cache import AsyncTTLCache, SingleFlight
from mkwfs.models import Build
from mkwfs.names import safe_name, unique_names

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

GroupKind = Literal["project", "pattern"]

#: Every extended attribute mkwfs has starts with this.
XATTR_PREFIX = b"user.mkw."

#: The fields shown as ``user.mkw.<kind>.<field>``, in the order ``listxattr`` gives them.
BUILD_FIELDS = (
    "id", "status", "progress", "message", "project_id", "name", "description", "user_id",
    "version", "build_start", "build_end", "updated_at", "patterns", "releases",
)  # fmt: skip
DOWNLOAD_FIELDS = (
    "id", "pattern_id", "type", "version", "build_id", "project_id", "name", "file_name",
    "upload_id", "file_id", "instance_id",
)  # fmt: skip
GROUP_FIELDS: Mapping[GroupKind, tuple[str, ...]] = {
    "project": ("id", "name", "disabled"),
    "pattern": ("id", "name", "type", "description", "vers_no", "status", "release_group_id"),
}


class StateAwareCache(Generic[K, V]):
    """Results of an async loader that also says whether its result is final: final ones
    are kept ``final_ttl`` seconds, the others ``live_ttl``. One load per key at a time;
    failures are not cached. ``maxsize`` bounds each of the two kinds."""

    def __init__(
        self,
        *,
        final_ttl: float,
        live_ttl: float,
        maxsize: int = 1024,
        timer: Callable[[], float] = trio.current_time,
    ) -> None:
        self._final = AsyncTTLCache[K, V](ttl=final_ttl, maxsize=maxsize, timer=timer)
        self._live = AsyncTTLCache[K, V](ttl=live_ttl, maxsize=maxsize, timer=timer)
        self._flights = SingleFlight[K, V]()

    def peek(self, key: K) -> V | None:
        """The cached value if it is still fresh, without loading."""
        value = self._final.peek(key)
        return self._live.peek(key) if value is None else value

    def put(self, key: K, value: V, *, final: bool) -> None:
        (self._final if final else self._live).put(key, value)
        (self._live if final else self._final).invalidate(key)

    def invalidate(self, key: K | None = None) -> None:
        """Forget one key, or everything when ``key`` is None."""
        self._final.invalidate(key)
        self._live.invalidate(key)

    async def get(self, key: K, load: Callable[[], Awaitable[tuple[V, bool]]]) -> V:
        cached = self.peek(key)
        if cached is not None:
            return cached

        async def load_and_store() -> V:
            value, final = await load()
            self.put(key, value, final=final)
            return value

        return await self._flights.run(key, load_and_store)


@dataclass(frozen=True)
class Group:
    """A project or a pattern, shown as ``/projects/<name>`` or ``/patterns/<name>``."""

    kind: GroupKind
    id: int
    name: bytes
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    def holds(self, build: Build) -> bool:
        """Whether ``build`` belongs here, as far as the build record says (a record
        without the field is trusted to, since the server filtered it)."""
        if self.kind == "project":
            return build.project_id in (None, self.id)
        patterns = build.raw.get("patterns")
        return not isinstance(patterns, list) or self.id in patterns


def groups(kind: GroupKind, records: Iterable[Mapping[str, Any]], id_limit: int) -> list[Group]:
    """The projects or patterns to show, by unique safe name (a missing or unusable name
    becomes ``<kind>-<id>``); deleted ones and ids outside ``[0, id_limit)`` are left out."""
    usable: dict[int, Mapping[str, Any]] = {}
    for record in records:
        ident = record.get("id")
        if not isinstance(ident, int) or isinstance(ident, bool) or record.get("deleted"):
            continue
        if 0 <= ident < id_limit:
            usable[ident] = record
    candidates = []
    for ident, record in usable.items():
        raw_name = record.get("name")
        name = safe_name(raw_name if isinstance(raw_name, str) else None)
        candidates.append((ident, name or f"{kind}-{ident}"))
    return [Group(kind, ident, name, usable[ident]) for name, ident in unique_names(candidates)]


def newest_finished(builds: Iterable[Build]) -> Build | None:
    """The FINISHED build that ended last (the higher id on a tie), or None."""
    finished = [b for b in builds if b.status == "FINISHED"]
    return max(finished, key=lambda b: (b.mtime, b.id), default=None)


def _xattr_value(value: object) -> bytes | None:
    match value:
        case bool():
            return b"1" if value else b"0"
        case int() | str():
            return str(value).encode("utf-8", "replace")
        case list() if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return ",".join(str(v) for v in value).encode()
        case _:
            return None


def xattrs(kind: str, fields: Sequence[str], raw: Mapping[str, Any]) -> dict[bytes, bytes]:
    """``user.mkw.<kind>.<field>`` for each of ``fields`` the API gave: strings in UTF-8,
    integers in decimal, booleans as ``1``/``0``, lists of integers comma-separated. A field
    that is missing, null or of another type has no attribute (``ENODATA``)."""
    result: dict[bytes, bytes] = {}
    for name in fields:
        value = _xattr_value(raw.get(name))
        if value is not None:
            result[XATTR_PREFIX + f"{kind}.{name}".encode()] = value
    return result


def build_json(build: Build) -> bytes:
    """The bytes of ``.build.json``: the build object as the API sent it, indented."""
    return (json.dumps(build.raw, indent=2, ensure_ascii=False) + "\n").encode("utf-8", "replace")
