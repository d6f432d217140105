"""Startup checks: what must hold before mkwfs mounts, each failure one actionable line.

These run in the ``mkwfs mount`` process before a daemon is started, so a problem is
reported on the caller's terminal with a non-zero exit and nothing is mounted. (The checks
that need the server, credentials and URL, run in the daemon before it mounts; see
``cli.startup_message``.) Mount table lookups read ``/proc/self/mountinfo`` and never touch
the mounted filesystem, which may hang.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from mkwfs.remote.errors import MkwfsError

MKWFS_FSTYPE = "fuse.mkwfs"
NO_FUSERMOUNT = "fusermount3 not found: install the fuse3 package (apt-get install fuse3)"


class StartupError(MkwfsError):
    """A precondition of mounting does not hold (the message says how to fix it)."""


def mount_entry(path: Path) -> tuple[str, str] | None:
    """``(device, type)`` of the filesystem mounted exactly at ``path`` (``("0:52",
    "fuse.mkwfs")``), or None."""
    target = os.path.abspath(path)
    found = None
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as mounts:
        for line in mounts:
            fields = line.split(" ")
            if len(fields) > 4 and _unescape(fields[4]) == target:
                after = line.split(" - ", 1)[1].split(" ") if " - " in line else []
                # The last one mounted is on top.
                found = (fields[2], after[0] if after else "unknown")
    return found


def mounted_type(path: Path) -> str | None:
    """The filesystem type mounted exactly at ``path`` (``fuse.mkwfs``), or None."""
    entry = mount_entry(path)
    return None if entry is None else entry[1]


def _unescape(field: str) -> str:
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def mkwfs_root(path: Path) -> Path:
    """The mount point of the mkwfs mount that holds ``path``; ``StartupError`` if none does."""
    current = Path(os.path.abspath(path))
    for candidate in (current, *current.parents):
        kind = mounted_type(candidate)
        if kind == MKWFS_FSTYPE:
            return candidate
        if kind is not None:
            break
    raise StartupError(f"{path} is not on an mkwfs mount")


def check_mountpoint(path: Path) -> None:
    """An existing, empty directory that nothing is mounted on, and that we may mount on."""
    kind = mounted_type(path)
    if kind is not None:
        raise StartupError(
            f"{path} is already mounted ({kind}); unmount it first: mkwfs umount {path}"
        )
    if not path.exists():
        raise StartupError(f"mountpoint {path} does not exist; create it: mkdir -p {path}")
    if not path.is_dir():
        raise StartupError(f"mountpoint {path} is not a directory")
    try:
        with os.scandir(path) as entries:
            if next(entries, None) is not None:
                raise StartupError(f"mountpoint {path} is not empty; mount on an empty directory")
    except PermissionError as exc:
        raise StartupError(f"mountpoint {path} is not readable for you") from exc
    if os.geteuid() != 0 and not os.access(path, os.W_OK):
        raise StartupError(f"mountpoint {path} is not writable for you, so FUSE will refuse it")


def check_fuse(
    device: Path = Path("/dev/fuse"), which: Callable[[str], str | None] = shutil.which
) -> None:
    """``/dev/fuse`` usable and ``fusermount3`` installed."""
    if not device.exists():
        raise StartupError(
            f"{device} does not exist: load the fuse module (modprobe fuse), or in a "
            "container pass --device /dev/fuse"
        )
    if not os.access(device, os.R_OK | os.W_OK):
        raise StartupError(f"{device} is not readable and writable for you")
    if which("fusermount3") is None:
        raise StartupError(NO_FUSERMOUNT)


def check_allow_other(fuse_conf: Path = Path("/etc/fuse.conf"), uid: int | None = None) -> None:
    """``allow_other`` is allowed: to root, or where fuse.conf has ``user_allow_other``."""
    if (os.geteuid() if uid is None else uid) == 0:
        return
    try:
        lines = fuse_conf.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    if not any(line.split("#", 1)[0].strip() == "user_allow_other" for line in lines):
        raise StartupError(
            f"--allow-other needs the line user_allow_other in {fuse_conf} (or mount as root)"
        )
