"""Building blocks for tests of the layers above the API client: an ApiClient talking to
the real emulator through ``httpx.MockTransport`` (no sockets), and a running Tree."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from mkwfs.content.store import ContentStore, open_content_store
from mkwfs.emulator import Emulator, EmulatorConfig
from mkwfs.remote.api import ApiClient, Credentials, RetryPolicy
from mkwfs.tree.tree import Tree

BASE_URL = "http://emulator.test"


def small_emulator(tmp_path: Path) -> Emulator:
    """An emulator with a 4 MiB big file, its bodies under ``tmp_path``."""
    return Emulator(EmulatorConfig(big_file_size=4 * 2**20, data_dir=tmp_path / "data"))


def configure(emulator: Emulator, **changes: object) -> None:
    """Change some of a running emulator's settings (faults, modes)."""
    emulator.config = dataclasses.replace(emulator.config, **changes)  # type: ignore[arg-type]


@asynccontextmanager
async def open_api(emulator: Emulator) -> AsyncIterator[ApiClient]:
    async with httpx.AsyncClient(transport=emulator.mock_transport()) as http:
        yield ApiClient(
            http,
            BASE_URL,
            Credentials(token=emulator.issue_token()),
            retry=RetryPolicy(attempts=1),
        )


@asynccontextmanager
async def open_content(emulator: Emulator, cache_dir: Path) -> AsyncIterator[ContentStore]:
    async with open_api(emulator) as api, open_content_store(api, cache_dir) as content:
        yield content


@asynccontextmanager
async def open_tree(
    emulator: Emulator, cache_dir: Path, *, dir_ttl: float = 10.0, attr_ttl: float = 20.0
) -> AsyncIterator[Tree]:
    async with open_api(emulator) as api, open_content_store(api, cache_dir) as content:
        yield Tree(api, content, dir_ttl=dir_ttl, attr_ttl=attr_ttl, mount_time=1_000_000.0)
