"""Faults at the tree level (no FUSE): every request bounded by the timeout, stale-if-error
for listings, and which failures are never hidden. The real emulator plays the server
through ``httpx.MockTransport``; TTLs pass on a ``MockClock`` that only moves when told."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing

from mkwfs.catalog.stale import STALE_RETRY
from mkwfs.content.store import ContentStore
from mkwfs.emulator import BUILDING_BUILD, FAILED_BUILD, LARGE_BUILD, Emulator
from mkwfs.remote.api import ApiClient, Credentials, RetryPolicy
from mkwfs.remote.errors import (
    MkwfsError,
    NotFound,
    PermissionDenied,
    ProtocolError,
    TokenRejected,
    TransportError,
)
from mkwfs.tree.tree import BUILDS_INODE, ROOT_INODE, Tree
from tests.helpers import BASE_URL

LIST = "GET /api/v1/downloads"
BUILDS = "GET /api/v1/builds"


@asynccontextmanager
async def open_tree(
    emulator: Emulator, cache_dir: Path, *, retry: RetryPolicy, seconds: float = 15.0
) -> AsyncIterator[Tree]:
    async with (
        httpx.AsyncClient(transport=emulator.mock_transport()) as http,
        trio.open_nursery() as nursery,
    ):
        api = ApiClient(http, BASE_URL, Credentials(token=emulator.issue_token()), retry)
        content = ContentStore(api, cache_dir, nursery, stall_timeout=seconds)
        yield Tree(api, content, dir_ttl=10, live_ttl=2, timeout=seconds, mount_time=0.0)
        nursery.cancel_scope.cancel()


async def names(tree: Tree, ino: int) -> list[bytes]:
    return [name for name, _ in await tree.listdir(ino)]


async def open_build(tree: Tree, build_id: int) -> int:
    await tree.lookup(ROOT_INODE, b"builds")
    return (await tree.lookup(BUILDS_INODE, str(build_id).encode())).ino


@pytest.mark.parametrize("fault", ["latency", "down"])
async def test_a_request_waits_at_most_the_timeout_retries_included(
    emulator: Emulator, tmp_path: Path, fault: str
) -> None:
    """A server that answers too late, or not at all while the client retries with long
    backoffs: either way the access fails with EIO once the timeout has passed."""
    retry = RetryPolicy(attempts=100, base_delay=0.2, max_delay=0.2)
    async with open_tree(emulator, tmp_path, retry=retry, seconds=0.5) as tree:
        if fault == "latency":
            emulator.config = replace(emulator.config, latency=30.0)
        else:
            emulator.config = replace(emulator.config, down=True)
        started = trio.current_time()
        with trio.fail_after(5), pytest.raises(TransportError) as caught:
            await tree.listdir(BUILDS_INODE)
        assert 0.5 <= trio.current_time() - started < 2.0
        assert caught.value.errno == 5  # EIO
        assert "no answer from the server within 0.5 s" in str(caught.value)
        assert not tree.staleness.active  # nothing was cached: nothing stale to serve


async def test_listings_are_served_stale_while_the_server_is_down_then_fresh_again(
    emulator: Emulator,
    tmp_path: Path,
    mock_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="mkwfs")
    del next(b for b in emulator.builds if b["id"] == FAILED_BUILD)["downloads"]
    async with open_tree(emulator, tmp_path, retry=RetryPolicy(attempts=1)) as tree:
        builds = await names(tree, BUILDS_INODE)
        running = await open_build(tree, BUILDING_BUILD)
        files = await names(tree, running)
        first = next(n for n in files if n != b".build.json")
        attrs = await tree.lookup(running, first)
        body = await tree.read(attrs.ino, 0, 1 << 20)

        emulator.config = replace(emulator.config, down=True)
        mock_clock.jump(60)  # every TTL has passed
        for _ in range(3):
            assert await names(tree, BUILDS_INODE) == builds
            assert await names(tree, running) == files
            assert await tree.read(attrs.ino, 0, 1 << 20) == body  # from the disk cache
        assert tree.staleness.active and tree.staleness.served >= 2
        # A finished build's object in the list carries its files: they are there.
        large = await names(tree, await open_build(tree, LARGE_BUILD))
        assert len(large) == 1 + len(emulator.downloads_of(LARGE_BUILD))
        with pytest.raises(TransportError):  # never listed, not in its object: nothing to serve
            await names(tree, await open_build(tree, FAILED_BUILD))
        stale_lines = [r for r in caplog.records if "serving cached listings" in r.message]
        assert len(stale_lines) == 1  # logged once

        emulator.config = replace(emulator.config, down=False)
        emulator.add_download(BUILDING_BUILD, "NEW.zip")
        mock_clock.jump(STALE_RETRY + 1)
        assert b"NEW.zip" in await names(tree, running)
        assert tree.staleness.since is None
        assert any("answers again" in r.message for r in caplog.records)


@pytest.mark.parametrize(("status", "body"), [(500, "empty"), (503, "html"), (429, "json")])
async def test_server_failures_are_hidden_by_the_last_good_listing(
    emulator: Emulator, tmp_path: Path, mock_clock: trio.testing.MockClock, status: int, body: str
) -> None:
    async with open_tree(emulator, tmp_path, retry=RetryPolicy(attempts=1)) as tree:
        running = await open_build(tree, BUILDING_BUILD)
        files = await names(tree, running)
        mock_clock.jump(60)
        emulator.fail_next(LIST, status, body=body)  # type: ignore[arg-type]
        assert await names(tree, running) == files
        assert tree.staleness.active


@pytest.mark.parametrize(
    ("status", "error"),
    [(401, TokenRejected), (403, PermissionDenied), (404, NotFound), ("malformed", ProtocolError)],
)
async def test_answers_that_are_not_failures_are_never_hidden(
    emulator: Emulator,
    tmp_path: Path,
    mock_clock: trio.testing.MockClock,
    status: int | str,
    error: type[MkwfsError],
) -> None:
    """401, 403 and 404 are the server's word (the token expired, the right was taken, the
    build is gone), and a malformed answer is no listing: each comes through."""
    async with open_tree(emulator, tmp_path, retry=RetryPolicy(attempts=1)) as tree:
        running = await open_build(tree, BUILDING_BUILD)
        await names(tree, running)
        mock_clock.jump(60)
        if status == "malformed":
            emulator.config = replace(emulator.config, malformed_json=True)
        else:
            assert isinstance(status, int)
            emulator.fail_next(LIST, status)
        with pytest.raises(error):
            await names(tree, running)
        assert not tree.staleness.active


async def test_refresh_asks_again_even_right_after_a_failure(
    emulator: Emulator, tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    async with open_tree(emulator, tmp_path, retry=RetryPolicy(attempts=1)) as tree:
        running = await open_build(tree, BUILDING_BUILD)
        await names(tree, running)
        mock_clock.jump(60)
        emulator.fail_next(LIST, 503)
        await names(tree, running)  # stale, and no new try for STALE_RETRY seconds
        emulator.add_download(BUILDING_BUILD, "AFTER.zip")
        tree.invalidate()  # mkwfs refresh / SIGHUP
        assert b"AFTER.zip" in await names(tree, running)
