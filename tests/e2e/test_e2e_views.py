"""End-to-end tests of the views beyond /builds, through a real FUSE mount against the
emulator: /unpacked against ``unzip``, projects and patterns with ``latest``, xattrs and
``.build.json`` against the API, names desktops probe for, and browsing like a file manager.
Counts are of requests the test itself caused (fixtures zero them once the mount is up).
"""

from __future__ import annotations

import errno
import json
import os
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from mkwfs.emulator import BIG_BUILD, BIG_ZIP, BUILDING_BUILD, DEMO_BUILD
from tests.e2e.test_e2e_mount import (
    DOWNLOAD,
    build_object,
    errno_of,
    plain_names,
    read_cold,
    run,
)

if TYPE_CHECKING:
    from mkwfs.emulator import Emulator
    from tests.conftest import MountFactory

pytestmark = pytest.mark.e2e

PROBES = (
    ".hidden", ".Trash", f".Trash-{os.getuid()}", ".xdg-volume-info", "autorun.inf",
    ".directory", ".DS_Store", "desktop.ini", "._CORE_DV_HLS_2026-4-2_10_14.zip",
)  # fmt: skip


def test_unpacked_view_equals_unzip(mnt: Path, emulator: Emulator, tmp_path: Path) -> None:
    for name, download in plain_names(emulator, DEMO_BUILD).items():
        expected = tmp_path / "unzipped" / name
        expected.mkdir(parents=True)
        done = run("unzip", "-q", emulator.body_path(download["id"]), "-d", expected)
        assert done.returncode == 0, done.stderr
        unpacked = mnt / "unpacked" / str(DEMO_BUILD) / name
        diff = run("diff", "-r", expected, unpacked)
        assert diff.returncode == 0, f"{name}: {diff.stdout}{diff.stderr}"
    iics = next(n for n, d in plain_names(emulator, DEMO_BUILD).items() if d["type"] == "IICS")
    nested = list((mnt / "unpacked" / str(DEMO_BUILD) / iics).rglob("*.zip"))
    assert nested and all(p.is_file() for p in nested)  # IICS packages stay files
    with zipfile.ZipFile(nested[0]) as inner:  # and open as archives themselves
        assert inner.testzip() is None


def test_unpacked_sizes_and_times_come_from_the_archive(mnt: Path, emulator: Emulator) -> None:
    name, download = next(iter(plain_names(emulator, DEMO_BUILD).items()))
    unpacked = mnt / "unpacked" / str(DEMO_BUILD) / name
    with zipfile.ZipFile(emulator.body_path(download["id"])) as original:
        for info in original.infolist():
            if info.is_dir():
                continue
            st = os.stat(unpacked / info.filename)
            assert st.st_size == info.file_size, info.filename
            assert st.st_mtime == time.mktime((*info.date_time, 0, 0, -1)), info.filename
            assert st.st_mode & 0o777 == 0o444


def test_cold_big_zip_listing_and_one_member_fetch_a_few_mb(
    mount_fs: MountFactory, emulator: Emulator
) -> None:
    """Relies on ``ContentStore.read`` fetching far-away regions with Range: the end of
    the archive, its central directory and one member, not the hundreds of MB before."""
    big_body = emulator.body_path(BIG_ZIP)  # generated before the clock starts
    mnt = mount_fs(watchdog=200).path
    unpacked = mnt / "unpacked" / str(BIG_BUILD) / emulator.downloads[BIG_ZIP]["name"]
    with zipfile.ZipFile(big_body) as original:
        smallest = min(
            (i for i in original.infolist() if not i.is_dir()), key=lambda i: i.file_size
        )
        listed = {str(p.relative_to(unpacked)) for p in unpacked.rglob("*") if p.is_file()}
        assert listed == {i.filename for i in original.infolist() if not i.is_dir()}
        assert read_cold(unpacked / smallest.filename) == original.read(smallest)
    assert os.path.getsize(big_body) >= 100 * 2**20
    assert emulator.bytes_sent <= 8 * 2**20, f"{emulator.bytes_sent} bytes fetched"


def test_projects_and_patterns_link_into_builds(mnt: Path, emulator: Emulator) -> None:
    project = mnt / "projects" / "DEMO_PROJECT"
    expected = sorted(str(b["id"]) for b in emulator.builds if b["project_id"] == 402)
    assert sorted(os.listdir(project)) == sorted([*expected, "latest"])
    for build_id in expected:
        assert os.readlink(project / build_id) == f"../../builds/{build_id}"
        assert (project / build_id).resolve() == mnt / "builds" / build_id
    pattern = mnt / "patterns" / "DWH_DDL"
    expected = sorted(str(b["id"]) for b in emulator.builds if 811 in b["patterns"])
    assert sorted(p for p in os.listdir(pattern) if p != "latest") == expected
    latest = os.readlink(project / "latest")
    assert sorted(os.listdir(project / "latest")) == sorted(os.listdir(mnt / "builds" / latest))
    assert emulator.requests[DOWNLOAD] == 0


def test_latest_follows_a_build_that_finishes(mount_fs: MountFactory, emulator: Emulator) -> None:
    mnt = mount_fs("--dir-ttl", "1", "--attr-ttl", "1").path
    latest = mnt / "projects" / "DEMO_PROJECT" / "latest"
    try:
        before = os.readlink(latest)
        assert before != str(BUILDING_BUILD)
        emulator.finish_build(BUILDING_BUILD)
        deadline = time.monotonic() + 10
        while os.readlink(latest) == before and time.monotonic() < deadline:
            time.sleep(0.2)
        assert os.readlink(latest) == str(BUILDING_BUILD)
        assert os.path.isdir(latest)
        status = os.getxattr(mnt / "builds" / str(BUILDING_BUILD), "user.mkw.build.status")
        assert status == b"FINISHED"
    finally:
        emulator.reset_data()


