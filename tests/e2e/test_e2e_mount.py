"""End-to-end tests: mkwfs mounted through the real kernel FUSE, against the emulator on
loopback. Every test reads and writes plain files on the mount (or runs plain commands with
``subprocess.run(..., timeout=...)``); the mount's watchdog (see conftest) bounds the rest.
Fixtures zero the emulator's request counters once the mount is up, so counts below are
what the test itself caused.
"""

from __future__ import annotations

import collections
import errno
import hashlib
import os
import signal
import stat
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pytest

from mkwfs.emulator import (
    AWKWARD_BUILD,
    BIG_BUILD,
    BIG_ZIP,
    BUILDING_BUILD,
    DEMO_BUILD,
    FORBIDDEN_BUILD,
    LARGE_BUILD,
)
from mkwfs.remote.models import parse_timestamp
from tests.helpers import configure

if TYPE_CHECKING:
    from mkwfs.emulator import Emulator
    from tests.conftest import MountedFs, MountFactory

pytestmark = pytest.mark.e2e

LIST = "GET /api/v1/downloads"
DOWNLOAD = "GET /api/v1/downloads/:id"
HEAD = "HEAD /api/v1/downloads/:id"

#: Seconds any one command on the mount may take (the big ZIP has its own limit).
TIMEOUT = 60


