"""The catalog's start at mount time: one small check of the server, then the list of builds
in the background: the one kept on disk served at once, the server's when it comes; a token
the server rejects fails the start even with a list kept."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing

from mkwfs.catalog.listings import Catalog
from mkwfs.catalog.sqlite import open_sqlite_store
from mkwfs.emulator import DEMO_BUILD, Emulator
from mkwfs.remote.api import ApiClient, Credentials, RetryPolicy
from mkwfs.remote.errors import ProtocolError, TokenRejected
from tests.helpers import BASE_URL


class HeldList:
    """A transport over the emulator that holds the requests for builds (but the check's,
    ``$limit=0``) until ``release``; it records the ``$limit`` of each request for builds."""

    def __init__(self, emulator: Emulator, *, held: bool) -> None:
        self.emulator = emulator
        self.released = trio.Event()
        if not held:
            self.released.set()
        self.limits: list[str | None] = []

    def release(self) -> None:
        self.released.set()

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/builds":
            limit = request.url.params.get("$limit")
            self.limits.append(limit)
            if limit != "0":
                await self.released.wait()
        return self.emulator.handle(request)


@asynccontextmanager
async def open_catalog(
    handler: Callable[[httpx.Request], object], cache_dir: Path, token: str
) -> AsyncIterator[Catalog]:
    transport = httpx.MockTransport(handler)  # type: ignore[arg-type]
    async with (
        httpx.AsyncClient(transport=transport) as http,
        open_sqlite_store(cache_dir) as store,
    ):
        api = ApiClient(http, BASE_URL, Credentials(token=token), retry=RetryPolicy(attempts=1))
        yield Catalog(
            api, dir_ttl=60.0, final_ttl=86400.0, live_ttl=2.0, timeout=5.0,
            id_limit=1 << 40, store=store,
        )  # fmt: skip


async def test_a_cold_start_is_done_at_the_check_and_builds_waits_for_the_list(
    tmp_path: Path, emulator: Emulator
) -> None:
    server = HeldList(emulator, held=True)
    async with open_catalog(server.handle, tmp_path, emulator.issue_token()) as catalog:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(5):
                await catalog.start(nursery)  # the list is held: start did not wait for it
            assert server.limits[0] == "0"
            got: list[int] = []

            async def list_builds() -> None:
                got.extend(await catalog.builds())

            nursery.start_soon(list_builds)
            await trio.sleep(0.2)
            assert got == []  # waits for the list
            server.release()
        assert DEMO_BUILD in got
        assert server.limits[1:] == ["5000"]  # one list: builds() joined start's


async def test_a_remount_serves_the_kept_list_before_the_server_answers(
    tmp_path: Path, emulator: Emulator
) -> None:
    emulator.remove_build(DEMO_BUILD)
    async with open_catalog(HeldList(emulator, held=False).handle, tmp_path,
                            emulator.issue_token()) as catalog:  # fmt: skip
        await catalog.start()
        kept = await catalog.builds()
    assert DEMO_BUILD not in kept
    emulator.restore_build(DEMO_BUILD)
    server = HeldList(emulator, held=True)
    async with open_catalog(server.handle, tmp_path, emulator.issue_token()) as catalog:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(5):
                await catalog.start(nursery)
                assert (await catalog.builds()).keys() == kept.keys()  # the server holds
            assert not catalog.staleness.offline
            server.release()
            await trio.testing.wait_all_tasks_blocked()  # the revalidation is done
            assert DEMO_BUILD in await catalog.builds()
        assert server.limits == ["0", "5000"]


async def test_a_rejected_token_fails_a_remount_with_a_kept_list(
    tmp_path: Path, emulator: Emulator
) -> None:
    async with open_catalog(HeldList(emulator, held=False).handle, tmp_path,
                            emulator.issue_token()) as catalog:  # fmt: skip
        await catalog.start()
        assert DEMO_BUILD in await catalog.builds()
    server = HeldList(emulator, held=True)
    async with open_catalog(server.handle, tmp_path, "not-a-valid-token") as catalog:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(5), pytest.raises(TokenRejected):
                await catalog.start(nursery)
        assert not catalog.staleness.offline
    assert server.limits == ["0"]


@pytest.mark.parametrize(
    ("body", "content_type", "fails"),
    [
        (b'{"total":3,"limit":0,"skip":0,"data":[]}', "application/json", False),
        (b"[]", "application/json", False),
        # A server that ignores $limit: its whole list, of which only the start is read.
        (b"[" + b'{"id":1,"name":"x"},' * 20_000 + b'{"id":2}]', "application/json", False),
        (b"<html><body>hello</body></html>", "text/html", True),
        (b'{"message":"hello"}', "application/json", True),
    ],
)
async def test_the_check_wants_a_list_answer(body: bytes, content_type: str, fails: bool) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"Content-Type": content_type})

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        api = ApiClient(http, BASE_URL, Credentials(token="t"), retry=RetryPolicy(attempts=1))
        if fails:
            with pytest.raises(ProtocolError):
                await api.check_builds()
        else:
            await api.check_builds()
