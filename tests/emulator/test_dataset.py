"""The dataset and its bodies: every status, awkward names, real and deterministic ZIPs
generated once (`mkwfs.emulator.dataset`, `mkwfs.emulator.zips`, `mkwfs.emulator.bodies`)."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import io
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from mkwfs.emulator import (
    AWKWARD_BUILD,
    BIG_BUILD,
    BIG_ZIP,
    BUILDING_BUILD,
    CANCELED_BUILD,
    FAILED_BUILD,
    LARGE_BUILD,
    MEDIUM_FILE,
    MEDIUM_FILE_SIZE,
    Emulator,
    EmulatorConfig,
    zips,
)
from mkwfs.remote.models import parse_timestamp
from tests.emulator.common import (
    BIG_SIZE,
    DEMO_ZIP,
    SMALL_ZIP,
)

# --- the dataset --------------------------------------------------------------------------


def test_startup_is_fast_and_lazy(config: EmulatorConfig) -> None:
    started = time.monotonic()
    Emulator(dataclasses.replace(config, big_file_size=2**40))
    assert time.monotonic() - started < 0.5
    assert not config.data_dir or not config.data_dir.exists()


def test_builds_cover_every_status(emulator: Emulator) -> None:
    statuses = {b["id"]: b["status"] for b in emulator.builds}
    assert set(statuses.values()) == {"FINISHED", "BUILDING", "FAILED", "CANCELED"}
    assert statuses[BUILDING_BUILD] == "BUILDING"
    assert statuses[FAILED_BUILD] == "FAILED"
    assert statuses[CANCELED_BUILD] == "CANCELED"
    assert emulator.downloads_of(CANCELED_BUILD) == []
    assert len(emulator.downloads_of(FAILED_BUILD)) == 1
    assert len(emulator.downloads_of(BUILDING_BUILD)) == 2
    large = emulator.downloads_of(LARGE_BUILD)
    assert len(large) == 1000
    assert len({d["name"] for d in large}) == 1000
    for build in emulator.builds:
        end = parse_timestamp(build["build_end"])
        start = parse_timestamp(build["build_start"])
        assert start is not None
        assert end is None if build["status"] == "BUILDING" else end is not None and end > start


def test_awkward_names(emulator: Emulator) -> None:
    names = [d["name"] for d in emulator.downloads_of(AWKWARD_BUILD)]
    strings = [name for name in names if name is not None]
    assert len(strings) - len(set(strings)) == 1
    assert any("/" in name for name in strings)
    assert any("Ü" in name and " " in name for name in strings)
    assert None in names
    assert "" in names
    assert any(name.startswith(".") for name in strings)
    assert any(len(name.encode()) == 300 for name in strings)
    assert any("\x00" in name for name in strings)
    assert len({d["file_name"] for d in emulator.downloads_of(AWKWARD_BUILD)}) == len(names)


@pytest.mark.parametrize("download_id", [5442, 5443, 5444, 5445, 6000, 6999, 5451, 5459])
def test_bodies_are_real_zips(emulator: Emulator, download_id: int) -> None:
    with zipfile.ZipFile(emulator.body_path(download_id)) as archive:
        assert archive.testzip() is None
        names = archive.namelist()
    assert any(name.endswith((".sql", ".DTEMPLATE.zip")) for name in names)  # IICS nests them


def test_each_download_has_a_body_of_its_own(emulator: Emulator) -> None:
    """Downloads with the same kind of content still get their own bytes (and file), also
    when their paths are asked for again."""
    ids = [d["id"] for d in emulator.downloads_of(LARGE_BUILD)[:20]]
    paths = [emulator.body_path(i) for i in ids]
    assert len(set(paths)) == len(ids)
    assert [emulator.body_path(i) for i in ids] == paths
    assert len({p.read_bytes() for p in paths}) == len(ids)


def test_iics_body_nests_zips_and_lists_contents(emulator: Emulator) -> None:
    with zipfile.ZipFile(emulator.body_path(DEMO_ZIP)) as archive:
        names = archive.namelist()
        nested = [n for n in names if n.startswith("Explore/") and n.endswith(".zip")]
        assert len(nested) > 10
        assert "ContentsofExportPackage_CORE_DV_HLS.csv" in names
        csv = archive.read("ContentsofExportPackage_CORE_DV_HLS.csv").decode()
        with zipfile.ZipFile(io.BytesIO(archive.read(nested[0]))) as inner:
            assert inner.testzip() is None
            assert {n.rsplit(".", 1)[-1] for n in inner.namelist()} == {"xml", "sql"}
    assert len(csv.splitlines()) == len(nested) + 1


def test_big_and_medium_zips(emulator: Emulator) -> None:
    assert [d["id"] for d in emulator.downloads_of(BIG_BUILD)] == [BIG_ZIP, MEDIUM_FILE]
    big = emulator.body_path(BIG_ZIP)
    assert BIG_SIZE <= big.stat().st_size <= BIG_SIZE * 1.03
    with zipfile.ZipFile(big) as archive:
        parts = [info for info in archive.infolist() if info.filename.startswith("payload/")]
        assert len(parts) == 8
        assert all(info.compress_type == zipfile.ZIP_STORED for info in parts)
        assert sum(info.file_size for info in parts) == BIG_SIZE
        assert len(archive.read(parts[3])) == BIG_SIZE // 8
        assert any(name.endswith(".xml") for name in archive.namelist())
    medium = emulator.body_path(MEDIUM_FILE).stat().st_size
    assert MEDIUM_FILE_SIZE <= medium <= MEDIUM_FILE_SIZE * 1.01


def test_bodies_are_deterministic(tmp_path: Path) -> None:
    def digests(seed: int, data_dir: Path) -> list[str]:
        emulator = Emulator(EmulatorConfig(seed=seed, big_file_size=2**20, data_dir=data_dir))
        return [emulator.body_sha256(i) for i in (DEMO_ZIP, SMALL_ZIP, 6500, BIG_ZIP)]

    first = digests(7, tmp_path / "a")
    assert digests(7, tmp_path / "b") == first
    assert digests(8, tmp_path / "c") != first


def test_bodies_are_reused_and_generated_once(config: EmulatorConfig,
                                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    calls = []
    write_zip = zips.write_zip

    def counting_write_zip(*args: Any) -> None:
        calls.append(args)
        time.sleep(0.05)  # widen the window in which concurrent requests could race
        write_zip(*args)

    monkeypatch.setattr(zips, "write_zip", counting_write_zip)
    emulator = Emulator(config)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        paths = set(pool.map(emulator.body_path, [DEMO_ZIP] * 8))
    assert len(calls) == 1
    assert len(paths) == 1
    path = paths.pop()
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no partial file left
    mtime = path.stat().st_mtime_ns
    assert Emulator(config).body_path(DEMO_ZIP) == path
    assert len(calls) == 1
    assert path.stat().st_mtime_ns == mtime


def test_extra_builds_carry_their_downloads(config: EmulatorConfig) -> None:
    """``extra_builds`` x ``downloads_per_build``: FINISHED builds after the fixed ones, each
    object carrying its downloads as the list of a build gives them, each body a ZIP."""
    emulator = Emulator(dataclasses.replace(config, extra_builds=3, downloads_per_build=4))
    fixed = Emulator(config)
    extra = [b for b in emulator.builds if b["id"] >= 100_000]
    assert [b["id"] for b in extra] == [100_000, 100_001, 100_002]
    assert len(emulator.builds) == len(fixed.builds) + 3
    for build in extra:
        assert build["status"] == "FINISHED"
        assert build["downloads"] == emulator.downloads_of(build["id"])
        assert len(build["downloads"]) == 4
    download = extra[-1]["downloads"][-1]
    assert download["id"] == 1_000_000 + 2 * 4 + 3
    with zipfile.ZipFile(emulator.body_path(download["id"])) as archive:
        assert archive.testzip() is None


def test_build_objects_without_their_downloads(client: httpx.Client, emulator: Emulator) -> None:
    assert all("downloads" in b for b in client.get("/api/v1/builds").json())
    emulator.config = dataclasses.replace(emulator.config, embed_downloads=False)
    listed = client.get("/api/v1/builds").json()
    assert listed and not any("downloads" in b for b in listed)
    assert "downloads" not in client.get(f"/api/v1/builds/{FAILED_BUILD}").json()
    assert "downloads" in next(b for b in emulator.builds if b["id"] == FAILED_BUILD)
