"""Tests of the MetaKraftwerk API emulator: in process through httpx.MockTransport, and over
real HTTP on 127.0.0.1 through `serve_in_thread`. Bodies are small (BIG_ZIP of 4 MiB) and
generated into ``tmp_path``, so every test takes well under a second."""

from __future__ import annotations

import base64
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from mkwfs.emulator import (
    ANY_ENDPOINT,
    AWKWARD_BUILD,
    BIG_BUILD,
    BIG_ZIP,
    BUILDING_BUILD,
    CANCELED_BUILD,
    DEMO_BUILD,
    ENDPOINTS,
    FAILED_BUILD,
    FORBIDDEN_BUILD,
    LARGE_BUILD,
    MEDIUM_FILE,
    MEDIUM_FILE_SIZE,
    Emulator,
    EmulatorConfig,
    EmulatorServer,
    FailureBody,
    response_delay,
    serve_in_thread,
    zips,
)
from mkwfs.remote.models import parse_build, parse_download, parse_timestamp

BIG_SIZE = 4 * 2**20
DEMO_ZIP = 5442  # CORE_DV_HLS (IICS) in DEMO_BUILD
SMALL_ZIP = 5444  # DWH_DDL (DDL), a few KB
FORBIDDEN_ZIP = 5460
DOWNLOAD_FIELDS = {
    "id", "customer_id", "pattern_id", "name", "file_name", "type", "build_id", "project_id",
    "version", "upload_id", "file_id", "downloaded", "instance_id",
}  # fmt: skip
BUILD_FIELDS = {
    "id", "customer_id", "user_id", "project_id", "progress", "status", "message",
    "build_start", "build_end", "created_at", "updated_at", "history_commited", "active",
    "deliveries_calculated", "commit_ind", "deleted", "version", "mts", "instances", "name",
    "description", "patterns", "releases", "downloads",
}  # fmt: skip
ISO_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.fixture
def config(tmp_path: Path) -> EmulatorConfig:
    return EmulatorConfig(big_file_size=BIG_SIZE, data_dir=tmp_path / "bodies")


@pytest.fixture
def emulator(config: EmulatorConfig) -> Emulator:
    return Emulator(config)


@pytest.fixture
def client(emulator: Emulator) -> Iterator[httpx.Client]:
    """An httpx client on the mock transport, already holding a valid token."""
    with httpx.Client(
        transport=emulator.mock_transport(),
        base_url="http://emulator.test",
        headers={"Authorization": f"Bearer {emulator.issue_token()}"},
    ) as http:
        yield http


def feathers_error(name: str, message: str, code: int, class_name: str) -> dict[str, Any]:
    return {"name": name, "message": message, "code": code, "className": class_name}


def jwt_part(token: str, index: int) -> Any:
    part = token.split(".")[index]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


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


# --- metadata endpoints -------------------------------------------------------------------


def test_builds_list_has_every_documented_field(client: httpx.Client) -> None:
    builds = client.get("/api/v1/builds").json()
    assert [b["id"] for b in builds] == list(range(DEMO_BUILD, FORBIDDEN_BUILD + 1))
    for build in builds:
        assert set(build) == BUILD_FIELDS
        for key in ("build_start", "created_at", "updated_at"):
            assert ISO_TIMESTAMP.fullmatch(build[key])
        assert build["build_end"] is None or ISO_TIMESTAMP.fullmatch(build["build_end"])
        assert parse_build(build).id == build["id"]
    demo = builds[0]
    assert demo["build_end"] == "2026-04-02T10:14:31.000Z"
    assert demo["project_id"] == 402


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"project": "DEMO_PROJECT"}, {DEMO_BUILD, BIG_BUILD, BUILDING_BUILD, CANCELED_BUILD}),
        ({"project_id": "403"}, {LARGE_BUILD, FAILED_BUILD}),
        ({"user_id": "2"}, {LARGE_BUILD, FAILED_BUILD}),
        ({"user": "build-bot@metakraftwerk.example"}, {LARGE_BUILD, FAILED_BUILD}),
        ({"pattern_id": "809"}, {AWKWARD_BUILD}),
        ({"pattern": "CORE_DV_SAT"}, {AWKWARD_BUILD}),
        ({"releases": '{"DWH_GROUP": "R2"}'}, {LARGE_BUILD, FORBIDDEN_BUILD}),
        ({"releases": '{"STAGE_GROUP": "R1"}'}, {AWKWARD_BUILD}),
        ({"project": "NO_SUCH_PROJECT"}, set()),
        ({"project": "DEMO_PROJECT", "pattern_id": "812"}, {DEMO_BUILD, BIG_BUILD}),
    ],
)
def test_builds_filters(client: httpx.Client, query: dict[str, str], expected: set[int]) -> None:
    response = client.get("/api/v1/builds", params=query)
    assert response.status_code == 200
    assert {b["id"] for b in response.json()} == expected


@pytest.mark.parametrize("query", [{"project_id": "abc"}, {"releases": "not json"}])
def test_bad_filter_is_400(client: httpx.Client, query: dict[str, str]) -> None:
    response = client.get("/api/v1/builds", params=query)
    assert response.status_code == 400
    assert response.json()["name"] == "BadRequest"


def test_get_one_build(client: httpx.Client) -> None:
    build = client.get(f"/api/v1/builds/{BUILDING_BUILD}").json()
    assert build["status"] == "BUILDING"
    assert build["build_end"] is None
    assert [d["id"] for d in build["downloads"]] == [5457, 5458]


@pytest.mark.parametrize("resource", ["builds", "downloads", "projects", "patterns"])
@pytest.mark.parametrize("ident", ["999", "abc"])
def test_unknown_id_is_feathers_404(client: httpx.Client, resource: str, ident: str) -> None:
    response = client.get(f"/api/v1/{resource}/{ident}")
    assert response.status_code == 404
    assert response.json() == feathers_error(
        "NotFound", f"No record found for id '{ident}'", 404, "not-found"
    )


def test_unknown_page_is_404(client: httpx.Client, emulator: Emulator) -> None:
    response = client.get("/api/v2/nothing")
    assert response.status_code == 404
    assert response.json()["message"] == "Page not found"
    assert emulator.requests["GET /api/v2/nothing"] == 1


def test_downloads_list(client: httpx.Client, emulator: Emulator) -> None:
    listed = client.get("/api/v1/downloads", params={"build_id": DEMO_BUILD}).json()
    assert listed == emulator.downloads_of(DEMO_BUILD)
    assert [d["id"] for d in listed] == [5442, 5443, 5444, 5445]
    first = listed[0]
    assert set(first) == DOWNLOAD_FIELDS
    assert first["name"] == "CORE_DV_HLS_2026-4-2_10_14.zip"
    assert first["file_name"] == "/files/results/5139_808_iics_CORE_DV_HLS_2026-4-2_10_14.zip"
    assert (first["type"], first["pattern_id"], first["project_id"]) == ("IICS", 808, 402)
    assert parse_download(first).build_id == DEMO_BUILD
    by_pattern = client.get("/api/v1/downloads", params={"build_id": DEMO_BUILD,
                                                         "pattern": "STAGE_PC"}).json()  # fmt: skip
    assert [d["id"] for d in by_pattern] == [5443]
    by_pattern_id = client.get("/api/v1/downloads", params={"pattern_id": 809}).json()
    assert [d["id"] for d in by_pattern_id] == [5449]
    assert len(client.get("/api/v1/downloads").json()) == len(emulator.downloads)


