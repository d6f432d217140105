"""Lists, gets, filters and pagination (`mkwfs.emulator.routes`), in process."""

from __future__ import annotations

import dataclasses

import httpx
import pytest

from mkwfs.emulator import (
    AWKWARD_BUILD,
    BIG_BUILD,
    BUILDING_BUILD,
    CANCELED_BUILD,
    DEMO_BUILD,
    FAILED_BUILD,
    FORBIDDEN_BUILD,
    LARGE_BUILD,
    Emulator,
)
from mkwfs.remote.models import parse_build, parse_download
from tests.emulator.common import (
    BUILD_FIELDS,
    DEMO_ZIP,
    DOWNLOAD_FIELDS,
    ISO_TIMESTAMP,
    feathers_error,
)

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
