"""End-to-end: each fault the emulator can play, and hostile names, through a real mount.

For every fault: the errno the reader sees (within a bounded time), recovery once the fault
ends without a remount, the right bytes (sha256 of what is read and of what the cache
holds), and the mount alive throughout. The ``mounts`` fixture fails a test whose daemon
logged a traceback, i.e. let an exception escape a handler.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pytest

from mkwfs.emulator import AWKWARD_BUILD, BUILDING_BUILD, DEMO_BUILD, LARGE_BUILD, Emulator
from mkwfs.tree.views import STALE_RETRY
from tests.conftest import wait_for
from tests.e2e.test_e2e_mount import assert_alive, errno_of, mkwfs, plain_names, read_cold, results
from tests.helpers import configure

if TYPE_CHECKING:
    from tests.conftest import MountedFs, MountFactory

pytestmark = pytest.mark.e2e

LIST = "GET /api/v1/downloads"
BUILDS = "GET /api/v1/builds"
DOWNLOAD = "GET /api/v1/downloads/:id"
LOGIN = "POST /authentication"


def demo_file(emulator: Emulator, mounted: MountedFs, index: int = 0) -> tuple[Path, int]:
    """(path on the mount, download id) of one of the demo build's files, biggest first
    (index 0 is about 1 MB)."""
    by_size = sorted(
        plain_names(emulator, DEMO_BUILD).items(),
        key=lambda item: -emulator.body_path(item[1]["id"]).stat().st_size,
    )
    name, download = by_size[index]
    return mounted.path / "builds" / str(DEMO_BUILD) / name, download["id"]


def assert_right_bytes(emulator: Emulator, path: Path, ident: int) -> None:
    """The file reads as the server's body."""
    assert hashlib.sha256(read_cold(path)).hexdigest() == emulator.body_sha256(ident)


def assert_cache_right(emulator: Emulator, mounted: MountedFs, *read: int) -> None:
    """After unmounting (which finishes every complete body): the bodies read are in the
    cache, and every complete body there is exactly the server's."""
    mounted.unmount()
    content = mounted.cache_dir / "content"
    complete = {int(p.name): p for p in content.iterdir() if p.name.isdigit()}
    assert set(read) <= complete.keys(), sorted(p.name for p in content.iterdir())
    for ident, path in complete.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == emulator.body_sha256(ident)


def timed_errno(action: Any, *args: Any) -> tuple[int | None, float]:
    started = time.monotonic()
    result = errno_of(action, *args)
    return result, time.monotonic() - started