def test_projects_and_patterns(client: httpx.Client) -> None:
    projects = client.get("/api/v1/projects").json()
    assert {"id": 402, "name": "DEMO_PROJECT", "deleted": False, "disabled": False} in projects
    assert client.get("/api/v1/projects", params={"name": "DWH_CORE"}).json()[0]["id"] == 403
    assert client.get("/api/v1/projects/402").json()["name"] == "DEMO_PROJECT"
    patterns = client.get("/api/v1/patterns", params={"name": "CORE_DV_HLS"}).json()
    assert patterns == [
        {"id": 808, "name": "CORE_DV_HLS", "description": "Data Vault hubs, links and satellites",
         "type": "IICS", "vers_no": "1", "status": "FINISHED", "active": True, "deleted": False,
         "disabled": False, "release_group_id": 3}
    ]  # fmt: skip
    assert {p["type"] for p in client.get("/api/v1/patterns").json()} == {
        "IICS", "PowerCenter", "DDL", "Synapse"}  # fmt: skip
    assert client.get("/api/v1/patterns/810").json()["type"] == "PowerCenter"


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("path", ["/api/v1/downloads", f"/api/v1/downloads/{DEMO_ZIP}"])
def test_writes_to_downloads_are_405(client: httpx.Client, method: str, path: str) -> None:
    response = client.request(method, path, json={})
    assert response.status_code == 405
    body = response.json()
    assert (body["name"], body["code"], body["className"]) == (
        "MethodNotAllowed", 405, "method-not-allowed")  # fmt: skip
    assert body["message"].endswith("is not supported by this endpoint.")


# --- pagination ---------------------------------------------------------------------------


def test_pagination(client: httpx.Client, emulator: Emulator) -> None:
    emulator.config = dataclasses.replace(emulator.config, page_size=3)
    page = client.get("/api/v1/builds").json()
    assert (page["total"], page["limit"], page["skip"]) == (8, 3, 0)
    assert [b["id"] for b in page["data"]] == [DEMO_BUILD, LARGE_BUILD, BIG_BUILD]
    page = client.get("/api/v1/builds", params={"$skip": 6, "$limit": 50}).json()
    assert (page["limit"], page["skip"]) == (3, 6)
    assert [b["id"] for b in page["data"]] == [CANCELED_BUILD, FORBIDDEN_BUILD]
    page = client.get("/api/v1/downloads", params={"build_id": LARGE_BUILD, "$limit": 2}).json()
    assert (page["total"], page["limit"], len(page["data"])) == (1000, 2, 2)
    assert client.get("/api/v1/projects", params={"$limit": -1}).status_code == 400


def test_bare_arrays_still_honour_limit_and_skip(client: httpx.Client) -> None:
    builds = client.get("/api/v1/builds", params={"$skip": 1, "$limit": 2}).json()
    assert [b["id"] for b in builds] == [LARGE_BUILD, BIG_BUILD]


# --- download bodies ----------------------------------------------------------------------


def test_download_get(client: httpx.Client, emulator: Emulator) -> None:
    response = client.get(f"/api/v1/downloads/{DEMO_ZIP}")
    assert response.status_code == 200
    assert response.content == emulator.body_path(DEMO_ZIP).read_bytes()
    assert response.headers["Content-Type"] == "application/zip"
    assert response.headers["Content-Length"] == str(len(response.content))
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.headers["Content-Disposition"] == (
        'attachment; filename="CORE_DV_HLS_2026-4-2_10_14.zip"')  # fmt: skip


def test_content_disposition_of_awkward_names(client: httpx.Client) -> None:
    def disposition(download_id: int) -> str:
        return client.head(f"/api/v1/downloads/{download_id}").headers["Content-Disposition"]

    assert disposition(5450) == 'attachment; filename="Oracle.zip"'
    assert disposition(5451) == (
        'attachment; filename="?bergabe Gr??e M?rz.zip"; '
        "filename*=UTF-8''%C3%9Cbergabe%20Gr%C3%B6%C3%9Fe%20M%C3%A4rz.zip"
    )
    assert disposition(5452) == 'attachment; filename="5142_811_ddl_DWH_DDL_null_name.zip"'
    assert disposition(5456).startswith('attachment; filename="NUL?BYTE.zip"; filename*=')


def test_head(client: httpx.Client, emulator: Emulator) -> None:
    response = client.head(f"/api/v1/downloads/{SMALL_ZIP}")
    assert response.status_code == 200
    assert response.content == b""
    assert int(response.headers["Content-Length"]) == emulator.body_path(SMALL_ZIP).stat().st_size
    assert response.headers["Accept-Ranges"] == "bytes"
    assert emulator.downloads[SMALL_ZIP]["downloaded"] == 0
    assert emulator.requests["HEAD /api/v1/downloads/:id"] == 1
    assert emulator.bytes_sent == 0


def test_head_disabled_is_405(client: httpx.Client, emulator: Emulator) -> None:
    emulator.config = dataclasses.replace(emulator.config, head=False)
    response = client.head(f"/api/v1/downloads/{SMALL_ZIP}")
    assert response.status_code == 405
    assert client.get(f"/api/v1/downloads/{SMALL_ZIP}").status_code == 200


def test_forbidden_build(client: httpx.Client, emulator: Emulator) -> None:
    listed = client.get("/api/v1/downloads", params={"build_id": FORBIDDEN_BUILD})
    assert [d["id"] for d in listed.json()] == [5460, 5461]
    for method in ("GET", "HEAD"):
        response = client.request(method, f"/api/v1/downloads/{FORBIDDEN_ZIP}")
        assert response.status_code == 403
    assert client.get(f"/api/v1/downloads/{FORBIDDEN_ZIP}").json() == feathers_error(
        "Forbidden", "You don't have permissions to download build results!", 403, "forbidden"
    )
    assert emulator.downloads[FORBIDDEN_ZIP]["downloaded"] == 0


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [("bytes=0-9", 0, 9), ("bytes=100-", 100, None), ("bytes=-10", -10, None),
     ("bytes=5-99999999", 5, None)],
)  # fmt: skip
def test_range_206(client: httpx.Client, emulator: Emulator, header: str, first: int,
                   last: int | None) -> None:  # fmt: skip
    whole = emulator.body_path(DEMO_ZIP).read_bytes()
    expected = whole[first:] if last is None else whole[first : last + 1]
    response = client.get(f"/api/v1/downloads/{DEMO_ZIP}", headers={"Range": header})
    assert response.status_code == 206
    assert response.content == expected
    start = first % len(whole)
    assert response.headers["Content-Range"] == (
        f"bytes {start}-{start + len(expected) - 1}/{len(whole)}")  # fmt: skip
    assert response.headers["Content-Length"] == str(len(expected))
    assert emulator.downloads[DEMO_ZIP]["downloaded"] == 1


