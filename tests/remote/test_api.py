"""Tests of ``ApiClient``'s calls (construction, lists, probes, downloads): the real emulator
through ``httpx.MockTransport`` wherever it can play the server's part, and a few-line handler
for the shapes it cannot (malformed JSON, pages that never advance, short bodies, raw
transport failures)."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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
from mkwfs.remote.models import ContentInfo
from tests.remote.support import (
    BASE,
    EMAIL,
    GET,
    HEAD,
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


# -- probe_download ---------------------------------------------------------------------------


async def test_probe_with_head(emulator: Emulator, demo_file: tuple[int, bytes]) -> None:
    download_id, body = demo_file
    size = len(body)
    async with open_api(emulator.mock_transport(), login_credentials()) as api:
        info = await api.probe_download(download_id)
    assert info.size == size
    assert info.accepts_ranges
    assert info.filename
    assert emulator.requests["HEAD /api/v1/downloads/:id"] == 1
    assert emulator.requests["GET /api/v1/downloads/:id"] == 0


@pytest.mark.parametrize(
    ("ranges", "content_length", "size_known", "accepts_ranges"),
    [(True, True, True, True), (False, True, True, False), (False, False, False, False)],
)
async def test_probe_without_head_reads_no_body(
    emulator: Emulator,
    demo_file: tuple[int, bytes],
    ranges: bool,
    content_length: bool,
    size_known: bool,
    accepts_ranges: bool,
) -> None:
    with_config(emulator, head=False, ranges=ranges, content_length=content_length)
    download_id, body = demo_file
    size = len(body)
    async with open_api(emulator.mock_transport(), login_credentials()) as api:
        info = await api.probe_download(download_id)
    assert info.size == (size if size_known else None)
    assert info.accepts_ranges is accepts_ranges
    assert emulator.requests["HEAD /api/v1/downloads/:id"] == 1
    assert emulator.requests["GET /api/v1/downloads/:id"] == 1
    assert api.requests == emulator.requests
    assert emulator.bytes_sent <= 1


async def test_probe_of_a_forbidden_download(emulator: Emulator) -> None:
    download_id = emulator.downloads_of(FORBIDDEN_BUILD)[0]["id"]
    async with open_api(emulator.mock_transport(), login_credentials()) as api:
        with pytest.raises(PermissionDenied):
            await api.probe_download(download_id)


async def test_probe_falls_back_on_501_and_reads_only_the_one_byte_range() -> None:
    body_reads: list[bool] = []

    class Body(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            body_reads.append(True)
            yield b"P"

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "HEAD":
            return httpx.Response(501)
        assert request.headers["Range"] == "bytes=0-0"
        return httpx.Response(206, headers={"Content-Range": "bytes 0-0/12345"}, stream=Body())

    async with open_api(handler) as api:
        info = await api.probe_download(1)
    assert (info.size, info.accepts_ranges) == (12345, True)
    assert api.requests == {"HEAD /api/v1/downloads/:id": 1, "GET /api/v1/downloads/:id": 1}
    assert body_reads == [True]  # one byte, read so that the connection can be reused


async def test_probe_never_reads_a_whole_body_from_a_server_ignoring_range() -> None:
    body_reads: list[bool] = []

    class Body(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            body_reads.append(True)
            yield b"P" * 12345

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "HEAD":
            return httpx.Response(405)
        return httpx.Response(200, headers={"Content-Length": "12345"}, stream=Body())

    async with open_api(handler) as api:
        info = await api.probe_download(1)
    assert (info.size, info.accepts_ranges) == (12345, False)
    assert not body_reads


@pytest.mark.parametrize(
    ("disposition", "filename"),
    [
        ('attachment; filename="CORE_DV.zip"', "CORE_DV.zip"),
        ('ATTACHMENT;filename = " x y.zip";', " x y.zip"),
        ('attachment; filename=""', None),
        ("attachment; filename=plain.zip", "plain.zip"),
        ('attachment; filename="a\\"b.zip"', 'a"b.zip'),
        ("attachment; filename=\"a?.zip\"; filename*=UTF-8''%C3%A4%20b.zip", "ä b.zip"),
        ("attachment; filename*=utf-8'de'%C3%BC.zip", "ü.zip"),
        ("attachment", None),
        (None, None),
    ],
)
async def test_probe_reads_the_filename(disposition: str | None, filename: str | None) -> None:
    headers = {"Content-Length": "10", "Accept-Ranges": "bytes"}
    if disposition is not None:
        headers["Content-Disposition"] = disposition
    async with open_api(lambda request: httpx.Response(200, headers=headers)) as api:
        info = await api.probe_download(1)
    assert (info.size, info.accepts_ranges, info.filename) == (10, True, filename)


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


# -- probe_downloads (the batch path of the mount's transport) ---------------------------------


@asynccontextmanager
async def open_batch_api(
    url: str, credentials: Credentials, *, batch: bool = True
) -> AsyncIterator[ApiClient]:
    """An ApiClient over real HTTP, as the mount has it: with the transport's batch path."""
    async with open_http_client() as http:
        yield ApiClient(http, url, credentials, NO_RETRY, heads=http.curl if batch else None)


