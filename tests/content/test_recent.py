"""The recent bytes serve what they hold, exactly."""

from __future__ import annotations

from mkwfs.content.recent import RecentBytes


def test_recent_writes_serve_only_what_they_hold_exactly() -> None:
    body = RecentBytes(limit=25)
    body.keep(0, b"0123456789")
    body.keep(10, b"abcdefghij")
    assert body.get(5, 15) == b"56789abcde"
    assert body.get(10, 20) == b"abcdefghij"
    assert body.get(15, 25) is None  # not all of it
    body.keep(40, b"KLMNOPQRST")  # over the limit: the oldest goes
    assert body.get(0, 5) is None
    assert body.get(12, 14) == b"cd"
    assert body.get(45, 50) == b"PQRST"