def test_xattrs_and_build_json_match_the_api(mnt: Path, emulator: Emulator) -> None:
    for build_id in (DEMO_BUILD, BUILDING_BUILD):
        build = build_object(emulator, build_id)
        directory = mnt / "builds" / str(build_id)
        assert json.loads((directory / ".build.json").read_bytes()) == build
        assert ".build.json" in os.listdir(directory)
        names = os.listxattr(directory)  # what getfattr -d lists
        for field in ("status", "progress", "message", "project_id", "name"):
            assert f"user.mkw.build.{field}" in names
            value = os.getxattr(directory, f"user.mkw.build.{field}")
            assert value == str(build[field]).encode()
        for download in build["downloads"][:2]:
            path = directory / download["name"]
            for field in ("id", "pattern_id", "type", "version", "build_id"):
                key = f"user.mkw.download.{field}"
                assert key in os.listxattr(path)
                assert os.getxattr(path, key) == str(download[field]).encode()
    building = mnt / "builds" / str(BUILDING_BUILD)
    assert errno_of(os.getxattr, building, "user.mkw.build.build_end") == errno.ENODATA
    assert errno_of(os.getxattr, building, "user.nothing") == errno.ENODATA
    # What ls -l asks of every file: ENOTSUP makes it stop asking for the rest of the mount.
    for name in ("security.selinux", "system.posix_acl_access"):
        assert errno_of(os.getxattr, building, name) == errno.ENOTSUP
    assert emulator.requests[DOWNLOAD] == 0


def test_build_json_of_a_running_build_expires_fast(
    mount_fs: MountFactory, emulator: Emulator
) -> None:
    mnt = mount_fs("--dir-ttl", "1", "--attr-ttl", "1").path
    path = mnt / "builds" / str(BUILDING_BUILD) / ".build.json"
    record = next(b for b in emulator.builds if b["id"] == BUILDING_BUILD)
    original = record["message"]
    try:
        assert json.loads(path.read_bytes())["message"] == original
        record["message"] = "Generating pattern STAGE_PC (3/3), a much longer message now"
        time.sleep(1.5)
        assert json.loads(path.read_bytes()) == build_object(emulator, BUILDING_BUILD)
    finally:
        record["message"] = original


def test_probe_names_cost_no_request(mnt: Path, emulator: Emulator) -> None:
    name = next(iter(plain_names(emulator, DEMO_BUILD)))
    directories = [
        mnt, mnt / "builds", mnt / "builds" / str(DEMO_BUILD), mnt / "projects",
        mnt / "patterns", mnt / "unpacked", mnt / "unpacked" / str(DEMO_BUILD),
        mnt / "unpacked" / str(DEMO_BUILD) / name,
    ]  # fmt: skip
    for directory in directories:
        assert os.path.isdir(directory)
    emulator.reset_counters()
    for directory in directories:
        for probe in PROBES:
            assert errno_of(os.stat, directory / probe) == errno.ENOENT, directory / probe
    assert sum(emulator.requests.values()) == 0, emulator.requests


def test_browsing_like_a_file_manager_downloads_nothing(mnt: Path, emulator: Emulator) -> None:
    """Open the mount and each directory a file manager would show on the way to a build:
    read each directory, stat and query the xattrs of every entry, look for the usual
    hidden files. Reading the root again costs nothing."""

    def show(directory: Path) -> list[Path]:
        entries = [directory / n for n in os.listdir(directory)]
        for entry in entries:
            os.lstat(entry)
            os.stat(entry)
            os.listxattr(entry, follow_symlinks=False)
        for probe in (".hidden", ".directory"):
            errno_of(os.stat, directory / probe)
        return entries

    for top in show(mnt):
        show(top)
    for path in ("projects/DEMO_PROJECT", f"builds/{DEMO_BUILD}", f"unpacked/{DEMO_BUILD}"):
        show(mnt / path)
    show(mnt / "projects" / "DEMO_PROJECT" / "latest")
    assert emulator.requests[DOWNLOAD] == 0
    before = sum(emulator.requests.values())
    show(mnt)
    assert sum(emulator.requests.values()) == before


def test_a_file_that_is_not_a_zip_has_an_eio_unpacked_view_and_the_mount_lives(
    mount_fs: MountFactory, emulator: Emulator
) -> None:
    broken = emulator.add_download(DEMO_BUILD, "NOT_A_ZIP.zip")
    body = emulator.body_path(broken)
    try:
        # Same length (the emulator keeps each body's size), no longer a ZIP.
        page = b"<html>an error page saved as a result</html>\n"
        size = body.stat().st_size
        body.write_bytes((page * (size // len(page) + 1))[:size])
        mounted = mount_fs()
        view = mounted.path / "unpacked" / str(DEMO_BUILD) / "NOT_A_ZIP.zip"
        with pytest.raises(OSError) as failure:
            os.listdir(view)
        assert failure.value.errno == errno.EIO
        # The file itself is still served as it is, and everything else still works.
        plain = mounted.path / "builds" / str(DEMO_BUILD) / "NOT_A_ZIP.zip"
        assert plain.read_bytes() == body.read_bytes()
        assert str(DEMO_BUILD) in os.listdir(mounted.path / "builds")
        assert f"download {broken}" in mounted.log() or str(broken) in mounted.log()
    finally:
        body.unlink(missing_ok=True)  # never leave a broken body for a later run to reuse