@pytest.mark.parametrize("header", ["bytes=99999999-", "bytes=-0", "bytes=20-10"])
def test_range_unsatisfiable_is_416(client: httpx.Client, emulator: Emulator, header: str) -> None:
    size = emulator.body_path(DEMO_ZIP).stat().st_size
    response = client.get(f"/api/v1/downloads/{DEMO_ZIP}", headers={"Range": header})
    assert response.status_code == 416
    assert response.headers["Content-Range"] == f"bytes */{size}"
    assert emulator.downloads[DEMO_ZIP]["downloaded"] == 0


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "items=0-5", "bytes=x-y"])
def test_unusable_range_sends_whole_body(client: httpx.Client, header: str) -> None:
    response = client.get(f"/api/v1/downloads/{DEMO_ZIP}", headers={"Range": header})
    assert response.status_code == 200
    assert response.headers["Content-Length"] == str(len(response.content))


def test_ranges_disabled(client: httpx.Client, emulator: Emulator) -> None:
    emulator.config = dataclasses.replace(emulator.config, ranges=False)
    response = client.get(f"/api/v1/downloads/{DEMO_ZIP}", headers={"Range": "bytes=0-9"})
    assert response.status_code == 200
    assert response.content == emulator.body_path(DEMO_ZIP).read_bytes()
    assert "Accept-Ranges" not in response.headers
    assert "Content-Range" not in response.headers


def test_chunked_mode(client: httpx.Client, emulator: Emulator) -> None:
    emulator.config = dataclasses.replace(emulator.config, content_length=False)
    for method in ("HEAD", "GET"):
        response = client.request(method, f"/api/v1/downloads/{DEMO_ZIP}")
        assert "Content-Length" not in response.headers
        assert response.headers["Transfer-Encoding"] == "chunked"
    assert response.content == emulator.body_path(DEMO_ZIP).read_bytes()


def test_drop_after_in_process(client: httpx.Client, emulator: Emulator) -> None:
    emulator.config = dataclasses.replace(emulator.config, drop_after=1000)
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(f"/api/v1/downloads/{DEMO_ZIP}")
    assert emulator.bytes_sent == 1000


def test_throttle(client: httpx.Client, emulator: Emulator) -> None:
    size = emulator.body_path(SMALL_ZIP).stat().st_size
    emulator.config = dataclasses.replace(emulator.config, throttle=size * 5)
    started = time.monotonic()
    response = client.get(f"/api/v1/downloads/{SMALL_ZIP}")
    elapsed = time.monotonic() - started
    assert len(response.content) == size
    assert 0.15 < elapsed < 1.0  # a fifth of a second, less the first slice


async def test_async_client_reads_bodies(emulator: Emulator) -> None:
    headers = {"Authorization": f"Bearer {emulator.issue_token()}"}
    async with httpx.AsyncClient(transport=emulator.mock_transport(), base_url="http://e",
                                 headers=headers) as http:  # fmt: skip
        response = await http.get(f"/api/v1/downloads/{BIG_ZIP}")
    assert hashlib.sha256(response.content).hexdigest() == emulator.body_sha256(BIG_ZIP)


# --- failures, counters -------------------------------------------------------------------


def test_fail_next_json(client: httpx.Client, emulator: Emulator) -> None:
    emulator.fail_next("GET /api/v1/builds", 503, count=2)
    for _ in range(2):
        response = client.get("/api/v1/builds")
        assert response.status_code == 503
        assert response.json() == feathers_error(
            "Unavailable", "Service Unavailable", 503, "unavailable"
        )
    assert client.get("/api/v1/builds").status_code == 200
    assert emulator.requests["GET /api/v1/builds"] == 3


def test_fail_next_html_and_empty(client: httpx.Client, emulator: Emulator) -> None:
    emulator.fail_next("GET /api/v1/downloads/:id", 502, body="html")
    emulator.fail_next("GET /api/v1/downloads/:id", 504, body="empty")
    html = client.get(f"/api/v1/downloads/{DEMO_ZIP}")
    assert html.status_code == 502
    assert html.headers["Content-Type"] == "text/html"
    assert b"<center><h1>502 Bad Gateway</h1></center>" in html.content
    empty = client.get(f"/api/v1/downloads/{DEMO_ZIP}")
    assert (empty.status_code, empty.content, empty.headers["Content-Length"]) == (504, b"", "0")
    assert client.get(f"/api/v1/downloads/{DEMO_ZIP}").status_code == 200
    assert emulator.downloads[DEMO_ZIP]["downloaded"] == 1
    assert emulator.requests["GET /api/v1/downloads/:id"] == 3


def test_fail_next_429_has_retry_after(client: httpx.Client, emulator: Emulator) -> None:
    emulator.fail_next("POST /authentication", 429)
    response = client.post("/authentication", json={})
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "1"
    assert response.json()["name"] == "TooManyRequests"


def test_fail_next_rejects_unknown_endpoint(emulator: Emulator) -> None:
    with pytest.raises(ValueError, match="unknown endpoint"):
        emulator.fail_next("GET /api/v1/build", 500)


def test_counters(client: httpx.Client, emulator: Emulator) -> None:
    size = emulator.body_path(DEMO_ZIP).stat().st_size
    client.get(f"/api/v1/downloads/{DEMO_ZIP}")
    client.get(f"/api/v1/downloads/{DEMO_ZIP}", headers={"Range": "bytes=0-99"})
    client.get("/api/v1/downloads", params={"build_id": DEMO_BUILD})
    assert emulator.bytes_sent == size + 100
    assert emulator.requests == {"GET /api/v1/downloads/:id": 2, "GET /api/v1/downloads": 1}
    listed = client.get("/api/v1/downloads", params={"build_id": DEMO_BUILD}).json()
    assert listed[0]["downloaded"] == 2
    build = client.get(f"/api/v1/builds/{DEMO_BUILD}").json()
    assert build["downloads"][0]["downloaded"] == 2
    emulator.reset_counters()
    assert (emulator.requests, emulator.bytes_sent) == ({}, 0)
    assert emulator.downloads_of(DEMO_BUILD)[0]["downloaded"] == 0
    assert set(emulator.requests) <= ENDPOINTS


# --- the dataset --------------------------------------------------------------------------


def test_startup_is_fast_and_lazy(config: EmulatorConfig) -> None:
    started = time.monotonic()
    Emulator(dataclasses.replace(config, big_file_size=2**40))
    assert time.monotonic() - started < 0.5
    assert not config.data_dir or not config.data_dir.exists()


def test_builds_cover_every_status(emulator: Emulator) -> None:
    statuses = {b["id"]: b["status"] for b in emulator.builds}
    assert set(statuses.values()) == {"FINISHED", "BUILDING", "FAILED", "CANCELED"}
    assert statuses[BUILDING_BUILD] == "BUILDING"
    assert statuses[FAILED_BUILD] == "FAILED"
    assert statuses[CANCELED_BUILD] == "CANCELED"
    assert emulator.downloads_of(CANCELED_BUILD) == []
    assert len(emulator.downloads_of(FAILED_BUILD)) == 1
    assert len(emulator.downloads_of(BUILDING_BUILD)) == 2
    large = emulator.downloads_of(LARGE_BUILD)
    assert len(large) == 1000
    assert len({d["name"] for d in large}) == 1000
    for build in emulator.builds:
        end = parse_timestamp(build["build_end"])
        start = parse_timestamp(build["build_start"])
        assert start is not None
        assert end is None if build["status"] == "BUILDING" else end is not None and end > start


