"""End-to-end tests of ``mkwfs prefetch`` through a real FUSE mount against the emulator on
loopback: the daemon fetches each body once itself (no FUSE reads), a second prefetch costs
no request, failures are named per file with exit 1 and the mount stays alive, ``-j`` bounds
the bodies in flight, links and ``unpacked/`` resolve to their downloads, and the progress
lines and summary tell what happened. Every command runs with a timeout; mounts are cleaned
up by the ``mounts`` fixture (see conftest)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from mkwfs.emulator import DEMO_BUILD, FORBIDDEN_BUILD, LARGE_BUILD, Emulator
from mkwfs.fuse import control
from tests.conftest import MountFactory, wait_for
from tests.e2e.test_e2e_mount import mkwfs, plain_names, read_cold
from tests.helpers import configure

GET = "GET /api/v1/downloads/:id"
HEAD = "HEAD /api/v1/downloads/:id"


def status(mnt: Path) -> dict[str, Any]:
    return control.request(mnt, {"command": "status"})


@pytest.mark.parametrize("probes", ["ahead", "off"])
def test_prefetch_fetches_each_file_once_without_fuse_reads(
    mount_fs: MountFactory, emulator: Emulator, mkwfs_env: dict[str, str], probes: str
) -> None:
    """One GET per file; with ``--size-probes ahead`` a HEAD first (the sizes that let a
    small body come whole), with ``off`` none: on a server that counts a HEAD as a download
    (``head_counts``), each file is counted exactly once."""
    configure(emulator, head_counts=probes == "off")
    mnt = mount_fs("--dir-ttl", "3600", "--attr-ttl", "3600", "--size-probes", probes).path
    expected = plain_names(emulator, DEMO_BUILD)
    sizes = {name: emulator.body_path(d["id"]).stat().st_size for name, d in expected.items()}

    done = mkwfs("prefetch", mnt / "builds" / str(DEMO_BUILD), env=mkwfs_env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    total = sum(sizes.values())
    assert done.stdout.startswith(f"prefetched {len(expected)} files (")
    assert done.stdout.rstrip().endswith(
        f": {len(expected)} fetched, 0 already cached, 0 failed"
    ), done.stdout
    assert emulator.requests[GET] == len(expected)
    assert emulator.requests[HEAD] == (len(expected) if probes == "ahead" else 0)
    assert emulator.stats.downloaded == {d["id"]: 1 for d in expected.values()}
    state = status(mnt)
    assert state["cache"]["reads"] == 0, "the daemon read through FUSE"
    assert state["cache"]["bytes_received"] == total

    # A second prefetch costs no request for a body: each is in the cache.
    emulator.reset_counters()
    again = mkwfs("prefetch", mnt / "builds" / str(DEMO_BUILD), env=mkwfs_env, timeout=60)
    assert again.returncode == 0, again.stderr
    assert again.stdout.rstrip().endswith(
        f": 0 fetched, {len(expected)} already cached, 0 failed"
    ), again.stdout
    assert emulator.requests[GET] == emulator.requests[HEAD] == 0

    # The bodies are whole: reads need no server.
    for name, download in expected.items():
        data = read_cold(mnt / "builds" / str(DEMO_BUILD) / name)
        assert hashlib.sha256(data).hexdigest() == emulator.body_sha256(download["id"]), name
    assert emulator.requests[GET] == emulator.requests[HEAD] == 0


def test_progress_lines_and_summary_over_the_control_socket(
    mount_fs: MountFactory, emulator: Emulator
) -> None:
    mnt = mount_fs().path
    files = emulator.downloads_of(LARGE_BUILD)[:40]
    paths = [f"builds/{LARGE_BUILD}/{d['name']}" for d in files]
    progress: list[dict[str, Any]] = []
    answer = control.request(
        mnt,
        {"command": "prefetch", "paths": [*paths, f"builds/{DEMO_BUILD}/.build.json"], "jobs": 4},
        on_progress=progress.append,
    )
    summary = answer["summary"]
    total = sum(emulator.body_path(d["id"]).stat().st_size for d in files)
    received = summary.pop("received")
    assert summary == {
        "files": 40, "done": 40, "fetched": 40, "cached": 0, "failed": 0, "bytes": total,
        "resolving": False,
    }  # fmt: skip
    assert 0 < received <= total  # what reached the disk yet
    assert answer["failures"] == []
    assert answer["skipped"] == [f"builds/{DEMO_BUILD}/.build.json"]
    assert progress, "no progress line"
    assert progress[-1] == {**summary, "received": received}
    assert [p["done"] for p in progress] == sorted(p["done"] for p in progress)
    assert all(p["files"] in (0, 40) for p in progress)
    assert emulator.requests[GET] == 40


def test_failures_are_named_per_file_and_the_mount_stays_alive(
    mount_fs: MountFactory, emulator: Emulator, mkwfs_env: dict[str, str]
) -> None:
    mnt = mount_fs().path
    demo = plain_names(emulator, DEMO_BUILD)
    names = [d["name"] for d in emulator.downloads_of(DEMO_BUILD)]  # the order they are fetched
    forbidden = demo[names[-1]]["id"]
    emulator.config = replace(emulator.config, forbidden_downloads=frozenset({forbidden}))
    emulator.fail_next(GET, 500)  # the first file fetched (-j 1: in listing order)
    build = mnt / "builds" / str(DEMO_BUILD)
    refused = emulator.downloads_of(FORBIDDEN_BUILD)

    done = mkwfs(
        "prefetch", "-j", "1", build, build / "no-such.zip", mnt / "builds" / str(FORBIDDEN_BUILD),
        env=mkwfs_env, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    failed = 2 + 1 + len(refused)
    assert len(lines) == failed, lines
    by_path = {line.split(": ", 2)[1]: line.split(": ", 2)[2] for line in lines}
    assert "500" in by_path[f"{build}/{names[0]}"]
    assert "permission" in by_path[f"{build}/{names[-1]}"]
    assert by_path[f"{build}/no-such.zip"] == "no such file or directory"
    for d in refused:
        assert "permission" in by_path[f"{mnt}/builds/{FORBIDDEN_BUILD}/{d['name']}"]
    ok = len(names) - 2
    assert done.stdout.rstrip().endswith(f": {ok} fetched, 0 already cached, {failed} failed")

    # The mount is alive and serves the files that failed once the server lets it.
    emulator.config = replace(emulator.config, forbidden_downloads=frozenset())
    for name in (names[0], names[-1]):
        data = read_cold(build / name)
        assert hashlib.sha256(data).hexdigest() == emulator.body_sha256(demo[name]["id"])


def test_jobs_bound_the_bodies_in_flight(
    mount_fs: MountFactory, emulator: Emulator, mkwfs_env: dict[str, str]
) -> None:
    """With every body stalled after its first bytes until released, the GETs the server
    has seen are the bodies in flight. Each status request goes through the daemon's loop
    after the GETs it had started: had it started more than -j, the server would count them."""
    mnt = mount_fs().path
    files = emulator.downloads_of(LARGE_BUILD)[:5]
    emulator.config = replace(emulator.config, stall_after=100)
    process = subprocess.Popen(
        [sys.executable, "-m", "mkwfs", "prefetch", "-j", "2",
         *(mnt / "builds" / str(LARGE_BUILD) / d["name"] for d in files)],
        env=mkwfs_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        for in_flight in (2, 4, 5):

            def started(n: int = in_flight) -> bool:
                return emulator.requests[GET] >= n

            assert wait_for(started, 30)
            status(mnt)
            assert emulator.requests[GET] == in_flight
            emulator.release_stalls()
        out, err = process.communicate(timeout=60)
    finally:
        emulator.release_stalls()
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert out.rstrip().endswith(": 5 fetched, 0 already cached, 0 failed"), out
    assert emulator.requests[GET] == 5


def test_a_prefetch_interrupted_leaves_the_mount_serving(
    mount_fs: MountFactory, emulator: Emulator, mkwfs_env: dict[str, str]
) -> None:
    mnt = mount_fs().path
    files = emulator.downloads_of(LARGE_BUILD)[:3]
    emulator.config = replace(emulator.config, stall_after=100)
    process = subprocess.Popen(
        [sys.executable, "-m", "mkwfs", "prefetch", "-j", "1",
         *(mnt / "builds" / str(LARGE_BUILD) / d["name"] for d in files)],
        env=mkwfs_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert wait_for(lambda: emulator.requests[GET] >= 1, 30)
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130
    emulator.release_stalls()
    emulator.config = replace(emulator.config, stall_after=None)
    assert status(mnt)["api"]["reachable"]
    data = read_cold(mnt / "builds" / str(LARGE_BUILD) / files[0]["name"])
    assert hashlib.sha256(data).hexdigest() == emulator.body_sha256(files[0]["id"])
    # (the mounts fixture fails the test if the daemon logged a traceback)


def test_links_and_unpacked_resolve_to_their_downloads(
    mount_fs: MountFactory, emulator: Emulator, mkwfs_env: dict[str, str]
) -> None:
    mnt = mount_fs().path
    demo = plain_names(emulator, DEMO_BUILD)
    one = next(iter(demo))
    done = mkwfs(
        "prefetch", mnt / "projects" / "DEMO_PROJECT" / str(DEMO_BUILD),
        mnt / "unpacked" / str(DEMO_BUILD), mnt / "builds" / str(DEMO_BUILD) / one,
        env=mkwfs_env, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith(f": {len(demo)} fetched, 0 already cached, 0 failed")
    assert emulator.requests[GET] == len(demo), "a download fetched twice"
    assert emulator.requests[HEAD] <= len(demo)  # size probes (--size-probes ahead)


def test_a_zip_member_prefetches_its_whole_zip(
    mount_fs: MountFactory, emulator: Emulator, mkwfs_env: dict[str, str]
) -> None:
    mnt = mount_fs().path
    demo = plain_names(emulator, DEMO_BUILD)
    name = min(demo, key=lambda n: emulator.body_path(demo[n]["id"]).stat().st_size)
    with zipfile.ZipFile(emulator.body_path(demo[name]["id"])) as archive:
        inside = next(i.filename for i in archive.infolist() if not i.is_dir())
    member = mnt / "unpacked" / str(DEMO_BUILD) / name / inside
    done = mkwfs("prefetch", member, env=mkwfs_env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith(": 1 fetched, 0 already cached, 0 failed")
    assert emulator.stats.downloaded == {demo[name]["id"]: 1}  # the index came with the body

    emulator.reset_counters()
    data = read_cold(mnt / "builds" / str(DEMO_BUILD) / name)
    assert hashlib.sha256(data).hexdigest() == emulator.body_sha256(demo[name]["id"])
    assert sum(emulator.requests.values()) == 0, dict(emulator.requests)
    assert os.path.getsize(mnt / "builds" / str(DEMO_BUILD) / name) == len(data)
