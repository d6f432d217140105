"""Login and tokens (`mkwfs.emulator.auth`), in process through httpx.MockTransport."""

from __future__ import annotations

import dataclasses

import httpx
import pytest

from mkwfs.emulator import (
    Emulator,
    EmulatorConfig,
)
from tests.emulator.common import (
    ISO_TIMESTAMP,
    feathers_error,
    jwt_part,
)

# --- authentication -----------------------------------------------------------------------


def test_login_returns_feathers_token(emulator: Emulator, config: EmulatorConfig) -> None:
    with httpx.Client(transport=emulator.mock_transport(), base_url="http://e") as http:
        response = http.post(
            "/authentication",
            json={"strategy": "local", "email": config.email, "password": config.password},
        )
        assert response.status_code == 201
        body = response.json()
        token = body["accessToken"]
        claims = jwt_part(token, 1)
        # Feathers 5: the token's payload beside the strategy, no second accessToken.
        assert body["authentication"] == {"strategy": "local", "payload": claims}
        assert set(claims) == {"iat", "exp", "aud", "sub", "jti"}
        assert body["user"] == {"id": 1, "email": config.email}
        assert jwt_part(token, 0) == {"alg": "HS256", "typ": "access"}
        assert claims["sub"] == "1"
        assert claims["exp"] - claims["iat"] == config.token_lifetime
        listed = http.get("/api/v1/builds", headers={"Authorization": f"Bearer {token}"})
        assert listed.status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"strategy": "local", "email": "demo@metakraftwerk.example", "password": "x"}, 401,
         "Invalid login"),
        ({"strategy": "local", "email": "nobody@x", "password": "demo-password"}, 401,
         "Invalid login"),
        ({"strategy": "local", "password": "demo-password"}, 401, "Invalid login"),
        ({"strategy": "local", "email": "demo@metakraftwerk.example"}, 401, "Invalid login"),
    ],
)  # fmt: skip
def test_login_errors(
    client: httpx.Client, body: dict[str, str], status: int, message: str
) -> None:
    response = client.post("/authentication", json=body)
    assert response.status_code == status
    assert response.json() == feathers_error("NotAuthenticated", message, status,
                                             "not-authenticated")  # fmt: skip


def test_login_with_an_accesstoken_in_authentication(emulator: Emulator,
                                                     config: EmulatorConfig) -> None:  # fmt: skip
    emulator.config = dataclasses.replace(config, login_token_copy=True)
    with httpx.Client(transport=emulator.mock_transport(), base_url="http://e") as http:
        body = http.post(
            "/authentication",
            json={"strategy": "local", "email": config.email, "password": config.password},
        ).json()
    assert body["authentication"] == {"strategy": "local", "accessToken": body["accessToken"]}


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"strategy": "local", "email": "demo@metakraftwerk.example", "password": "x"}, 401,
         "Invalid login"),
        ({"strategy": "local", "password": "demo-password"}, 400, "'email' is required"),
        ({"strategy": "local", "email": "demo@metakraftwerk.example"}, 400,
         "'password' is required"),
    ],
)  # fmt: skip
def test_login_errors_with_a_validating_hook(
    client: httpx.Client, emulator: Emulator, body: dict[str, str], status: int, message: str
) -> None:
    emulator.config = dataclasses.replace(emulator.config, login_validation=True)
    response = client.post("/authentication", json=body)
    name, class_name = ("BadRequest", "bad-request") if status == 400 else (
        "NotAuthenticated", "not-authenticated")  # fmt: skip
    assert response.status_code == status
    assert response.json() == feathers_error(name, message, status, class_name)


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Bearer not-a-jwt", "Basic abc", "Bearer a.b.c"],
)
def test_missing_or_bad_token_is_401(emulator: Emulator, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    with httpx.Client(transport=emulator.mock_transport(), base_url="http://e") as http:
        response = http.get("/api/v1/builds", headers=headers)
    assert response.status_code == 401
    assert response.json()["name"] == "NotAuthenticated"
    assert response.json()["className"] == "not-authenticated"


def test_expired_token_is_401(emulator: Emulator) -> None:
    token = emulator.issue_token(lifetime=-1)
    with httpx.Client(transport=emulator.mock_transport(), base_url="http://e") as http:
        response = http.get("/api/v1/builds", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.json()["message"] == "jwt expired"
    assert response.json()["data"]["name"] == "TokenExpiredError"
    assert set(response.json()["data"]) == {"name", "expiredAt"}
    assert ISO_TIMESTAMP.fullmatch(response.json()["data"]["expiredAt"])


def test_token_of_another_emulator_is_rejected(emulator: Emulator, config: EmulatorConfig) -> None:
    foreign = Emulator(config).issue_token()
    with httpx.Client(transport=emulator.mock_transport(), base_url="http://e") as http:
        response = http.get("/api/v1/builds", headers={"Authorization": f"Bearer {foreign}"})
    assert response.status_code == 401
    assert response.json() == {
        **feathers_error("NotAuthenticated", "invalid signature", 401, "not-authenticated"),
        "data": {"name": "JsonWebTokenError"},
    }
