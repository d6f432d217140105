"""``mount.fuse.mkwfs``: the mount(8) helper for fstab entries of type ``fuse.mkwfs``.

mount(8) and mount.fuse3 call it as ``mount.fuse.mkwfs SOURCE MOUNTPOINT [-o OPTIONS]``
(plus ``-s``, ``-n`` and ``-v``, which change nothing here, ``-t TYPE``, and ``-f``, which
means "do not mount"). It runs ``mkwfs mount MOUNTPOINT -o OPTIONS`` in this process, so it
needs no ``$PATH`` (mount(8) may clear it) and returns once the mount is ready.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

#: mount(8) may run helpers with no PATH; mkwfs then needs one to find fusermount3.
STANDARD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
USAGE = "usage: mount.fuse.mkwfs SOURCE MOUNTPOINT [-o OPTIONS]"


class UsageError(Exception):
    """The arguments are not those mount(8) passes."""


@dataclass(frozen=True)
class HelperCall:
    """What mount(8) asked for: where to mount, with which options, and whether for real."""

    mountpoint: str
    options: str
    fake: bool

    def mount_argv(self) -> list[str]:
        """The ``mkwfs`` command line that carries the call out."""
        return ["mount", self.mountpoint, *(["-o", self.options] if self.options else [])]


def parse(argv: Sequence[str]) -> HelperCall:
    """Read mount(8)'s arguments (without the program name)."""
    if len(argv) < 2:
        raise UsageError(USAGE)
    mountpoint, rest = argv[1], list(argv[2:])
    options: list[str] = []
    fake = False
    while rest:
        arg = rest.pop(0)
        if arg in ("-o", "-t"):
            if not rest:
                raise UsageError(USAGE)
            value = rest.pop(0)
            if arg == "-o":
                options.append(value)
        elif arg.startswith("-o"):
            options.append(arg[2:])
        elif arg == "-f":
            fake = True
        elif arg not in ("-s", "-n", "-v"):
            raise UsageError(USAGE)
    return HelperCall(mountpoint, ",".join(options), fake)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        call = parse(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return 1
    if call.fake:
        return 0
    from mkwfs.cli.main import main as mkwfs_main

    os.environ.setdefault("PATH", STANDARD_PATH)
    return mkwfs_main(call.mount_argv())
