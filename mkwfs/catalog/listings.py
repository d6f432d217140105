"""The catalog: every fact the mount has from the API but sizes, and how long each holds.

Facts: the list of builds, each build's newest record, a build's downloads, the projects
and the patterns, a project's or pattern's builds. Each is asked of the ``ApiClient`` at
most once per key at a time, every request bounded by ``timeout`` seconds (then
``TransportError``), and kept in memory:

* the list of builds, projects and patterns for ``dir_ttl`` seconds;
* a build's downloads for ``final_ttl`` once the build is FINISHED, FAILED or CANCELED (they
  can no longer change), for ``live_ttl`` while it is BUILDING; those of a build that is
  over come from its object (real build objects carry their ``downloads``) when it has
  them, with no request; a running build's are asked of ``/downloads?build_id=N``;
* a build's record, and a group's builds, for ``dir_ttl``, or ``live_ttl`` while one of them
  is running.

Stale-if-error: the last good copy of each fact is also kept, past its TTL, in the
catalog's ``FactStore`` with the time it was fetched and its validator, and served when a
refresh fails transiently (see ``stale.LastGood``); ``staleness`` says so for ``mkwfs
status``. A fact past its TTL is asked again with its validator: a 304 keeps the copy.

Offline: `start` asks for the builds at mount time; when the server is out of reach
(``TransportError``) and a list of builds is kept, the catalog is offline: it serves the
copies kept and asks the server nothing (anything not kept fails at once) until `check`
finds the server answering again.

Only facts with an id below ``id_limit`` are kept (the tree numbers inodes by id). ``timer``
runs the TTLs (trio's clock); ``wall`` dates the facts in the store (``time.time``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Any, Literal, TypeVar

import trio

from mkwfs.catalog import codecs
from mkwfs.catalog.cache import AsyncTTLCache, StateAwareCache
from mkwfs.catalog.stale import LastGood, Staleness, server_failed
from mkwfs.catalog.store import Codec, FactStore, FactTable, Fetched, MemoryStore
from mkwfs.remote.api import ApiClient, is_transient
from mkwfs.remote.errors import ApiError, MkwfsError, Offline, TransportError
from mkwfs.remote.models import Build, Download

log = logging.getLogger(__name__)
T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

GroupKind = Literal["project", "pattern"]
#: The records of the projects or the patterns, as the API sent them.
GroupRecords = list[Mapping[str, Any]]


def belongs_to(build: Build, kind: GroupKind, group_id: int) -> bool:
    """Whether ``build`` belongs to the project or pattern, as far as the build record
    says (a record without the field is trusted to, since the server filtered it)."""
    if kind == "project":
        return build.project_id in (None, group_id)
    return build.patterns is None or group_id in build.patterns


def _embedded(build: Build) -> list[Download] | None:
    """The downloads ``build``'s object carries, or None (none there, or one that is not a
    download object: then the build's list is asked instead)."""
    try:
        return build.embedded_downloads()
    except ValueError as exc:
        log.info("the downloads in build %d's object are unusable: %s", build.id, exc)
        return None


