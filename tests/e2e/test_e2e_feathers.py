"""End-to-end against the emulator playing a real Feathers 5 + Express server (issue 16):
``ls -l`` and ``cp -r`` through a real FUSE mount, and what they cost on the server.

The modes (docs/feathers.md): 5.0.49 answers HEAD with 405 before authentication
(``head_405``); 5.0.50 maps HEAD to the service's ``get``, which counts it in ``downloaded``
(``head_counts``); ``res.send(buffer)`` ignores Range and reads the whole file for every
request (``send_buffer``); Feathers' standard pagination sends pages of 10 unless
``$limit`` asks for more, never more than 50 (``page_size``/``page_max``).

The mounts come from ``mount_fs``, whose ``fuse_available`` goes through ``require``: with
CI=true these tests fail, never skip, when FUSE is missing. The fixture zeroes the
emulator's counters once the mount is up; the mount's own counters (``mkwfs status
--json``) run from its start.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from mkwfs.emulator import BIG_BUILD, BIG_ZIP, DEMO_BUILD, LARGE_BUILD
from tests.e2e.test_e2e_mount import mkwfs, plain_names, run, sha256_file

if TYPE_CHECKING:
    from mkwfs.emulator import Emulator
    from tests.conftest import MountedFs, MountFactory

pytestmark = pytest.mark.e2e

LIST = "GET /api/v1/downloads"
DOWNLOAD = "GET /api/v1/downloads/:id"
HEAD = "HEAD /api/v1/downloads/:id"
MiB = 2**20

#: Feathers' standard pagination: ``paginate: {default: 10, max: 50}``.
PAGES: dict[str, Any] = {"page_size": 10, "page_max": 50}
#: Feathers 5.0.49 on Express 4.22, the file sent with ``res.send(buffer)``.
FEATHERS_5_0_49: dict[str, Any] = {"head_405": True, "send_buffer": True, **PAGES}
#: Feathers 5.0.50: HEAD answered through ``get`` and counted.
FEATHERS_5_0_50: dict[str, Any] = {"head_counts": True, "send_buffer": True, **PAGES}


def play(emulator: Emulator, modes: dict[str, Any]) -> None:
    """Set the emulator's Feathers modes (the ``emulator`` fixture restores its config)."""
    emulator.config = replace(emulator.config, **modes)


def listed_sizes(directory: Path) -> dict[str, int]:
    """Name -> size as ``ls -ln`` shows them (the hidden ``.build.json`` is not listed)."""
    listing = run("ls", "-ln", "--time-style=+%s", directory, timeout=120)
    assert listing.returncode == 0, listing.stderr
    sizes = {}
    for line in listing.stdout.splitlines()[1:]:  # the first line is "total N"
        _mode, _links, _uid, _gid, size, _mtime, name = line.split(maxsplit=6)
        sizes[name] = int(size)
    return sizes


def true_sizes(emulator: Emulator, build_id: int) -> dict[str, int]:
    return {
        name: os.path.getsize(emulator.body_path(download["id"]))
        for name, download in plain_names(emulator, build_id).items()
    }


