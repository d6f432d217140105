"""The error boundary: error statuses and httpx failures as mkwfs errors, with the
server's own words."""

from __future__ import annotations

import datetime as dt
import email.utils
from typing import Any

import httpx
import pytest

from mkwfs.emulator import DEMO_BUILD, Emulator
from mkwfs.remote.errors import (
    HTTPStatusError,
    NotFound,
    PermissionDenied,
    RangeNotSatisfiable,
    RateLimited,
    ServerError,
    TransportError,
)
from tests.remote.support import BASE, LIMIT, login_credentials, open_api, read_all

# -- error statuses ---------------------------------------------------------------------------


async def test_unknown_build_is_not_found(emulator: Emulator) -> None:
    async with open_api(emulator.mock_transport(), login_credentials()) as api:
        with pytest.raises(NotFound) as caught:
            await api.get_build(999)
    assert caught.value.status == 404
    assert caught.value.url == f"{BASE}/api/v1/builds/999"
    assert "999" in caught.value.server_message


@pytest.mark.parametrize(
    ("body", "server_message"),
    [("json", None), ("html", None), ("empty", "")],
)
async def test_injected_5xx_bodies(
    emulator: Emulator, body: Any, server_message: str | None
) -> None:
    emulator.fail_next("GET /api/v1/downloads", 503, body=body)
    async with open_api(emulator.mock_transport(), login_credentials()) as api:
        with pytest.raises(ServerError) as caught:
            await api.list_downloads(DEMO_BUILD)
    error = caught.value
    assert error.status == 503
    assert str(error).startswith(f"GET /api/v1/downloads?build_id={DEMO_BUILD}&{LIMIT}: 503 ")
    if server_message is None:
        assert error.server_message
        assert "<" not in error.server_message
    else:
        assert error.server_message == server_message
        assert "(" not in str(error)


@pytest.mark.parametrize(
    ("status", "body", "headers", "error_class", "server_message"),
    [
        (403, b'{"name":"Forbidden","message":"No!","code":403}', {}, PermissionDenied, "No!"),
        (500, b"<html><head><title>Oops &amp; co</title></head><body>x</body></html>",
         {"Content-Type": "text/html"}, ServerError, "Oops & co"),
        (502, b"<html><body><h1>Bad\n  Gateway</h1><script>x()</script></body></html>",
         {}, ServerError, "Bad Gateway"),
        (418, b"  I'm a teapot\n", {"Content-Type": "text/plain"}, ServerError, "I'm a teapot"),
        (400, b'{"unexpected": true}', {}, ServerError, '{"unexpected": true}'),
        (429, b"", {}, RateLimited, ""),
    ],
)  # fmt: skip
async def test_error_bodies_give_the_server_message(
    status: int,
    body: bytes,
    headers: dict[str, str],
    error_class: type[HTTPStatusError],
    server_message: str,
) -> None:
    answer = httpx.Response(status, content=body, headers=headers)
    async with open_api(lambda request: answer) as api:
        with pytest.raises(error_class) as caught:
            await api.get_build(1)
    assert type(caught.value) is error_class
    assert caught.value.status == status
    assert caught.value.server_message == server_message
    assert server_message in str(caught.value)


async def test_long_server_messages_are_shortened() -> None:
    page = b"<html><body><p>" + b"word " * 500 + b"</p></body></html>"
    async with open_api(lambda request: httpx.Response(503, content=page)) as api:
        with pytest.raises(ServerError) as caught:
            await api.get_build(1)
    assert 100 < len(caught.value.server_message) <= 200
    assert caught.value.server_message.endswith("…")


@pytest.mark.parametrize(
    ("retry_after", "seconds"),
    [
        ("7", 7.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
        ("IN_TWO_MINUTES", 120.0),  # an HTTP date, made when the test runs
        ("soon", None),
        (None, None),
    ],
)  # fmt: skip
async def test_rate_limited_carries_retry_after(
    retry_after: str | None, seconds: float | None
) -> None:
    if retry_after == "IN_TWO_MINUTES":
        retry_after = email.utils.format_datetime(
            dt.datetime.now(dt.UTC) + dt.timedelta(minutes=2), True
        )
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    async with open_api(lambda request: httpx.Response(429, headers=headers)) as api:
        with pytest.raises(RateLimited) as caught:
            await api.list_builds()
    assert caught.value.retry_after == pytest.approx(seconds, abs=5)


# -- transport failures -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ConnectError("[Errno 111] Connection refused"),
        httpx.ReadTimeout(""),
        httpx.RemoteProtocolError("peer closed connection"),
    ],
)
async def test_transport_failures_are_transport_errors(failure: httpx.TransportError) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise failure

    async with open_api(handler) as api:
        with pytest.raises(TransportError) as caught:
            await api.get_build(7)
    assert caught.value.url == f"{BASE}/api/v1/builds/7"
    assert str(caught.value).startswith("GET /api/v1/builds/7: connection failed (")
    assert type(failure).__name__ in str(caught.value)
    assert caught.value.__cause__ is failure
    assert api.requests["GET /api/v1/builds/:id"] == 1


# -- unsatisfiable ranges ---------------------------------------------------------------------

FEATHERS_416 = {
    "name": "GeneralError",
    "message": "Range Not Satisfiable",
    "code": 500,
    "className": "general-error",
}


async def test_feathers_500_for_an_unsatisfiable_range_is_range_not_satisfiable() -> None:
    async with open_api(lambda request: httpx.Response(500, json=FEATHERS_416)) as api:
        with pytest.raises(RangeNotSatisfiable) as caught:
            await read_all(api, 1, 5000)
    assert (caught.value.status, caught.value.size) == (500, None)
    assert caught.value.server_message == "Range Not Satisfiable"


async def test_a_500_without_a_range_stays_a_server_error() -> None:
    async with open_api(lambda request: httpx.Response(500, json=FEATHERS_416)) as api:
        with pytest.raises(ServerError) as caught:
            await read_all(api, 1)
    assert type(caught.value) is ServerError


async def test_a_416_gives_the_size(emulator: Emulator, demo_file: tuple[int, bytes]) -> None:
    download_id, whole = demo_file
    async with open_api(emulator.mock_transport(), login_credentials()) as api:
        with pytest.raises(RangeNotSatisfiable) as caught:
            await read_all(api, download_id, len(whole) + 10)
    assert (caught.value.status, caught.value.size) == (416, len(whole))
