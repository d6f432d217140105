"""The bytes of a body that last arrived, kept in memory: a reader right behind a fetch is
served at once, before the bytes are on disk, and without a trip to the disk (and the
thread that would make it)."""

from __future__ import annotations

import collections


class RecentBytes:
    """The last ``limit`` bytes (about) that arrived, as the pieces they came in."""

    def __init__(self, limit: int) -> None:
        #: The bytes kept; a new limit takes effect at the next ``keep``.
        self.limit = limit
        self._pieces: collections.deque[tuple[int, bytes]] = collections.deque()
        self._size = 0

    def keep(self, offset: int, data: bytes) -> None:
        """Keep ``data``, the bytes at ``offset``; the oldest pieces go past the limit."""
        self._pieces.append((offset, data))
        self._size += len(data)
        while self._size > self.limit:
            self._size -= len(self._pieces.popleft()[1])

    def holds(self, start: int, end: int) -> bool:
        """Whether the recent bytes hold all of ``[start, end)``."""
        return self._views(start, end) is not None

    def get(self, start: int, end: int) -> bytes | memoryview | None:
        """``[start, end)``, or None unless the recent bytes hold all of it: a view when one
        piece holds it (no copy), else a copy."""
        parts = self._views(start, end)
        if parts is None:
            return None
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _views(self, start: int, end: int) -> list[memoryview] | None:
        """Views of the recent bytes that make up ``[start, end)``; None if any is missing."""
        parts = []
        while start < end:
            for offset, data in reversed(self._pieces):
                if offset <= start < offset + len(data):
                    piece = memoryview(data)[start - offset : end - offset]
                    parts.append(piece)
                    start += len(piece)
                    break
            else:
                return None
        return parts
