"""What the emulated server counts: requests by endpoint, body bytes, connections."""

from __future__ import annotations

import threading
from collections import Counter


class Stats:
    """The counters of one emulator; thread-safe to change, plain to read.

    ``requests`` counts every request by endpoint key (see `ENDPOINTS`; other paths count as
    ``"<METHOD> <path>"``), including failed and injected ones but not refused connections;
    ``bytes_sent`` counts download body bytes that went out; ``connections`` are those open
    to the HTTP servers now, ``peak_connections`` the most at once."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.bytes_sent = 0
        self.connections = 0
        self.peak_connections = 0
        self._lock = threading.Lock()

    def count_request(self, key: str) -> None:
        with self._lock:
            self.requests[key] += 1

    def count_sent(self, count: int) -> None:
        with self._lock:
            self.bytes_sent += count

    def count_connection(self, change: int) -> None:
        with self._lock:
            self.connections += change
            self.peak_connections = max(self.peak_connections, self.connections)

    def reset(self) -> None:
        """Zero the counters; the peak of connections starts again from those open now."""
        with self._lock:
            self.requests.clear()
            self.bytes_sent = 0
            self.peak_connections = self.connections
