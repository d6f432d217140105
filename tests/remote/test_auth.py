"""Authentication: the given token, lazy login, re-login once after a 401 (shared by
concurrent requests), refused credentials, secrets never in messages."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from mkwfs.emulator import DEMO_BUILD, Emulator
from mkwfs.remote.api import Credentials
from mkwfs.remote.errors import AuthenticationError, LoginFailed, ProtocolError, TokenRejected
from tests.remote.support import EMAIL, LIMIT, PASSWORD, json_response, login_credentials, open_api

# -- credentials ----------------------------------------------------------------------------


def test_credentials_repr_masks_secrets() -> None:
    text = repr(Credentials(token="secret-token", email="a@b.c", password="secret-pw"))
    assert "secret" not in text
    assert "a@b.c" in text
    assert repr(Credentials(email="a@b.c")).endswith("email='a@b.c', password=None)")


# -- authentication -------------------------------------------------------------------------


async def test_lists_with_a_given_token(emulator: Emulator) -> None:
    credentials = Credentials(token=emulator.issue_token())
    async with open_api(emulator.mock_transport(), credentials) as api:
        builds = await api.list_builds()
        downloads = await api.list_downloads(DEMO_BUILD)
    assert DEMO_BUILD in {build.id for build in builds}
    assert [d.id for d in downloads] == [d["id"] for d in emulator.downloads_of(DEMO_BUILD)]
    assert "POST /authentication" not in emulator.requests


async def test_logs_in_lazily_once_for_concurrent_first_requests(emulator: Emulator) -> None:
    async with open_api(emulator.mock_transport(), login_credentials()) as api:
        assert api.requests["POST /authentication"] == 0
        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(api.list_downloads, DEMO_BUILD)
    assert emulator.requests["POST /authentication"] == 1
    assert api.requests == emulator.requests


async def test_logs_in_again_after_the_token_expired(emulator: Emulator) -> None:
    credentials = replace(login_credentials(), token=emulator.issue_token(lifetime=-1))
    async with open_api(emulator.mock_transport(), credentials) as api:
        build = await api.get_build(DEMO_BUILD)
    assert build.id == DEMO_BUILD
    assert emulator.requests["GET /api/v1/builds/:id"] == 2
    assert emulator.requests["POST /authentication"] == 1


async def test_concurrent_401s_share_one_login() -> None:
    logins: list[str] = []
    refused: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        await trio.lowlevel.checkpoint()  # let every task send before any is answered
        if request.url.path == "/authentication":
            logins.append(f"fresh-{len(logins)}")
            return json_response({"accessToken": logins[-1]}, 201)
        if not logins or request.headers["Authorization"] != f"Bearer {logins[-1]}":
            refused.append(request.headers["Authorization"])
            return json_response({"name": "NotAuthenticated", "message": "jwt expired"}, 401)
        return json_response([])

    credentials = replace(login_credentials(), token="stale")
    async with open_api(handler, credentials) as api, trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(api.list_builds)
    assert refused == ["Bearer stale"] * 5
    assert logins == ["fresh-0"]
    assert api.requests == {"GET /api/v1/builds": 10, "POST /authentication": 1}


async def test_a_rejected_token_without_credentials_is_token_rejected(
    emulator: Emulator,
) -> None:
    token = emulator.issue_token(lifetime=-1)
    async with open_api(emulator.mock_transport(), Credentials(token=token)) as api:
        with pytest.raises(TokenRejected) as caught:
            await api.list_builds()
    error = caught.value
    assert error.status == 401
    assert str(error).startswith("the API rejected the token; get a new one")
    assert f"GET /api/v1/builds?{LIMIT}: 401 Unauthorized" in str(error)
    assert token not in str(error)
    assert emulator.requests["GET /api/v1/builds"] == 1


async def test_a_fresh_token_refused_again_is_not_retried_forever() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/authentication":
            return json_response({"accessToken": "fresh"}, 201)
        return httpx.Response(401)

    async with open_api(handler, login_credentials()) as api:
        with pytest.raises(AuthenticationError) as caught:
            await api.list_builds()
    assert not isinstance(caught.value, TokenRejected)
    assert api.requests == {"POST /authentication": 2, "GET /api/v1/builds": 2}


async def test_wrong_password_is_login_failed_without_the_password(emulator: Emulator) -> None:
    credentials = Credentials(email=EMAIL, password="wrong-pass-1234")
    async with open_api(emulator.mock_transport(), credentials) as api:
        with pytest.raises(LoginFailed) as caught:
            await api.login()
    assert caught.value.status == 401
    assert "refused the credentials" in str(caught.value)
    assert "wrong-pass-1234" not in str(caught.value)


async def test_a_password_echoed_by_the_server_is_masked() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return json_response({"message": f"bad password {PASSWORD}"}, 400)

    async with open_api(handler, login_credentials()) as api:
        with pytest.raises(LoginFailed) as caught:
            await api.list_builds()
    assert PASSWORD not in str(caught.value)
    assert caught.value.server_message == "bad password ***"


async def test_a_login_answer_without_token_is_a_protocol_error() -> None:
    answer = json_response({"user": {}}, 201)
    async with open_api(lambda request: answer, login_credentials()) as api:
        with pytest.raises(ProtocolError, match="accessToken"):
            await api.login()


async def test_login_posts_the_local_strategy() -> None:
    posted: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        posted.append(json.loads(request.content))
        return json_response({"accessToken": "fresh"}, 201)

    async with open_api(handler, login_credentials()) as api:
        await api.login()
    assert posted == [{"strategy": "local", "email": EMAIL, "password": PASSWORD}]


# -- Feathers' answers ------------------------------------------------------------------------

#: What Feathers 5.0.50's local strategy answers to a good login: one token, at the top.
FEATHERS_LOGIN = {
    "accessToken": "header.payload.signature",
    "authentication": {
        "strategy": "local",
        "payload": {"iat": 1, "exp": 2, "aud": "https://x", "sub": "1", "jti": "j"},
    },
    "user": {"id": 1, "email": EMAIL},
}


def feathers_401(message: str, data_name: str | None = None) -> httpx.Response:
    body: dict[str, Any] = {
        "name": "NotAuthenticated",
        "message": message,
        "code": 401,
        "className": "not-authenticated",
    }
    if data_name is not None:
        body["data"] = {"name": data_name, "message": message}
    return json_response(body, 401)


async def test_the_login_token_is_the_top_level_access_token() -> None:
    tokens: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/authentication":
            return json_response(FEATHERS_LOGIN, 201)
        tokens.append(request.headers["Authorization"])
        return json_response([])

    async with open_api(handler, login_credentials()) as api:
        await api.list_builds()
    assert api.token == "header.payload.signature"
    assert tokens == ["Bearer header.payload.signature"]


@pytest.mark.parametrize(
    "credentials",
    [Credentials(email=EMAIL, password="wrong"), Credentials(email="nobody@x", password=PASSWORD)],
)
async def test_feathers_invalid_login_is_login_failed(credentials: Credentials) -> None:
    async with open_api(lambda request: feathers_401("Invalid login"), credentials) as api:
        with pytest.raises(LoginFailed) as caught:
            await api.login()
    assert (caught.value.status, caught.value.server_message) == (401, "Invalid login")


@pytest.mark.parametrize(
    ("message", "data_name"),
    [
        ("jwt malformed", "JsonWebTokenError"),
        ("invalid signature", "JsonWebTokenError"),
        ("invalid token", "JsonWebTokenError"),
        ("jwt expired", "TokenExpiredError"),
        ("Not authenticated", None),
    ],
)
async def test_feathers_token_errors(message: str, data_name: str | None) -> None:
    async with open_api(lambda request: feathers_401(message, data_name)) as api:
        with pytest.raises(TokenRejected) as caught:
            await api.list_builds()
    assert (caught.value.status, caught.value.server_message) == (401, message)
    assert str(caught.value).startswith("the API rejected the token; get a new one")

    logins: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/authentication":
            logins.append(1)
            return json_response(FEATHERS_LOGIN, 201)
        if request.headers["Authorization"] != "Bearer header.payload.signature":
            return feathers_401(message, data_name)
        return json_response([{"id": 5}])

    credentials = replace(login_credentials(), token="stale")
    async with open_api(handler, credentials) as api:
        assert [build.id for build in await api.list_builds()] == [5]
    assert logins == [1]
