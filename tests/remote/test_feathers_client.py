"""``ApiClient`` against the emulator playing a real Feathers 5 + Express server (issue 16),
over HTTP on loopback through the mount's libcurl client: standard pagination (pages of 10,
``$limit`` capped at 50), HEAD refused with 405 before authentication (5.0.49), Range
ignored by ``res.send(buffer)``, and Feathers' login and error answers as the emulator
words them. What each costs is read from the emulator's counters (the server's side) and
from ``ApiClient.stats`` (the client's). See docs/feathers.md."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace

import httpx
import pytest
import trio

from mkwfs.emulator import (
    BIG_BUILD,
    BIG_ZIP,
    DEMO_BUILD,
    LARGE_BUILD,
    Emulator,
    EmulatorConfig,
    serve_in_thread,
)
from mkwfs.remote.api import ApiClient, Credentials
from mkwfs.remote.client import MountClient, open_http_client
from mkwfs.remote.errors import LoginFailed, RangeNotSatisfiable, TokenRejected
from mkwfs.remote.models import ContentInfo
from tests.remote.support import EMAIL, GET, HEAD, NO_RETRY, PASSWORD, login_credentials, read_all

#: Feathers' standard ``paginate: {default: 10, max: 50}``.
FEATHERS_PAGES = {"page_size": 10, "page_max": 50}
LIST_DOWNLOADS = "GET /api/v1/downloads"
LIST_BUILDS = "GET /api/v1/builds"
MiB = 2**20


@asynccontextmanager
async def open_mount_api(url: str, credentials: Credentials) -> AsyncIterator[ApiClient]:
    """An ApiClient as the mount has it: libcurl, pooled, with the batch path for HEADs."""
    async with open_http_client() as http:
        yield ApiClient(http, url, credentials, NO_RETRY, heads=http.curl)


def jwt_claims(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert isinstance(claims, dict)
    return claims


def feathers(emulator: Emulator, **changes: object) -> Emulator:
    emulator.config = replace(emulator.config, **changes)  # type: ignore[arg-type]
    return emulator


def true_size(emulator: Emulator, download_id: int) -> int:
    return emulator.body_path(download_id).stat().st_size


# -- pagination: default 10, capped at 50 -----------------------------------------------------


async def test_a_1000_file_build_costs_20_list_requests_on_feathers_pagination(
    emulator: Emulator, base_url: str
) -> None:
    feathers(emulator, **FEATHERS_PAGES)
    with trio.fail_after(30):
        async with open_mount_api(base_url, login_credentials()) as api:
            downloads = await api.list_downloads(LARGE_BUILD)
    assert [d.id for d in downloads] == [d["id"] for d in emulator.downloads_of(LARGE_BUILD)]
    assert len(downloads) == 1000
    assert emulator.requests[LIST_DOWNLOADS] == 20  # the cap of 50, not the default of 10
    assert api.requests == emulator.requests


@pytest.mark.parametrize(
    ("page_size", "page_max"),
    [(10, 50), (2, 3)],  # Feathers' standard; a cap smaller than the 8 builds, to follow it
)
async def test_the_builds_list_follows_feathers_pages(
    emulator: Emulator, base_url: str, page_size: int, page_max: int
) -> None:
    feathers(emulator, page_size=page_size, page_max=page_max)
    with trio.fail_after(30):
        async with open_mount_api(base_url, login_credentials()) as api:
            builds = await api.list_builds()
    assert [b.id for b in builds] == [b["id"] for b in emulator.builds]
    assert emulator.requests[LIST_BUILDS] == math.ceil(len(emulator.builds) / page_max)


# -- HEAD refused (Feathers 5.0.49): the 405 paid once -----------------------------------------


async def test_with_head_refused_many_probes_pay_one_head_and_one_byte_each(
    emulator: Emulator, base_url: str
) -> None:
    """As ``ls -l`` probes: a batch (stopped by the 405), then single probes, concurrent,
    then more single probes. One HEAD in all; every other probe is a GET of one byte."""
    feathers(emulator, head_405=True)
    ids = [d["id"] for d in emulator.downloads_of(LARGE_BUILD)[:60]]
    demo = [d["id"] for d in emulator.downloads_of(DEMO_BUILD)]
    found: dict[int, ContentInfo] = {}

    async def probe(download_id: int) -> None:
        found[download_id] = await api.probe_download(download_id)

    with trio.fail_after(60):
        async with open_mount_api(base_url, login_credentials()) as api:
            batch = [info async for _, info in api.probe_downloads(ids, at_once=16)]
            assert batch == [None] * len(ids)  # the 405 stopped it: left to probe_download
            async with trio.open_nursery() as nursery:
                for download_id in ids:
                    nursery.start_soon(probe, download_id)
            for download_id in demo:
                await probe(download_id)
            assert [info async for _, info in api.probe_downloads(demo, at_once=4)] == [None] * 4
    assert {i: info.size for i, info in found.items()} == {
        i: true_size(emulator, i) for i in ids + demo
    }
    probes = len(ids) + len(demo)
    assert emulator.requests[HEAD] == 1
    assert emulator.requests[GET] == probes
    assert emulator.bytes_sent == probes  # one byte each: Range: bytes=0-0 answered with 206
    assert api.requests == emulator.requests
    # What a probe costs on Feathers: the ranged GET goes through ``get``, which counts it.
    assert emulator.stats.downloaded == dict.fromkeys(ids + demo, 1)


async def test_head_405_comes_before_authentication(emulator: Emulator, base_url: str) -> None:
    """5.0.49 refuses HEAD before the token is looked at: the refusal is learnt even with a
    token the server rejects, and the GET after it is what reports the token."""
    feathers(emulator, head_405=True)
    download_id = emulator.downloads_of(DEMO_BUILD)[0]["id"]
    with trio.fail_after(20):
        async with open_mount_api(base_url, Credentials(token="not-a-jwt")) as api:
            with pytest.raises(TokenRejected):
                await api.probe_download(download_id)
    assert emulator.requests == {HEAD: 1, GET: 1}


# -- HEAD refused and Range ignored (res.send(buffer)): a big file ---------------------------


@pytest.mark.parametrize("client", ["curl", "h11"])
async def test_probing_a_256_mib_file_refused_head_and_ignored_range_receives_under_1_mib(
    client: str,
) -> None:
    """Both files of the build holding the 256 MiB ZIP, as ``ls -l`` of it probes them (the
    batch, then single probes). Each GET is answered 200 with the whole file, and closed at
    its headers: the client takes less than 1 MiB of body (none, in fact, of what arrives).
    The server reads each whole file once (``res.send`` buffers it): that cost is the
    server's, and no request can spare it."""
    emulator = Emulator(EmulatorConfig(head_405=True, send_buffer=True))
    ids = [d["id"] for d in emulator.downloads_of(BIG_BUILD)]
    sizes = {i: true_size(emulator, i) for i in ids}  # generated before the clock starts
    assert BIG_ZIP in ids and sizes[BIG_ZIP] >= 256 * MiB
    with serve_in_thread(emulator) as url, trio.fail_after(30):
        http = open_http_client() if client == "curl" else httpx.AsyncClient()
        async with http:
            heads = http.curl if isinstance(http, MountClient) else None
            api = ApiClient(http, url, Credentials(token=emulator.issue_token()), NO_RETRY,
                            heads=heads)  # fmt: skip
            assert {i async for i, info in api.probe_downloads(ids, at_once=8)} == set(ids)
            found = {i: await api.probe_download(i) for i in ids}
    assert {i: (info.size, info.accepts_ranges) for i, info in found.items()} == {
        i: (size, False) for i, size in sizes.items()
    }
    assert api.stats.bytes_received < MiB
    assert emulator.requests[HEAD] == 1  # the batch's (or the first single probe's) 405
    assert emulator.requests[GET] == len(ids)
    assert emulator.stats.bytes_read == sum(sizes.values())


