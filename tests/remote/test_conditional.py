"""Conditional list calls: a validator from one answer, a 304 for the next that would be
the same (no body read, no parse), a new value and validator once it changed. Against the
emulator's weak ETags (``etags``, as Express sends them), and a few-line handler for what it
does not send (``Last-Modified``, a 304 nobody asked for)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from mkwfs.emulator import DEMO_BUILD, Emulator
from mkwfs.remote.api import Credentials, is_transient
from mkwfs.remote.errors import Offline, ServerError
from mkwfs.remote.validators import Answer, Validator
from tests.remote.support import json_response, open_api, paged, with_config


def _token(emulator: Emulator) -> Credentials:
    return Credentials(token=emulator.issue_token())


async def test_a_list_unchanged_since_its_validator_is_a_304_without_a_body(
    emulator: Emulator,
) -> None:
    with_config(emulator, etags=True)
    async with open_api(emulator.mock_transport(), _token(emulator)) as api:
        first = await api.downloads_if_changed(DEMO_BUILD, None)
        assert first.value is not None and len(first.value) == 4
        assert first.validator is not None and first.validator.etag is not None
        assert first.validator.etag.startswith('W/"')
        received = api.stats.bytes_received
        again = await api.downloads_if_changed(DEMO_BUILD, first.validator)
        assert again.not_modified and again.validator == first.validator
        assert api.stats.bytes_received == received  # no body
        assert api.stats.last_error is None
        emulator.add_download(DEMO_BUILD, "new.zip")
        changed = await api.downloads_if_changed(DEMO_BUILD, first.validator)
        assert changed.value is not None and len(changed.value) == 5
        assert changed.validator is not None and changed.validator != first.validator
    assert emulator.stats.not_modified == 1


async def test_every_conditional_call_meets_the_emulators_304(emulator: Emulator) -> None:
    with_config(emulator, etags=True)
    async with open_api(emulator.mock_transport(), _token(emulator)) as api:
        calls: list[Callable[[Validator | None], Awaitable[Answer[Any]]]] = [
            lambda v: api.builds_if_changed(v),
            lambda v: api.builds_if_changed(v, {"project_id": 402}),
            lambda v: api.build_if_changed(DEMO_BUILD, v),
            lambda v: api.projects_if_changed(v),
            lambda v: api.patterns_if_changed(v),
        ]
        for call in calls:
            first = await call(None)
            assert first.value is not None and first.validator is not None
            assert (await call(first.validator)).not_modified
    assert emulator.stats.not_modified == len(calls)


async def test_last_modified_is_sent_back_as_if_modified_since() -> None:
    seen: list[httpx.Headers] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers)
        if request.headers.get("if-modified-since") == "Tue, 01 Dec 2026 10:00:00 GMT":
            return httpx.Response(304)
        return json_response([], headers={"Last-Modified": "Tue, 01 Dec 2026 10:00:00 GMT"})

    async with open_api(handler) as api:
        first = await api.projects_if_changed(None)
        assert first.validator == Validator(None, "Tue, 01 Dec 2026 10:00:00 GMT")
        again = await api.projects_if_changed(first.validator)
    assert again.not_modified and again.validator == first.validator
    assert "if-none-match" not in seen[1]


async def test_a_list_of_several_pages_gets_no_validator() -> None:
    pages = [
        {"total": 3, "limit": 2, "skip": 0, "data": [{"id": 1}, {"id": 2}]},
        {"total": 3, "limit": 2, "skip": 2, "data": [{"id": 3}]},
    ]
    handler = paged(pages)

    def with_etag(request: httpx.Request) -> httpx.Response:
        response = handler(request)
        response.headers["ETag"] = '"p"'
        return response

    async with open_api(with_etag) as api:
        answer = await api.projects_if_changed(None)
    assert answer.value is not None and len(answer.value) == 3
    assert answer.validator is None


async def test_a_304_to_a_request_without_conditions_is_an_error() -> None:
    async with open_api(lambda request: httpx.Response(304)) as api:
        with pytest.raises(ServerError, match="304"):
            await api.list_projects()


async def test_offline_bodies_and_probes_fail_at_once_without_a_request(
    emulator: Emulator,
) -> None:
    async with open_api(emulator.mock_transport(), _token(emulator)) as api:
        ids = [d["id"] for d in emulator.downloads_of(DEMO_BUILD)]
        api.offline = True
        with pytest.raises(Offline):
            async with api.open_download(ids[0]):
                pass
        with pytest.raises(Offline):
            await api.probe_download(ids[0])
        assert [answer async for answer in api.probe_downloads(ids, at_once=4)] == [
            (i, None) for i in ids
        ]
        assert not is_transient(Offline("offline", url="http://x"))
        assert sum(emulator.requests.values()) == 0
        api.offline = False
        assert (await api.probe_download(ids[0])).size is not None
