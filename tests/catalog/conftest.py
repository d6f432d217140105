"""The catalog tests' emulator: in process (through ``httpx.MockTransport``), small bodies,
a data directory of the test's."""

from __future__ import annotations

from pathlib import Path

import pytest

from mkwfs.emulator import Emulator
from tests.helpers import small_emulator


@pytest.fixture
def emulator(tmp_path: Path) -> Emulator:
    return small_emulator(tmp_path)
