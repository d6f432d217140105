"""Fixtures of the emulator's tests: a fresh emulator per test with small bodies
(BIG_ZIP of 4 MiB) generated into ``tmp_path``, so every test takes well under a second."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mkwfs.emulator import Emulator, EmulatorConfig
from tests.emulator.common import BIG_SIZE


@pytest.fixture
def config(tmp_path: Path) -> EmulatorConfig:
    return EmulatorConfig(big_file_size=BIG_SIZE, data_dir=tmp_path / "bodies")


@pytest.fixture
def emulator(config: EmulatorConfig) -> Emulator:
    return Emulator(config)


@pytest.fixture
def client(emulator: Emulator) -> Iterator[httpx.Client]:
    """An httpx client on the mock transport, already holding a valid token."""
    with httpx.Client(
        transport=emulator.mock_transport(),
        base_url="http://emulator.test",
        headers={"Authorization": f"Bearer {emulator.issue_token()}"},
    ) as http:
        yield http
