"""Hostile input from the server: random and malformed API answers, absurd headers, names
that try to escape or break the tree, ZIP member names. Property-based (hypothesis) where
the input space is large; every answer must parse into records or fail with an
``MkwfsError`` (which the FUSE edge turns into an errno), never with anything else."""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mkwfs.content.store import ContentStore
from mkwfs.remote.api import JSON_BODY_LIMIT, MAX_BODY_SIZE, ApiClient, Credentials, RetryPolicy
from mkwfs.remote.errors import MkwfsError, ProtocolError
from mkwfs.remote.models import Download, parse_download
from mkwfs.tree.names import NAME_MAX, file_names
from mkwfs.tree.zipview import read_index

BASE = "http://mk.test"

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
)  # fmt: skip
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=30,
)
#: Download-like objects: the right keys with values of any type, plus random ones.
download_objects = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.integers(), json_values),
        "build_id": st.one_of(st.integers(), json_values),
        "name": st.one_of(st.text(), json_values),
        "file_name": st.one_of(st.text(), json_values),
        "pattern_id": json_values,
    },
)


def api_over(handler: Callable[[httpx.Request], httpx.Response]) -> Callable[..., Any]:
    """Run ``call(api)`` with an ApiClient whose every request ``handler`` answers."""

    def run(call: Callable[[ApiClient], Awaitable[Any]]) -> Any:
        async def main() -> Any:
            transport = httpx.MockTransport(handler)
            async with httpx.AsyncClient(transport=transport) as http:
                api = ApiClient(http, BASE, Credentials(token="t"), RetryPolicy(attempts=1))
                return await call(api)

        return trio.run(main)

    return run


def outcome(call: Callable[[], Any]) -> Any:
    """The result, or the MkwfsError raised; any other exception fails the test."""
    try:
        return call()
    except MkwfsError as exc:
        return exc


def assert_safe_names(names: list[bytes]) -> None:
    assert len(set(names)) == len(names)
    for name in names:
        assert 0 < len(name) <= NAME_MAX
        assert name not in (b".", b"..")
        assert not any(byte < 0x20 or byte in (0x2F, 0x7F) for byte in name), name
        name.decode("utf-8")  # valid UTF-8, whatever came in


# -- API answers --------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(st.one_of(json_values, st.lists(download_objects, max_size=8)), st.booleans())
def test_any_json_list_answer_gives_downloads_or_a_protocol_error(
    data: object, paged: bool
) -> None:
    body = {"total": 1, "skip": 0, "data": data} if paged else data
    run = api_over(lambda request: httpx.Response(200, json=body))
    result = outcome(lambda: run(lambda api: api.list_downloads(1)))
    if isinstance(result, MkwfsError):
        assert isinstance(result, ProtocolError)
        return
    assert all(isinstance(d, Download) for d in result)
    assert_safe_names([name for name, _ in file_names(result)])


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(["application/json", "text/html", ""]))
def test_any_bytes_as_an_answer_give_records_or_a_protocol_error(
    body: bytes, content_type: str
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    run = api_over(lambda request: httpx.Response(200, content=body, headers=headers))
    for call in (lambda api: api.list_builds(), lambda api: api.get_build(1)):
        result = outcome(lambda call=call: run(call))  # type: ignore[misc]
        assert not isinstance(result, MkwfsError) or isinstance(result, ProtocolError)


header_values = st.one_of(
    st.sampled_from(["-1", "²", "1e3", " 12 ", "0x10", "", str(2**64), str(MAX_BODY_SIZE + 1)]),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=40),
)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([200, 206, 405]),
    st.one_of(st.none(), header_values),
    st.one_of(
        st.none(),
        header_values,
        st.tuples(st.integers(-5, 2**70), st.integers(-5, 2**70), st.integers(-5, 2**70)).map(
            lambda t: f"bytes {t[0]}-{t[1]}/{t[2]}"
        ),
    ),
    st.one_of(st.none(), header_values.map(lambda v: f'attachment; filename="{v}"')),
)
def test_any_size_headers_give_a_sane_size_or_a_protocol_error(
    status: int, length: str | None, content_range: str | None, disposition: str | None
) -> None:
    headers = {  # bytes as a server sends them (latin-1 is what HTTP allows beyond ASCII)
        name.encode(): value.encode("latin-1")
        for name, value in (
            ("Content-Length", length),
            ("Content-Range", content_range),
            ("Content-Disposition", disposition),
        )
        if value is not None
    }
    run = api_over(lambda request: httpx.Response(status, headers=headers))
    result = outcome(lambda: run(lambda api: api.probe_download(1)))
    if not isinstance(result, MkwfsError):
        assert result.size is None or 0 <= result.size <= MAX_BODY_SIZE


@pytest.mark.parametrize("length", ["-1", "²", str(2**64), str(MAX_BODY_SIZE + 1), "12abc"])
def test_absurd_content_lengths_are_protocol_errors(length: str) -> None:
    headers = {b"Content-Length": length.encode("latin-1")}
    run = api_over(lambda request: httpx.Response(200, headers=headers))
    assert isinstance(outcome(lambda: run(lambda api: api.probe_download(1))), ProtocolError)


