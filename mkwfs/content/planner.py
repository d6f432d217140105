"""Which range to fetch for a read: pure decisions, no I/O and no trio.

A read from the start of a body fetches all of it, open-ended (``cp``, ``cat``, checksums:
one request per file). A read elsewhere, on a server that honours ``Range``, fetches only a
window: the tail of the file for reads near its end (where ZIPs keep their directory), the
member it falls in once the ZIP's directory is known (``ziphints``), else ``random_window``
bytes; a reader that carries on where a window ended (or the kernel reading ahead past a
member) gets a window twice as large, up to ``max_window``. A read of just a big member's
local header (``zipview`` reads it alone before the member's first bytes) fetches only the
member's head, ``head_window`` bytes, for a content-type sniff reads no more than the first
16 KiB; a reader going on past the head gets the rest of the member in one fetch. A window
never takes bytes that are on disk or that a running fetch is about to bring. A server that
ignores ``Range`` gets one sequential download per body, never several.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from mkwfs.content.config import ContentConfig
from mkwfs.content.extents import Extents
from mkwfs.content.ziphints import LOCAL_HEADER_SIZE

#: A range to fetch: ``[start, end)``, or from ``start`` to the end of the body (None).
Range = tuple[int, int | None]


class ReadPlanner:
    """The planning of one body's fetches: it remembers where the windows it planned end, so
    that a read there is taken for a reader going on."""

    def __init__(self, config: ContentConfig) -> None:
        self._config = config
        #: Where planned windows end, and their sizes: a read there is a reader going on.
        self.streaks: dict[int, int] = {}
        #: Offsets where ZIP members begin, once the directory was read (see ziphints).
        self.boundaries: list[int] | None = None
        #: Where planned member heads end, and where their members end.
        self.heads: dict[int, int] = {}

    def plan(
        self,
        offset: int,
        until: int,
        *,
        size: int | None,
        ranges: bool | None,
        extents: Extents,
        fetch_starts: Iterable[int] = (),
    ) -> Range:
        """The range to fetch for a read whose first missing byte is ``offset`` and that
        needs the bytes up to ``until``, in a body of ``size`` bytes (None: not known) of
        which ``extents`` are on disk, while fetches run from each of ``fetch_starts``;
        ``ranges`` tells whether the server honours Range (None: not known yet)."""
        if size is None or ranges is False:
            return 0, None
        limit = extents.missing_until(offset, size)
        for start in fetch_starts:  # nor what a running fetch is about to bring
            if start > offset:
                limit = min(limit, start)
        config = self._config
        tail = max(size - config.tail_window, 0)
        if offset >= tail:
            return extents.missing_since(offset, tail), limit
        if (rest := self._rest_of_member(offset, limit)) is not None:
            return rest
        # Just after a window, a member or bytes on disk: a reader going on, or the kernel
        # reading ahead (up to a megabyte, in several requests) past what was wanted. Small
        # at first, twice as large each time.
        near = [n for end, n in self.streaks.items() if 0 <= offset - end <= config.near]
        if offset > 0 and (near or extents.present_until(offset - 1) == offset):
            grown = min(max(2 * max(near, default=0), config.random_window), config.max_window)
            return self._window(offset, min(offset + grown, limit))
        if self.boundaries is not None:
            return self._member(offset, until, limit)
        if offset == 0:
            return 0, None
        return self._window(offset, min(offset + config.random_window, limit))

    def _member(self, offset: int, until: int, limit: int) -> tuple[int, int]:
        """The fetch for a read once the members are known: the head of a big member whose
        local header alone is read, else to the end of the member that the read ends in
        (the kernel reads whole pages, so a read may begin in the member before), and
        ``spill`` on: the kernel reads ahead past the end of what a ZIP reader wants."""
        boundaries, config = self.boundaries, self._config
        assert boundaries is not None
        after = bisect.bisect_left(boundaries, until)
        member_end = boundaries[after] if after < len(boundaries) else limit
        at = bisect.bisect_left(boundaries, offset)
        at_header = at < len(boundaries) and boundaries[at] == offset
        at_header = at_header and until - offset <= LOCAL_HEADER_SIZE
        if at_header and member_end - offset > config.head_window:
            end = min(offset + config.head_window, limit)
            self.heads[end] = member_end
            return offset, end
        end = min(max(member_end + config.spill, offset + config.min_fetch), limit)
        self.streaks[end] = 0  # past the member: start small again
        return offset, end

    def _rest_of_member(self, offset: int, limit: int) -> tuple[int, int] | None:
        """For a reader going on past a member's head (a read of the whole member, not a
        sniff): the rest of the member and ``spill``, in one fetch; None for other reads."""
        config = self._config
        for head_end, member_end in self.heads.items():
            if 0 <= offset - head_end <= config.near and offset < member_end:
                del self.heads[head_end]
                end = min(max(member_end + config.spill, offset + config.min_fetch), limit)
                self.streaks[end] = 0
                return offset, end
        return None

    def _window(self, start: int, end: int) -> tuple[int, int]:
        self.streaks[end] = end - start  # a read there will be one going on
        return start, end
