"""Faults: injected and random failures, latency and jitter, expiring tokens, forbidden
downloads and changing data (`mkwfs.emulator.faults`, `mkwfs.emulator.dataset`)."""

from __future__ import annotations

import dataclasses
import io
import time
import zipfile
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from mkwfs.emulator import (
    ANY_ENDPOINT,
    BUILDING_BUILD,
    CANCELED_BUILD,
    DEMO_BUILD,
    ENDPOINTS,
    LARGE_BUILD,
    Emulator,
    EmulatorConfig,
    FailureBody,
    response_delay,
    serve_in_thread,
)
from mkwfs.remote.models import parse_build, parse_download, parse_timestamp
from tests.emulator.common import (
    DEMO_ZIP,
    SMALL_ZIP,
    feathers_error,
    jwt_part,
)

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