@pytest.mark.parametrize("depth", [33, 5000, 200_000])
def test_deeply_nested_json_is_a_protocol_error(depth: int) -> None:
    body = b"[" * depth + b"]" * depth
    run = api_over(lambda request: httpx.Response(200, content=body))
    assert isinstance(outcome(lambda: run(lambda api: api.list_builds())), ProtocolError)


def test_a_huge_answer_is_cut_off_at_the_limit_not_read_into_memory() -> None:
    sent: list[int] = []

    class Endless(httpx.AsyncByteStream):
        async def __aiter__(self) -> Any:
            chunk = b"[" + b"0," * (1 << 19)
            while True:  # an endless JSON array, with a Content-Length that lies
                sent.append(len(chunk))
                yield chunk

    run = api_over(
        lambda request: httpx.Response(200, headers={"Content-Length": "10"}, stream=Endless())
    )
    assert isinstance(outcome(lambda: run(lambda api: api.list_builds())), ProtocolError)
    assert sum(sent) <= JSON_BODY_LIMIT + (2 << 20)


def test_names_with_invalid_utf8_and_lone_surrogates_become_safe_names() -> None:
    body = (
        b'[{"id": 1, "build_id": 7, "name": "bad\xff\xfe.zip"},'
        b' {"id": 2, "build_id": 7, "name": "lone\\ud800.zip"},'
        b' {"id": 3, "build_id": 7, "name": "../../../etc/passwd"}]'
    )
    run = api_over(lambda request: httpx.Response(200, content=body))
    downloads = run(lambda api: api.list_downloads(7))
    names = [name for name, _ in file_names(downloads)]
    assert_safe_names(names)
    assert names == ["bad\ufffd\ufffd.zip".encode(), b"lone?.zip", b".._.._.._etc_passwd"]


# -- names ----------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.none(),
            st.text(max_size=300),  # any code point: controls, NUL, lone surrogates
            st.sampled_from([".", "..", "/", "../x", "a/../../b", "\x00", "\x1b[31m", "._x"]),
        ),
        max_size=30,
    )
)
def test_any_names_become_safe_unique_utf8_names(raw: list[str | None]) -> None:
    downloads = [parse_download({"id": i, "name": name}) for i, name in enumerate(raw)]
    named = file_names(downloads)
    assert len(named) == len(downloads)
    assert_safe_names([name for name, _ in named])


def test_thousands_of_duplicates_get_unique_names_quickly() -> None:
    downloads = [parse_download({"id": i, "name": "dup.zip"}) for i in range(5000)]
    downloads += [parse_download({"id": 9000 + i, "name": f"dup~{i}.zip"}) for i in range(50)]
    names = [name for name, _ in file_names(downloads)]
    assert len(names) == 5050
    assert_safe_names(names)


# -- ZIP members ------------------------------------------------------------------------------


class _Bytes:
    """A ByteSource over bytes in memory."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def size(self, download_id: int) -> int:
        return len(self.data)

    async def read(self, download_id: int, offset: int, length: int) -> bytes:
        return self.data[offset : offset + length]


member_names = st.one_of(
    st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=300),
    st.sampled_from(["../../etc/passwd", "/abs/path", "a/./b", "a//b", ".", "..", "x/"]),
)


@pytest.mark.filterwarnings("ignore:Duplicate name")  # repeats are part of the hostile input
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(member_names, min_size=1, max_size=12))
def test_any_member_names_give_a_tree_of_safe_names(raw: list[str]) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in raw:
            assume("\x00" not in name)  # zipfile itself cuts names at NUL
            archive.writestr(name, b"x")
    index = trio.run(lambda: read_index(_Bytes(buffer.getvalue()), 1, mtime=0.0))
    for children in index.children.values():
        assert_safe_names(list(children))
        assert all(0 < i < len(index.entries) for i in children.values())


# -- the cache directory ------------------------------------------------------------------------


async def test_a_content_disposition_with_a_path_writes_nothing_outside_the_cache(
    tmp_path: Path,
) -> None:
    body = b"PK" + os.urandom(3000)
    escape = "../../../../" + str(tmp_path / "escaped")
    headers = {
        "Content-Length": str(len(body)),
        "Content-Disposition": f"attachment; filename=\"{escape}\"; filename*=UTF-8''{escape}",
    }

    def handler(request: httpx.Request) -> httpx.Response:
        content = b"" if request.method == "HEAD" else body
        return httpx.Response(200, headers=headers, content=content)

    cache = tmp_path / "cache"
    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http,
        trio.open_nursery() as nursery,
    ):
        api = ApiClient(http, BASE, Credentials(token="t"), RetryPolicy(attempts=1))
        store = ContentStore(api, cache, nursery)
        assert (await api.probe_download(5)).filename == escape  # told, never used as a path
        assert await store.read(5, 0, len(body)) == body
        nursery.cancel_scope.cancel()
    await trio.to_thread.run_sync(assert_only_in, tmp_path, cache)


def assert_only_in(root: Path, cache: Path) -> None:
    """Everything under ``root`` is the cache directory or inside it."""
    for path in root.rglob("*"):
        assert path.resolve().is_relative_to(cache.resolve()), path


def test_json_limits_are_what_the_docs_say() -> None:
    # A list of many thousand builds fits; the depth limit is above the API's own nesting.
    build = {"id": 1, "downloads": [{"id": 2, "name": "x"}], "releases": [1, 2]}
    assert len(json.dumps([build] * 50_000)) < JSON_BODY_LIMIT
