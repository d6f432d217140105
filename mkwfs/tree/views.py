"""The pieces of the views beyond ``/builds`` that need no tree: no FUSE, no I/O.

* ``StateAwareCache``: results kept long when they can no longer change (a finished build's
  files) and briefly while they may (a running build's), the loader saying which;
* ``LastGood`` and ``Staleness``: stale-if-error, the last good listing served while the
  server fails, and what ``mkwfs status`` says about it;
* ``Group``/``groups``: projects and patterns as directories with safe, unique names;
* ``newest_finished``: the build ``latest`` points to;
* ``xattrs`` and ``build_json``: the API's fields as extended attributes and as the bytes of
  ``.build.json``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

import cachetools
import trio

from mkwfs.catalog.cache import AsyncTTLCache, SingleFlight
from mkwfs.remote.errors import ApiError, HTTPStatusError, TransportError
from mkwfs.remote.models import Build
from mkwfs.tree.names import safe_name, unique_names

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

GroupKind = Literal["project", "pattern"]

log = logging.getLogger(__name__)

#: Seconds a stale answer is given without asking the server again, after it failed.
STALE_RETRY = 5.0

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


@dataclass
class Staleness:
    """Whether listings are served past their time because the server fails, for ``mkwfs
    status``. Logs one warning when that starts and one when the server answers again.
    Times are ``time.time()``."""

    #: When the first stale answer was given since the server last answered; None: fresh.
    since: float | None = None
    #: Stale answers given in all.
    served: int = 0
    #: The failure that made the last one stale (no secrets: an ``ApiError`` message).
    last_error: str | None = None

    @property
    def active(self) -> bool:
        return self.since is not None

    def stale(self, error: ApiError) -> None:
        if self.since is None:
            self.since = time.time()
            log.warning(
                "serving cached listings while the server fails (%s); uncached files and "
                "listings give EIO until it answers again",
                error,
            )
        self.served += 1
        self.last_error = str(error)

    def fresh(self) -> None:
        """The server answered a request again."""
        if self.since is not None:
            self.since = None
            log.warning("the server answers again: listings are fresh again")


@dataclass
class _Good(Generic[V]):
    value: V
    #: Until then (on the cache's timer) the server is not asked again: it just failed.
    failed_until: float = -math.inf


def server_failed(error: ApiError) -> bool:
    """Whether stale-if-error covers ``error`` (RFC 5861's cases): no answer, or none in
    time (``TransportError``), a 5xx or a 429. A 401, 403 or 404, or a malformed answer, is
    the server's word and is not hidden."""
    if isinstance(error, TransportError):
        return True
    return isinstance(error, HTTPStatusError) and (error.status >= 500 or error.status == 429)


class LastGood(Generic[K, V]):
    """Stale-if-error over a cache: the last value loaded for each key, kept past any TTL,
    and given instead of a failure of the server (``server_failed``). Other failures are
    raised. After a failure, the stale value is given for ``STALE_RETRY`` seconds without
    asking again, so that browsing a mount whose server is down does not wait for it at
    every step. ``maxsize`` keys at most (least recently used go first)."""

    def __init__(
        self,
        staleness: Staleness,
        *,
        maxsize: int = 4096,
        timer: Callable[[], float] = trio.current_time,
    ) -> None:
        self._staleness = staleness
        self._timer = timer
        self._values: cachetools.LRUCache[K, _Good[V]] = cachetools.LRUCache(maxsize=maxsize)

    def put(self, key: K, value: V) -> None:
        self._values[key] = _Good(value)

    def retry_now(self) -> None:
        """Ask the server at the next ``get`` even after a recent failure (the values stay
        for the next failure)."""
        for good in self._values.values():
            good.failed_until = -math.inf

    async def get(self, key: K, fresh: Callable[[], Awaitable[V]]) -> V:
        """``await fresh()`` (a cached or a newly loaded value), remembered; or, when the
        server failed, the last good value if there is one."""
        good = self._values.get(key)
        if good is not None and self._timer() < good.failed_until:
            return good.value
        try:
            value = await fresh()
        except ApiError as exc:
            if good is None or not server_failed(exc):
                raise
            good.failed_until = self._timer() + STALE_RETRY
            self._staleness.stale(exc)
            return good.value
        self.put(key, value)
        return value


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
    return build.indented_json
