"""Size probes (``probe_download`` and the batch ``probe_downloads``): ``HEAD``, and for a
server without it a one-byte ``GET`` that reads nothing more; the refusal paid once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import trio
import trio.testing

from mkwfs.emulator import (
    BIG_ZIP,
    DEMO_BUILD,
    FORBIDDEN_BUILD,
    LARGE_BUILD,
    Emulator,
    EmulatorConfig,
    serve_in_thread,
)
from mkwfs.remote.api import ApiClient, Credentials
from mkwfs.remote.client import open_http_client
from mkwfs.remote.errors import PermissionDenied, RangeNotSatisfiable, ServerError
from mkwfs.remote.models import ContentInfo
from tests.remote.support import (
    GET,
    HEAD,
    NO_RETRY,
    login_credentials,
    open_api,
    with_config,
)

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


# -- what a probe costs --------------------------------------------------------------------


class CountedBody(httpx.AsyncByteStream):
    """A body that counts the chunks taken from it."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.taken = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            self.taken += 1
            yield chunk


@pytest.mark.parametrize(
    ("content_range", "chunks", "taken"),
    [
        ("bytes 0-0/12345", [b"P", b"more than asked for" * 1000], 2),  # stops at the excess
        ("bytes 0-99/12345", [b"P" * 100], 0),  # not the byte asked for: not read at all
    ],
)
async def test_a_ranged_probe_reads_no_more_than_the_one_byte(
    content_range: str, chunks: list[bytes], taken: int
) -> None:
    body = CountedBody(chunks)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "HEAD":
            return httpx.Response(405)
        return httpx.Response(206, headers={"Content-Range": content_range}, stream=body)

    async with open_api(handler) as api:
        info = await api.probe_download(1)
    assert (info.size, info.accepts_ranges) == (12345, True)
    assert body.taken == taken


async def test_concurrent_probes_pay_a_refused_head_once(emulator: Emulator) -> None:
    with_config(emulator, head=False)
    ids = [d["id"] for d in emulator.downloads_of(DEMO_BUILD)]
    async with (
        open_api(emulator.mock_transport(), login_credentials()) as api,
        trio.open_nursery() as nursery,
    ):
        for download_id in ids:
            nursery.start_soon(api.probe_download, download_id)
    assert emulator.requests[HEAD] == 1
    assert emulator.requests[GET] == len(ids)


async def test_probes_wait_for_the_first_head_then_go_together(emulator: Emulator) -> None:
    ids = [d["id"] for d in emulator.downloads_of(DEMO_BUILD)]
    async with open_api(emulator.mock_transport(), login_credentials()) as api:
        found = {}

        async def probe(download_id: int) -> None:
            found[download_id] = (await api.probe_download(download_id)).size

        async with trio.open_nursery() as nursery:
            for download_id in ids:
                nursery.start_soon(probe, download_id)
    assert found == {i: emulator.body_path(i).stat().st_size for i in ids}
    assert emulator.requests[HEAD] == len(ids)
    assert emulator.requests[GET] == 0


async def test_a_wide_batch_pays_a_refused_head_once(emulator: Emulator) -> None:
    ids = [d["id"] for d in emulator.downloads_of(LARGE_BUILD)[:100]]
    with_config(emulator, head=False)
    with serve_in_thread(emulator) as url:
        async with open_batch_api(url, Credentials(token=emulator.issue_token())) as api:
            assert set((await probe_all(api, ids, at_once=32)).values()) == {None}
            assert (await api.probe_download(ids[0])).size is not None
    assert emulator.requests[HEAD] == 1
    assert emulator.requests[GET] == 1


async def test_a_wide_batch_widens_after_its_first_head() -> None:
    """Until a HEAD has been answered the batch has one request out; then ``at_once``."""
    with_head = Emulator(EmulatorConfig(big_file_size=2**20))
    ids = [d["id"] for d in with_head.downloads_of(LARGE_BUILD)[:64]]
    with serve_in_thread(with_head) as url:
        async with open_batch_api(url, Credentials(token=with_head.issue_token())) as api:
            found = await probe_all(api, ids, at_once=16)
    assert all(info is not None for info in found.values())
    assert with_head.requests[HEAD] == len(ids)


@pytest.mark.parametrize("client", ["curl", "h11"])
async def test_a_probe_of_a_big_file_ignoring_ranges_receives_next_to_nothing(
    client: str,
) -> None:
    """HEAD refused and Range ignored (``res.send(buffer)``): the GET is answered with all
    256 MiB, and closed at its headers, so the client takes none of the body. The server
    still gets out what the kernel's socket buffers take before the close (its send
    buffer grows to ``tcp_wmem``'s 4 MiB on loopback; the emulator counts whole sendfile
    segments of 1 MiB): 0 to 3 MiB seen, bounded here by 6 MiB of the 256."""
    emulator = Emulator(EmulatorConfig(head=False, ranges=False))
    size = emulator.body_path(BIG_ZIP).stat().st_size
    with serve_in_thread(emulator) as url, trio.fail_after(20):
        http = open_http_client() if client == "curl" else httpx.AsyncClient()
        async with http:
            api = ApiClient(http, url, Credentials(token=emulator.issue_token()), NO_RETRY)
            info = await api.probe_download(BIG_ZIP)
            await trio.sleep(0.2)  # whatever the server still gets out, before counting
    assert (info.size, info.accepts_ranges) == (size, False)
    assert size >= 256 * 2**20
    assert api.stats.bytes_received == 0
    assert emulator.bytes_sent <= 6 * 2**20
    assert emulator.requests == {HEAD: 1, GET: 1}


# -- empty files on a server without HEAD ---------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(416, headers={"Content-Range": "bytes */0"}),
        httpx.Response(416),
        httpx.Response(  # Feathers' error handler, after Express's send refused the range
            500,
            json={"name": "GeneralError", "message": "Range Not Satisfiable", "code": 500,
                  "className": "general-error"},
        ),
    ],
)  # fmt: skip
async def test_an_empty_file_without_head_has_size_0(answer: httpx.Response) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "HEAD":
            return httpx.Response(405)
        assert request.headers["Range"] == "bytes=0-0"
        return answer

    async with open_api(handler) as api:
        info = await api.probe_download(1)
    assert info.size == 0


async def test_an_unsatisfiable_range_of_a_file_with_bytes_is_an_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "HEAD":
            return httpx.Response(405)
        return httpx.Response(416, headers={"Content-Range": "bytes */500"})

    async with open_api(handler) as api:
        with pytest.raises(RangeNotSatisfiable) as caught:
            await api.probe_download(1)
    assert (caught.value.status, caught.value.size) == (416, 500)
    assert isinstance(caught.value, ServerError)