def test_awkward_names(emulator: Emulator) -> None:
    names = [d["name"] for d in emulator.downloads_of(AWKWARD_BUILD)]
    strings = [name for name in names if name is not None]
    assert len(strings) - len(set(strings)) == 1
    assert any("/" in name for name in strings)
    assert any("Ü" in name and " " in name for name in strings)
    assert None in names
    assert "" in names
    assert any(name.startswith(".") for name in strings)
    assert any(len(name.encode()) == 300 for name in strings)
    assert any("\x00" in name for name in strings)
    assert len({d["file_name"] for d in emulator.downloads_of(AWKWARD_BUILD)}) == len(names)


@pytest.mark.parametrize("download_id", [5442, 5443, 5444, 5445, 6000, 6999, 5451, 5459])
def test_bodies_are_real_zips(emulator: Emulator, download_id: int) -> None:
    with zipfile.ZipFile(emulator.body_path(download_id)) as archive:
        assert archive.testzip() is None
        names = archive.namelist()
    assert any(name.endswith((".sql", ".DTEMPLATE.zip")) for name in names)  # IICS nests them


def test_each_download_has_a_body_of_its_own(emulator: Emulator) -> None:
    """Downloads with the same kind of content still get their own bytes (and file), also
    when their paths are asked for again."""
    ids = [d["id"] for d in emulator.downloads_of(LARGE_BUILD)[:20]]
    paths = [emulator.body_path(i) for i in ids]
    assert len(set(paths)) == len(ids)
    assert [emulator.body_path(i) for i in ids] == paths
    assert len({p.read_bytes() for p in paths}) == len(ids)


def test_iics_body_nests_zips_and_lists_contents(emulator: Emulator) -> None:
    with zipfile.ZipFile(emulator.body_path(DEMO_ZIP)) as archive:
        names = archive.namelist()
        nested = [n for n in names if n.startswith("Explore/") and n.endswith(".zip")]
        assert len(nested) > 10
        assert "ContentsofExportPackage_CORE_DV_HLS.csv" in names
        csv = archive.read("ContentsofExportPackage_CORE_DV_HLS.csv").decode()
        with zipfile.ZipFile(io.BytesIO(archive.read(nested[0]))) as inner:
            assert inner.testzip() is None
            assert {n.rsplit(".", 1)[-1] for n in inner.namelist()} == {"xml", "sql"}
    assert len(csv.splitlines()) == len(nested) + 1


def test_big_and_medium_zips(emulator: Emulator) -> None:
    assert [d["id"] for d in emulator.downloads_of(BIG_BUILD)] == [BIG_ZIP, MEDIUM_FILE]
    big = emulator.body_path(BIG_ZIP)
    assert BIG_SIZE <= big.stat().st_size <= BIG_SIZE * 1.03
    with zipfile.ZipFile(big) as archive:
        parts = [info for info in archive.infolist() if info.filename.startswith("payload/")]
        assert len(parts) == 8
        assert all(info.compress_type == zipfile.ZIP_STORED for info in parts)
        assert sum(info.file_size for info in parts) == BIG_SIZE
        assert len(archive.read(parts[3])) == BIG_SIZE // 8
        assert any(name.endswith(".xml") for name in archive.namelist())
    medium = emulator.body_path(MEDIUM_FILE).stat().st_size
    assert MEDIUM_FILE_SIZE <= medium <= MEDIUM_FILE_SIZE * 1.01


def test_bodies_are_deterministic(tmp_path: Path) -> None:
    def digests(seed: int, data_dir: Path) -> list[str]:
        emulator = Emulator(EmulatorConfig(seed=seed, big_file_size=2**20, data_dir=data_dir))
        return [emulator.body_sha256(i) for i in (DEMO_ZIP, SMALL_ZIP, 6500, BIG_ZIP)]

    first = digests(7, tmp_path / "a")
    assert digests(7, tmp_path / "b") == first
    assert digests(8, tmp_path / "c") != first


def test_bodies_are_reused_and_generated_once(config: EmulatorConfig,
                                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    calls = []
    write_zip = zips.write_zip

    def counting_write_zip(*args: Any) -> None:
        calls.append(args)
        time.sleep(0.05)  # widen the window in which concurrent requests could race
        write_zip(*args)

    monkeypatch.setattr(zips, "write_zip", counting_write_zip)
    emulator = Emulator(config)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        paths = set(pool.map(emulator.body_path, [DEMO_ZIP] * 8))
    assert len(calls) == 1
    assert len(paths) == 1
    path = paths.pop()
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no partial file left
    mtime = path.stat().st_mtime_ns
    assert Emulator(config).body_path(DEMO_ZIP) == path
    assert len(calls) == 1
    assert path.stat().st_mtime_ns == mtime


# --- real HTTP ----------------------------------------------------------------------------


def test_real_http(emulator: Emulator, config: EmulatorConfig) -> None:
    with serve_in_thread(emulator) as url, httpx.Client(base_url=url, timeout=5) as http:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
        login = http.post("/authentication", json={"strategy": "local", "email": config.email,
                                                   "password": config.password})  # fmt: skip
        assert login.status_code == 201
        http.headers["Authorization"] = f"Bearer {login.json()['accessToken']}"
        assert len(http.get("/api/v1/downloads", params={"build_id": LARGE_BUILD}).json()) == 1000
        head = http.head(f"/api/v1/downloads/{BIG_ZIP}")
        size = emulator.body_path(BIG_ZIP).stat().st_size
        assert int(head.headers["Content-Length"]) == size
        with http.stream("GET", f"/api/v1/downloads/{BIG_ZIP}") as response:
            digest = hashlib.sha256()
            for chunk in response.iter_bytes():
                digest.update(chunk)
        assert digest.hexdigest() == emulator.body_sha256(BIG_ZIP)
        ranged = http.get(f"/api/v1/downloads/{BIG_ZIP}", headers={"Range": "bytes=-5"})
        assert ranged.status_code == 206
        assert ranged.content == emulator.body_path(BIG_ZIP).read_bytes()[-5:]
        emulator.fail_next("GET /api/v1/builds", 502, body="empty")
        assert http.get("/api/v1/builds").status_code == 502
        assert http.get("/api/v1/builds/1").status_code == 404
        assert http.get("/api/v1/builds").status_code == 200
    assert emulator.bytes_sent == size + 5
    assert emulator.downloads[BIG_ZIP]["downloaded"] == 2


def test_real_http_chunked(emulator: Emulator) -> None:
    emulator.config = dataclasses.replace(emulator.config, content_length=False)
    headers = {"Authorization": f"Bearer {emulator.issue_token()}"}
    with serve_in_thread(emulator) as url, httpx.Client(base_url=url, headers=headers,
                                                        timeout=5) as http:  # fmt: skip
        for _ in range(2):  # the same connection must survive a chunked body
            response = http.get(f"/api/v1/downloads/{BIG_ZIP}")
            assert "Content-Length" not in response.headers
            assert hashlib.sha256(response.content).hexdigest() == emulator.body_sha256(BIG_ZIP)


@pytest.mark.parametrize("content_length", [True, False])
def test_real_http_drop_after(emulator: Emulator, content_length: bool) -> None:
    emulator.config = dataclasses.replace(emulator.config, drop_after=100_000,
                                          content_length=content_length)  # fmt: skip
    headers = {"Authorization": f"Bearer {emulator.issue_token()}"}
    with serve_in_thread(emulator) as url, httpx.Client(base_url=url, headers=headers,
                                                        timeout=5) as http:  # fmt: skip
        received = 0
        with pytest.raises(httpx.RemoteProtocolError), \
                http.stream("GET", f"/api/v1/downloads/{BIG_ZIP}") as response:  # fmt: skip
            for chunk in response.iter_raw():
                received += len(chunk)
        assert received == 100_000
        assert http.get("/api/v1/builds").status_code == 200  # a new connection works
    assert emulator.bytes_sent == 100_000


def test_stopping_the_server_cuts_keep_alive_connections(emulator: Emulator) -> None:
    headers = {"Authorization": f"Bearer {emulator.issue_token()}"}
    with httpx.Client(headers=headers, timeout=5) as http:
        with serve_in_thread(emulator) as url:
            assert http.get(f"{url}/api/v1/projects").status_code == 200
        with pytest.raises(httpx.TransportError):
            http.get(f"{url}/api/v1/projects")


def test_command_line(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "mkwfs.emulator", "--port", "0", "--big-file-size", "1024",
               "--page-size", "5", "--no-head", "--latency", "0.01", "--jitter", "0.01",
               "--reset-after", "100", "--token-lifetime", "60"]  # fmt: skip
    environment = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=environment) as process:
        try:
            assert process.stdout is not None
            lines = dict(process.stdout.readline().strip().split("=", 1) for _ in range(4))
            headers = {"Authorization": f"Bearer {lines['MKWFS_TOKEN']}"}
            with httpx.Client(base_url=lines["MKWFS_API_URL"], headers=headers, timeout=5) as http:
                assert http.get("/api/v1/builds").json()["limit"] == 5
                assert http.head(f"/api/v1/downloads/{DEMO_ZIP}").status_code == 405
                with pytest.raises(httpx.ReadError):
                    http.get(f"/api/v1/downloads/{DEMO_ZIP}")
            assert jwt_part(lines["MKWFS_TOKEN"], 1)["exp"] - time.time() <= 61
            assert lines["MKWFS_EMAIL"] == "demo@metakraftwerk.example"
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=5) == 0
        finally:
            if process.poll() is None:
                process.kill()


