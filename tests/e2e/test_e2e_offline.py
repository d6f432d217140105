"""End-to-end tests of listings that last, through real FUSE mounts against the emulator:
a remount with the server stopped serves from disk (offline) and goes online by itself when
it is back; a remount with the server up revalidates with 304s; a corrupt catalog database
is set aside; a token the server rejects stays an error at mount time."""

from __future__ import annotations

import errno
import json
import os
import re
import sqlite3
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from mkwfs.emulator import BUILDING_BUILD, CANCELED_BUILD, DEMO_BUILD, LARGE_BUILD, Emulator
from tests.conftest import MountFactory, is_mounted, wait_for
from tests.e2e.test_e2e_mount import errno_of, mkwfs, read_cold, results

pytestmark = pytest.mark.e2e


def status(path: Path, env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    done = mkwfs("status", "--json", path, env=env)
    return done.returncode, json.loads(done.stdout)


def sizes(build_dir: Path) -> dict[str, int]:
    return {name: os.stat(build_dir / name).st_size for name in results(build_dir)}


def test_a_remount_without_the_server_serves_what_was_seen_then_goes_online(
    mount_fs: MountFactory, emulator: Emulator, mkwfs_env: dict[str, str], tmp_path: Path
) -> None:
    emulator.remove_build(CANCELED_BUILD)  # comes back while the mount is offline
    first = mount_fs("--timeout", "3")
    builds = sorted(os.listdir(first.path / "builds"))
    demo = first.path / "builds" / str(DEMO_BUILD)
    seen = sizes(demo)
    small = min(seen, key=seen.__getitem__)
    body = read_cold(demo / small)
    first.unmount()

    emulator.config = replace(emulator.config, down=True)
    again = mount_fs("--timeout", "3", cache_dir=first.cache_dir)
    assert "mounted OFFLINE" in again.log()
    demo = again.path / "builds" / str(DEMO_BUILD)
    assert sorted(os.listdir(again.path / "builds")) == builds
    assert sizes(demo) == seen
    assert read_cold(demo / small) == body
    uncached = next(name for name in seen if name != small)
    assert errno_of(read_cold, demo / uncached) == errno.EIO
    # A finished build's files come with its object in the list of builds, though its
    # directory was never opened; a running build's list was never asked: EIO.
    assert len(results(again.path / "builds" / str(LARGE_BUILD))) == 1000
    assert errno_of(os.listdir, again.path / "builds" / str(BUILDING_BUILD)) == errno.EIO
    code, state = status(again.path, mkwfs_env)
    assert code == 1 and not state["api"]["reachable"]
    assert state["offline"]["offline"] and state["offline"]["since"] is not None
    text = mkwfs("status", again.path, env=mkwfs_env).stdout
    assert "OFFLINE since" in text

    emulator.config = replace(emulator.config, down=False)
    emulator.restore_build(CANCELED_BUILD)
    assert wait_for(lambda: "the mount is ONLINE" in again.log(), 20)
    assert str(CANCELED_BUILD) in os.listdir(again.path / "builds")
    assert len(results(again.path / "builds" / str(LARGE_BUILD))) == 1000
    code, state = status(again.path, mkwfs_env)
    assert code == 0 and not state["offline"]["offline"]


_REQUEST_LINE = re.compile(r"mkwfs\.api: (GET|HEAD|POST) (\S+) -> (\S+), (\d+) bytes")


def requests_in(log: str) -> list[tuple[str, str, str, int]]:
    """The requests a daemon logged (with --debug): method, path, outcome, body bytes."""
    return [(m[1], m[2], m[3], int(m[4])) for m in _REQUEST_LINE.finditer(log)]


@pytest.mark.parametrize("embedded", [True, False], ids=["files-in-build-objects", "files-listed"])
def test_a_remount_revalidates_the_listings_seen_with_304s(
    mount_fs: MountFactory, emulator: Emulator, embedded: bool
) -> None:
    """Build objects that carry their files: the list of builds is the one request (a 304);
    without them a build's list is revalidated too. Before them, the mount's check: a page
    of no builds."""
    emulator.config = replace(emulator.config, etags=True, embed_downloads=embedded)
    first = mount_fs("--debug")
    os.listdir(first.path / "builds")
    seen = sizes(first.path / "builds" / str(DEMO_BUILD))
    first.unmount()
    assert all(status == "200" for _, _, status, _ in requests_in(first.log()))

    again = mount_fs("--debug", cache_dir=first.cache_dir)
    os.listdir(again.path / "builds")
    assert sizes(again.path / "builds" / str(DEMO_BUILD)) == seen
    lists = 1 if embedded else 2
    # The list of builds is revalidated once the mount is ready, beside the listings.
    assert wait_for(lambda: len(requests_in(again.log())) == 1 + lists, timeout=10)
    check, *revalidated = requests_in(again.log())
    assert check[:3] == ("GET", "/api/v1/builds?%24limit=0", "200") and check[3] < 100, check
    assert [(m, s) for m, _, s, _ in revalidated] == [("GET", "304")] * lists, revalidated
    assert sum(size for *_, size in revalidated) == 0
    # The 304 of the list of builds may come before the counters were reset, or after.
    assert lists - 1 <= emulator.stats.not_modified <= lists


def test_a_corrupt_catalog_database_is_set_aside_and_made_again(
    mount_fs: MountFactory, tmp_path: Path
) -> None:
    cache = tmp_path / "corrupt-cache"
    cache.mkdir()
    (cache / "catalog.db").write_bytes(b"\x00garbage, not SQLite\n" * 1000)
    mounted = mount_fs(cache_dir=cache)
    assert "not a usable catalog database" in mounted.log()
    assert str(DEMO_BUILD) in os.listdir(mounted.path / "builds")
    mounted.unmount()
    (aside,) = cache.glob("catalog.db.broken-*")
    assert aside.read_bytes().startswith(b"\x00garbage")
    db = sqlite3.connect(cache / "catalog.db")
    try:
        kinds = {row[0] for row in db.execute("SELECT kind FROM facts")}
    finally:
        db.close()
    assert "builds" in kinds


def test_a_rejected_token_is_an_error_at_mount_time_though_listings_are_kept(
    mount_fs: MountFactory, mkwfs_env: dict[str, str], emulator_url: str, tmp_path: Path
) -> None:
    first = mount_fs()
    os.listdir(first.path / "builds")
    first.unmount()
    mountpoint = tmp_path / "rejected"
    mountpoint.mkdir()
    env = {**mkwfs_env, "MKWFS_TOKEN": "not-a-token"}
    argv = [
        sys.executable, "-m", "mkwfs", "mount", str(mountpoint), "--foreground",
        "--api-url", emulator_url, "--cache-dir", str(first.cache_dir),
    ]  # fmt: skip
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL,
        check=False,
    )  # fmt: skip
    assert done.returncode == 1 and "rejected the token" in done.stderr
    assert not is_mounted(mountpoint)
