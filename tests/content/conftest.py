"""The content tests' emulator: a big file of ``SIZE`` bytes, a data directory of the test's."""

from __future__ import annotations

from pathlib import Path

import pytest

from mkwfs.emulator import Emulator, EmulatorConfig
from tests.content.support import SIZE


@pytest.fixture
def emulator(tmp_path: Path) -> Emulator:
    return Emulator(EmulatorConfig(big_file_size=SIZE, data_dir=tmp_path / "data"))
