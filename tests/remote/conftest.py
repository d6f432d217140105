"""Fixtures of the API client's tests: a fresh emulator, its bodies made once per module."""

from __future__ import annotations

from pathlib import Path

import pytest

from mkwfs.emulator import DEMO_BUILD, Emulator, EmulatorConfig


@pytest.fixture(scope="module")
def bodies_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the emulators of this module keep generated bodies: made once, shared."""
    return tmp_path_factory.mktemp("emulator-bodies")


@pytest.fixture
def emulator(bodies_dir: Path) -> Emulator:
    """A fresh emulator: its own counters, tokens and config."""
    return Emulator(EmulatorConfig(big_file_size=4 * 2**20, data_dir=bodies_dir))


@pytest.fixture
def demo_file(emulator: Emulator) -> tuple[int, bytes]:
    """The id and body of the demo build's largest download."""
    sizes = {
        entry["id"]: emulator.body_path(entry["id"]).stat().st_size
        for entry in emulator.downloads_of(DEMO_BUILD)
    }
    download_id = max(sizes, key=sizes.__getitem__)
    return download_id, emulator.body_path(download_id).read_bytes()