class Catalog:
    """The facts from the API, cached and bounded (see the module docstring). Raises only
    ``MkwfsError``."""

    def __init__(
        self,
        api: ApiClient,
        *,
        dir_ttl: float,
        final_ttl: float,
        live_ttl: float,
        timeout: float,
        id_limit: int,
        timer: Callable[[], float] = trio.current_time,
        store: FactStore | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._api = api
        self.timeout = timeout
        self._id_limit = id_limit
        self.staleness = Staleness()
        self._builds = AsyncTTLCache[None, dict[int, Build]](ttl=dir_ttl, maxsize=1, timer=timer)
        self._downloads = StateAwareCache[int, list[Download]](
            final_ttl=final_ttl, live_ttl=live_ttl, timer=timer
        )
        #: The newest record of each build: from GET /builds/:id or from any list of builds.
        self._records = StateAwareCache[int, Build](
            final_ttl=dir_ttl, live_ttl=live_ttl, maxsize=4096, timer=timer
        )
        self._groups = AsyncTTLCache[GroupKind, GroupRecords](ttl=dir_ttl, maxsize=2, timer=timer)
        self._group_builds = StateAwareCache[tuple[GroupKind, int], dict[int, Build]](
            final_ttl=dir_ttl, live_ttl=live_ttl, timer=timer
        )
        #: Builds whose listing was dropped (``refresh``): asked of the API once, not
        #: taken from the object in the list of builds that is still cached.
        self._dropped: set[int] = set()
        #: While `start` reads the list of builds kept on disk: set once it is served.
        self._serving_kept: trio.Event | None = None
        self._store = MemoryStore() if store is None else store
        self._clocks = (timer, wall)
        self._last_builds: LastGood[None, dict[int, Build]] = self._last_good(
            "builds", codecs.BUILDS_BY_ID, 1
        )
        self._last_downloads: LastGood[int, list[Download]] = self._last_good(
            "downloads", codecs.DOWNLOADS
        )
        self._last_records: LastGood[int, Build] = self._last_good("records", codecs.BUILD)
        self._last_groups: LastGood[GroupKind, GroupRecords] = self._last_good(
            "groups", codecs.RECORDS, 2
        )
        self._last_group_builds: LastGood[tuple[GroupKind, int], dict[int, Build]] = (
            self._last_good("group_builds", codecs.BUILDS_BY_ID)
        )

    def _last_good(self, table: str, codec: Codec[K, V], maxsize: int = 4096) -> LastGood[K, V]:
        """The last good copies of one kind of fact, kept in the store's ``table``."""
        timer, wall = self._clocks
        facts: FactTable[K, V] = self._store.table(table, maxsize=maxsize, codec=codec)
        return LastGood[K, V](self.staleness, facts, timer=timer, wall=wall)

    # -- requests ----------------------------------------------------------------------

    async def bounded(self, call: Callable[[], Awaitable[T]]) -> T:
        """``await call()``, or ``TransportError`` once ``timeout`` seconds have passed."""
        with trio.move_on_after(self.timeout):
            return await call()
        raise TransportError(
            f"no answer from the server within {self.timeout:g} s", url=self._api.base_url
        )

    async def _ask(self, call: Callable[[], Awaitable[T]], *, offline: bool = False) -> T:
        """An API request, bounded; its success means the server answers again. Offline,
        ``Offline`` at once, without a request, unless ``offline`` says to ask all the same."""
        if self.staleness.offline and not offline:
            raise Offline(
                "offline: the server was out of reach at mount time", url=self._api.base_url
            )
        result = await self.bounded(call)
        self.staleness.fresh()
        return result

    def _remember_builds(self, builds: list[Build]) -> dict[int, Build]:
        """The builds of a list by id (ids below the limit), each kept as its newest record."""
        usable = {b.id: b for b in builds if 0 <= b.id < self._id_limit}
        self._remember_records(usable)
        return usable

    def _remember_records(self, builds: dict[int, Build]) -> None:
        """Keep each build of a list as its newest record (in memory: the list on disk
        holds them)."""
        for build in builds.values():
            self._records.put(build.id, build, final=build.is_final)

    async def _fetch_builds(self, *, offline: bool = False, retry: bool = True) -> dict[int, Build]:
        """The list of builds from the server (a 304: the copy kept), kept."""
        return await self._last_builds.load(
            None,
            lambda validator: self._ask(
                lambda: self._api.builds_if_changed(validator, retry=retry), offline=offline
            ),
            lambda found: self._remember_builds(found),
            self._remember_records,
        )

    # -- facts -------------------------------------------------------------------------

    async def builds(self) -> dict[int, Build]:
        """Every build, by id (once `start` has read the list kept, if it is reading it)."""
        if self._serving_kept is not None:
            await self._serving_kept.wait()

        return await self._last_builds.get(None, lambda: self._builds.get(None, self._fetch_builds))

    async def record(self, build: Build) -> Build:
        """The build's newest record, asked again once it may have changed. When the server
        fails and no record of it was fetched, the record the last list of builds gave."""

        async def load() -> tuple[Build, bool]:
            fresh = await self._last_records.load(
                build.id,
                lambda v: self._ask(lambda: self._api.build_if_changed(build.id, v)),
                lambda found: found,
            )
            return fresh, fresh.is_final

        try:
            return await self._last_records.get(build.id, lambda: self._records.get(build.id, load))
        except ApiError as exc:
            kept = self._last_builds.fact(None)
            listed = None if kept is None else kept.value.get(build.id)
            if listed is None or not server_failed(exc):
                raise
            self.staleness.stale(exc)
            return listed

    async def downloads(self, build: Build) -> list[Download]:
        """The build's downloads, in the API's order (those of other builds left out)."""

        async def load() -> tuple[list[Download], bool]:
            # A build already known to be over has all its files: its listing is final,
            # and those its object carries are all there are: no request for them.
            fresh = self.fresh_build(build)
            dropped = build.id in self._dropped
            self._dropped.discard(build.id)

            def mine(found: list[Download]) -> list[Download]:
                limit = self._id_limit
                return [d for d in found if d.build_id in (None, build.id) and d.id < limit]

            embedded = _embedded(fresh) if fresh.is_final and not dropped else None
            if embedded is not None:
                return mine(embedded), True
            listed = await self._last_downloads.load(
                build.id,
                lambda v: self._ask(lambda: self._api.downloads_if_changed(build.id, v)),
                mine,
            )
            return listed, fresh.is_final

        return await self._last_downloads.get(build.id, lambda: self._downloads.get(build.id, load))

    async def groups(self, kind: GroupKind) -> GroupRecords:
        """The records of the projects or of the patterns."""

        async def load() -> GroupRecords:
            ask = (
                self._api.projects_if_changed
                if kind == "project"
                else self._api.patterns_if_changed
            )
            return await self._last_groups.load(
                kind, lambda v: self._ask(lambda: ask(v)), lambda found: found
            )

        return await self._last_groups.get(kind, lambda: self._groups.get(kind, load))

    async def group_builds(self, kind: GroupKind, group_id: int) -> dict[int, Build]:
        """A project's or pattern's builds, by id, from the API's ``project_id`` or
        ``pattern_id`` filter."""

        def make(found: list[Build]) -> dict[int, Build]:
            builds = self._remember_builds([b for b in found if belongs_to(b, kind, group_id)])
            cached = self._builds.peek(None)
            if cached is not None and not builds.keys() <= cached.keys():
                self._builds.invalidate()  # A build newer than the cached list: ask again.
            return builds

        async def load() -> tuple[dict[int, Build], bool]:
            filters = {f"{kind}_id": group_id}
            builds = await self._last_group_builds.load(
                (kind, group_id),
                lambda v: self._ask(lambda: self._api.builds_if_changed(v, filters)),
                make,
                self._remember_records,
            )
            return builds, all(b.is_final for b in builds.values())

        key = (kind, group_id)
        return await self._last_group_builds.get(key, lambda: self._group_builds.get(key, load))

    # -- what is known without a request -------------------------------------------------

    def fresh_build(self, build: Build) -> Build:
        """The newest record of a build that is cached, without a request."""
        record = self._records.peek(build.id)
        if record is not None:
            return record
        builds = self._builds.peek(None)
        return builds.get(build.id, build) if builds is not None else build

    def cached_record(self, build_id: int) -> Build | None:
        """The build's record if one is fresh (from GET /builds/:id or a list of builds)."""
        return self._records.peek(build_id)

    def cached_downloads(self, build_id: int) -> list[Download] | None:
        """The build's downloads if a fresh listing of them is cached."""
        return self._downloads.peek(build_id)

    def cached_group_builds(self, kind: GroupKind, group_id: int) -> dict[int, Build] | None:
        """A group's builds if a fresh listing of them is cached."""
        return self._group_builds.peek((kind, group_id))

    # -- the server: reached or not ------------------------------------------------------

    async def start(self, background: trio.Nursery | None = None) -> None:
        """Check the server at mount time, once, with a request for no builds at all
        (`ApiClient.check_builds`: the URL and the token in one small request, where the
        list of builds may take seconds). The server out of reach (no connection, no answer
        within ``timeout``) with a list kept from an earlier mount: offline (see the module
        docstring). Another transient failure is asked again with the retries; anything
        else (a 401, no list kept) is raised.

        Then the list of builds, in ``background`` (a mount is ready without it) or before
        this returns: the list kept from an earlier mount is served at once (`builds` waits
        for it to be read, never for the server), and asked again; without one it is asked,
        and `builds` waits for it. A failure there is logged; the next `builds` asks again.
        """
        if background is None:
            try:
                async with trio.open_nursery() as nursery:
                    await self.start(nursery)
            except BaseExceptionGroup as group:  # raised bare, as with a ``background``
                failure = group.exceptions[0] if len(group.exceptions) == 1 else None
                if isinstance(failure, MkwfsError):
                    raise failure from group
                raise
            return
        kept: list[Fetched[dict[int, Build]] | None] = []
        read, served = trio.Event(), trio.Event()
        self._serving_kept = served

        async def read_kept() -> None:
            # Nothing else reads the store yet: its list (megabytes of JSON) is read aside.
            try:
                kept.append(await trio.to_thread.run_sync(self._last_builds.fact, None))
            finally:
                read.set()

        background.start_soon(read_kept)
        try:
            try:
                await self._ask(lambda: self._api.check_builds(retry=False))
            except TransportError as exc:
                await read.wait()
                if not kept or kept[0] is None:
                    raise
                self.staleness.go_offline(exc)
                self._api.offline = True
                self._kept_served(served)
                return
            except ApiError as exc:
                if not is_transient(exc):
                    raise
                await self._ask(self._api.check_builds)
        except BaseException:
            self._kept_served(served)
            raise
        background.start_soon(self._load_at_start, read, kept, served)

    def _kept_served(self, served: trio.Event) -> None:
        if self._serving_kept is served:
            self._serving_kept = None
        served.set()

    async def _load_at_start(
        self,
        read: trio.Event,
        kept: list[Fetched[dict[int, Build]] | None],
        served: trio.Event,
    ) -> None:
        """`start`'s list of builds: the kept one served (then ``served`` is set), then the
        server's."""
        await read.wait()
        try:
            if not kept or kept[0] is None:
                self._kept_served(served)
                await self._builds.get(None, self._fetch_builds)  # `builds` joins it
                return
            if self._builds.peek(None) is None:
                self._remember_records(kept[0].value)
                self._builds.put(None, kept[0].value)
            self._kept_served(served)
            builds = await self._fetch_builds()
        except MkwfsError as exc:
            log.warning("the list of builds failed at mount time (asked again when used): %s", exc)
            return
        finally:
            self._kept_served(served)
        self._builds.put(None, builds)

    async def check(self) -> None:
        """Ask the server for the list of builds now, offline or not (``ApiError`` when it
        fails); when it answers, the catalog is online and the list fresh."""
        was_offline = self.staleness.offline
        builds = await self._fetch_builds(offline=True)
        self._api.offline = False
        self._builds.put(None, builds)
        if was_offline:
            self._retry_all_now()

    # -- changes from outside ------------------------------------------------------------

    def seed_builds(self, builds: list[Build]) -> None:
        """Use a build list fetched elsewhere (the startup check) as the cached one."""
        usable = self._remember_builds(builds)
        self._builds.put(None, usable)
        self._last_builds.put(None, usable)

    def invalidate_build(self, build_id: int) -> None:
        """Forget what is cached of one build: its downloads and its record."""
        self._dropped.add(build_id)
        self._downloads.invalidate(build_id)
        self._records.invalidate(build_id)
        self._last_downloads.retry_now()
        self._last_records.retry_now()

    def invalidate_group(self, kind: GroupKind, group_id: int) -> None:
        """Forget which builds one project or pattern has."""
        self._group_builds.invalidate((kind, group_id))
        self._last_group_builds.retry_now()

    def invalidate_groups(self, kind: GroupKind) -> None:
        """Forget the projects or the patterns, and which builds each group has."""
        self._groups.invalidate(kind)
        self._group_builds.invalidate()
        self._last_groups.retry_now()
        self._last_group_builds.retry_now()

    def invalidate(self) -> None:
        """Forget every cached fact (the next access asks the API again). The last good
        copies stay for stale-if-error."""
        self._builds.invalidate()
        self._downloads.invalidate()
        self._records.invalidate()
        self._groups.invalidate()
        self._group_builds.invalidate()
        self._retry_all_now()

    def _retry_all_now(self) -> None:
        for last in (
            self._last_builds, self._last_downloads, self._last_records, self._last_groups,
            self._last_group_builds,
        ):  # fmt: skip
            last.retry_now()
