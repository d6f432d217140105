"""Paths of the mount to the downloads whose bodies they show (``mkwfs prefetch``): through
the tree's nodes, without FUSE, without a size probe and without a body.

- a file of a build (``builds/<id>/<name>``) is its download;
- a directory is everything below it; links (``projects/<p>/<id>``, ``latest``) are
  followed, in the path and in the directories walked, and each directory is walked once;
- an archive directory (``unpacked/<id>/<name>``) is its ZIP's download, found without
  reading the archive; a member (file or directory) inside it is its whole ZIP too, but
  finding the member reads the archive's index (a size probe, and the central directory:
  for a ZIP over 128 KiB a ranged GET of its tail before the GET of the whole body);
- ``.build.json`` is made from the build's record, not downloaded: it is skipped.

Each download is wanted once, however many paths name it. A path that does not resolve,
or a directory whose listing fails, is a failure named by its path; the others go on.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from mkwfs.content.prefetch import Wanted
from mkwfs.remote.errors import MkwfsError, NoSuchEntry
from mkwfs.tree.attributes import Kind
from mkwfs.tree.builds import BuildJson, File
from mkwfs.tree.node import Node
from mkwfs.tree.tree import ROOT_INODE, Tree
from mkwfs.tree.unpacked import ArchiveDir, MemberDir, MemberFile

#: Links followed to resolve one path, at most (as Linux's ``MAXSYMLINKS``).
MAX_LINKS = 40


class LinkLoop(MkwfsError):
    """A path goes through more links than ``MAX_LINKS``, or a link leads out of the mount."""

    errno = errno.ELOOP


@dataclass
class Resolution:
    """What a set of paths comes to: the downloads wanted, in the order found."""

    wanted: list[Wanted] = field(default_factory=list)
    #: (path, reason) of each path or directory that could not be resolved or listed.
    failures: list[tuple[str, str]] = field(default_factory=list)
    #: Files that are no download (``.build.json``): nothing to fetch.
    skipped: list[str] = field(default_factory=list)


def show(parts: Sequence[bytes]) -> str:
    """A path relative to the mount root as a str (``os.fsdecode``: the bytes survive)."""
    return os.fsdecode(b"/".join(parts)) or "."


def _reason(exc: MkwfsError) -> str:
    if isinstance(exc, NoSuchEntry):
        return "no such file or directory"
    return str(exc) or type(exc).__name__


class _Resolver:
    def __init__(self, root: Node) -> None:
        self._root = root
        self._downloads: set[int] = set()
        self._dirs: set[int] = set()
        self.result = Resolution()

    async def resolve(self, parts: Sequence[bytes]) -> tuple[Node, list[bytes]]:
        """The node at ``parts`` (relative to the root), following links, and its path
        without links."""
        todo = list(parts)
        nodes, names = [self._root], list[bytes]()
        links = 0
        while todo:
            name = todo.pop(0)
            if name in (b"", b"."):
                continue
            if name == b"..":
                if names:
                    names.pop()
                    nodes.pop()
                continue
            child = await nodes[-1].lookup(name)
            if child.attributes().kind is Kind.SYMLINK:
                links += 1
                target = await child.readlink()
                if links > MAX_LINKS or target.startswith(b"/"):
                    where = show([*names, name])
                    raise LinkLoop(f"{where}: too many links, or a link out of the mount")
                todo = target.split(b"/") + todo
                continue
            nodes.append(child)
            names.append(name)
        return nodes[-1], names

    def _want(self, path: str, download_id: int) -> None:
        if download_id not in self._downloads:
            self._downloads.add(download_id)
            self.result.wanted.append(Wanted(path, download_id))

    async def collect(self, node: Node, parts: list[bytes]) -> None:
        """Add what ``node`` (at ``parts``) shows: its download(s), or all below it."""
        stack = [(node, parts)]
        while stack:
            node, parts = stack.pop()
            path = show(parts)
            match node:
                case File():
                    self._want(path, node.download.id)
                case ArchiveDir():
                    self._want(path, node.download.id)
                case MemberFile() | MemberDir():
                    self._want(path, node.archive.download.id)
                case BuildJson():
                    self.result.skipped.append(path)
                case _ if node.attributes().is_dir:
                    if node.ino in self._dirs:
                        continue
                    self._dirs.add(node.ino)
                    try:
                        children = await self._children(node, parts)
                    except MkwfsError as exc:
                        self.result.failures.append((path, _reason(exc)))
                        continue
                    stack.extend(reversed(children))
                case _:
                    self.result.skipped.append(path)

    async def _children(self, node: Node, parts: list[bytes]) -> list[tuple[Node, list[bytes]]]:
        """The entries of a directory, links followed (a link that does not resolve is a
        failure of its own)."""
        children = []
        for name, child in await node.list():
            if child.attributes().kind is not Kind.SYMLINK:
                children.append((child, [*parts, name]))
                continue
            try:
                children.append(await self.resolve([*parts, name]))
            except MkwfsError as exc:
                self.result.failures.append((show([*parts, name]), _reason(exc)))
        return children


async def resolve_downloads(tree: Tree, paths: Sequence[bytes]) -> Resolution:
    """The downloads at or under ``paths`` (relative to the mount root, ``/``-separated),
    each once; see the module docstring. Raises nothing for a path: failures are listed."""
    # The root node, as a directory handle of "/" would see it; nothing is remembered for
    # the kernel (no lookup counts): the nodes met here are not the kernel's.
    root = (await tree.snapshot(ROOT_INODE)).directory
    resolver = _Resolver(root)
    for path in paths:
        try:
            node, parts = await resolver.resolve(path.split(b"/"))
        except MkwfsError as exc:
            resolver.result.failures.append((os.fsdecode(path), _reason(exc)))
            continue
        await resolver.collect(node, parts)
    return resolver.result
