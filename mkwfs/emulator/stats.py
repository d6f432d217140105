"""What the emulated server counts: requests by endpoint and by kind of path, answers of
bodies, 304s, body bytes sent and read, connections."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any, Final, Literal

#: What a path is for: a login, a list (find), one record (get), a body, or anything else.
PathKind = Literal["auth", "list", "record", "body", "other"]

_BODY_GET: Final = "GET /api/v1/downloads/:id"
_BODY_HEAD: Final = "HEAD /api/v1/downloads/:id"


class Stats:
    """The counters of one emulator; thread-safe to change, plain to read.

    ``requests`` counts every request by endpoint key (see `ENDPOINTS`; other paths count as
    ``"<METHOD> <path>"``), including failed and injected ones but not refused connections,
    and ``kinds`` the same requests by `PathKind`. ``downloaded`` counts, per download id,
    what the server counted in that download's ``downloaded`` (a GET, and a HEAD with
    ``config.head_counts``). ``not_modified`` counts 304 answers. ``bytes_sent`` counts body
    bytes that went out, ``bytes_read`` body bytes the server read from its files to answer
    (what it sends, or with ``config.send_buffer`` the whole file for each GET and HEAD).
    ``connections`` are those open to the HTTP servers now, ``peak_connections`` the most at
    once."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.kinds: Counter[PathKind] = Counter()
        self.downloaded: Counter[int] = Counter()
        self.not_modified = 0
        self.bytes_sent = 0
        self.bytes_read = 0
        self.connections = 0
        self.peak_connections = 0
        self._lock = threading.Lock()

    @property
    def body_gets(self) -> int:
        """GETs of bodies (``GET /api/v1/downloads/:id``), whatever they were answered."""
        return self.requests[_BODY_GET]

    @property
    def body_heads(self) -> int:
        """HEADs of bodies (``HEAD /api/v1/downloads/:id``), whatever they were answered."""
        return self.requests[_BODY_HEAD]

    def snapshot(self) -> dict[str, Any]:
        """Every counter at one moment, as plain JSON-able values (download ids as strings),
        for a process that reports them (a benchmark's server child)."""
        with self._lock:
            return {
                "requests": dict(self.requests), "kinds": dict(self.kinds),
                "downloaded": {str(k): v for k, v in self.downloaded.items()},
                "body_gets": self.requests[_BODY_GET], "body_heads": self.requests[_BODY_HEAD],
                "not_modified": self.not_modified, "bytes_sent": self.bytes_sent,
                "bytes_read": self.bytes_read, "connections": self.connections,
                "peak_connections": self.peak_connections,
            }  # fmt: skip

    def count_request(self, key: str, kind: PathKind) -> None:
        with self._lock:
            self.requests[key] += 1
            self.kinds[kind] += 1

    def count_download(self, download_id: int) -> None:
        with self._lock:
            self.downloaded[download_id] += 1

    def count_not_modified(self) -> None:
        with self._lock:
            self.not_modified += 1

    def count_sent(self, count: int) -> None:
        with self._lock:
            self.bytes_sent += count

    def count_read(self, count: int) -> None:
        with self._lock:
            self.bytes_read += count

    def count_streamed(self, count: int) -> None:
        """Body bytes read from the file as they are sent."""
        with self._lock:
            self.bytes_sent += count
            self.bytes_read += count

    def count_connection(self, change: int) -> None:
        with self._lock:
            self.connections += change
            self.peak_connections = max(self.peak_connections, self.connections)

    def reset(self) -> None:
        """Zero the counters; the peak of connections starts again from those open now."""
        with self._lock:
            self.requests.clear()
            self.kinds.clear()
            self.downloaded.clear()
            self.not_modified = 0
            self.bytes_sent = 0
            self.bytes_read = 0
            self.peak_connections = self.connections
