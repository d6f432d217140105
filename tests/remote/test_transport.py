"""CurlTransport over real HTTP on loopback, against the emulator: what httpx sees, bodies
under backpressure, early closes, failures mapped to httpx's exceptions, and concurrency."""

from __future__ import annotations

import hashlib
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing, asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio
import trustme

from mkwfs.emulator import (
    BIG_ZIP,
    DEMO_BUILD,
    LARGE_BUILD,
    Emulator,
    EmulatorConfig,
    _HTTPServer,
)
from mkwfs.remote import transport
from mkwfs.remote.client import _CookielessClient, open_http_client
from tests.helpers import configure

SIZE = 8 * 2**20
DOWNLOAD = "GET /api/v1/downloads/:id"


@pytest.fixture
def emulator(tmp_path: Path) -> Emulator:
    return Emulator(EmulatorConfig(big_file_size=SIZE, data_dir=tmp_path / "data"))


@asynccontextmanager
async def client(emulator: Emulator) -> AsyncIterator[httpx.AsyncClient]:
    async with open_http_client() as http:
        http.headers["Authorization"] = f"Bearer {emulator.issue_token()}"
        yield http


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_requests_and_answers_pass_through(emulator: Emulator, base_url: str) -> None:
    async with client(emulator) as http:
        listed = await http.get(f"{base_url}/api/v1/downloads", params={"build_id": DEMO_BUILD})
        assert listed.status_code == 200
        assert listed.headers["content-type"].startswith("application/json")
        assert listed.extensions["http_version"] == b"HTTP/1.1"
        assert isinstance(listed.json(), list)

        head = await http.head(f"{base_url}/api/v1/downloads/{BIG_ZIP}")
        assert head.status_code == 200
        assert int(head.headers["content-length"]) == emulator.body_path(BIG_ZIP).stat().st_size
        assert head.content == b""

        missing = await http.get(f"{base_url}/api/v1/downloads/999999")
        assert missing.status_code == 404
        assert missing.json()["name"] == "NotFound"

        ranged = await http.get(
            f"{base_url}/api/v1/downloads/{BIG_ZIP}", headers={"Range": "bytes=10-19"}
        )
        assert ranged.status_code == 206
        assert ranged.content == emulator.body_path(BIG_ZIP).read_bytes()[10:20]

        config = emulator.config
        login = await http.post(
            f"{base_url}/authentication",
            json={"strategy": "local", "email": config.email, "password": config.password},
        )
        assert login.status_code == 201
        assert login.json()["accessToken"]


async def test_a_slow_reader_pauses_the_transfer_and_gets_every_byte(
    emulator: Emulator, base_url: str
) -> None:
    expected = emulator.body_path(BIG_ZIP).read_bytes()
    queued: list[int] = []
    received = bytearray()
    async with (
        client(emulator) as http,
        http.stream("GET", f"{base_url}/api/v1/downloads/{BIG_ZIP}") as response,
    ):
        async for chunk in response.aiter_raw():
            received += chunk
            queued.append(len(chunk))
            await trio.sleep(0.01)  # libcurl fills the queue meanwhile, then pauses
    assert digest(bytes(received)) == digest(expected)
    # What waits for the reader stays bounded (a callback's 16 KiB may come on top), and the
    # first bytes are handed over early, not once a whole queue's worth has arrived; the
    # limit then grows with what the reader took (a first read of 128 KiB is not kept
    # waiting while libcurl reads megabytes).
    assert queued[0] <= transport.FIRST_LIMIT + 16 * 1024
    assert queued[1] <= 2 * transport.FIRST_LIMIT + 2 * 16 * 1024
    assert max(queued) <= transport.QUEUE_LIMIT + 16 * 1024
    assert max(queued) >= transport.QUEUE_LIMIT  # it piled up to the limit while the reader slept


