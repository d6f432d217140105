"""What the tests of the API client share: a client over the emulator (or a few-line
handler) through ``httpx.MockTransport``, and small helpers to read what it answers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import httpx

from mkwfs.emulator import Emulator
from mkwfs.remote.api import PAGE_LIMIT, ApiClient, Credentials, RetryPolicy

BASE = "http://mk.test"
EMAIL = "demo@metakraftwerk.example"
PASSWORD = "demo-password"
NO_RETRY = RetryPolicy(attempts=1)
HEAD = "HEAD /api/v1/downloads/:id"
GET = "GET /api/v1/downloads/:id"
#: The paging parameter every list request carries, as it appears in URLs and messages.
LIMIT = f"%24limit={PAGE_LIMIT}"

Handler = (
    Callable[[httpx.Request], httpx.Response]
    | Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]
)


@asynccontextmanager
async def open_api(
    transport: httpx.AsyncBaseTransport | Handler,
    credentials: Credentials | None = None,
    retry: RetryPolicy = NO_RETRY,
) -> AsyncIterator[ApiClient]:
    """An ApiClient over a transport (or a MockTransport handler), token "t0" by default."""
    if not isinstance(transport, httpx.AsyncBaseTransport):
        transport = httpx.MockTransport(transport)
    async with httpx.AsyncClient(transport=transport) as http:
        yield ApiClient(http, BASE, credentials or Credentials(token="t0"), retry)


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.Response(status, json=data, headers=headers)


def login_credentials() -> Credentials:
    return Credentials(email=EMAIL, password=PASSWORD)


def with_config(emulator: Emulator, **changes: Any) -> Emulator:
    emulator.config = replace(emulator.config, **changes)
    return emulator


def paged(pages: list[Any]) -> Callable[[httpx.Request], httpx.Response]:
    """A handler answering the list requests with ``pages`` in turn."""
    answers = iter(pages)
    return lambda request: json_response(next(answers))


async def read_all(api: ApiClient, download_id: int, start: int = 0, end: int | None = None
                   ) -> tuple[int, int | None, bytes]:  # fmt: skip
    """(offset, info.size, body) of a download."""
    async with api.open_download(download_id, start=start, end=end) as stream:
        body = b"".join([chunk async for chunk in stream.iter_chunks()])
        assert stream.length is None or stream.length == len(body)
        return stream.offset, stream.info.size, body