async def probe_all(
    api: ApiClient, ids: list[int], at_once: int = 8
) -> dict[int, ContentInfo | None]:
    found: dict[int, ContentInfo | None] = {}
    with trio.fail_after(30):
        async for download_id, info in api.probe_downloads(ids, at_once=at_once):
            assert download_id not in found
            found[download_id] = info
    assert sorted(found) == sorted(ids)
    return found


async def test_a_batch_probe_says_what_single_probes_say(emulator: Emulator) -> None:
    ids = [d["id"] for d in emulator.downloads_of(LARGE_BUILD)[:50]]
    with serve_in_thread(emulator) as url:
        async with open_batch_api(url, Credentials(token=emulator.issue_token())) as api:
            found = await probe_all(api, ids)
            single = {i: await api.probe_download(i) for i in ids}
    assert found == single
    assert all(info is not None and info.size and info.filename for info in found.values())
    assert emulator.requests[HEAD] == 2 * len(ids)
    assert api.requests == emulator.requests


@pytest.mark.parametrize("status", [401, 404, 429, 503])
async def test_a_batch_probe_stops_at_an_answer_it_cannot_take(
    emulator: Emulator, status: int
) -> None:
    ids = [d["id"] for d in emulator.downloads_of(LARGE_BUILD)[:100]]
    emulator.fail_next(HEAD, status)
    with serve_in_thread(emulator) as url:
        async with open_batch_api(url, Credentials(token=emulator.issue_token())) as api:
            found = await probe_all(api, ids)
    sizes = {i: emulator.body_path(i).stat().st_size for i in ids}
    told = {i: info.size for i, info in found.items() if info is not None}
    assert told.items() <= sizes.items()
    assert len(told) < len(ids)  # the failed one, and all after it, are left to probe_download
    assert emulator.requests[HEAD] <= len(told) + 1 + 8  # nothing sent after the stop
    assert api.stats.failures[f"HTTP {status}"] == 1


async def test_a_batch_probe_on_a_server_without_head_sends_no_more_heads(
    emulator: Emulator, demo_file: tuple[int, bytes]
) -> None:
    download_id, whole = demo_file
    ids = [d["id"] for d in emulator.downloads_of(DEMO_BUILD)]
    with_config(emulator, head=False)
    with serve_in_thread(emulator) as url:
        async with open_batch_api(url, Credentials(token=emulator.issue_token())) as api:
            # One at a time: the first answer (a 405) stops the batch before a second HEAD.
            assert set((await probe_all(api, ids, at_once=1)).values()) == {None}
            # Once refused, HEAD is not tried again: by the batch, nor by a single probe.
            assert set((await probe_all(api, ids, at_once=1)).values()) == {None}
            assert (await api.probe_download(download_id)).size == len(whole)
    assert emulator.requests[HEAD] == 1
    assert emulator.requests[GET] == 1


async def test_without_a_batch_path_every_probe_is_left_to_probe_download(
    emulator: Emulator,
) -> None:
    ids = [d["id"] for d in emulator.downloads_of(DEMO_BUILD)]
    with serve_in_thread(emulator) as url:
        async with open_batch_api(url, Credentials(token="t"), batch=False) as api:
            assert set((await probe_all(api, ids)).values()) == {None}
    assert sum(emulator.requests.values()) == 0


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