async def test_closing_a_body_early_aborts_it_and_the_next_request_works(
    emulator: Emulator, base_url: str
) -> None:
    async with client(emulator) as http:
        for _ in range(3):
            async with http.stream("GET", f"{base_url}/api/v1/downloads/{BIG_ZIP}") as response:
                async for _chunk in response.aiter_raw():
                    break
        sent_so_far = emulator.bytes_sent
        whole = await http.get(f"{base_url}/api/v1/downloads/{BIG_ZIP}")
        assert digest(whole.content) == digest(emulator.body_path(BIG_ZIP).read_bytes())
    # Three aborted bodies did not run to their end: far less than three bodies were sent.
    assert sent_so_far < 2 * SIZE


async def test_many_concurrent_requests_all_get_their_own_answer(
    emulator: Emulator, base_url: str
) -> None:
    listed = emulator.handle(
        httpx.Request(
            "GET",
            f"{base_url}/api/v1/downloads?build_id={DEMO_BUILD}",
            headers={"Authorization": f"Bearer {emulator.issue_token()}"},
        )
    ).json()
    ids = [item["id"] for item in listed]
    sizes: dict[int, int] = {}
    async with client(emulator) as http:
        limiter = trio.CapacityLimiter(48)  # more than the transport's connections

        async def probe(download_id: int) -> None:
            async with limiter:
                response = await http.head(f"{base_url}/api/v1/downloads/{download_id}")
                sizes[download_id] = int(response.headers["content-length"])

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for _ in range(20):
                    for download_id in ids:
                        nursery.start_soon(probe, download_id)
    assert sizes == {i: emulator.body_path(i).stat().st_size for i in ids}


async def test_a_refused_connection_is_a_connect_error(emulator: Emulator) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    async with client(emulator) as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{port}/api/v1/builds")


async def test_a_cut_body_is_a_protocol_or_read_error(emulator: Emulator, base_url: str) -> None:
    expected = emulator.body_path(BIG_ZIP).read_bytes()
    async with client(emulator) as http:
        configure(emulator, drop_after=1024 * 1024)
        received = bytearray()
        with pytest.raises(httpx.RemoteProtocolError):
            async with http.stream("GET", f"{base_url}/api/v1/downloads/{BIG_ZIP}") as response:
                async for chunk in response.aiter_raw():
                    received += chunk
        assert bytes(received) == expected[: 1024 * 1024]  # what came is read, then the error

        configure(emulator, drop_after=1024 * 1024)
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get(f"{base_url}/api/v1/downloads/{BIG_ZIP}")
        configure(emulator, drop_after=None, reset_after=1024 * 1024)
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            await http.get(f"{base_url}/api/v1/downloads/{BIG_ZIP}")
        configure(emulator, reset_after=None)
        whole = await http.get(f"{base_url}/api/v1/downloads/{BIG_ZIP}")
        assert digest(whole.content) == digest(emulator.body_path(BIG_ZIP).read_bytes())


async def test_a_stalled_body_is_a_read_timeout(emulator: Emulator, base_url: str) -> None:
    configure(emulator, stall_after=64 * 1024, stall_seconds=30.0)
    async with client(emulator) as http:
        with trio.fail_after(10), pytest.raises(httpx.ReadTimeout):
            await http.get(f"{base_url}/api/v1/downloads/{BIG_ZIP}", timeout=httpx.Timeout(1.0))


async def test_a_cancelled_request_leaves_the_transport_usable(
    emulator: Emulator, base_url: str
) -> None:
    configure(emulator, latency=5.0)
    async with client(emulator) as http:
        with trio.move_on_after(0.2) as waited:
            await http.get(f"{base_url}/api/v1/builds")
        assert waited.cancelled_caught
        configure(emulator, latency=0.0)
        with trio.fail_after(10):
            answer = await http.get(f"{base_url}/api/v1/builds")
        assert answer.status_code == 200