# --- faults: latency, failures ------------------------------------------------------------


def test_latency_delays_every_response(client: httpx.Client, emulator: Emulator) -> None:
    emulator.config = dataclasses.replace(emulator.config, latency=0.15)
    for request in (client.build_request("GET", "/api/v1/builds"),
                    client.build_request("GET", "/api/v1/nothing")):  # fmt: skip
        started = time.monotonic()
        client.send(request)
        assert 0.15 <= time.monotonic() - started < 1.0


def test_jitter_is_seeded(config: EmulatorConfig) -> None:
    def delays(seed: int) -> list[float]:
        emulator = Emulator(dataclasses.replace(config, seed=seed, latency=1.0, jitter=0.5))
        request = httpx.Request("GET", "http://e/api/v1/projects")
        return [response_delay(emulator.handle(request)) for _ in range(20)]

    first = delays(1)
    assert all(1.0 <= delay <= 1.5 for delay in first)
    assert len(set(first)) == 20
    assert delays(1) == first
    assert delays(2) != first


async def test_latency_sleeps_on_trios_clock(
    emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    """An AsyncClient on the mock transport waits with trio.sleep: an hour passes at once."""
    emulator.config = dataclasses.replace(emulator.config, latency=3600.0)
    headers = {"Authorization": f"Bearer {emulator.issue_token()}"}
    async with httpx.AsyncClient(transport=emulator.mock_transport(), base_url="http://e",
                                 headers=headers) as http:  # fmt: skip
        started = trio.current_time()
        assert (await http.get("/api/v1/projects")).status_code == 200
    assert trio.current_time() - started == pytest.approx(3600.0)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
@pytest.mark.parametrize("body", ["json", "html", "empty", "malformed"])
def test_failure_bursts(client: httpx.Client, emulator: Emulator, status: int,
                        body: FailureBody) -> None:  # fmt: skip
    emulator.fail_next("GET /api/v1/downloads", status, count=3, body=body)
    for _ in range(3):
        response = client.get("/api/v1/downloads", params={"build_id": DEMO_BUILD})
        assert response.status_code == status
        assert response.headers["Content-Length"] == str(len(response.content))
        if body == "json":
            assert response.json()["code"] == status
        elif body == "malformed":
            assert response.headers["Content-Type"].startswith("application/json")
            with pytest.raises(ValueError):
                response.json()
        else:
            assert bool(response.content) == (body == "html")
    assert client.get("/api/v1/downloads", params={"build_id": DEMO_BUILD}).status_code == 200


def test_fail_next_for_several_or_any_endpoint(client: httpx.Client, emulator: Emulator) -> None:
    emulator.fail_next(["GET /api/v1/builds", "GET /api/v1/projects"], 503, count=2)
    assert client.get("/api/v1/patterns").status_code == 200
    assert client.get("/api/v1/projects").status_code == 503
    assert client.get("/api/v1/builds").status_code == 503  # the two share the count
    assert client.get("/api/v1/builds").status_code == 200
    emulator.fail_next(ANY_ENDPOINT, 502, count=3)
    emulator.fail_next("GET /api/v1/builds", 500)  # queued behind the burst for any endpoint
    statuses = [client.get(path).status_code for path in
                ("/api/v1/patterns", "/api/v2/nothing", f"/api/v1/downloads/{SMALL_ZIP}",
                 "/api/v1/projects", "/api/v1/builds", "/api/v1/builds")]  # fmt: skip
    assert statuses == [502, 502, 502, 200, 500, 200]
    emulator.fail_next(ANY_ENDPOINT, 500, count=5)
    emulator.clear_failures()
    assert client.get("/api/v1/builds").status_code == 200
    with pytest.raises(ValueError, match="unknown endpoint"):
        emulator.fail_next(["GET /api/v1/builds", "GET /nope"], 500)
    with pytest.raises(ValueError, match="unknown failure body"):
        emulator.fail_next(ANY_ENDPOINT, 500, body="xml")  # type: ignore[arg-type]


def test_retry_after_is_configurable(client: httpx.Client, emulator: Emulator) -> None:
    emulator.config = dataclasses.replace(emulator.config, retry_after=7)
    emulator.fail_next(ANY_ENDPOINT, 429, count=2, body="html")
    assert client.get("/api/v1/builds").headers["Retry-After"] == "7"
    emulator.config = dataclasses.replace(emulator.config,
                                          retry_after="Wed, 21 Oct 2026 07:28:00 GMT")  # fmt: skip
    assert client.get("/api/v1/builds").headers["Retry-After"] == "Wed, 21 Oct 2026 07:28:00 GMT"
    emulator.fail_next(ANY_ENDPOINT, 503)
    assert "Retry-After" not in client.get("/api/v1/builds").headers


def test_fail_rate_is_seeded(config: EmulatorConfig) -> None:
    def statuses(seed: int) -> list[int]:
        emulator = Emulator(dataclasses.replace(config, seed=seed, fail_rate=0.3))
        request = httpx.Request(
            "GET",
            "http://e/api/v1/projects",
            headers={"Authorization": f"Bearer {emulator.issue_token()}"},
        )
        return [emulator.handle(request).status_code for _ in range(200)]

    first = statuses(3)
    assert set(first) == {200, 500, 502, 503, 504}
    assert 30 < sum(status != 200 for status in first) < 90
    assert statuses(3) == first
    assert statuses(4) != first


def test_malformed_json(client: httpx.Client, emulator: Emulator) -> None:
    emulator.config = dataclasses.replace(emulator.config, malformed_json=True)
    for path in (
        "/api/v1/builds",
        f"/api/v1/builds/{DEMO_BUILD}",
        "/api/v1/downloads",
        f"/api/v1/downloads?build_id={CANCELED_BUILD}",
        "/api/v1/projects/402",
    ):
        response = client.get(path)
        assert response.status_code == 200
        assert response.headers["Content-Length"] == str(len(response.content))
        with pytest.raises(ValueError):
            response.json()
    assert client.get("/api/v1/builds/999").json()["code"] == 404  # errors stay whole
    whole = client.get(f"/api/v1/downloads/{SMALL_ZIP}")
    assert whole.content == emulator.body_path(SMALL_ZIP).read_bytes()


# --- faults: tokens, permissions, changing data ------------------------------------------


def test_logins_issue_fresh_tokens(emulator: Emulator) -> None:
    tokens = {emulator.issue_token() for _ in range(3)}
    assert len(tokens) == 3
    assert len({jwt_part(token, 1)["jti"] for token in tokens}) == 3


def test_token_expires_over_real_http_until_login(emulator: Emulator,
                                                  config: EmulatorConfig) -> None:  # fmt: skip
    emulator.config = dataclasses.replace(emulator.config, token_lifetime=0.4)
    credentials = {"strategy": "local", "email": config.email, "password": config.password}
    with serve_in_thread(emulator) as url, httpx.Client(base_url=url, timeout=5) as http:

        def login() -> str:
            response = http.post("/authentication", json=credentials)
            assert response.status_code == 201
            token: str = response.json()["accessToken"]
            return token

        first = login()
        started = time.monotonic()
        auth = {"Authorization": f"Bearer {first}"}
        assert http.get("/api/v1/builds", headers=auth).status_code == 200
        time.sleep(max(0.0, started + 0.45 - time.monotonic()))
        for _ in range(2):
            expired = http.get("/api/v1/builds", headers=auth)
            assert expired.status_code == 401
            assert expired.json()["message"] == "jwt expired"
        second = login()
        assert second != first
        auth = {"Authorization": f"Bearer {second}"}
        assert http.get("/api/v1/builds", headers=auth).status_code == 200


def test_forbidden_downloads(client: httpx.Client, emulator: Emulator) -> None:
    emulator.config = dataclasses.replace(emulator.config, forbidden_downloads=frozenset({5443}))
    for method in ("GET", "HEAD"):
        assert client.request(method, "/api/v1/downloads/5443").status_code == 403
        assert client.request(method, f"/api/v1/downloads/{SMALL_ZIP}").status_code == 200
    assert client.get("/api/v1/downloads/5443").json()["name"] == "Forbidden"
    assert emulator.downloads[5443]["downloaded"] == 0
    assert len(client.get("/api/v1/downloads", params={"build_id": DEMO_BUILD}).json()) == 4


@pytest.mark.parametrize("missing_build_list", ["empty", "404"])
def test_a_build_disappears_and_comes_back(client: httpx.Client, emulator: Emulator,
                                           missing_build_list: Any) -> None:  # fmt: skip
    emulator.config = dataclasses.replace(emulator.config, missing_build_list=missing_build_list)
    listed = client.get("/api/v1/downloads", params={"build_id": DEMO_BUILD}).json()
    emulator.remove_build(DEMO_BUILD)
    assert DEMO_BUILD not in [b["id"] for b in client.get("/api/v1/builds").json()]
    assert client.get(f"/api/v1/builds/{DEMO_BUILD}").status_code == 404
    for method in ("GET", "HEAD"):
        assert client.request(method, f"/api/v1/downloads/{DEMO_ZIP}").status_code == 404
    downloads = client.get("/api/v1/downloads", params={"build_id": DEMO_BUILD})
    if missing_build_list == "404":
        assert downloads.status_code == 404
        assert downloads.json()["message"] == f"No record found for id '{DEMO_BUILD}'"
    else:
        assert downloads.json() == []
    assert client.get("/api/v1/downloads", params={"build_id": 999}).status_code == (
        404 if missing_build_list == "404" else 200)  # fmt: skip
    assert client.get("/api/v1/downloads", params={"build_id": LARGE_BUILD}).status_code == 200
    with pytest.raises(KeyError):
        emulator.remove_build(DEMO_BUILD)
    emulator.restore_build(DEMO_BUILD)
    assert client.get("/api/v1/builds").json()[0]["id"] == DEMO_BUILD
    assert client.get("/api/v1/downloads", params={"build_id": DEMO_BUILD}).json() == listed
    assert client.get(f"/api/v1/downloads/{DEMO_ZIP}").status_code == 200


def test_a_building_build_gains_files_and_finishes(client: httpx.Client,
                                                   emulator: Emulator) -> None:  # fmt: skip
    def listing() -> list[dict[str, Any]]:
        response = client.get("/api/v1/downloads", params={"build_id": BUILDING_BUILD})
        files: list[dict[str, Any]] = response.json()
        return files

    assert [d["id"] for d in listing()] == [5457, 5458]
    added = emulator.add_download(BUILDING_BUILD, "STAGE_PC.zip", 100_000, pattern_id=810)
    small = emulator.add_download(BUILDING_BUILD, None)
    assert added >= 7000 and small == added + 1
    files = listing()
    assert [d["id"] for d in files] == [5457, 5458, added, small]
    assert (files[2]["name"], files[2]["type"], files[2]["pattern_id"]) == (
        "STAGE_PC.zip", "PowerCenter", 810)  # fmt: skip
    assert files[3]["name"] is None and parse_download(files[3]).build_id == BUILDING_BUILD
    build = client.get(f"/api/v1/builds/{BUILDING_BUILD}").json()
    assert [d["id"] for d in build["downloads"]] == [5457, 5458, added, small]
    body = client.get(f"/api/v1/downloads/{added}").content
    assert 100_000 < len(body) < 100_000 + 16_384  # and a few KB of DDL
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert archive.testzip() is None
    assert body == emulator.body_path(added).read_bytes()
    emulator.remove_download(5457)
    assert [d["id"] for d in listing()] == [5458, added, small]
    assert client.get("/api/v1/downloads/5457").status_code == 404

    emulator.finish_build(BUILDING_BUILD)
    build = client.get(f"/api/v1/builds/{BUILDING_BUILD}").json()
    assert (build["status"], build["progress"], build["history_commited"]) == ("FINISHED", 100, 1)
    end = parse_timestamp(build["build_end"])
    assert end is not None and end == parse_timestamp(build["updated_at"])
    assert abs(end - time.time()) < 5
    assert parse_build(build).id == BUILDING_BUILD
    with pytest.raises(ValueError):
        emulator.finish_build(BUILDING_BUILD, "BUILDING")

    emulator.reset_data()
    assert [d["id"] for d in listing()] == [5457, 5458]
    assert client.get(f"/api/v1/builds/{BUILDING_BUILD}").json()["status"] == "BUILDING"
    assert client.get(f"/api/v1/downloads/{added}").status_code == 404
    assert emulator.add_download(BUILDING_BUILD, "again.zip") == small + 1


# --- faults: connections ------------------------------------------------------------------


def test_down_in_process_is_connect_error(client: httpx.Client, emulator: Emulator) -> None:
    emulator.config = dataclasses.replace(emulator.config, down=True)
    with pytest.raises(httpx.ConnectError):
        client.get("/api/v1/builds")
    assert emulator.requests == {}
    emulator.config = dataclasses.replace(emulator.config, down=False)
    assert client.get("/api/v1/builds").status_code == 200


def test_server_stops_and_starts_on_the_same_port(emulator: Emulator) -> None:
    headers = {"Authorization": f"Bearer {emulator.issue_token()}"}
    with EmulatorServer(emulator) as server, httpx.Client(
        base_url=server.url, headers=headers, timeout=2
    ) as http:  # fmt: skip
        url = server.url
        assert http.get("/api/v1/projects").status_code == 200  # a keep-alive connection
        server.stop()
        server.stop()
        assert not server.listening
        with pytest.raises(httpx.ConnectError):
            http.get("/api/v1/projects")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=2)
        server.start()
        assert server.url == url
        assert http.get("/api/v1/projects").status_code == 200
    with pytest.raises(httpx.ConnectError), httpx.Client(timeout=2) as http:
        http.get(f"{url}/api/v1/projects")


