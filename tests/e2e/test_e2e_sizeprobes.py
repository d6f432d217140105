"""End-to-end: ``--size-probes`` against a server that counts a HEAD as a download
(Feathers 5.0.50, the emulator's ``head_counts``, with ``send_buffer``: Range ignored), and
the downloads a build's object carries, through a real FUSE mount.

What the customer sees is the emulator's ``downloaded`` per download (``stats.downloaded``):
with ``off``, exactly one per file read and none for a file only listed.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from mkwfs.emulator import DEMO_BUILD, FAILED_BUILD, LARGE_BUILD
from tests.e2e.test_e2e_feathers import listed_sizes, mount_state, play, true_sizes
from tests.e2e.test_e2e_mount import plain_names, run, sha256_file

if TYPE_CHECKING:
    from mkwfs.emulator import Emulator
    from tests.conftest import MountFactory

pytestmark = pytest.mark.e2e

LIST = "GET /api/v1/downloads"
DOWNLOAD = "GET /api/v1/downloads/:id"
HEAD = "HEAD /api/v1/downloads/:id"
#: Feathers 5.0.50 sending files with ``res.send(buffer)``: a HEAD counts, Range is ignored.
COUNTING_HEADS = {"head_counts": True, "send_buffer": True}


def ids_of(emulator: Emulator, build_id: int) -> list[int]:
    return [download["id"] for download in emulator.downloads_of(build_id)]


def test_off_counts_one_download_per_file_read_and_none_per_file_listed(
    mount_fs: MountFactory, emulator: Emulator, tmp_path: Path, mkwfs_env: dict[str, str]
) -> None:
    play(emulator, COUNTING_HEADS)
    mounted = mount_fs("--size-probes", "off")
    builds = mounted.path / "builds"
    demo = ids_of(emulator, DEMO_BUILD)

    # ls -l: the names, sizes 0 (unknown), nothing counted.
    shown = listed_sizes(builds / str(DEMO_BUILD))
    assert shown == dict.fromkeys(plain_names(emulator, DEMO_BUILD), 0)
    assert (
        listed_sizes(builds / str(LARGE_BUILD)).keys() == plain_names(emulator, LARGE_BUILD).keys()
    )
    assert sum(emulator.stats.downloaded.values()) == 0

    # unzip -t of a file never read nor sized: unzip seeks to the end first.
    (lonely,) = plain_names(emulator, FAILED_BUILD).items()
    tested = run("unzip", "-t", builds / str(FAILED_BUILD) / lonely[0])
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "No errors detected" in tested.stdout
    assert emulator.stats.downloaded == {lonely[1]["id"]: 1}

    # cp -r: every byte right, one download each.
    copy = tmp_path / "copy"
    done = run("cp", "-r", builds / str(DEMO_BUILD), copy)
    assert done.returncode == 0, done.stderr
    for name, download in plain_names(emulator, DEMO_BUILD).items():
        assert sha256_file(copy / name) == emulator.body_sha256(download["id"]), name
        with zipfile.ZipFile(copy / name) as archive:
            assert archive.testzip() is None
    # ... and unzip -t of what was read costs nothing more.
    for name in plain_names(emulator, DEMO_BUILD):
        tested = run("unzip", "-t", builds / str(DEMO_BUILD) / name)
        assert tested.returncode == 0, tested.stdout + tested.stderr

    assert emulator.stats.downloaded == {**dict.fromkeys(demo, 1), lonely[1]["id"]: 1}
    assert emulator.requests[HEAD] == 0
    assert emulator.requests[DOWNLOAD] == len(demo) + 1
    # Once read, ls -l shows the true sizes.
    assert listed_sizes(builds / str(DEMO_BUILD)) == true_sizes(emulator, DEMO_BUILD)
    state = mount_state(mounted, mkwfs_env)
    assert state["api"]["counted_downloads"] == len(demo) + 1
    assert "HEAD /api/v1/downloads/:id" not in state["api"]["requests"]


def test_stat_probes_only_the_files_stated(
    mount_fs: MountFactory, emulator: Emulator, mkwfs_env: dict[str, str]
) -> None:
    """Two stats in a row in the 1000-file build would start a scan's probes ahead (32 at
    once) with ``ahead``; with ``stat`` each costs its own HEAD and nothing else."""
    play(emulator, COUNTING_HEADS)
    mounted = mount_fs("--size-probes", "stat")
    large = mounted.path / "builds" / str(LARGE_BUILD)
    names = sorted(plain_names(emulator, LARGE_BUILD))
    truth = true_sizes(emulator, LARGE_BUILD)
    for name in names[:3]:
        assert os.stat(large / name).st_size == truth[name]
    assert emulator.requests[HEAD] == 3
    assert sum(emulator.stats.downloaded.values()) == 3

    assert listed_sizes(mounted.path / "builds" / str(DEMO_BUILD)) == true_sizes(
        emulator, DEMO_BUILD
    )
    assert emulator.requests[HEAD] == 3 + len(ids_of(emulator, DEMO_BUILD))
    assert emulator.requests[DOWNLOAD] == 0
    counted = mount_state(mounted, mkwfs_env)["api"]["counted_downloads"]
    assert counted == emulator.requests[HEAD]


def test_a_gets_headers_give_the_size_for_good(
    mount_fs: MountFactory, emulator: Emulator, tmp_path: Path
) -> None:
    """A file read (part of it) is never probed: its GET's headers gave the size, which the
    size log keeps for the next mount, even once the body left the cache."""
    play(emulator, COUNTING_HEADS)
    cache = tmp_path / "shared-cache"
    first = mount_fs("--size-probes", "off", cache_dir=cache)
    names = plain_names(emulator, DEMO_BUILD)
    name, download = next(iter(sorted(names.items())))
    with open(first.path / "builds" / str(DEMO_BUILD) / name, "rb") as file:
        assert file.read(100)
    first.unmount()
    assert emulator.requests[HEAD] == 0 and emulator.stats.downloaded == {download["id"]: 1}
    size_log = (cache / "content" / "sizes").read_text().split()
    assert str(download["id"]) in size_log[::2]
    for leftover in (cache / "content").glob(f"{download['id']}*"):
        leftover.unlink()  # only the size log tells its size now

    second = mount_fs(cache_dir=cache)  # --size-probes ahead: ls -l probes the others
    assert listed_sizes(second.path / "builds" / str(DEMO_BUILD)) == true_sizes(
        emulator, DEMO_BUILD
    )
    assert emulator.requests[HEAD] == len(names) - 1
    assert emulator.stats.downloaded[download["id"]] == 0


def test_the_downloads_in_build_objects_spare_the_list_requests(
    mount_fs: MountFactory, emulator: Emulator
) -> None:
    mounted = mount_fs()
    builds = mounted.path / "builds"
    for build_id in (DEMO_BUILD, LARGE_BUILD, FAILED_BUILD):
        shown = sorted(name for name in os.listdir(builds / str(build_id)) if name[0] != ".")
        assert shown == sorted(plain_names(emulator, build_id))
    assert emulator.requests[LIST] == 0

    play(emulator, {"embed_downloads": False})  # objects without them: a list each
    other = mount_fs()
    shown = [n for n in os.listdir(other.path / "builds" / str(DEMO_BUILD)) if n[0] != "."]
    assert sorted(shown) == sorted(plain_names(emulator, DEMO_BUILD))
    assert emulator.requests[LIST] == 1