async def test_the_transport_must_be_entered(emulator: Emulator, base_url: str) -> None:
    http = httpx.AsyncClient(transport=transport.CurlTransport())
    with pytest.raises(RuntimeError, match="async with"):
        await http.get(f"{base_url}/api/v1/builds")


async def test_the_mount_client_keeps_no_cookies() -> None:
    """The API takes a bearer token; a Set-Cookie is not sent back (nor parsed at all)."""
    seen: list[str | None] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("cookie"))
        return httpx.Response(200, headers={"Set-Cookie": "session=abc; Path=/"})

    async with _CookielessClient(transport=httpx.MockTransport(handle)) as http:
        await http.get("http://api.example/one")
        await http.get("http://api.example/two")
        assert not http.cookies
    assert seen == [None, None]


@pytest.fixture
def https_url(emulator: Emulator, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """The emulator over https with a certificate of a test CA: (base URL, the CA's PEM)."""
    authority = trustme.CA()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    server = _HTTPServer(("127.0.0.1", 0), emulator)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_port}", ca_file
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


async def test_https_is_checked_against_the_certificates_httpx_would_use(
    emulator: Emulator, https_url: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, ca_file = https_url
    expected = emulator.body_path(BIG_ZIP).read_bytes()
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    async with client(emulator) as http:
        with trio.fail_after(30):
            answer = await http.get(f"{url}/api/v1/downloads/{BIG_ZIP}")
        assert digest(answer.content) == digest(expected)
    monkeypatch.delenv("SSL_CERT_FILE")  # certifi's bundle does not know the test CA
    async with client(emulator) as http:
        with trio.fail_after(30), pytest.raises(httpx.ConnectError):
            await http.get(f"{url}/api/v1/builds")


# -- batches of HEADs ---------------------------------------------------------------------------


def large_ids(emulator: Emulator, count: int) -> list[int]:
    return [d["id"] for d in emulator.downloads_of(LARGE_BUILD)[:count]]


async def test_a_batch_of_heads_answers_each_url_once(emulator: Emulator, base_url: str) -> None:
    ids = [*large_ids(emulator, 40), 999999]
    urls = [f"{base_url}/api/v1/downloads/{i}" for i in ids]
    headers = {"Authorization": f"Bearer {emulator.issue_token()}"}
    answers: dict[int, transport.Head] = {}
    async with open_http_client() as http:
        batch = http.curl.heads(urls, headers, at_once=8, per_request=httpx.Timeout(10.0))
        with trio.fail_after(30):
            async for index, head in batch:
                assert index not in answers
                answers[index] = head
        assert not http.curl._exchanges  # every handle went back
    assert sorted(answers) == list(range(len(ids)))
    for index, download_id in enumerate(ids[:-1]):
        head = answers[index]
        assert head.status == 200
        assert head.error is None
        assert int(head.headers["content-length"]) == emulator.body_path(download_id).stat().st_size
        assert head.headers["accept-ranges"] == "bytes"
    assert answers[len(ids) - 1].status == 404
    assert emulator.requests["HEAD /api/v1/downloads/:id"] == len(ids)


async def test_a_batch_head_without_an_answer_carries_the_error(emulator: Emulator) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    async with open_http_client() as http:
        batch = http.curl.heads(
            [f"http://127.0.0.1:{port}/x"], {}, at_once=4, per_request=httpx.Timeout(5.0)
        )
        with trio.fail_after(30):
            answers = [answer async for answer in batch]
    [(index, head)] = answers
    assert index == 0
    assert head.status == 0
    assert isinstance(head.error, httpx.ConnectError)


async def test_closing_a_batch_early_aborts_what_runs(emulator: Emulator, base_url: str) -> None:
    ids = large_ids(emulator, 100)
    urls = [f"{base_url}/api/v1/downloads/{i}" for i in ids]
    headers = {"Authorization": f"Bearer {emulator.issue_token()}"}
    configure(emulator, latency=0.2)
    async with open_http_client() as http:
        batch = http.curl.heads(urls, headers, at_once=4, per_request=httpx.Timeout(10.0))
        with trio.fail_after(30):
            async with aclosing(batch) as answers:
                async for _ in answers:
                    break
            assert not http.curl._exchanges
            configure(emulator, latency=0.0)
            answer = await http.head(urls[-1], headers=headers)
        assert answer.status_code == 200
    # Only the first few were ever sent, not the hundred.
    assert emulator.requests["HEAD /api/v1/downloads/:id"] <= 2 * 4 + 1


# -- small bodies whole -------------------------------------------------------------------------


async def test_a_small_body_comes_whole_in_one_get(emulator: Emulator, base_url: str) -> None:
    ids = large_ids(emulator, 20)
    headers = {"Authorization": f"Bearer {emulator.issue_token()}"}
    answers: dict[int, transport.Whole] = {}
    async with open_http_client() as http:

        async def get(download_id: int) -> None:
            answers[download_id] = await http.curl.get_whole(
                f"{base_url}/api/v1/downloads/{download_id}",
                headers,
                per_request=httpx.Timeout(10.0),
                max_size=1 << 20,
            )

        for _ in range(2):
            with trio.fail_after(30):
                async with trio.open_nursery() as nursery:
                    for download_id in ids:
                        nursery.start_soon(get, download_id)
            assert not http.curl._exchanges  # every handle went back
            # ... kept set up for the next ones, which took them again.
            assert [len(s) for s in http.curl._whole_spare.values()] == [len(ids)]
    for download_id in ids:
        answer = answers[download_id]
        assert (answer.status, answer.error) == (200, None)
        assert digest(answer.body) == emulator.body_sha256(download_id)
        assert int(answer.headers["content-length"]) == len(answer.body)
    assert emulator.requests[DOWNLOAD] == 2 * len(ids)


async def test_a_whole_body_over_its_bound_is_aborted(emulator: Emulator, base_url: str) -> None:
    [download_id] = large_ids(emulator, 1)
    size = emulator.body_path(download_id).stat().st_size
    headers = {"Authorization": f"Bearer {emulator.issue_token()}"}
    async with open_http_client() as http:
        with trio.fail_after(30):
            answer = await http.curl.get_whole(
                f"{base_url}/api/v1/downloads/{download_id}",
                headers,
                per_request=httpx.Timeout(10.0),
                max_size=size - 1,
            )
            assert isinstance(answer.error, transport.BodyTooLong)
            assert answer.status == 0
            again = await http.get(f"{base_url}/api/v1/downloads/{download_id}", headers=headers)
    assert again.status_code == 200  # the transport goes on


async def test_a_cut_whole_body_carries_the_error(emulator: Emulator, base_url: str) -> None:
    [download_id] = large_ids(emulator, 1)
    configure(emulator, drop_after=1000)
    headers = {"Authorization": f"Bearer {emulator.issue_token()}"}
    async with open_http_client() as http:
        with trio.fail_after(30):
            answer = await http.curl.get_whole(
                f"{base_url}/api/v1/downloads/{download_id}",
                headers,
                per_request=httpx.Timeout(10.0),
                max_size=1 << 20,
            )
    assert answer.status == 0
    assert isinstance(answer.error, httpx.RemoteProtocolError | httpx.ReadError)


async def test_a_cancelled_whole_get_is_aborted(emulator: Emulator, base_url: str) -> None:
    [download_id] = large_ids(emulator, 1)
    configure(emulator, latency=5.0)
    headers = {"Authorization": f"Bearer {emulator.issue_token()}"}
    async with open_http_client() as http:
        with trio.move_on_after(0.2) as waited:
            await http.curl.get_whole(
                f"{base_url}/api/v1/downloads/{download_id}",
                headers,
                per_request=httpx.Timeout(10.0),
                max_size=1 << 20,
            )
        assert waited.cancelled_caught
        assert not http.curl._exchanges
