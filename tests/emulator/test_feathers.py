"""The emulator's Feathers 5 + Express modes: HEAD counted or refused, ``res.send(buffer)``,
500 for an unsatisfiable Range, ``paginate: {default, max}``, bursty bodies, weak ETags and
304, and the counters (`Stats`) tests assert with."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import httpx
import pytest

from mkwfs.emulator import (
    BIG_ZIP,
    DEMO_BUILD,
    LARGE_BUILD,
    Emulator,
    EmulatorConfig,
    FileBody,
    serve_in_thread,
)
from mkwfs.emulator.cli import _parser, config_from
from tests.emulator.common import SMALL_ZIP

BODY = f"/api/v1/downloads/{SMALL_ZIP}"


def configure(emulator: Emulator, **changes: object) -> None:
    emulator.config = dataclasses.replace(emulator.config, **changes)  # type: ignore[arg-type]


def downloaded(emulator: Emulator, download_id: int) -> int:
    count: int = emulator.downloads[download_id]["downloaded"]
    return count


# --- HEAD ---------------------------------------------------------------------------------


def test_a_head_counts_only_with_head_counts(client: httpx.Client, emulator: Emulator) -> None:
    assert client.head(BODY).status_code == 200
    assert downloaded(emulator, SMALL_ZIP) == 0
    assert emulator.stats.downloaded == {}
    configure(emulator, head_counts=True)
    response = client.head(BODY)
    assert response.status_code == 200
    assert int(response.headers["Content-Length"]) == emulator.body_path(SMALL_ZIP).stat().st_size
    assert downloaded(emulator, SMALL_ZIP) == 1
    client.get(BODY)
    assert downloaded(emulator, SMALL_ZIP) == 2
    assert emulator.stats.downloaded == {SMALL_ZIP: 2}
    assert (emulator.stats.body_heads, emulator.stats.body_gets) == (2, 1)
    assert emulator.stats.bytes_sent == emulator.stats.bytes_read  # a HEAD reads nothing


def test_head_405_before_authentication(emulator: Emulator) -> None:
    configure(emulator, head_405=True)
    expected = {"name": "MethodNotAllowed", "message": "Method HEAD not allowed", "code": 405,
                "className": "method-not-allowed"}  # fmt: skip
    with httpx.Client(transport=emulator.mock_transport(), base_url="http://e") as http:
        for path in (BODY, "/api/v1/builds"):
            response = http.head(path)  # no token: refused before authentication
            assert response.status_code == 405
            assert response.headers["Content-Type"].startswith("application/json")
            length = len(json.dumps(expected, separators=(",", ":")))
            assert int(response.headers["Content-Length"]) == length
        assert http.get(BODY).status_code == 401  # GET still authenticates
    assert downloaded(emulator, SMALL_ZIP) == 0
    assert emulator.stats.body_heads == 1


# --- res.send(buffer) ---------------------------------------------------------------------


def test_send_buffer_ignores_range_and_reads_whole_files(
    client: httpx.Client, emulator: Emulator
) -> None:
    configure(emulator, send_buffer=True, content_length=False)
    size = emulator.body_path(BIG_ZIP).stat().st_size
    response = client.get(f"/api/v1/downloads/{BIG_ZIP}", headers={"Range": "bytes=0-0"})
    assert response.status_code == 200
    assert "Accept-Ranges" not in response.headers and "Content-Range" not in response.headers
    assert response.headers["Content-Length"] == str(size)  # res.send always sets it
    assert len(response.content) == size
    assert (emulator.stats.bytes_read, emulator.stats.bytes_sent) == (size, size)
    assert client.head(f"/api/v1/downloads/{BIG_ZIP}").status_code == 200
    assert (emulator.stats.bytes_read, emulator.stats.bytes_sent) == (2 * size, size)


def test_send_buffer_over_real_http(emulator: Emulator) -> None:
    configure(emulator, send_buffer=True, head_counts=True)
    size = emulator.body_path(BIG_ZIP).stat().st_size
    with serve_in_thread(emulator) as url, httpx.Client(base_url=url) as http:
        auth = {"Authorization": f"Bearer {emulator.issue_token()}"}
        head = http.head(f"/api/v1/downloads/{BIG_ZIP}", headers=auth)
        assert head.status_code == 200 and head.content == b""
        with http.stream("GET", f"/api/v1/downloads/{BIG_ZIP}",
                         headers={**auth, "Range": "bytes=0-0"}) as response:  # fmt: skip
            assert response.status_code == 200
            received = sum(len(chunk) for chunk in response.iter_raw())
    assert received == size
    assert emulator.stats.bytes_read == 2 * size
    assert downloaded(emulator, BIG_ZIP) == 2


def test_streamed_bodies_read_what_they_send(client: httpx.Client, emulator: Emulator) -> None:
    client.get(BODY, headers={"Range": "bytes=0-99"})
    assert emulator.stats.bytes_read == emulator.stats.bytes_sent == 100


# --- an unsatisfiable Range ---------------------------------------------------------------


def test_unsatisfiable_range_500_as_feathers(client: httpx.Client, emulator: Emulator) -> None:
    assert client.get(BODY, headers={"Range": "bytes=99999999-"}).status_code == 416
    configure(emulator, unsatisfiable_status=500)
    response = client.get(BODY, headers={"Range": "bytes=99999999-"})
    assert response.status_code == 500
    assert response.json() == {"name": "GeneralError", "message": "Range Not Satisfiable",
                               "code": 500, "className": "general-error"}  # fmt: skip
    assert downloaded(emulator, SMALL_ZIP) == 0


# --- pagination ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "limit", "skip"),
    [({}, 10, 0), ({"$limit": "20"}, 20, 0), ({"$limit": "1000"}, 50, 0),
     ({"$limit": "1000", "$skip": "980"}, 50, 980), ({"$limit": "0"}, 0, 0)],
)  # fmt: skip
def test_feathers_pagination_default_and_max(
    client: httpx.Client, emulator: Emulator, query: dict[str, str], limit: int, skip: int
) -> None:
    configure(emulator, page_size=10, page_max=50)
    page = client.get("/api/v1/downloads", params={"build_id": LARGE_BUILD, **query}).json()
    assert (page["total"], page["limit"], page["skip"]) == (1000, limit, skip)
    assert len(page["data"]) == min(limit, 1000 - skip)


def test_1000_downloads_in_20_pages_of_the_maximum(
    client: httpx.Client, emulator: Emulator
) -> None:
    configure(emulator, page_size=10, page_max=50)
    ids: list[int] = []
    while True:
        params = {"build_id": LARGE_BUILD, "$limit": 1000, "$skip": len(ids)}
        page = client.get("/api/v1/downloads", params=params).json()
        ids += [d["id"] for d in page["data"]]
        if len(ids) >= page["total"]:
            break
    assert len(set(ids)) == 1000
    assert emulator.requests["GET /api/v1/downloads"] == 20
    assert emulator.stats.kinds == {"list": 20}


# --- bursts -------------------------------------------------------------------------------


def test_burst_segments_pause_between_bursts(emulator: Emulator) -> None:
    body = FileBody(Path("/dev/null"), 0, 5 * 2**20, limit=5 * 2**20, throttle=None,
                    on_sent=lambda _: None, request=httpx.Request("GET", "http://e/"),
                    burst=(2 * 2**20, 0.25))  # fmt: skip
    segments = list(body.segments())
    assert sum(count for _, count, _ in segments) == 5 * 2**20
    starts = {offset: due for offset, _, due in segments}
    assert starts[0] == starts[2**20] == 0.0
    assert starts[2 * 2**20] == starts[3 * 2**20] == 0.25
    assert starts[4 * 2**20] == 0.5


def test_a_bursty_body_arrives_whole_with_its_pauses(emulator: Emulator) -> None:
    configure(emulator, burst_bytes=2**20, burst_pause=0.1)
    path = f"/api/v1/downloads/{BIG_ZIP}"
    with serve_in_thread(emulator) as url, httpx.Client(base_url=url) as http:
        started = time.monotonic()
        response = http.get(path, headers={"Authorization": f"Bearer {emulator.issue_token()}"})
        took = time.monotonic() - started
    assert response.content == emulator.body_path(BIG_ZIP).read_bytes()
    assert took >= 0.1 * (len(response.content) // 2**20) - 0.01


# --- ETags and 304 ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/api/v1/builds", f"/api/v1/downloads?build_id={DEMO_BUILD}", "/api/v1/projects",
             "/api/v1/patterns", f"/api/v1/builds/{DEMO_BUILD}"],
)  # fmt: skip
def test_lists_carry_a_weak_etag_and_answer_304(
    client: httpx.Client, emulator: Emulator, path: str
) -> None:
    assert "ETag" not in client.get(path).headers
    configure(emulator, etags=True)
    first = client.get(path)
    etag = first.headers["ETag"]
    assert etag.startswith('W/"') and etag.endswith('"')
    assert int(etag[3:].split("-")[0], 16) == len(first.content)
    again = client.get(path, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b"" and again.headers["ETag"] == etag
    assert "Content-Type" not in again.headers
    assert client.get(path, headers={"If-None-Match": f'"other", {etag}'}).status_code == 304
    assert client.get(path, headers={"If-None-Match": '"other"'}).status_code == 200
    assert client.get(path, headers={"If-None-Match": etag,
                                     "Cache-Control": "no-cache"}).status_code == 200  # fmt: skip
    assert emulator.stats.not_modified == 2


def test_a_changed_list_has_a_new_etag(client: httpx.Client, emulator: Emulator) -> None:
    configure(emulator, etags=True)
    path = f"/api/v1/downloads?build_id={DEMO_BUILD}"
    etag = client.get(path).headers["ETag"]
    emulator.add_download(DEMO_BUILD, "NEW.zip")
    changed = client.get(path, headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["ETag"] != etag
    assert emulator.stats.not_modified == 0


def test_304_over_real_http_keeps_the_connection(emulator: Emulator) -> None:
    configure(emulator, etags=True)
    with serve_in_thread(emulator) as url, httpx.Client(base_url=url) as http:
        auth = {"Authorization": f"Bearer {emulator.issue_token()}"}
        etag = http.get("/api/v1/builds", headers=auth).headers["ETag"]
        for _ in range(3):
            again = http.get("/api/v1/builds", headers={**auth, "If-None-Match": etag})
            assert again.status_code == 304 and again.content == b""
        assert http.get("/api/v1/projects", headers=auth).status_code == 200
    assert emulator.stats.not_modified == 3
    assert emulator.peak_connections == 1


# --- counters -----------------------------------------------------------------------------


def test_requests_by_kind_of_path(client: httpx.Client, emulator: Emulator) -> None:
    client.get("/api/v1/builds")
    client.get(f"/api/v1/builds/{DEMO_BUILD}")
    client.get(BODY)
    client.head(BODY)
    client.post("/authentication", json={"strategy": "local"})
    client.get("/nowhere")
    assert emulator.stats.kinds == {"list": 1, "record": 1, "body": 2, "auth": 1, "other": 1}
    snapshot = emulator.stats.snapshot()
    assert json.loads(json.dumps(snapshot)) == snapshot
    assert snapshot["kinds"] == {"list": 1, "record": 1, "body": 2, "auth": 1, "other": 1}
    assert snapshot["downloaded"] == {str(SMALL_ZIP): 1}
    assert (snapshot["body_gets"], snapshot["body_heads"]) == (1, 1)
    assert snapshot["bytes_sent"] == snapshot["bytes_read"] > 0
    emulator.reset_counters()
    assert emulator.stats.kinds == {} and emulator.stats.downloaded == {}
    assert emulator.stats.bytes_read == emulator.stats.not_modified == 0


def test_command_line_flags_of_the_feathers_modes() -> None:
    args = _parser().parse_args(
        ["--page-size", "10", "--page-max", "50", "--head-405", "--head-counts",
         "--send-buffer", "--etags", "--unsatisfiable-500", "--burst-bytes", "4194304",
         "--burst-pause", "0.01", "--login-token-copy", "--login-validation"]
    )  # fmt: skip
    config = config_from(args)
    assert (config.page_size, config.page_max) == (10, 50)
    assert config.head_405 and config.head_counts and config.send_buffer and config.etags
    assert config.unsatisfiable_status == 500
    assert (config.burst_bytes, config.burst_pause) == (4194304, 0.01)
    assert config.login_token_copy and config.login_validation
    assert config_from(_parser().parse_args([])) == EmulatorConfig()