def status(mounted: MountedFs, env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    done = mkwfs("status", "--json", mounted.path, env=env)
    return done.returncode, json.loads(done.stdout)


# --- slow, failing and limiting servers --------------------------------------------------------


def test_latency_and_jitter_make_it_slower_never_wrong(
    mount_fs: MountFactory, emulator: Emulator
) -> None:
    mounted = mount_fs()
    emulator.config = replace(emulator.config, latency=0.1, jitter=0.2)
    started = time.monotonic()
    assert len(results(mounted.path / "builds" / str(DEMO_BUILD))) == 4
    read = [demo_file(emulator, mounted, index) for index in range(2)]
    for path, ident in read:
        assert_right_bytes(emulator, path, ident)
    assert time.monotonic() - started < 20
    assert_alive(mounted.path)
    assert_cache_right(emulator, mounted, *(ident for _, ident in read))


def test_bursts_of_gateway_errors_and_429_are_retried(
    mount_fs: MountFactory, emulator: Emulator
) -> None:
    """502/503/504 with a JSON, an HTML or an empty body, and a 429 with Retry-After: the
    listing is asked again (honouring Retry-After) and shows; a body is fetched again."""
    configure(emulator, embed_downloads=False)  # build objects without files: lists asked
    mounted = mount_fs()
    emulator.config = replace(emulator.config, retry_after=1)
    bodies: list[Literal["json", "html", "empty"]] = ["json", "html", "empty"]
    for build_id, body in zip((DEMO_BUILD, BUILDING_BUILD, AWKWARD_BUILD), bodies, strict=True):
        emulator.fail_next(LIST, 503, count=2, body=body)
        assert results(mounted.path / "builds" / str(build_id)), body
    emulator.fail_next(LIST, 429, count=1)
    started = time.monotonic()
    assert len(results(mounted.path / "builds" / str(LARGE_BUILD))) == 1000
    assert time.monotonic() - started >= 0.9  # the server's Retry-After was honoured
    assert emulator.requests[LIST] == 3 * 3 + 2
    path, ident = demo_file(emulator, mounted)
    os.stat(path)
    for body in bodies:
        emulator.fail_next(DOWNLOAD, 502, count=1, body=body)
    assert_right_bytes(emulator, path, ident)
    assert_cache_right(emulator, mounted, ident)


@pytest.mark.parametrize("cut", ["reset_after", "drop_after"])
def test_bodies_cut_short_or_reset_resume_to_the_right_bytes(
    mount_fs: MountFactory, emulator: Emulator, cut: str
) -> None:
    mounted = mount_fs()
    path, ident = demo_file(emulator, mounted)
    os.stat(path)
    if cut == "reset_after":
        emulator.config = replace(emulator.config, reset_after=200_000)
    else:
        emulator.config = replace(emulator.config, drop_after=200_000)
    assert_right_bytes(emulator, path, ident)
    assert emulator.requests[DOWNLOAD] >= 5  # one resumed request per 200 kB
    assert_alive(mounted.path)
    assert_cache_right(emulator, mounted, ident)


def test_a_stalled_body_fails_in_bounded_time_then_reads_right(
    mount_fs: MountFactory, emulator: Emulator
) -> None:
    mounted = mount_fs("--timeout", "2")
    path, ident = demo_file(emulator, mounted)
    os.stat(path)
    emulator.config = replace(emulator.config, stall_after=100_000)
    failed, took = timed_errno(read_cold, path)
    assert failed == errno.EIO
    assert took < 12  # the kernel may ask twice; each read gives up after 2 s without bytes
    assert_alive(mounted.path)
    emulator.config = replace(emulator.config, stall_after=None)
    emulator.release_stalls()
    assert_right_bytes(emulator, path, ident)
    assert_cache_right(emulator, mounted, ident)


def test_malformed_json_is_eio_until_the_server_mends(
    mount_fs: MountFactory, emulator: Emulator
) -> None:
    configure(emulator, embed_downloads=False)  # build objects without files: lists asked
    mounted = mount_fs()
    build_dir = mounted.path / "builds" / str(DEMO_BUILD)
    emulator.config = replace(emulator.config, malformed_json=True)
    assert errno_of(os.listdir, build_dir) == errno.EIO
    assert_alive(mounted.path)  # the list of builds is cached
    emulator.config = replace(emulator.config, malformed_json=False)
    assert len(results(build_dir)) == 4


def test_forbidden_downloads_are_eacces_the_others_read(
    mount_fs: MountFactory, emulator: Emulator
) -> None:
    mounted = mount_fs()
    forbidden, forbidden_id = demo_file(emulator, mounted, 1)
    allowed, allowed_id = demo_file(emulator, mounted, 0)
    emulator.config = replace(emulator.config, forbidden_downloads=frozenset({forbidden_id}))
    assert errno_of(read_cold, forbidden) == errno.EACCES
    assert_right_bytes(emulator, allowed, allowed_id)
    assert_cache_right(emulator, mounted, allowed_id)
    assert not (mounted.cache_dir / "content" / str(forbidden_id)).exists()


# --- tokens ----------------------------------------------------------------------------------


def test_an_expired_token_logs_in_again_with_email_and_password(
    mount_fs: MountFactory, emulator: Emulator, mkwfs_env: dict[str, str]
) -> None:
    emulator.config = replace(emulator.config, token_lifetime=2)
    mkwfs_env.pop("MKWFS_TOKEN")
    mkwfs_env["MKWFS_PASSWORD"] = emulator.config.password
    mounted = mount_fs("--email", emulator.config.email, "--dir-ttl", "1")
    assert len(results(mounted.path / "builds" / str(DEMO_BUILD))) == 4
    time.sleep(2.5)
    path, ident = demo_file(emulator, mounted)
    assert_right_bytes(emulator, path, ident)
    assert len(results(mounted.path / "builds" / str(LARGE_BUILD))) == 1000
    assert emulator.requests[LOGIN] >= 1  # logged in again, as often as the token expired
    assert "Traceback" not in mounted.log()


def test_an_expired_token_alone_is_eacces_with_a_clear_log_line(
    mount_fs: MountFactory, emulator: Emulator, mkwfs_env: dict[str, str]
) -> None:
    configure(emulator, embed_downloads=False)  # build objects without files: lists asked
    # Long enough to outlive a mount on a loaded machine; then wait until it has expired.
    lifetime = 8.0
    expires = time.monotonic() + lifetime
    mkwfs_env["MKWFS_TOKEN"] = emulator.issue_token(lifetime=lifetime)
    mounted = mount_fs()
    time.sleep(max(expires - time.monotonic(), 0) + 1.1)  # the exp claim is whole seconds
    assert errno_of(os.listdir, mounted.path / "builds" / str(DEMO_BUILD)) == errno.EACCES
    assert "rejected the token" in mounted.log()
    assert_alive(mounted.path)  # what is cached still shows


# --- the server's data changing under the mount ------------------------------------------


def test_a_build_that_disappears_after_listing_is_enoent(
    mount_fs: MountFactory, emulator: Emulator
) -> None:
    """The listing was right when it was made; the server now says 404 for the body, and
    404 means ENOENT, as for any name that is not there (EIO would say the server failed).
    A file already read and still open reads on: its bytes never change."""
    mounted = mount_fs("--dir-ttl", "1")
    read_path, read_id = demo_file(emulator, mounted, 1)
    gone_path, _ = demo_file(emulator, mounted, 0)
    assert_right_bytes(emulator, read_path, read_id)
    os.stat(gone_path)
    fd = os.open(read_path, os.O_RDONLY)
    try:
        emulator.remove_build(DEMO_BUILD)
        assert errno_of(read_cold, gone_path) == errno.ENOENT
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        body = os.pread(fd, 1 << 24, 0)
        assert hashlib.sha256(body).hexdigest() == emulator.body_sha256(read_id)
    finally:
        os.close(fd)
    build_dir = mounted.path / "builds" / str(DEMO_BUILD)
    assert wait_for(lambda: str(DEMO_BUILD) not in os.listdir(mounted.path / "builds"), 5)
    assert wait_for(lambda: errno_of(os.stat, build_dir) == errno.ENOENT, 5)
    assert_cache_right(emulator, mounted, read_id)


def test_a_listing_that_changes_between_calls(mount_fs: MountFactory, emulator: Emulator) -> None:
    mounted = mount_fs("--dir-ttl", "1")
    build_dir = mounted.path / "builds" / str(BUILDING_BUILD)
    before = sorted(results(build_dir))
    added = emulator.add_download(BUILDING_BUILD, "NEW_RESULT.zip")
    assert wait_for(lambda: "NEW_RESULT.zip" in results(build_dir), 10)
    assert sorted(set(results(build_dir)) - {"NEW_RESULT.zip"}) == before  # nothing renamed
    assert hashlib.sha256(read_cold(build_dir / "NEW_RESULT.zip")).hexdigest() == (
        emulator.body_sha256(added)
    )
    gone = before[0]
    emulator.remove_download(plain_names(emulator, BUILDING_BUILD)[gone]["id"])
    assert wait_for(lambda: gone not in results(build_dir), 10)
    assert wait_for(lambda: errno_of(os.stat, build_dir / gone) == errno.ENOENT, 5)


# --- the server down: stale-if-error -------------------------------------------------------------


def test_server_down_serves_what_is_cached_fails_the_rest_fast_then_recovers(
    mount_fs: MountFactory, emulator: Emulator, mkwfs_env: dict[str, str]
) -> None:
    configure(emulator, embed_downloads=False)  # build objects without files: lists asked
    mounted = mount_fs("--timeout", "2", "--dir-ttl", "1", "--attr-ttl", "1")
    builds_dir = mounted.path / "builds"
    build_dir = builds_dir / str(BUILDING_BUILD)  # a running build: its listing expires fast
    names = sorted(results(build_dir))
    cached, uncached = (build_dir / name for name in names[:2])
    cached_bytes = read_cold(cached)
    os.stat(uncached)  # the size is known, the body is not

    emulator.config = replace(emulator.config, down=True)
    time.sleep(1.5)  # every listing TTL has passed
    for _ in range(2):
        assert sorted(results(build_dir)) == names  # stale, from the last good listing
        assert str(BUILDING_BUILD) in os.listdir(builds_dir)
        assert read_cold(cached) == cached_bytes
    failed, took = timed_errno(read_cold, uncached)
    assert (failed, took < 10) == (errno.EIO, True)
    failed, took = timed_errno(os.listdir, builds_dir / str(LARGE_BUILD))  # never listed
    assert (failed, took < 10) == (errno.EIO, True)
    code, state = status(mounted, mkwfs_env)
    assert code == 1 and not state["api"]["reachable"]
    assert state["stale"]["serving"] and state["stale"]["served"] >= 2
    assert mounted.log().count("serving cached listings while the server fails") == 1

    emulator.config = replace(emulator.config, down=False)
    time.sleep(STALE_RETRY)
    assert sorted(results(build_dir)) == names
    assert hashlib.sha256(read_cold(uncached)).hexdigest() == emulator.body_sha256(
        plain_names(emulator, BUILDING_BUILD)[uncached.name]["id"]
    )
    code, state = status(mounted, mkwfs_env)
    assert code == 0 and not state["stale"]["serving"]
    assert "the server answers again" in mounted.log()


def test_a_server_that_never_answers_costs_at_most_the_timeout(
    mount_fs: MountFactory, emulator: Emulator
) -> None:
    """Accepting connections but answering after a minute: a listing gives EIO (or the last
    good listing) after --timeout, not after the minute or httpx's own 30 s."""
    configure(emulator, embed_downloads=False)  # build objects without files: lists asked
    mounted = mount_fs("--timeout", "2", "--dir-ttl", "1")
    known = mounted.path / "builds" / str(BUILDING_BUILD)
    names = sorted(results(known))
    emulator.config = replace(emulator.config, latency=60.0)
    time.sleep(1.2)
    started = time.monotonic()
    assert sorted(results(known)) == names
    failed, took = timed_errno(os.listdir, mounted.path / "builds" / str(AWKWARD_BUILD))
    assert failed == errno.EIO
    assert took < 6 and time.monotonic() - started < 12
    emulator.config = replace(emulator.config, latency=0.0)


# --- hostile names --------------------------------------------------------------------------


def test_hostile_names_from_the_server_stay_inside_the_tree(
    mount_fs: MountFactory, emulator: Emulator, tmp_path: Path
) -> None:
    hostile = [
        "..", ".", "../../../../etc/passwd", "a/../../b.zip", "\x00", "\x01\x1b[31m\x7f.zip",
        "bad\udcff\udcfe.zip",  # sent as the bytes FF FE: invalid UTF-8
        "x" * 300 + ".zip", "ü" * 200 + ".zip", "", None, ".hidden",
    ]  # fmt: skip
    special = [emulator.add_download(AWKWARD_BUILD, name) for name in hostile]
    for _ in range(2000):
        emulator.add_download(AWKWARD_BUILD, "dup.zip")
    mounted = mount_fs()
    build_dir = os.fsencode(mounted.path / "builds" / str(AWKWARD_BUILD))
    names = os.listdir(build_dir)
    assert len(names) == len(set(names)) == len(emulator.downloads_of(AWKWARD_BUILD)) + 1
    for name in names:
        assert 0 < len(name) <= 255 and name not in (b".", b"..")
        assert not any(byte < 0x20 or byte == 0x7F for byte in name), name
        name.decode("utf-8")
    by_id = {
        int(os.getxattr(os.path.join(build_dir, name), "user.mkw.download.id")): name
        for name in names
        if not name.startswith(b"dup") and name != b".build.json"
    }
    for ident in special:
        body = read_cold(Path(os.fsdecode(os.path.join(build_dir, by_id[ident]))))
        assert hashlib.sha256(body).hexdigest() == emulator.body_sha256(ident)
    cache = mounted.cache_dir.resolve()
    for parent, dirs, files in os.walk(tmp_path):
        dirs[:] = [d for d in dirs if Path(parent, d) != mounted.path]  # not into the mount
        for entry in dirs + files:
            path = Path(parent, entry)
            assert entry not in ("passwd", "b.zip"), path
            if path.is_relative_to(mounted.cache_dir):
                assert path.resolve().is_relative_to(cache), path