# -- Feathers 5's login and error answers, as the emulator gives them ----------------------------


async def test_the_feathers_5_login_answer_gives_the_top_level_token(
    emulator: Emulator, base_url: str
) -> None:
    with trio.fail_after(20):
        async with httpx.AsyncClient() as http:
            posted = {"strategy": "local", "email": EMAIL, "password": PASSWORD}
            answer = (await http.post(f"{base_url}/authentication", json=posted)).json()
        async with open_mount_api(base_url, login_credentials()) as api:
            await api.login()
            assert len(await api.list_downloads(DEMO_BUILD)) > 0
    # Feathers 5.0.50's shape: no second accessToken inside ``authentication``.
    assert set(answer["authentication"]) == {"strategy", "payload"}
    assert api.token is not None and api.token != answer["accessToken"]  # a login of its own
    assert set(jwt_claims(api.token)) == set(answer["authentication"]["payload"])
    assert emulator.requests["POST /authentication"] == 2


@pytest.mark.parametrize(
    "credentials",
    [
        Credentials(email=EMAIL, password="wrong-password"),  # a bad password
        Credentials(email="nobody@metakraftwerk.example", password=PASSWORD),  # no such email
    ],
)
async def test_feathers_invalid_login_is_login_failed(
    emulator: Emulator, base_url: str, credentials: Credentials
) -> None:
    with trio.fail_after(20):
        async with open_mount_api(base_url, credentials) as api:
            with pytest.raises(LoginFailed) as caught:
                await api.list_builds()
    assert (caught.value.status, caught.value.server_message) == (401, "Invalid login")
    assert "wrong-password" not in str(caught.value)
    assert api.requests == {"POST /authentication": 1}


