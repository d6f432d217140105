"""A build of many small files through a real mount: ``cp -r`` with the daemon killed in
the middle (nothing served wrong or short after a remount), and several processes reading
the same small files at once (one GET each)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from mkwfs.emulator import LARGE_BUILD, Emulator
from tests.conftest import MountFactory, wait_for
from tests.helpers import configure

pytestmark = pytest.mark.e2e

GET = "GET /api/v1/downloads/:id"


def digests(directory: Path) -> dict[str, str]:
    return {
        entry.name: hashlib.sha256(Path(entry.path).read_bytes()).hexdigest()
        for entry in os.scandir(directory)
        if entry.name != ".build.json"
    }


def expected_digests(emulator: Emulator) -> dict[str, str]:
    return {d["name"]: emulator.body_sha256(d["id"]) for d in emulator.downloads_of(LARGE_BUILD)}


def test_a_daemon_killed_during_cp_r_leaves_nothing_wrong_after_a_remount(
    mount_fs: MountFactory, emulator: Emulator, tmp_path: Path
) -> None:
    files = emulator.downloads_of(LARGE_BUILD)
    expected = expected_digests(emulator)
    cache = tmp_path / "shared-cache"
    configure(emulator, latency=0.003)  # a cp -r of a few seconds, to kill in its middle
    first = mount_fs(cache_dir=cache)
    build = first.path / "builds" / str(LARGE_BUILD)
    copy = subprocess.Popen(
        ["cp", "-r", str(build), str(tmp_path / "first-copy")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_for(lambda: emulator.requests[GET] >= len(files) // 3, timeout=60)
        assert first.process is not None
        first.process.kill()
        first.process.wait(timeout=10)
        copy.wait(timeout=30)
    finally:
        copy.kill()
    first.unmount()
    assert emulator.requests[GET] < len(files)  # killed in the middle

    # Whatever has its final name in the cache is the whole body, byte for byte.
    content = cache / "content"
    bodies = {int(name) for name in os.listdir(content) if name.isdigit()}
    for download_id in bodies:
        data = (content / str(download_id)).read_bytes()
        assert hashlib.sha256(data).hexdigest() == emulator.body_sha256(download_id)
    assert bodies  # some were written before the kill

    configure(emulator, latency=0.0)
    second = mount_fs(cache_dir=cache)
    subprocess.run(
        ["cp", "-r", str(second.path / "builds" / str(LARGE_BUILD)), str(tmp_path / "copy")],
        check=True,
        timeout=120,
    )
    assert digests(tmp_path / "copy") == expected
    # What the first mount stored is served from the cache; only the rest is fetched.
    assert emulator.requests[GET] == len(files) - len(bodies)


def test_several_processes_reading_the_same_small_files_share_one_get_each(
    mount_fs: MountFactory, emulator: Emulator, tmp_path: Path
) -> None:
    files = emulator.downloads_of(LARGE_BUILD)[:300]
    mounted = mount_fs()
    build = mounted.path / "builds" / str(LARGE_BUILD)
    names = sorted(os.listdir(build))  # the sizes, probed in a batch
    wanted = [d["name"] for d in files]
    assert set(wanted) <= set(names)
    script = (
        "import hashlib, sys\n"
        "for path in sys.argv[1:]:\n"
        "    with open(path, 'rb') as f:\n"
        "        print(path.rsplit('/', 1)[1], hashlib.sha256(f.read()).hexdigest())\n"
    )
    readers = []
    for number in range(4):
        order = wanted if number % 2 else list(reversed(wanted))
        readers.append(
            subprocess.Popen(
                ["python3", "-c", script, *(str(build / name) for name in order)],
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    expected = expected_digests(emulator)
    for reader in readers:
        output, _ = reader.communicate(timeout=120)
        assert reader.returncode == 0
        seen = dict(line.split(" ", 1) for line in output.splitlines())
        assert seen == {name: expected[name] for name in wanted}
    assert emulator.requests[GET] == len(wanted)
