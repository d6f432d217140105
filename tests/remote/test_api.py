"""Tests of ``ApiClient``'s calls (construction, lists, probes, downloads): the real emulator
through ``httpx.MockTransport`` wherever it can play the server's part, and a few-line handler
for the shapes it cannot (malformed JSON, pages that never advance, short bodies, raw
transport failures)."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from mkwfs.emulator import DEMO_BUILD, FORBIDDEN_BUILD, LARGE_BUILD, Emulator, serve_in_thread
from mkwfs.remote.api import PAGE_LIMIT, ApiClient, Credentials, RetryPolicy
from mkwfs.remote.client import open_http_client
from mkwfs.remote.errors import (
    ConfigError,
    NotFound,
    PermissionDenied,
    ProtocolError,
    ServerError,
    TransportError,
)
from tests.remote.support import (
    BASE,
    EMAIL,
    GET,
    LIMIT,
    NO_RETRY,
    Handler,
    json_response,
    login_credentials,
    open_api,
    paged,
    read_all,
    with_config,
)

# -- construction -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base_url", "credentials"),
    [
        ("ftp://mk.test", Credentials(token="t")),
        ("http://user:pw@mk.test", Credentials(token="t")),
        (BASE, Credentials()),
        (BASE, Credentials(email=EMAIL)),
    ],
)
async def test_unusable_configuration_is_refused(base_url: str, credentials: Credentials) -> None:
    async with httpx.AsyncClient(
        transport=httpx.MockTransport(lambda request: httpx.Response(200))
    ) as http:
        with pytest.raises(ConfigError):
            ApiClient(http, base_url, credentials)


# -- lists ------------------------------------------------------------------------------------


async def test_follows_feathers_pages(emulator: Emulator) -> None:
    with_config(emulator, page_size=70)
    async with open_api(emulator.mock_transport(), login_credentials()) as api:
        downloads = await api.list_downloads(LARGE_BUILD)
    assert len(downloads) == 1000
    assert len({d.id for d in downloads}) == 1000
    assert emulator.requests["GET /api/v1/downloads"] == 15  # ceil(1000 / 70)


def feathers_service(items: list[dict[str, int]], seen: list[httpx.URL]) -> Handler:
    """A handler paginating ``items`` as a stock Feathers service does: pages of 10 unless
    ``$limit`` asks for more, and never more than 50 (``paginate: {default: 10, max: 50}``)."""

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        skip = int(request.url.params.get("$skip", 0))
        limit = min(int(request.url.params.get("$limit", 10)), 50)
        page = {"total": len(items), "limit": limit, "skip": skip, "data": items[skip:][:limit]}
        return json_response(page)

    return handler


async def test_asks_for_the_largest_pages_a_feathers_server_allows() -> None:
    seen: list[httpx.URL] = []
    items = [{"id": i, "build_id": 7} for i in range(1, 1001)]
    async with open_api(feathers_service(items, seen)) as api:
        downloads = await api.list_downloads(7)
    assert [d.id for d in downloads] == list(range(1, 1001))
    assert len(seen) == 20  # pages of 50, the server's cap: not 100 pages of its default 10
    assert all(url.params["$limit"] == str(PAGE_LIMIT) for url in seen)
    assert [url.params.get("$skip") for url in seen[:3]] == [None, "50", "100"]


async def test_a_1000_file_build_costs_20_requests_against_a_cap_of_50(
    emulator: Emulator,
) -> None:
    with_config(emulator, page_size=50)
    async with open_api(emulator.mock_transport(), login_credentials()) as api:
        downloads = await api.list_downloads(LARGE_BUILD)
    assert len({d.id for d in downloads}) == 1000
    assert emulator.requests["GET /api/v1/downloads"] == 20


async def test_a_bare_array_cut_by_the_limit_is_followed(emulator: Emulator) -> None:
    """A Feathers service without pagination takes ``$limit`` as a limit."""
    async with httpx.AsyncClient(transport=emulator.mock_transport()) as http:
        api = ApiClient(http, BASE, login_credentials(), NO_RETRY, page_limit=300)
        downloads = await api.list_downloads(LARGE_BUILD)
    assert [d.id for d in downloads] == [d["id"] for d in emulator.downloads_of(LARGE_BUILD)]
    assert emulator.requests["GET /api/v1/downloads"] == 4  # 300, 300, 300, 100


async def test_a_server_ignoring_skip_does_not_repeat_its_list() -> None:
    whole = [{"id": 1}, {"id": 2}, {"id": 3}]
    seen: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        return json_response(whole)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        api = ApiClient(http, BASE, Credentials(token="t"), NO_RETRY, page_limit=3)
        assert [build.id for build in await api.list_builds()] == [1, 2, 3]
    assert len(seen) == 2


async def test_lists_projects_and_patterns(emulator: Emulator) -> None:
    with_config(emulator, page_size=1)
    async with open_api(emulator.mock_transport(), login_credentials()) as api:
        projects = await api.list_projects()
        patterns = await api.list_patterns()
    assert list(projects) == emulator.projects
    assert list(patterns) == emulator.patterns


@pytest.mark.parametrize(
    ("pages", "complaint"),
    [
        ([{"total": 3, "limit": 2, "skip": 0, "data": [{"id": 1}, {"id": 2}]},
          {"total": 3, "limit": 2, "skip": 2, "data": []}], "empty page"),
        ([{"total": 3, "limit": 2, "skip": 0, "data": [{"id": 1}, {"id": 2}]},
          {"total": 3, "limit": 2, "skip": 0, "data": [{"id": 1}, {"id": 2}]}], "from 0"),
        ([{"total": 3, "data": [{"id": 1}]}, [{"id": 2}]], "array or a page"),
        ([{"total": "3", "data": [{"id": 1}]}], "page without"),
        ([{"builds": []}], "page without"),
        ([["not a build"]], "not a JSON object"),
        ([[{"id": "5139"}]], "no valid integer id"),
    ],
)  # fmt: skip
async def test_inconsistent_lists_are_protocol_errors(pages: list[Any], complaint: str) -> None:
    async with open_api(paged(pages)) as api:
        with pytest.raises(ProtocolError, match=complaint) as caught:
            await api.list_builds()
    assert caught.value.url.startswith(f"{BASE}/api/v1/builds")


async def test_pages_without_skip_echo_are_followed() -> None:
    pages = [{"total": 2, "data": [{"id": 1}]}, {"total": 2, "data": [{"id": 2}]}]
    async with open_api(paged(pages)) as api:
        assert [build.id for build in await api.list_builds(project_id=402)] == [1, 2]


async def test_malformed_json_is_a_protocol_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"[{", headers={"Content-Type": "application/json"})

    async with open_api(handler) as api:
        with pytest.raises(ProtocolError, match="not valid JSON") as caught:
            await api.list_downloads(DEMO_BUILD)
    assert caught.value.url == f"{BASE}/api/v1/downloads?build_id={DEMO_BUILD}&{LIMIT}"


async def test_list_filters_are_sent_as_query(emulator: Emulator) -> None:
    seen: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        return json_response([])

    async with open_api(handler) as api:
        await api.list_builds(project_id=402, releases='{"DWH_GROUP":"R1"}')
    assert dict(seen[0].params) == {
        "project_id": "402",
        "releases": '{"DWH_GROUP":"R1"}',
        "$limit": str(PAGE_LIMIT),
    }


# -- open_download ----------------------------------------------------------------------------


async def test_downloads_a_whole_body(emulator: Emulator, demo_file: tuple[int, bytes]) -> None:
    download_id, whole = demo_file
    async with open_api(emulator.mock_transport(), login_credentials()) as api:
        assert await read_all(api, download_id) == (0, len(whole), whole)
    assert emulator.requests["GET /api/v1/downloads/:id"] == 1


@pytest.mark.parametrize(("start", "end"), [(1000, None), (0, 10), (5, 6), (1000, 3000)])
async def test_downloads_a_range(
    emulator: Emulator, demo_file: tuple[int, bytes], start: int, end: int | None
) -> None:
    download_id, whole = demo_file
    async with open_api(emulator.mock_transport(), login_credentials()) as api:
        assert await read_all(api, download_id, start, end) == (start, len(whole), whole[start:end])


async def test_a_server_ignoring_ranges_sends_from_0(
    emulator: Emulator, demo_file: tuple[int, bytes]
) -> None:
    with_config(emulator, ranges=False)
    download_id, whole = demo_file
    async with open_api(emulator.mock_transport(), login_credentials()) as api:
        assert await read_all(api, download_id, 1000) == (0, len(whole), whole)


async def test_chunked_download_has_no_size(
    emulator: Emulator, demo_file: tuple[int, bytes]
) -> None:
    with_config(emulator, content_length=False, ranges=False)
    download_id, whole = demo_file
    async with open_api(emulator.mock_transport(), login_credentials()) as api:
        assert await read_all(api, download_id) == (0, None, whole)


async def test_download_errors_come_before_the_body(emulator: Emulator) -> None:
    forbidden = emulator.downloads_of(FORBIDDEN_BUILD)[0]["id"]
    async with open_api(emulator.mock_transport(), login_credentials()) as api:
        with pytest.raises(PermissionDenied) as caught:
            await read_all(api, forbidden)
        assert "permission" in caught.value.server_message
        with pytest.raises(NotFound):
            await read_all(api, 999_999)


async def test_download_logs_in_again_after_expiry(
    emulator: Emulator, demo_file: tuple[int, bytes]
) -> None:
    download_id, whole = demo_file
    credentials = replace(login_credentials(), token=emulator.issue_token(lifetime=-1))
    async with open_api(emulator.mock_transport(), credentials) as api:
        assert await read_all(api, download_id, 0, 100) == (0, len(whole), whole[:100])
    assert emulator.requests["POST /authentication"] == 1
    assert emulator.requests["GET /api/v1/downloads/:id"] == 2


async def test_download_is_not_retried(
    emulator: Emulator, demo_file: tuple[int, bytes], autojump_clock: trio.testing.MockClock
) -> None:
    emulator.fail_next("GET /api/v1/downloads/:id", 503)
    async with open_api(emulator.mock_transport(), login_credentials(), RetryPolicy()) as api:
        with pytest.raises(ServerError):
            await read_all(api, demo_file[0])
    assert emulator.requests["GET /api/v1/downloads/:id"] == 1


async def test_a_dropped_connection_is_a_transport_error(
    emulator: Emulator, demo_file: tuple[int, bytes]
) -> None:
    with_config(emulator, drop_after=1000)
    received = bytearray()
    async with (
        open_api(emulator.mock_transport(), login_credentials()) as api,
        api.open_download(demo_file[0]) as stream,
    ):
        with pytest.raises(TransportError, match="RemoteProtocolError"):
            async for chunk in stream.iter_chunks():
                received += chunk
    assert received == demo_file[1][:1000]


async def test_over_real_http(emulator: Emulator, demo_file: tuple[int, bytes]) -> None:
    """A real socket: keep-alive, HEAD and 206 through h11, a drop mid-body."""
    download_id, whole = demo_file
    with serve_in_thread(emulator) as url, trio.fail_after(10):
        async with httpx.AsyncClient() as http:
            api = ApiClient(http, url, login_credentials(), NO_RETRY)
            assert (await api.probe_download(download_id)).size == len(whole)
            with_config(emulator, head=False)
            assert (await api.probe_download(download_id)).size == len(whole)
            assert await read_all(api, download_id, 10) == (10, len(whole), whole[10:])
            with_config(emulator, drop_after=1000)
            with pytest.raises(TransportError):
                await read_all(api, download_id)
            assert len(await api.list_downloads(DEMO_BUILD)) > 1
    assert api.requests == emulator.requests


async def test_a_short_body_is_a_protocol_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"12345", headers={"Content-Length": "10"})

    async with open_api(handler) as api:
        with pytest.raises(ProtocolError, match="after 5 of 10 bytes"):
            await read_all(api, 1)


async def test_a_connection_lost_mid_body_is_a_transport_error() -> None:
    class Broken(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield b"first bytes"
            raise httpx.ReadError("connection reset by peer")

    received: list[bytes] = []
    answer = httpx.Response(200, stream=Broken())
    async with open_api(lambda request: answer) as api, api.open_download(1) as stream:
        with pytest.raises(TransportError, match="ReadError"):
            async for chunk in stream.iter_chunks():
                received.append(chunk)
    assert received == [b"first bytes"]


async def test_a_206_from_the_wrong_offset_is_a_protocol_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["Range"] == "bytes=100-"
        return httpx.Response(206, content=b"x", headers={"Content-Range": "bytes 0-0/500"})

    async with open_api(handler) as api:
        with pytest.raises(ProtocolError, match="from 100, got them from 0"):
            await read_all(api, 1, 100)


async def test_a_content_encoded_body_is_decoded_and_unsized() -> None:
    packed = gzip.compress(b"hello " * 100)

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["Accept-Encoding"] == "identity"
        return httpx.Response(200, content=packed, headers={"Content-Encoding": "gzip"})

    async with open_api(handler) as api:
        assert await read_all(api, 1) == (0, None, b"hello " * 100)


@pytest.mark.parametrize(("start", "end"), [(-1, None), (5, 5), (5, 4)])
async def test_an_invalid_range_is_a_caller_error(start: int, end: int | None) -> None:
    async with open_api(lambda request: httpx.Response(200)) as api:
        with pytest.raises(ValueError, match="range"):
            await read_all(api, 1, start, end)
    assert not api.requests


# -- small bodies whole -----------------------------------------------------------------------


async def test_a_small_body_downloads_whole_on_the_lean_path(emulator: Emulator) -> None:
    [download_id] = [d["id"] for d in emulator.downloads_of(LARGE_BUILD)[:1]]
    whole = emulator.body_path(download_id).read_bytes()
    with serve_in_thread(emulator) as url, trio.fail_after(30):
        async with open_http_client() as http:
            api = ApiClient(http, url, Credentials(token=emulator.issue_token()), NO_RETRY,
                            heads=http.curl)  # fmt: skip
            assert await api.download_whole(download_id, max_size=len(whole)) == whole
            with pytest.raises(ProtocolError, match="over"):
                await api.download_whole(download_id, max_size=len(whole) - 1)
            with pytest.raises(NotFound):
                await api.download_whole(999_999, max_size=1000)
            emulator.fail_next(GET, 503)
            with pytest.raises(ServerError):
                await api.download_whole(download_id, max_size=len(whole))
    assert emulator.requests[GET] == 4
    assert api.requests == emulator.requests
    assert api.stats.bytes_received >= len(whole)


async def test_a_whole_download_logs_in_again_after_expiry(emulator: Emulator) -> None:
    [download_id] = [d["id"] for d in emulator.downloads_of(LARGE_BUILD)[:1]]
    whole = emulator.body_path(download_id).read_bytes()
    credentials = replace(login_credentials(), token=emulator.issue_token(lifetime=-1))
    with serve_in_thread(emulator) as url, trio.fail_after(30):
        async with open_http_client() as http:
            api = ApiClient(http, url, credentials, NO_RETRY, heads=http.curl)
            assert await api.download_whole(download_id, max_size=len(whole)) == whole
    assert emulator.requests["POST /authentication"] == 1
    assert emulator.requests[GET] == 2


async def test_without_a_lean_path_a_whole_download_streams(
    emulator: Emulator, demo_file: tuple[int, bytes]
) -> None:
    download_id, whole = demo_file
    credentials = Credentials(token=emulator.issue_token())
    async with open_api(emulator.mock_transport(), credentials) as api:
        assert await api.download_whole(download_id, max_size=len(whole)) == whole
        with pytest.raises(ProtocolError, match="over"):
            await api.download_whole(download_id, max_size=len(whole) - 1)
    assert emulator.requests[GET] == 2
