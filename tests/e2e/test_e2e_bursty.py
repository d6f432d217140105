"""Issue 16 through a real mount: a cold `cat` of the big file over a bursty stream, as a
Feathers + Express server sends it, is one GET every time. (The cache disk here keeps up
with the stream; the case of a disk writer lagging the bytes that arrived, which split the
stream before, is tests/content/test_sequential.py's.)"""

from __future__ import annotations

import dataclasses
import shlex
import subprocess
from pathlib import Path

import pytest

from mkwfs.emulator import BIG_BUILD, BIG_ZIP, Emulator
from tests.conftest import MountFactory

pytestmark = pytest.mark.e2e

GET = "GET /api/v1/downloads/:id"
MiB = 1 << 20
REPEATS = 10


def test_cold_cat_of_a_big_file_over_a_bursty_stream_is_one_get_every_time(
    mount_fs: MountFactory, emulator: Emulator
) -> None:
    emulator.config = dataclasses.replace(emulator.config, burst_bytes=4 * MiB, burst_pause=0.01)
    expected = emulator.body_sha256(BIG_ZIP)
    name = emulator.downloads[BIG_ZIP]["name"]
    gets = []
    for _ in range(REPEATS):
        mounted = mount_fs()  # a cache of its own: every read is cold
        path = Path(mounted.path, "builds", str(BIG_BUILD), name)
        done = subprocess.run(f"cat {shlex.quote(str(path))} | sha256sum", shell=True,
                              capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
        assert done.stdout.split()[0] == expected
        gets.append(emulator.requests[GET])
        mounted.unmount()
    print("GETs per cold cat of the 256 MiB file over a bursty stream:", gets)
    assert gets == [1] * REPEATS
