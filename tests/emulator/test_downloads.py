"""Download bodies: GET, HEAD, Range, chunked, cut and throttled (`mkwfs.emulator.downloads`,
`mkwfs.emulator.bodies`), in process."""

from __future__ import annotations

import dataclasses
import hashlib
import time

import httpx
import pytest

from mkwfs.emulator import (
    BIG_ZIP,
    FORBIDDEN_BUILD,
    Emulator,
)
from tests.emulator.common import (
    DEMO_ZIP,
    FORBIDDEN_ZIP,
    SMALL_ZIP,
    feathers_error,
)

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
