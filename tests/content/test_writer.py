"""The disk writer puts every byte where it belongs, direct or through the page cache."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from mkwfs.content.writer import DiskWriter, tail


@pytest.mark.parametrize("direct", [True, False])
def test_the_disk_writer_puts_every_piece_where_it_belongs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, direct: bool
) -> None:
    """Direct writes where O_DIRECT exists, else through the page cache. Unaligned starts,
    pieces of any size, held-back ends, a final write."""
    if not direct:
        monkeypatch.delattr(os, "O_DIRECT")
    path = tmp_path / "body.part"
    rng = random.Random(7)
    payload = rng.randbytes(9 * 2**20 + 123)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        writer = DiskWriter(os.fspath(path), fd)
        assert writer.direct == direct
        position = 1000  # an unaligned start, as a ranged fetch has
        held = b""
        while position < len(payload):
            sizes = [rng.randrange(1, 700_000) for _ in range(rng.randrange(1, 5))]
            pieces, at = [held], position + len(held)
            for size in sizes:
                pieces.append(payload[at : at + size])
                at += size
            final = at >= len(payload)
            written = writer.write(pieces, position, final)
            assert written <= sum(map(len, pieces))
            assert final or not direct or (position + written) % 4096 == 0
            held = tail(pieces, sum(map(len, pieces)) - written)
            position += written
            if final:
                assert not held
        writer.close()
        assert os.pread(fd, len(payload), 0)[1000:] == payload[1000:]
    finally:
        os.close(fd)
