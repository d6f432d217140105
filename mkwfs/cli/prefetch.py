"""``mkwfs prefetch``: have the daemons of mounts fetch files into their content caches.

The command only finds, for each PATH, the mkwfs mount it is on and its path there, and
sends the paths to that mount's daemon over the control socket (``mkwfs.fuse.prefetch``);
the daemon resolves them (directories recursively), fetches each body once, ``-j`` at a
time, straight into its cache, and streams progress back: a tqdm bar on a terminal. No
file is read through the mount, and the files below a directory are not even looked at
here: a ``stat`` of a file whose size is not known yet would cost a request.

A PATH is taken as written (``..`` lexically) when it is on a mount; the daemon follows
the links in it (``latest``). One that is not is resolved (``realpath`` of its directory)
in case a link outside the mounts leads into one (``~/mk -> /mnt/mkwfs/builds``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mkwfs.cli.running import human_size
from mkwfs.fuse import control
from mkwfs.fuse.checks import StartupError, mkwfs_root
from mkwfs.remote.errors import ConfigError

#: Seconds the command waits for the daemon's next line (it sends one every few seconds).
LINE_TIMEOUT = 60.0


@dataclass
class PrefetchResult:
    """What the daemons did, over all the mounts named."""

    fetched: int = 0
    cached: int = 0
    bytes: int = 0
    #: (path, what went wrong), for each file or path that could not be had.
    failures: list[tuple[Path, str]] = field(default_factory=list)
    #: The mount points asked.
    roots: list[Path] = field(default_factory=list)

    @property
    def files(self) -> int:
        """Files that are in the cache now."""
        return self.fetched + self.cached


def on_mount(path: Path) -> tuple[Path, str]:
    """The mount point of the mkwfs mount ``path`` is on, and the path relative to it;
    ``ConfigError`` when it is on none. Nothing on the mount is looked at (see the module
    docstring)."""
    absolute = Path(os.path.abspath(path))
    try:
        root, where = mkwfs_root(absolute), absolute
    except StartupError:
        # Perhaps through a link outside any mount, such as ~/mk -> /mnt/mkwfs/builds.
        where = Path(os.path.realpath(absolute.parent), absolute.name)
        try:
            root = mkwfs_root(where)
        except StartupError as exc:
            raise ConfigError(f"{path} is not on an mkwfs mount") from exc
    return root, os.fsdecode(where.relative_to(root)) if where != root else "."


def prefetch(paths: Sequence[Path], *, jobs: int) -> PrefetchResult:
    """Have each mount's daemon fetch the files at or under ``paths`` on it, ``jobs`` at a
    time. ``ConfigError`` for a path on no mkwfs mount (nothing is fetched then);
    ``ControlError`` when a daemon does not answer."""
    if jobs < 1:
        raise ConfigError("-j must be at least 1")
    by_root: dict[Path, list[str]] = {}
    for path in paths:
        root, relative = on_mount(path)
        by_root.setdefault(root, []).append(relative)
    result = PrefetchResult(roots=list(by_root))
    for root, relatives in by_root.items():
        answer = _prefetch_on(root, relatives, jobs)
        summary = answer["summary"]
        result.fetched += summary["fetched"]
        result.cached += summary["cached"]
        result.bytes += summary["bytes"]
        result.failures += [(root / f["path"], f["error"]) for f in answer["failures"]]
    return result


def _prefetch_on(root: Path, relatives: list[str], jobs: int) -> dict[str, Any]:
    with tqdm(
        total=0, unit="file", desc=f"prefetch {root}", disable=None, file=sys.stderr,
        leave=False, dynamic_ncols=True,
    ) as bar:  # fmt: skip

        def show(progress: dict[str, Any]) -> None:
            if bar.total != progress["files"]:
                bar.total = progress["files"]
            bar.update(progress["done"] - bar.n)
            bar.set_postfix_str(
                "finding files" if progress["resolving"] else
                f"{human_size(progress['received'])} received, {progress['failed']} failed",
                refresh=False,
            )  # fmt: skip

        message = {"command": "prefetch", "paths": relatives, "jobs": jobs}
        return control.request(root, message, timeout=LINE_TIMEOUT, on_progress=show)