def mount_state(mounted: MountedFs, env: dict[str, str]) -> dict[str, Any]:
    done = mkwfs("status", "--json", mounted.path, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    state: dict[str, Any] = json.loads(done.stdout)
    return state


#: A request as the ``--debug`` log's ``mkwfs.api`` lines give it, when its response closed:
#: ``GET /api/v1/downloads/5446 -> 200, 0 bytes, 3 ms`` (the bytes: the body taken).
EXCHANGE = re.compile(r"\b(GET|HEAD|POST) (/\S*) -> (\S+), (\d+) bytes, ")


def exchanges(mounted: MountedFs) -> list[tuple[str, str, str, int]]:
    """(method, path and query, status or failure, body bytes taken) of each request the
    mount's ``--debug`` log names."""
    return [(m[1], m[2], m[3], int(m[4])) for m in EXCHANGE.finditer(mounted.log())]


def body_requests(mounted: MountedFs, ids: list[int]) -> list[tuple[str, str, str, int]]:
    """The logged requests for the bodies (and sizes) of ``ids``."""
    paths = {f"/api/v1/downloads/{download_id}" for download_id in ids}
    return [exchange for exchange in exchanges(mounted) if exchange[1] in paths]


def test_ls_l_of_the_256_mib_build_receives_under_1_mib(
    mount_fs: MountFactory, emulator: Emulator, mkwfs_env: dict[str, str]
) -> None:
    """HEAD refused and Range ignored: each size is a GET answered 200 with the whole
    file, closed at its headers. ``ls -l`` shows the true sizes and the mount takes less
    than 1 MiB of body for the 256 MiB file (the server still reads it whole: ``res.send``)."""
    expected = true_sizes(emulator, BIG_BUILD)  # the bodies exist before the clock starts
    assert expected[emulator.downloads[BIG_ZIP]["name"]] >= 256 * MiB
    play(emulator, FEATHERS_5_0_49)
    mounted = mount_fs("--debug")

    assert listed_sizes(mounted.path / "builds" / str(BIG_BUILD)) == expected

    state = mount_state(mounted, mkwfs_env)
    assert state["api"]["requests"][HEAD] == 1  # the 405, once for the whole mount
    assert state["api"]["requests"][DOWNLOAD] == len(expected)
    # The log names every request and what of its body was taken: all of bytes_received.
    assert sum(taken for *_, taken in exchanges(mounted)) == state["api"]["bytes_received"]
    big = body_requests(mounted, [BIG_ZIP])
    assert [(method, outcome) for method, _, outcome, _ in big] in (
        [("GET", "200")],
        [("HEAD", "405"), ("GET", "200")],  # when the big file's HEAD was the one refused
    )
    assert sum(taken for *_, taken in big) < MiB
    assert emulator.requests[DOWNLOAD] == len(expected)
    assert emulator.stats.bytes_read == sum(expected.values())  # the server's own cost


def test_ls_l_of_1000_files_costs_at_most_20_list_requests(
    mount_fs: MountFactory, emulator: Emulator, mkwfs_env: dict[str, str]
) -> None:
    play(emulator, FEATHERS_5_0_49)
    mounted = mount_fs("--debug")
    expected = true_sizes(emulator, LARGE_BUILD)
    assert len(expected) == 1000

    assert listed_sizes(mounted.path / "builds" / str(LARGE_BUILD)) == expected

    assert emulator.requests[LIST] <= 20  # pages of 50, not 100 pages of Feathers' 10
    state = mount_state(mounted, mkwfs_env)
    assert state["api"]["requests"][HEAD] == 1
    # A size is a GET of one byte, answered 200 with the whole file and closed at its
    # headers; Feathers' get counts it: ls -l on 5.0.49 costs one download per file.
    assert state["api"]["requests"][DOWNLOAD] == len(expected)
    ids = [download["id"] for download in emulator.downloads_of(LARGE_BUILD)]
    assert emulator.stats.downloaded == dict.fromkeys(ids, 1)
    assert sum(taken for *_, taken in body_requests(mounted, ids)) < MiB


@pytest.mark.parametrize(
    ("modes", "head_per_file"),
    [
        pytest.param(FEATHERS_5_0_50, True, id="5.0.50"),
        # head_counts too: the 405 comes before get, so it cannot count.
        pytest.param({**FEATHERS_5_0_49, "head_counts": True}, False, id="5.0.49"),
    ],
)
def test_cp_r_counts_one_download_per_read_and_one_per_probe(
    mount_fs: MountFactory,
    emulator: Emulator,
    tmp_path: Path,
    modes: dict[str, Any],
    head_per_file: bool,
) -> None:
    """The exact cost of ``cp -r`` of a small build on Feathers, per file: one GET for its
    bytes, and the size probe, which Feathers counts too: on 5.0.50 a HEAD, which ``get``
    counts; on 5.0.49 a one-byte GET after the one 405 of the mount (the 405 comes before
    ``get`` and counts nothing). So ``downloaded`` is 2 for each file on both."""
    names = plain_names(emulator, DEMO_BUILD)
    ids = [download["id"] for download in names.values()]
    play(emulator, modes)
    mnt = mount_fs().path

    copy = tmp_path / "copy"
    done = run("cp", "-r", mnt / "builds" / str(DEMO_BUILD), copy)
    assert done.returncode == 0, done.stderr
    for name, download in names.items():
        assert sha256_file(copy / name) == emulator.body_sha256(download["id"]), name

    assert emulator.stats.downloaded == dict.fromkeys(ids, 2)
    if head_per_file:  # 5.0.50: a HEAD per size, a GET per read
        assert (emulator.requests[HEAD], emulator.requests[DOWNLOAD]) == (len(ids), len(ids))
    else:  # 5.0.49: one refused HEAD, then a one-byte GET per size and a GET per read
        assert (emulator.requests[HEAD], emulator.requests[DOWNLOAD]) == (1, 2 * len(ids))