def exchange_raw(url: str, request: bytes) -> bytes:
    """Send ``request`` as is on a new connection; what comes back until the server closes
    the connection or stays silent for half a second."""
    with connect(url) as connection:
        connection.sendall(request)
        return read_until_quiet(connection)


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=5)


def read_until_quiet(connection: socket.socket) -> bytes:
    """What comes until the server closes the connection or stays silent for 0.5 s."""
    connection.settimeout(0.5)
    received = b""
    with contextlib.suppress(TimeoutError):
        while chunk := connection.recv(65536):
            received += chunk
    return received


@pytest.mark.parametrize(
    ("request_bytes", "status_line"),
    [
        (b"GET /api/v1/projects\r\n\r\n", b"HTTP/1.1 400"),
        (b"GET /api/v1/projects HTTP/2.0\r\n\r\n", b"HTTP/1.1 400"),
        (b"GET /api/v1/projects HTTP/1.1\r\nno colon here\r\n\r\n", b"HTTP/1.1 400"),
        (b"GET /api/v1/projects HTTP/1.1\r\nX: " + b"x" * 70000 + b"\r\n\r\n", b"HTTP/1.1 431"),
        (b"GET /api/v1/projects HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"\r\n", b"HTTP/1.1 431"),
        # Lines without an end are refused without waiting for it.
        (b"GET /" + b"x" * 70000, b"HTTP/1.1 414"),
        (b"GET / HTTP/1.1\r\nX: " + b"x" * 70000, b"HTTP/1.1 431"),
    ],
)
def test_a_malformed_request_head_is_refused(
    emulator: Emulator, request_bytes: bytes, status_line: bytes
) -> None:
    with serve_in_thread(emulator) as url:
        answer = exchange_raw(url, request_bytes)
    assert answer.startswith(status_line)
    assert emulator.requests == {}


def test_requests_on_one_connection_follow_keep_alive_and_close(emulator: Emulator) -> None:
    token = emulator.issue_token()
    head = f"HEAD /api/v1/projects HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
    with serve_in_thread(emulator) as url:
        kept = exchange_raw(url, (head + "\r\n").encode() * 2)
        closed = exchange_raw(url, (head + "Connection: close\r\n\r\n").encode() * 2)
        old = exchange_raw(url, (head.replace("HTTP/1.1", "HTTP/1.0") + "\r\n").encode() * 2)
    assert kept.count(b"HTTP/1.1 200") == 2  # pipelined on one connection, both answered
    assert closed.count(b"HTTP/1.1 200") == 1  # the server closed after the first
    assert old.count(b"HTTP/1.1 200") == 1
    assert emulator.requests["HEAD /api/v1/projects"] == 4


def test_a_request_after_a_body_on_one_connection_is_answered_after_it(
    emulator: Emulator,
) -> None:
    """A body is sent by a thread of its own; the request that came right behind it on the
    same connection waits for it, then is answered."""
    token = emulator.issue_token()
    auth = f"Host: x\r\nAuthorization: Bearer {token}\r\n\r\n"
    body = emulator.body_path(SMALL_ZIP).read_bytes()
    request = f"GET /api/v1/downloads/{SMALL_ZIP} HTTP/1.1\r\n{auth}"
    request += f"HEAD /api/v1/downloads/{SMALL_ZIP} HTTP/1.1\r\n{auth}"
    with serve_in_thread(emulator) as url:
        emulator.body_path(SMALL_ZIP)
        answer = exchange_raw(url, request.encode())
    first, _, rest = answer.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200")
    assert rest.startswith(body)
    assert rest[len(body) :].startswith(b"HTTP/1.1 200")
    assert emulator.requests["GET /api/v1/downloads/:id"] == 1
    assert emulator.requests["HEAD /api/v1/downloads/:id"] == 1


def test_a_request_in_pieces_and_one_that_expects_100_continue(
    emulator: Emulator, config: EmulatorConfig
) -> None:
    login = json.dumps({"strategy": "local", "email": config.email, "password": config.password})
    head = (
        "POST /authentication HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Expect: 100-continue\r\nContent-Length: {len(login)}\r\n\r\n"
    )
    with serve_in_thread(emulator) as url, connect(url) as connection:
        for byte in head.encode():  # the head a byte at a time
            connection.sendall(bytes([byte]))
        assert connection.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        connection.sendall(login.encode())
        answer = read_until_quiet(connection)
    assert answer.startswith(b"HTTP/1.1 201")
    assert b'"accessToken"' in answer


def test_an_answer_bigger_than_the_socket_takes_arrives_whole(emulator: Emulator) -> None:
    token = emulator.issue_token()
    request = (
        f"GET /api/v1/downloads?build_id={LARGE_BUILD}&$limit=1000 HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    with serve_in_thread(emulator) as url, connect(url) as connection:
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        connection.sendall(request.encode())
        time.sleep(0.3)  # the server's send buffer fills: the rest waits for the reader
        answer = read_until_quiet(connection)
    head, _, body = answer.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: (\d+)", head)[1])  # type: ignore[index]
    assert len(body) == length > 200_000
    assert len(json.loads(body)) == 1000  # unpaginated: a plain list


def test_config_down_stops_every_server(emulator: Emulator) -> None:
    """``down`` acts on servers made with serve_in_thread too, and comes back on its own."""
    headers = {"Authorization": f"Bearer {emulator.issue_token()}"}
    with serve_in_thread(emulator) as url, httpx.Client(base_url=url, headers=headers,
                                                        timeout=2) as http:  # fmt: skip
        assert http.get("/api/v1/projects").status_code == 200
        emulator.config = dataclasses.replace(emulator.config, down=True)
        with pytest.raises(httpx.ConnectError):
            http.get("/api/v1/projects")
        emulator.config = dataclasses.replace(emulator.config, down=False)
        assert http.get("/api/v1/projects").status_code == 200


def test_a_server_started_while_down_listens_when_up(emulator: Emulator) -> None:
    emulator.config = dataclasses.replace(emulator.config, down=True)
    with EmulatorServer(emulator) as server, httpx.Client(timeout=2) as http:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", server.url)
        assert not server.listening
        with pytest.raises(httpx.ConnectError):
            http.get(f"{server.url}/api/v1/projects")
        emulator.config = dataclasses.replace(emulator.config, down=False)
        assert http.get(f"{server.url}/api/v1/projects").status_code == 401


def read_until_error(http: httpx.Client, path: str) -> tuple[int, int, Exception | None]:
    """(Content-Length or -1, body bytes received, the error that ended the body or None)."""
    received = 0
    with http.stream("GET", path) as response:
        try:
            for chunk in response.iter_raw():
                received += len(chunk)
        except httpx.TransportError as exc:
            return int(response.headers.get("Content-Length", -1)), received, exc
    return int(response.headers.get("Content-Length", -1)), received, None


@pytest.mark.parametrize(
    ("fault", "error"),
    [("drop_after", httpx.RemoteProtocolError), ("reset_after", httpx.ReadError)],
)
@pytest.mark.parametrize("content_length", [True, False])
def test_real_http_cut_bodies(emulator: Emulator, fault: str, error: type[Exception],
                              content_length: bool) -> None:  # fmt: skip
    """A clean close gives a short body (RemoteProtocolError); a reset gives ReadError."""
    cut: dict[str, Any] = {fault: 100_000}
    emulator.config = dataclasses.replace(emulator.config, content_length=content_length, **cut)
    headers = {"Authorization": f"Bearer {emulator.issue_token()}"}
    with serve_in_thread(emulator) as url, httpx.Client(base_url=url, headers=headers,
                                                        timeout=5) as http:  # fmt: skip
        for _ in range(2):
            length, received, exc = read_until_error(http, f"/api/v1/downloads/{BIG_ZIP}")
            assert type(exc) is error
            assert received == 100_000
            assert length == (emulator.body_path(BIG_ZIP).stat().st_size if content_length
                              else -1)  # fmt: skip
        assert http.get("/api/v1/builds").status_code == 200  # a new connection works


def test_in_process_reset(client: httpx.Client, emulator: Emulator) -> None:
    emulator.config = dataclasses.replace(emulator.config, reset_after=1000, drop_after=2000)
    _, received, exc = read_until_error(client, f"/api/v1/downloads/{DEMO_ZIP}")
    assert (type(exc), received) == (httpx.ReadError, 1000)
    emulator.config = dataclasses.replace(emulator.config, reset_after=1000, drop_after=1000)
    _, received, exc = read_until_error(client, f"/api/v1/downloads/{DEMO_ZIP}")
    assert (type(exc), received) == (httpx.RemoteProtocolError, 1000)  # a tie closes cleanly


def test_real_http_stall_until_the_read_timeout(emulator: Emulator) -> None:
    emulator.config = dataclasses.replace(emulator.config, stall_after=10_000)
    headers = {"Authorization": f"Bearer {emulator.issue_token()}"}
    timeout = httpx.Timeout(5, read=0.3)
    with serve_in_thread(emulator) as url, httpx.Client(base_url=url, headers=headers,
                                                        timeout=timeout) as http:  # fmt: skip
        started = time.monotonic()
        _, received, exc = read_until_error(http, f"/api/v1/downloads/{DEMO_ZIP}")
        assert (type(exc), received) == (httpx.ReadTimeout, 10_000)
        assert 0.3 <= time.monotonic() - started < 2
        emulator.release_stalls()
        assert http.get("/api/v1/builds").status_code == 200


def test_real_http_stall_released_or_over(emulator: Emulator) -> None:
    """A stall ends when released or after stall_seconds; the whole body then follows."""
    emulator.config = dataclasses.replace(emulator.config, stall_after=0)
    headers = {"Authorization": f"Bearer {emulator.issue_token()}"}
    expected = emulator.body_sha256(DEMO_ZIP)
    with serve_in_thread(emulator) as url, httpx.Client(base_url=url, headers=headers,
                                                        timeout=5) as http:  # fmt: skip
        started = time.monotonic()
        releaser = threading.Timer(0.2, emulator.release_stalls)
        releaser.start()
        response = http.get(f"/api/v1/downloads/{DEMO_ZIP}")
        releaser.join()
        assert 0.2 <= time.monotonic() - started < 2
        assert hashlib.sha256(response.content).hexdigest() == expected
        emulator.config = dataclasses.replace(emulator.config, stall_after=1000,
                                              stall_seconds=0.2)  # fmt: skip
        started = time.monotonic()
        response = http.get(f"/api/v1/downloads/{DEMO_ZIP}")
        assert 0.2 <= time.monotonic() - started < 2
        assert hashlib.sha256(response.content).hexdigest() == expected


def test_stopping_the_server_ends_a_stall(emulator: Emulator) -> None:
    emulator.config = dataclasses.replace(emulator.config, stall_after=1000)
    headers = {"Authorization": f"Bearer {emulator.issue_token()}"}
    with httpx.Client(headers=headers, timeout=5) as http:
        with EmulatorServer(emulator) as server:
            stopper = threading.Timer(0.2, server.stop)
            stopper.start()
            started = time.monotonic()
            path = f"{server.url}/api/v1/downloads/{DEMO_ZIP}"
            _, received, exc = read_until_error(http, path)
            stopper.join()
        assert isinstance(exc, httpx.TransportError)
        assert received == 1000
        assert time.monotonic() - started < 2


def test_in_process_stall(client: httpx.Client, emulator: Emulator) -> None:
    """The mock transport stalls too, and honours the client's read timeout."""
    path = f"/api/v1/downloads/{DEMO_ZIP}"
    emulator.config = dataclasses.replace(emulator.config, stall_after=1000, stall_seconds=0.1)
    started = time.monotonic()
    assert client.get(path).content == emulator.body_path(DEMO_ZIP).read_bytes()
    assert 0.1 <= time.monotonic() - started < 1
    emulator.config = dataclasses.replace(emulator.config, stall_seconds=None)
    client.timeout = httpx.Timeout(5, read=0.2)
    started = time.monotonic()
    _, received, exc = read_until_error(client, path)
    assert (type(exc), received) == (httpx.ReadTimeout, 1000)
    assert 0.2 <= time.monotonic() - started < 1
    releaser = threading.Timer(0.1, emulator.release_stalls)
    releaser.start()
    client.timeout = httpx.Timeout(5)
    assert client.get(path).content == emulator.body_path(DEMO_ZIP).read_bytes()
    releaser.join()


async def test_in_process_stall_on_trios_clock(
    emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    emulator.config = dataclasses.replace(emulator.config, stall_after=1000, stall_seconds=3600)
    headers = {"Authorization": f"Bearer {emulator.issue_token()}"}
    path = f"/api/v1/downloads/{DEMO_ZIP}"
    async with httpx.AsyncClient(transport=emulator.mock_transport(), base_url="http://e",
                                 headers=headers, timeout=None) as http:  # fmt: skip
        started = trio.current_time()
        assert (await http.get(path)).content == emulator.body_path(DEMO_ZIP).read_bytes()
        assert trio.current_time() - started == pytest.approx(3600, abs=0.1)
        started = trio.current_time()
        with pytest.raises(httpx.ReadTimeout):
            await http.get(path, timeout=60)
        assert trio.current_time() - started == pytest.approx(60, abs=0.1)
