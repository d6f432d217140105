"""The content engine through a real mount: one download under concurrency, ranged reads of
one ZIP member, the fallback without Range, and a daemon killed mid-download."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import threading
import zipfile
from pathlib import Path

import pytest

from mkwfs.emulator import BIG_BUILD, BIG_ZIP, MEDIUM_FILE, Emulator
from mkwfs.fuse.checks import mount_entry
from mkwfs.fuse.mount import READAHEAD_KB
from tests.conftest import MountFactory, require, wait_for

pytestmark = pytest.mark.e2e

GET = "GET /api/v1/downloads/:id"
MiB = 1 << 20


def mounted_path(root: Path, emulator: Emulator, download_id: int) -> Path:
    name: str = emulator.downloads[download_id]["name"]
    return root / "builds" / str(BIG_BUILD) / name


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


def test_the_readahead_is_raised_before_the_first_request_is_answered(
    mount_fs: MountFactory,
) -> None:
    # A file takes the kernel's readahead when it is opened: one opened at once on a fresh
    # mount must already get the larger one.
    require(os.geteuid() == 0, "only root may set a mount's readahead")
    mnt = mount_fs().path
    os.stat(mnt)  # the first request after INIT
    entry = mount_entry(mnt)
    assert entry is not None
    setting = Path("/sys/class/bdi", entry[0], "read_ahead_kb")
    assert int(setting.read_text()) == READAHEAD_KB


def test_ten_concurrent_readers_of_a_cold_file_cost_one_download(
    mount_fs: MountFactory, emulator: Emulator
) -> None:
    mounted = mount_fs()
    path = mounted_path(mounted.path, emulator, MEDIUM_FILE)
    os.stat(path)  # the size probe, before the readers start together
    digests: list[str] = []
    readers = [threading.Thread(target=lambda: digests.append(sha256(path))) for _ in range(10)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(timeout=60)
    assert digests == [emulator.body_sha256(MEDIUM_FILE)] * 10
    assert emulator.requests[GET] == 1


def test_one_member_of_a_cold_big_zip_fetches_little(
    mount_fs: MountFactory, emulator: Emulator
) -> None:
    with zipfile.ZipFile(emulator.body_path(BIG_ZIP)) as archive:
        member = max(archive.infolist(), key=lambda info: info.compress_size)
        expected = archive.read(member)
    mounted = mount_fs()
    with zipfile.ZipFile(mounted_path(mounted.path, emulator, BIG_ZIP)) as archive:
        assert archive.read(member.filename) == expected
    assert emulator.requests[GET] <= 4
    assert emulator.bytes_sent <= member.compress_size + MiB


def test_without_range_support_a_zip_member_costs_one_sequential_download(
    mount_fs: MountFactory, emulator: Emulator
) -> None:
    emulator.config = dataclasses.replace(emulator.config, ranges=False)
    with zipfile.ZipFile(emulator.body_path(MEDIUM_FILE)) as archive:
        member = archive.infolist()[-1]
        expected = archive.read(member)
    mounted = mount_fs()
    path = mounted_path(mounted.path, emulator, MEDIUM_FILE)
    with zipfile.ZipFile(path) as archive:
        assert archive.read(member.filename) == expected
    assert sha256(path) == emulator.body_sha256(MEDIUM_FILE)
    assert emulator.requests[GET] == 1


def test_a_daemon_killed_mid_download_leaves_nothing_wrong_and_resumes(
    mount_fs: MountFactory, emulator: Emulator, tmp_path: Path
) -> None:
    cache = tmp_path / "shared-cache"
    size = emulator.body_path(MEDIUM_FILE).stat().st_size
    emulator.config = dataclasses.replace(emulator.config, throttle=8 * MiB)
    first = mount_fs(cache_dir=cache)
    path = mounted_path(first.path, emulator, MEDIUM_FILE)
    reader = subprocess.Popen(["cat", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # Past the first record of what is on disk (every 16 MiB), then kill -9.
        assert wait_for(lambda: emulator.bytes_sent > 20 * MiB, timeout=30)
        assert first.process is not None
        first.process.kill()
        first.process.wait(timeout=10)
        reader.wait(timeout=30)
    finally:
        reader.kill()
    first.unmount()
    content = cache / "content"
    assert not (content / str(MEDIUM_FILE)).exists()  # never a short file as complete
    assert (content / f"{MEDIUM_FILE}.part").exists()

    emulator.config = dataclasses.replace(emulator.config, throttle=None)
    second = mount_fs(cache_dir=cache)
    assert sha256(mounted_path(second.path, emulator, MEDIUM_FILE)) == (
        emulator.body_sha256(MEDIUM_FILE)
    )
    assert emulator.requests[GET] >= 1
    assert emulator.bytes_sent <= size - 15 * MiB  # resumed from the last record, not from 0
    # The complete body is synced and renamed in the background once its reader is done.
    final = content / str(MEDIUM_FILE)
    assert wait_for(final.exists, timeout=15)
    assert final.stat().st_size == size


def peak_rss(pid: int) -> int:
    """The process's peak resident set (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


def test_cold_readers_of_different_big_files_get_every_byte_in_bounded_memory(
    mount_fs: MountFactory, emulator: Emulator
) -> None:
    # Each file is longer than what a body keeps in memory (readahead + recent bytes), so
    # every stream turns its memory over while the others do.
    ids = [emulator.add_download(BIG_BUILD, f"parallel-{i}.zip", 24 * MiB) for i in range(4)]
    expected = {i: emulator.body_sha256(i) for i in ids}
    mounted = mount_fs()
    assert mounted.process is not None
    paths = {i: mounted_path(mounted.path, emulator, i) for i in ids}
    for path in paths.values():
        os.stat(path)  # the sizes, before the readers start together
    baseline = peak_rss(mounted.process.pid)
    barrier = threading.Barrier(len(ids))
    digests: dict[int, str] = {}

    def read(download_id: int) -> None:
        barrier.wait(timeout=30)
        digests[download_id] = sha256(paths[download_id])

    readers = [threading.Thread(target=read, args=(i,)) for i in ids]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(timeout=120)
    assert digests == expected
    assert emulator.requests[GET] == len(ids)  # one GET each
    # The streams hold about readahead + recent bytes + queue + a disk stage each (about
    # 60 MiB in all here; 130 MiB with 16 + 24 MiB per body), less than the bodies (96 MiB).
    assert peak_rss(mounted.process.pid) - baseline < 4 * 24 * MiB
