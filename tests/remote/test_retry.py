"""Retries of idempotent calls: which failures, how often, how long between."""

from __future__ import annotations

import httpx
import pytest
import trio
import trio.testing

from mkwfs.emulator import DEMO_BUILD, Emulator
from mkwfs.remote.api import RetryPolicy
from mkwfs.remote.errors import HTTPStatusError, NotFound, PermissionDenied, ServerError
from tests.remote.support import NO_RETRY, json_response, login_credentials, open_api, with_config


def test_retry_policy_needs_an_attempt() -> None:
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)


# -- retries ----------------------------------------------------------------------------------


async def test_retries_injected_503s(
    emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    emulator.fail_next("GET /api/v1/downloads", 503, count=2)
    started = trio.current_time()
    async with open_api(emulator.mock_transport(), login_credentials(), RetryPolicy()) as api:
        downloads = await api.list_downloads(DEMO_BUILD)
    assert len(downloads) == len(emulator.downloads_of(DEMO_BUILD))
    assert emulator.requests["GET /api/v1/downloads"] == 3
    assert trio.current_time() - started <= 0.25 + 0.5


async def test_gives_up_after_the_last_attempt(
    emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    emulator.fail_next("GET /api/v1/builds/:id", 504, count=10)
    policy = RetryPolicy(attempts=3, base_delay=1, max_delay=1.5)
    started = trio.current_time()
    async with open_api(emulator.mock_transport(), login_credentials(), policy) as api:
        with pytest.raises(ServerError):
            await api.get_build(DEMO_BUILD)
    assert emulator.requests["GET /api/v1/builds/:id"] == 3
    assert trio.current_time() - started <= 1 + 1.5


@pytest.mark.parametrize(("status", "error_class"), [(500, ServerError), (404, NotFound),
                                                     (403, PermissionDenied)])  # fmt: skip
async def test_does_not_retry_final_answers(
    emulator: Emulator, status: int, error_class: type[HTTPStatusError]
) -> None:
    emulator.fail_next("GET /api/v1/builds", status)
    async with open_api(emulator.mock_transport(), login_credentials(), RetryPolicy()) as api:
        with pytest.raises(error_class):
            await api.list_builds()
    assert emulator.requests["GET /api/v1/builds"] == 1


async def test_attempts_1_disables_retries(emulator: Emulator) -> None:
    emulator.fail_next("GET /api/v1/builds", 503)
    async with open_api(emulator.mock_transport(), login_credentials(), NO_RETRY) as api:
        with pytest.raises(ServerError):
            await api.list_builds()
    assert emulator.requests["GET /api/v1/builds"] == 1


@pytest.mark.parametrize(("retry_after", "waited"), [("3", 3.0), ("100", 8.0)])
async def test_429_waits_retry_after_capped(
    autojump_clock: trio.testing.MockClock, retry_after: str, waited: float
) -> None:
    answers = [httpx.Response(429, headers={"Retry-After": retry_after}), json_response([])]
    started = trio.current_time()
    async with open_api(lambda request: answers.pop(0), retry=RetryPolicy()) as api:
        assert await api.list_builds() == []
    assert trio.current_time() - started == pytest.approx(waited)


async def test_retries_transport_failures(autojump_clock: trio.testing.MockClock) -> None:
    failures = [httpx.ConnectError("refused"), httpx.ReadTimeout("slow")]

    def handler(request: httpx.Request) -> httpx.Response:
        if failures:
            raise failures.pop(0)
        return json_response({"id": 5, "status": "FINISHED"})

    async with open_api(handler, retry=RetryPolicy()) as api:
        assert (await api.get_build(5)).status == "FINISHED"
    assert api.requests["GET /api/v1/builds/:id"] == 3


async def test_retries_each_page_alone(
    emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    with_config(emulator, page_size=2)
    async with open_api(emulator.mock_transport(), login_credentials(), RetryPolicy()) as api:
        await api.list_downloads(DEMO_BUILD)  # logs in
        emulator.reset_counters()
        api.requests.clear()
        emulator.fail_next("GET /api/v1/downloads", 502)
        downloads = await api.list_downloads(DEMO_BUILD)
    assert len(downloads) == len(emulator.downloads_of(DEMO_BUILD))
    pages = -(-len(downloads) // 2)
    assert emulator.requests["GET /api/v1/downloads"] == pages + 1
    assert api.requests == emulator.requests
