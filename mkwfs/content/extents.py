"""Which byte ranges of a body are on disk: a sorted set of disjoint ``[start, end)`` ranges.

Adjacent and overlapping ranges merge, so ``ranges`` is always the shortest description.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable


class Extents:
    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        for start, end in ranges:
            self.add(start, end)

    def __repr__(self) -> str:
        return f"Extents({self.ranges!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Extents) and self.ranges == other.ranges

    @property
    def ranges(self) -> list[tuple[int, int]]:
        return list(zip(self._starts, self._ends, strict=True))

    @property
    def total(self) -> int:
        return sum(e - s for s, e in zip(self._starts, self._ends, strict=True))

    def add(self, start: int, end: int) -> None:
        if start >= end:
            return
        # Ranges that overlap or touch [start, end) are merged into it.
        first = bisect.bisect_left(self._ends, start)
        last = bisect.bisect_right(self._starts, end)
        if first < last:
            start = min(start, self._starts[first])
            end = max(end, self._ends[last - 1])
        self._starts[first:last] = [start]
        self._ends[first:last] = [end]

    def covers(self, start: int, end: int) -> bool:
        """Whether every byte of ``[start, end)`` is present (an empty range always is)."""
        return self.first_gap(start, end) is None

    def first_gap(self, start: int, end: int) -> tuple[int, int] | None:
        """The first missing sub-range of ``[start, end)``, or None when nothing is missing."""
        if start >= end:
            return None
        index = bisect.bisect_right(self._starts, start) - 1
        if index >= 0 and self._ends[index] > start:
            start = self._ends[index]
            index += 1
        else:
            index += 1
        if start >= end:
            return None
        gap_end = self._starts[index] if index < len(self._starts) else end
        return start, min(gap_end, end)

    def present_until(self, offset: int) -> int:
        """Where the data present at ``offset`` ends (``offset`` itself if it is missing)."""
        index = bisect.bisect_right(self._starts, offset) - 1
        if index >= 0 and self._ends[index] > offset:
            return self._ends[index]
        return offset

    def missing_until(self, offset: int, limit: int) -> int:
        """Where the gap at ``offset`` ends: the next present byte, or ``limit``."""
        index = bisect.bisect_right(self._starts, offset)
        return min(self._starts[index], limit) if index < len(self._starts) else limit

    def missing_since(self, offset: int, floor: int) -> int:
        """Where the gap that holds ``offset`` begins, not below ``floor``."""
        index = bisect.bisect_right(self._ends, offset) - 1
        return max(self._ends[index], floor) if index >= 0 else floor
