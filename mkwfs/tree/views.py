"""The pieces of the views beyond ``/builds`` that need no tree: no FUSE, no I/O.

* ``Group``/``groups``: projects and patterns as directories with safe, unique names;
* ``newest_finished``: the build ``latest`` points to;
* ``xattrs`` and ``build_json``: the API's fields as extended attributes and as the bytes of
  ``.build.json``.

The caches and stale-if-error copies that were here are the catalog's now
(``mkwfs.catalog``); their names are still importable from here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mkwfs.catalog.cache import StateAwareCache
from mkwfs.catalog.listings import GroupKind, belongs_to
from mkwfs.catalog.stale import STALE_RETRY, LastGood, Staleness, server_failed
from mkwfs.remote.models import Build
from mkwfs.tree.names import safe_name, unique_names

__all__ = [
    "BUILD_FIELDS", "DOWNLOAD_FIELDS", "GROUP_FIELDS", "STALE_RETRY", "XATTR_PREFIX", "Group",
    "GroupKind", "LastGood", "Staleness", "StateAwareCache", "build_json", "groups",
    "newest_finished", "server_failed", "xattrs",
]  # fmt: skip

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
        return belongs_to(build, self.kind, self.id)


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