def token_of_another_server() -> str:
    return Emulator(EmulatorConfig(big_file_size=MiB)).issue_token()


@pytest.mark.parametrize(
    ("make_token", "message", "data_name"),
    [
        (lambda emulator: "not-a-jwt", "jwt malformed", "JsonWebTokenError"),
        (lambda emulator: token_of_another_server(), "invalid signature", "JsonWebTokenError"),
        (lambda emulator: emulator.issue_token(lifetime=-1), "jwt expired", "TokenExpiredError"),
    ],
)
async def test_feathers_token_errors(
    emulator: Emulator,
    base_url: str,
    make_token: Callable[[Emulator], str],
    message: str,
    data_name: str,
) -> None:
    """Each rejected token is 401 ``NotAuthenticated`` with ``data.name``: ``TokenRejected``
    with only the token; with email and password, one login and the request again."""
    token = make_token(emulator)
    url = f"{base_url}/api/v1/builds/{DEMO_BUILD}"
    with trio.fail_after(20):
        async with httpx.AsyncClient() as http:
            raw = await http.get(url, headers={"Authorization": f"Bearer {token}"})
        async with open_mount_api(base_url, Credentials(token=token)) as api:
            with pytest.raises(TokenRejected) as caught:
                await api.get_build(DEMO_BUILD)
        async with open_mount_api(base_url, replace(login_credentials(), token=token)) as again:
            assert (await again.get_build(DEMO_BUILD)).id == DEMO_BUILD
    body = raw.json()
    assert (raw.status_code, body["name"], body["message"]) == (401, "NotAuthenticated", message)
    assert body["data"]["name"] == data_name
    assert (caught.value.status, caught.value.server_message) == (401, message)
    assert again.requests == {"GET /api/v1/builds/:id": 2, "POST /authentication": 1}


async def test_feathers_500_for_an_unsatisfiable_range_is_range_not_satisfiable(
    emulator: Emulator, base_url: str, demo_file: tuple[int, bytes]
) -> None:
    feathers(emulator, unsatisfiable_status=500)
    download_id, whole = demo_file
    with trio.fail_after(20):
        async with httpx.AsyncClient() as http:
            raw = await http.get(
                f"{base_url}/api/v1/downloads/{download_id}",
                headers={"Authorization": f"Bearer {emulator.issue_token()}",
                         "Range": f"bytes={len(whole) + 10}-"},
            )  # fmt: skip
        async with open_mount_api(base_url, login_credentials()) as api:
            with pytest.raises(RangeNotSatisfiable) as caught:
                await read_all(api, download_id, len(whole) + 10)
            assert await read_all(api, download_id, len(whole) - 5) == (
                len(whole) - 5, len(whole), whole[-5:]
            )  # fmt: skip
    assert (raw.status_code, raw.json()["name"]) == (500, "GeneralError")
    assert (caught.value.status, caught.value.server_message) == (500, "Range Not Satisfiable")
