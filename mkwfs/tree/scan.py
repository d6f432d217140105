"""Scan detection: someone going through a build's files stat by stat (``ls -l``, a file
manager), and the sizes probed ahead of them.

When two files of one build need a size probe within ``SCAN_WINDOW`` seconds, a scan is
under way: the sizes of the second file and of the files after it (in name order, as
``ls`` goes), ``SCAN_FIRST`` in all, are then probed concurrently in the background,
instead of one stat at a time. Once the scan is half way through them, twice as many
follow, up to ``SCAN_AHEAD`` at a time, so that its probes never run dry; a few stats (a
copy of a few files) start only a few probes.

Readdir takes part (``Scanner.handout``): while nobody is seen to stat the directory's
files, it hands out at most ``READDIR_UNKNOWN`` files of unknown size at once, so that a
scan shows itself early (a plain ``ls`` probes nothing; it only reads in more steps); during
a scan it hands out ``READDIR_BATCH`` files with their sizes, probed and waited for, which
the kernel then caches, so that their stats do not reach this process.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import trio

from mkwfs.content.store import ContentStore
from mkwfs.remote.models import Download

#: Seconds between two size probes in one build that make it look like a directory scan.
SCAN_WINDOW = 2.0
#: How many files from the one a scan stats have their sizes probed ahead at first.
SCAN_FIRST = 32
#: The most probed ahead at once (the step doubles up to this).
SCAN_AHEAD = 128
#: A readdir hands out at most this many files of unknown size while no scan is seen.
READDIR_UNKNOWN = 32
#: During a scan, a readdir hands out this many files with their sizes.
READDIR_BATCH = 64
#: How many entries a readdir looks at: more than fit at once.
READDIR_WINDOW = 512

#: A build's files: unique name -> download, in name order (the order ``ls`` stats them).
Listing = Mapping[bytes, Download]


@dataclass
class Scan:
    """Someone going through a build's files in name order (``ls -l``): what is probed."""

    build_id: int
    names: list[bytes]
    listing: Listing
    #: ``names`` before this index have been given to ``prefetch_sizes``.
    horizon: int = 0
    #: How many were given the last time, and how many will be the next.
    given: int = 0
    step: int = SCAN_FIRST
    #: When the scan was last seen going on (a stat or a readdir of its directory).
    seen: float = 0.0
    #: A probe for a readdir failed: the rest goes stat by stat (see ``Scanner.handout``).
    failed: bool = False


class Scanner:
    """Follows the stats and readdirs of build directories, and probes sizes ahead of a
    scan (see the module docstring). One scan at a time: the newest.

    ``listing_of(build id)`` gives a build's cached listing, or None; ``timeout`` bounds
    how long a readdir waits for its batch's sizes."""

    def __init__(
        self,
        content: ContentStore,
        listing_of: Callable[[int], Listing | None],
        *,
        timeout: float,
        timer: Callable[[], float] = trio.current_time,
    ) -> None:
        self._content = content
        self._listing_of = listing_of
        self._timeout = timeout
        self._timer = timer
        #: (build id, download id, time) of the last stat that needed a size probe.
        self._last_probe: tuple[int, int, float] | None = None
        #: The scan going on, if any.
        self._scan: Scan | None = None

    def stat(self, build_id: int, download: Download, name: bytes) -> None:
        """A stat of a file of a build, about to be answered (probing its size if need be)."""
        if self._content.known_size(download.id) is None:
            self._notice_probe(build_id, download.id, name)
        elif self._scan is not None:
            self._follow(self._scan, build_id, name)

    def _notice_probe(self, build_id: int, download_id: int, name: bytes) -> None:
        now = self._timer()
        last = self._last_probe
        self._last_probe = (build_id, download_id, now)
        if last is None or last[0] != build_id or last[1] == download_id:
            return
        if now - last[2] > SCAN_WINDOW:
            return
        listing = self._listing_of(build_id)
        if listing is not None:
            names = list(listing)  # in name order, as ls and file managers stat
            scan = self._scan = Scan(build_id, names, listing, seen=now)
            scan.horizon = bisect.bisect_left(names, name)
            self._probe_ahead(scan)

    def _follow(self, scan: Scan, build_id: int, name: bytes) -> None:
        """A stat of a file whose size is known: probe on if the scan nears its horizon."""
        if build_id != scan.build_id:
            return
        scan.seen = self._timer()
        if scan.horizon >= len(scan.names):
            return
        if bisect.bisect_left(scan.names, name) >= scan.horizon - scan.given // 2:
            self._probe_ahead(scan)

    def _probe_ahead(self, scan: Scan) -> None:
        ahead = scan.names[scan.horizon : scan.horizon + scan.step]
        scan.horizon += len(ahead)
        scan.given, scan.step = len(ahead), min(2 * scan.step, SCAN_AHEAD)
        self._content.prefetch_sizes(scan.listing[name].id for name in ahead)

    async def handout(self, build_id: int, files: list[int | None]) -> int:
        """How many of a build directory's next entries a readdir hands out now: ``files``
        holds their download ids (None for an entry that is not a download). Should a
        probe fail, the scan goes on stat by stat, where each stat tells its own error."""
        known_size = self._content.known_size
        unknown = [i for i, d in enumerate(files) if d is not None and known_size(d) is None]
        if not unknown:
            return len(files)
        scan, now = self._scan, self._timer()
        if (
            scan is None
            or scan.build_id != build_id
            or now - scan.seen > SCAN_WINDOW
            or scan.failed
        ):
            return unknown[READDIR_UNKNOWN] if len(unknown) > READDIR_UNKNOWN else len(files)
        scan.seen = now
        ahead = files[: READDIR_BATCH + SCAN_AHEAD]
        self._content.prefetch_sizes(d for d in ahead if d is not None)
        batch = [d for d in files[:READDIR_BATCH] if d is not None]
        with trio.move_on_after(self._timeout):
            await self._content.wait_for_sizes(batch)
        if any(known_size(d) is None for d in batch):
            scan.failed = True
        return READDIR_BATCH
