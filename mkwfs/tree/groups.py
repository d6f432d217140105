"""``/projects`` and ``/patterns``: a directory per project or pattern, holding a link per
build (``<build id> -> ../../builds/<build id>``) and ``latest``, a link to the id of the
newest FINISHED build (a sibling link), as of the cached listing.
"""

from __future__ import annotations

from dataclasses import dataclass

from mkwfs.catalog.listings import GroupKind
from mkwfs.remote.models import Build
from mkwfs.tree import views
from mkwfs.tree.attributes import Attributes
from mkwfs.tree.inodes import (
    BUILD_LINK_BASE,
    PATTERN_BASE,
    PATTERN_LATEST_BASE,
    PROJECT_BASE,
    PROJECT_LATEST_BASE,
    parse_id,
)
from mkwfs.tree.node import Directory, Entries, Node, show

LATEST_NAME = b"latest"

_GROUP_BASE: dict[GroupKind, int] = {"project": PROJECT_BASE, "pattern": PATTERN_BASE}
_LATEST_BASE: dict[GroupKind, int] = {
    "project": PROJECT_LATEST_BASE,
    "pattern": PATTERN_LATEST_BASE,
}
_GROUPS_PATH: dict[GroupKind, str] = {"project": "/projects", "pattern": "/patterns"}


@dataclass(frozen=True)
class GroupsDir(Directory):
    """``/projects`` or ``/patterns``: one directory per group, by unique safe name."""

    kind: GroupKind

    def path(self) -> str:
        return _GROUPS_PATH[self.kind]

    def refresh(self) -> None:
        self.ctx.catalog.invalidate_groups(self.kind)

    def _dir(self, group: views.Group) -> GroupDir:
        return GroupDir(self.ctx, _GROUP_BASE[self.kind] + group.id, group)

    async def list(self) -> Entries:
        return [(name, self._dir(g)) for name, g in (await self.ctx.groups(self.kind)).items()]

    async def child(self, name: bytes) -> Node | None:
        group = (await self.ctx.groups(self.kind)).get(name)
        return None if group is None else self._dir(group)


@dataclass(frozen=True)
class GroupDir(Directory):
    """A project or pattern: its builds (the API's ``project_id``/``pattern_id`` filter) as
    links, and ``latest`` if one of them is FINISHED."""

    group: views.Group

    def path(self) -> str:
        return f"{_GROUPS_PATH[self.group.kind]}/{show(self.group.name)}"

    def refresh(self) -> None:
        self.ctx.catalog.invalidate_group(self.group.kind, self.group.id)

    def _latest(self) -> Latest:
        return Latest(self.ctx, _LATEST_BASE[self.group.kind] + self.group.id, self.group)

    def _link(self, build: Build) -> BuildLink:
        return BuildLink(self.ctx, BUILD_LINK_BASE + build.id, build)

    async def list(self) -> Entries:
        builds = await self.ctx.builds_of(self.group)
        links: Entries = [(str(i).encode(), self._link(builds[i])) for i in sorted(builds)]
        if views.newest_finished(builds.values()) is not None:
            links.append((LATEST_NAME, self._latest()))
        return links

    async def child(self, name: bytes) -> Node | None:
        if name == LATEST_NAME:
            await self.ctx.latest(self.group)
            return self._latest()
        build_id = parse_id(name)
        if build_id is None:
            return None
        build = (await self.ctx.builds_of(self.group)).get(build_id)
        return None if build is None else self._link(build)

    async def xattrs(self) -> dict[bytes, bytes]:
        group = self.group
        return views.xattrs(group.kind, views.GROUP_FIELDS[group.kind], group.raw)


def link_target(build: Build) -> bytes:
    return f"../../builds/{build.id}".encode()


@dataclass(frozen=True)
class BuildLink(Node):
    """``<build id> -> ../../builds/<build id>``: one inode wherever it appears."""

    build: Build

    def path(self) -> str:
        return f"link to /builds/{self.build.id}"

    def attributes(self) -> Attributes:
        target = link_target(self.build)
        return self.ctx.link_attributes(self.ino, target, self.build.mtime, self.ctx.attr_ttl)

    async def readlink(self) -> bytes:
        return link_target(self.build)


@dataclass(frozen=True)
class Latest(Node):
    """``latest -> <id of the group's newest FINISHED build>``; its attributes are never
    kept by the kernel, since a finish moves it."""

    group: views.Group

    def path(self) -> str:
        return f"{_GROUPS_PATH[self.group.kind]}/{show(self.group.name)}/latest"

    def attributes(self) -> Attributes:
        group = self.group
        builds = self.ctx.catalog.cached_group_builds(group.kind, group.id) or {}
        latest = views.newest_finished(builds.values())
        if latest is None:
            return self.ctx.link_attributes(self.ino, b"", self.ctx.mount_time, 0.0)
        target = str(latest.id).encode()
        return self.ctx.link_attributes(self.ino, target, latest.mtime, 0.0)

    async def getattr(self) -> Attributes:
        await self.ctx.latest(self.group)
        return self.attributes()

    async def readlink(self) -> bytes:
        return str((await self.ctx.latest(self.group)).id).encode()