def run(*argv: str | Path, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run a command in the C locale, capturing its output; never raises on exit status."""
    env = dict(os.environ, LC_ALL="C")
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=timeout, env=env,
        check=False,
    )  # fmt: skip


def mkwfs(
    *args: str | Path, env: dict[str, str], timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m mkwfs ARGS`` with no stdin, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "mkwfs", *map(str, args)], capture_output=True, text=True,
        timeout=timeout, env=env, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def read_cold(path: Path) -> bytes:
    """The whole file, after asking the kernel to drop its cached pages, so that the read
    reaches the filesystem daemon again."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def errno_of(action: Callable[..., object], *args: object) -> int | None:
    """The errno ``action(*args)`` failed with, or None when it succeeded."""
    try:
        action(*args)
    except OSError as exc:
        return exc.errno
    return None


def assert_alive(mnt: Path) -> None:
    """The mount still answers: /builds lists the demo build."""
    assert str(DEMO_BUILD) in os.listdir(mnt / "builds")


def plain_names(emulator: Emulator, build_id: int) -> dict[str, dict[str, Any]]:
    """File name -> download object, for a build whose download names are all plain, unique
    file names (and so must appear on the mount as they are)."""
    downloads = emulator.downloads_of(build_id)
    names = {d["name"]: d for d in downloads}
    assert len(names) == len(downloads), "the emulator's build has duplicate names"
    for name in names:
        assert isinstance(name, str) and name and "/" not in name and not name.startswith(".")
    return names


def results(build_dir: Path) -> list[str]:
    """The result files of a build directory: its entries but the hidden ``.build.json``."""
    return [name for name in os.listdir(build_dir) if name != ".build.json"]


def build_object(emulator: Emulator, build_id: int) -> dict[str, Any]:
    return next(b for b in emulator.builds if b["id"] == build_id)


# --- browsing ---------------------------------------------------------------------------


def test_ls_l_shows_every_download_with_true_size_and_modes(mnt: Path, emulator: Emulator) -> None:
    build_dir = mnt / "builds" / str(DEMO_BUILD)
    expected = plain_names(emulator, DEMO_BUILD)

    listing = run("ls", "-ln", "--time-style=+%s", build_dir)
    assert listing.returncode == 0, listing.stderr
    shown = {}
    for line in listing.stdout.splitlines()[1:]:  # the first line is "total N"
        mode, _links, uid, _gid, size, _mtime, name = line.split(maxsplit=6)
        shown[name] = (mode, int(uid), int(size))
    assert set(shown) == set(expected)
    for name, download in expected.items():
        true_size = os.path.getsize(emulator.body_path(download["id"]))
        assert shown[name] == ("-r--r--r--", os.getuid(), true_size), name

    build_end = parse_timestamp(build_object(emulator, DEMO_BUILD)["build_end"])
    assert build_end is not None
    for name in expected:
        st = os.stat(build_dir / name)
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o444, name
        assert st.st_uid == os.getuid()
        assert abs(st.st_mtime - build_end) < 1, name
    for directory in (mnt, mnt / "builds", build_dir):
        st = os.stat(directory)
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o555, directory
    assert str(DEMO_BUILD) in os.listdir(mnt / "builds")
    assert emulator.requests[DOWNLOAD] == 0


def test_browsing_downloads_nothing(mnt: Path, emulator: Emulator) -> None:
    for directory in ("builds", f"builds/{DEMO_BUILD}", f"builds/{BIG_BUILD}"):
        listing = run("ls", "-la", mnt / directory)
        assert listing.returncode == 0, listing.stderr
    large = run("ls", "-l", mnt / "builds" / str(LARGE_BUILD), timeout=120)
    assert large.returncode == 0, large.stderr
    assert len(large.stdout.splitlines()) - 1 == len(emulator.downloads_of(LARGE_BUILD))
    assert emulator.requests[DOWNLOAD] == 0


def test_listing_twice_within_ttl_costs_one_list_request(
    mount_fs: MountFactory, emulator: Emulator
) -> None:
    configure(emulator, embed_downloads=False)  # build objects without files: lists asked
    mnt = mount_fs().path
    build_dir = mnt / "builds" / str(DEMO_BUILD)
    first = run("ls", "-l", build_dir)
    heads_after_first = emulator.requests[HEAD]
    second = run("ls", "-l", build_dir)
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert first.stdout == second.stdout
    assert emulator.requests[LIST] == 1
    assert emulator.requests[HEAD] == heads_after_first, "sizes were fetched again"
    assert emulator.requests[DOWNLOAD] == 0


def test_missing_names_cost_no_request_the_second_time(mnt: Path, emulator: Emulator) -> None:
    for path in (mnt / "builds" / str(DEMO_BUILD) / "no-such.zip", mnt / "builds" / "999999"):
        assert errno_of(os.stat, path) == errno.ENOENT
        before = sum(emulator.requests.values())
        assert errno_of(os.stat, path) == errno.ENOENT
        assert sum(emulator.requests.values()) == before, f"second lookup of {path} sent requests"


def test_listing_is_fetched_again_after_the_ttl(mount_fs: MountFactory, emulator: Emulator) -> None:
    mnt = mount_fs("--dir-ttl", "1", "--attr-ttl", "1").path
    build_dir = mnt / "builds" / str(BUILDING_BUILD)  # still building: its listing may change
    first = sorted(os.listdir(build_dir))
    assert emulator.requests[LIST] == 1
    time.sleep(1.6)
    assert sorted(os.listdir(build_dir)) == first
    assert emulator.requests[LIST] == 2


def test_statvfs_and_df(mnt: Path) -> None:
    st = os.statvfs(mnt)
    assert st.f_bsize > 0 and st.f_namemax >= 255
    df = run("df", mnt)
    assert df.returncode == 0, df.stderr
    assert str(mnt) in df.stdout


# --- reading ----------------------------------------------------------------------------


def test_cp_r_gives_byte_identical_files(mnt: Path, emulator: Emulator, tmp_path: Path) -> None:
    expected = plain_names(emulator, DEMO_BUILD)
    copy = tmp_path / "copy"
    done = run("cp", "-r", mnt / "builds" / str(DEMO_BUILD), copy)
    assert done.returncode == 0, done.stderr
    assert {p.name for p in copy.iterdir()} == {*expected, ".build.json"}
    for name, download in expected.items():
        assert sha256_file(copy / name) == emulator.body_sha256(download["id"]), name


def test_unzip_and_zipfile_work_on_mounted_files(mnt: Path, emulator: Emulator) -> None:
    for name, download in plain_names(emulator, DEMO_BUILD).items():
        path = mnt / "builds" / str(DEMO_BUILD) / name
        tested = run("unzip", "-t", "-q", path)
        assert tested.returncode == 0, f"unzip -t {name}: {tested.stdout}{tested.stderr}"
        with (
            zipfile.ZipFile(path) as mounted,
            zipfile.ZipFile(emulator.body_path(download["id"])) as original,
        ):
            assert mounted.testzip() is None
            assert mounted.namelist() == original.namelist()
            member = mounted.namelist()[-1]
            assert mounted.read(member) == original.read(member)


def test_big_zip_unzip_and_zipfile(mount_fs: MountFactory, emulator: Emulator) -> None:
    big_body = emulator.body_path(BIG_ZIP)  # generated before the clock starts
    mnt = mount_fs(watchdog=400).path
    download = emulator.downloads[BIG_ZIP]
    assert download["build_id"] == BIG_BUILD
    path = mnt / "builds" / str(BIG_BUILD) / download["name"]
    assert os.path.getsize(path) == os.path.getsize(big_body) >= 100 * 2**20

    tested = run("unzip", "-t", "-q", path, timeout=300)
    assert tested.returncode == 0, f"{tested.stdout}{tested.stderr}"
    with zipfile.ZipFile(path) as mounted, zipfile.ZipFile(big_body) as original:
        assert mounted.testzip() is None
        largest = max(original.infolist(), key=lambda info: info.file_size)
        assert mounted.read(largest.filename) == original.read(largest.filename)
    assert_alive(mnt)


def test_reading_twice_costs_one_download(mnt: Path, emulator: Emulator) -> None:
    name, download = max(
        plain_names(emulator, DEMO_BUILD).items(),
        key=lambda item: os.path.getsize(emulator.body_path(item[1]["id"])),
    )
    path = mnt / "builds" / str(DEMO_BUILD) / name
    expected = emulator.body_sha256(download["id"])
    assert hashlib.sha256(read_cold(path)).hexdigest() == expected
    assert hashlib.sha256(read_cold(path)).hexdigest() == expected
    assert emulator.requests[DOWNLOAD] == 1


def test_content_cache_survives_a_remount(
    mount_fs: MountFactory, emulator: Emulator, tmp_path: Path
) -> None:
    cache = tmp_path / "shared-cache"
    name, download = next(iter(plain_names(emulator, DEMO_BUILD).items()))
    first = mount_fs(cache_dir=cache)
    read_cold(first.path / "builds" / str(DEMO_BUILD) / name)
    assert emulator.requests[DOWNLOAD] == 1
    first.unmount()

    second = mount_fs(cache_dir=cache)
    data = read_cold(second.path / "builds" / str(DEMO_BUILD) / name)
    assert hashlib.sha256(data).hexdigest() == emulator.body_sha256(download["id"])
    assert emulator.requests[DOWNLOAD] == 0, "a cached download was downloaded again"


def test_awkward_names_all_appear_unique_valid_and_readable(mnt: Path, emulator: Emulator) -> None:
    downloads = emulator.downloads_of(AWKWARD_BUILD)
    build_dir = mnt / "builds" / str(AWKWARD_BUILD)
    names = [n for n in os.listdir(os.fsencode(build_dir)) if n != b".build.json"]
    assert len(names) == len(downloads), names
    assert len(set(names)) == len(names)
    for raw in names:
        assert raw not in (b".", b"..") and raw, raw
        assert b"/" not in raw and b"\0" not in raw and len(raw) <= 255, raw
        raw.decode("utf-8")  # a name shortened to 255 bytes is not cut inside a character

    # A name that is already a valid file name and belongs to one download only appears as is.
    raw_names = collections.Counter(d["name"] for d in downloads)
    shown = {raw.decode("utf-8") for raw in names}
    for name, count in raw_names.items():
        if (
            count == 1 and isinstance(name, str) and name not in ("", ".", "..")
            and "/" not in name and "\0" not in name and len(name.encode()) <= 255
        ):  # fmt: skip
            assert name in shown, f"{name!r} was renamed"

    # Each file has the bytes of exactly one download.
    read = collections.Counter[str]()
    for raw in names:
        path = Path(os.fsdecode(os.path.join(os.fsencode(build_dir), raw)))
        data = read_cold(path)
        assert len(data) == os.stat(path).st_size, raw
        read[hashlib.sha256(data).hexdigest()] += 1
    assert read == collections.Counter(emulator.body_sha256(d["id"]) for d in downloads)


# --- read-only --------------------------------------------------------------------------


def test_every_change_gets_erofs(mnt: Path, emulator: Emulator) -> None:
    build_dir = mnt / "builds" / str(DEMO_BUILD)
    name, download = next(iter(plain_names(emulator, DEMO_BUILD).items()))
    path = build_dir / name

    def open_close(target: Path, flags: int) -> None:
        os.close(os.open(target, flags, 0o644))

    changes: dict[str, Callable[[], object]] = {
        "open O_WRONLY": lambda: open_close(path, os.O_WRONLY),
        "open O_RDWR": lambda: open_close(path, os.O_RDWR),
        "open O_TRUNC": lambda: open_close(path, os.O_WRONLY | os.O_TRUNC),
        "open O_APPEND": lambda: open_close(path, os.O_WRONLY | os.O_APPEND),
        "create": lambda: open_close(build_dir / "new.zip", os.O_WRONLY | os.O_CREAT),
        "mkdir in build": lambda: os.mkdir(build_dir / "newdir"),
        "mkdir build": lambda: os.mkdir(mnt / "builds" / "777777"),
        "unlink": lambda: os.unlink(path),
        "rmdir": lambda: os.rmdir(build_dir),
        "rename": lambda: os.rename(path, build_dir / "renamed.zip"),
        "chmod": lambda: os.chmod(path, 0o644),
        "chown": lambda: os.chown(path, os.getuid(), os.getgid()),
        "utime": lambda: os.utime(path, (0, 0)),
        "truncate": lambda: os.truncate(path, 0),
        "setxattr": lambda: os.setxattr(path, "user.mkwfs-test", b"1"),
        "symlink": lambda: os.symlink("target", build_dir / "link"),
        "link": lambda: os.link(path, build_dir / "hardlink"),
    }
    wrong = {}
    for what, change in changes.items():
        got = errno_of(change)
        if got != errno.EROFS:
            wrong[what] = errno.errorcode.get(got, "succeeded") if got else "succeeded"
    assert not wrong, f"expected EROFS, got: {wrong}"

    assert sorted(results(build_dir)) == sorted(plain_names(emulator, DEMO_BUILD))
    assert hashlib.sha256(read_cold(path)).hexdigest() == emulator.body_sha256(download["id"])
    assert_alive(mnt)


# --- errors -----------------------------------------------------------------------------


def test_unknown_build_and_file_are_enoent(mnt: Path) -> None:
    missing = [
        mnt / "builds" / "999999",
        mnt / "builds" / "999999" / "x.zip",
        mnt / "builds" / "not-a-build",
        mnt / "builds" / str(DEMO_BUILD) / "no-such-file.zip",
        mnt / "no-such-top-level",
    ]
    for path in missing:
        assert errno_of(os.stat, path) == errno.ENOENT, path
    assert errno_of(os.listdir, mnt / "builds" / "999999") == errno.ENOENT
    assert errno_of(read_cold, missing[3]) == errno.ENOENT
    assert_alive(mnt)


@pytest.mark.parametrize("body", ["json", "html", "empty"])
def test_server_error_on_download_is_eio_then_read_works(
    mnt: Path, emulator: Emulator, body: Literal["json", "html", "empty"]
) -> None:
    name, download = next(iter(plain_names(emulator, DEMO_BUILD).items()))
    path = mnt / "builds" / str(DEMO_BUILD) / name
    os.stat(path)  # the size is known, the content is not downloaded yet
    # The kernel asks twice before a read fails (readahead, then one page synchronously),
    # and mkwfs rightly tries the server again each time: fail both.
    emulator.fail_next(DOWNLOAD, 500, count=2, body=body)
    assert errno_of(read_cold, path) == errno.EIO
    assert_alive(mnt)
    assert hashlib.sha256(read_cold(path)).hexdigest() == emulator.body_sha256(download["id"])


def test_server_error_on_listing_is_eio_then_listing_works(
    mount_fs: MountFactory, emulator: Emulator
) -> None:
    configure(emulator, embed_downloads=False)  # build objects without files: lists asked
    mnt = mount_fs().path
    emulator.fail_next(LIST, 500)  # 500 is not retried (429 and 502-504 are)
    build_dir = mnt / "builds" / str(DEMO_BUILD)
    assert errno_of(os.listdir, build_dir) == errno.EIO
    assert_alive(mnt)
    assert sorted(results(build_dir)) == sorted(plain_names(emulator, DEMO_BUILD))


def test_forbidden_download_is_eacces(mnt: Path, emulator: Emulator) -> None:
    build_dir = mnt / "builds" / str(FORBIDDEN_BUILD)
    names = results(build_dir)
    assert len(names) == len(emulator.downloads_of(FORBIDDEN_BUILD)) > 0
    assert errno_of(read_cold, build_dir / names[0]) == errno.EACCES
    assert_alive(mnt)


# --- the commands -----------------------------------------------------------------------


def test_mkwfs_umount_unmounts(mount_fs: MountFactory, mkwfs_env: dict[str, str]) -> None:
    mounted: MountedFs = mount_fs()
    done = mkwfs("umount", mounted.path, env=mkwfs_env)
    assert done.returncode == 0, done.stderr
    assert not os.path.ismount(mounted.path)
    assert mounted.process is not None
    assert mounted.process.wait(timeout=15) == 0, "the foreground daemon exited with an error"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_foreground_mount_stops_on_signal(mount_fs: MountFactory, sig: signal.Signals) -> None:
    mounted: MountedFs = mount_fs()
    assert mounted.process is not None
    mounted.process.send_signal(sig)
    mounted.process.wait(timeout=15)
    assert not mounted.is_mounted()


def test_a_foreground_mount_keeps_no_secret_in_its_environment(
    mount_fs: MountFactory, mkwfs_env: dict[str, str]
) -> None:
    """The token came in MKWFS_TOKEN: the process (the same one, so systemd's main pid)
    serves without it in /proc/PID/environ (``ps e``) or its command line."""
    mounted: MountedFs = mount_fs()
    assert mounted.process is not None
    pid = mounted.process.pid
    token = mkwfs_env["MKWFS_TOKEN"].encode()
    for what in ("environ", "cmdline"):
        assert token not in Path(f"/proc/{pid}/{what}").read_bytes(), what
    assert b"MKWFS_TOKEN=" not in Path(f"/proc/{pid}/environ").read_bytes()
    assert str(DEMO_BUILD) in os.listdir(mounted.path / "builds")  # and it serves
    mounted.process.send_signal(signal.SIGTERM)
    assert mounted.process.wait(timeout=15) == 0
    assert not mounted.is_mounted()


def test_background_mount_returns_when_ready(
    adopt_mount: Callable[..., MountedFs],
    emulator_url: str,
    mkwfs_env: dict[str, str],
    tmp_path: Path,
) -> None:
    mountpoint = tmp_path / "bg"
    mountpoint.mkdir()
    log = tmp_path / "bg.log"
    mounted = adopt_mount(mountpoint, log)
    # capture_output: a daemon that kept the caller's stdout open would hang this call.
    done = mkwfs(
        "mount", mountpoint, "--api-url", emulator_url, "--cache-dir", tmp_path / "cache",
        "--log-file", log, env=mkwfs_env, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert os.path.ismount(mountpoint)
    assert str(DEMO_BUILD) in os.listdir(mountpoint / "builds")

    done = mkwfs("umount", mountpoint, env=mkwfs_env)
    assert done.returncode == 0, done.stderr
    assert not mounted.is_mounted()
    assert mounted.wait_daemon_gone(15), "the daemon outlived its mount"


@pytest.mark.parametrize("failure", ["no mountpoint", "token rejected"])
def test_mount_failure_is_one_line_and_non_zero(
    mkwfs_env: dict[str, str], emulator_url: str, tmp_path: Path, failure: str
) -> None:
    mountpoint = tmp_path / "mnt"
    env = dict(mkwfs_env)
    if failure == "no mountpoint":
        mountpoint = tmp_path / "does-not-exist"
    else:
        mountpoint.mkdir()
        env["MKWFS_TOKEN"] = "not-a-token"
    done = mkwfs(
        "mount", mountpoint, "--api-url", emulator_url, "--cache-dir", tmp_path / "cache",
        env=env,
    )  # fmt: skip
    assert done.returncode != 0
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr and "not-a-token" not in done.stderr
    assert not os.path.ismount(mountpoint)


def test_demo_command_mounts_builds(
    adopt_mount: Callable[..., MountedFs], mkwfs_env: dict[str, str], tmp_path: Path
) -> None:
    mountpoint = tmp_path / "demo"
    mountpoint.mkdir()
    mounted = adopt_mount(mountpoint)
    done = mkwfs("demo", mountpoint, "--cache-dir", tmp_path / "cache", env=mkwfs_env, timeout=120)
    assert done.returncode == 0, done.stderr
    builds = os.listdir(mountpoint / "builds")
    assert str(DEMO_BUILD) in builds and all(b.isdigit() for b in builds), builds
    listing = run("ls", "-l", mountpoint / "builds" / str(DEMO_BUILD))
    assert listing.returncode == 0 and len(listing.stdout.splitlines()) > 1, listing.stderr

    done = mkwfs("umount", mountpoint, env=mkwfs_env)
    assert done.returncode == 0, done.stderr
    assert not mounted.is_mounted()
    assert mounted.wait_daemon_gone(15), "the demo daemon outlived its mount"
