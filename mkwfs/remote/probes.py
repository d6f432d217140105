"""Size probes: what a download's headers say (size, ranges, filename), at the least cost.

A probe is a ``HEAD``. A server that refuses ``HEAD`` (405 or 501: Feathers 5.0.49 and
earlier) is asked with a ``GET`` for one byte instead (``Range: bytes=0-0``), whose body is
read only when it is that one byte: any other answer (a 200 with the whole body, from a
server that ignores ranges) is closed as soon as its headers are in, which closes the
connection, so the probe receives next to nothing of the body. The refusal is remembered,
and until some ``HEAD`` has been answered, probes send their ``HEAD`` one at a time: the 405
is paid once per client, not once per probe in flight.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import aclosing
from typing import Protocol, overload

import httpx
import trio

from mkwfs.remote.errors import HTTPStatusError, RangeNotSatisfiable
from mkwfs.remote.failures import map_httpx_error, protocol_error
from mkwfs.remote.headers import content_info, content_range, plain_head_info
from mkwfs.remote.models import ContentInfo
from mkwfs.remote.retry import RetryPolicy, retrying
from mkwfs.remote.session import ApiSession
from mkwfs.remote.transport import Head

__all__ = ["NO_HEAD_STATUSES", "HeadBatches", "SizeProbes"]

#: Statuses with which a server says it does not do ``HEAD``.
NO_HEAD_STATUSES = frozenset({405, 501})
#: The range a probe without ``HEAD`` asks for.
_ONE_BYTE = {"Range": "bytes=0-0"}


class HeadBatches(Protocol):
    """A transport's batch of ``HEAD`` requests (`CurlTransport.heads`)."""

    def heads(
        self,
        urls: Sequence[str],
        headers: Mapping[str, str],
        *,
        at_once: int,
        per_request: httpx.Timeout,
    ) -> AsyncGenerator[tuple[int, Head], None]: ...


class SizeProbes:
    """The probes of one API client (its session and retry policy); ``heads`` is the batch
    path of its transport, if it has one."""

    def __init__(self, session: ApiSession, retry: RetryPolicy, heads: HeadBatches | None) -> None:
        self._session = session
        self._retry = retry
        self._heads = heads
        #: Whether the server answers HEAD: None until it answered one with a success or
        #: refused one (405/501).
        self.head_works: bool | None = None
        self._first_head = trio.Lock()

    async def probe(self, download_id: int) -> ContentInfo:
        """Size, range support and filename of a download, without downloading its body.
        An empty file on a server without ``HEAD`` (which cannot give byte 0) is size 0."""
        path = f"/api/v1/downloads/{download_id}"
        if self.head_works is None:
            async with self._first_head:  # one at a time until HEAD is known to work or not
                if self.head_works is None:
                    return await self._head_else_get(path)
        if self.head_works:
            return await self._head_else_get(path)
        return await self._get(path)

    async def _head_else_get(self, path: str) -> ContentInfo:
        """``HEAD``, and the ranged ``GET`` after a refusal (which is remembered)."""
        try:
            info = await retrying(self._retry, lambda: self._probe(path, "HEAD", {}))
        except HTTPStatusError as exc:
            if exc.status not in NO_HEAD_STATUSES:
                raise
            self.head_works = False
            return await self._get(path)
        self.head_works = True
        return info

    async def _get(self, path: str) -> ContentInfo:
        """The ranged ``GET`` of a server without ``HEAD``."""
        try:
            return await retrying(self._retry, lambda: self._probe(path, "GET", _ONE_BYTE))
        except RangeNotSatisfiable as exc:
            if exc.size not in (None, 0):
                raise
            return ContentInfo(0, True, None)  # byte 0 is past the end: the file is empty

    async def _probe(self, path: str, method: str, headers: Mapping[str, str]) -> ContentInfo:
        """One probe request. Its body is read only when it is what was asked (nothing for
        a HEAD, the one byte for the range), so that the connection goes back to the pool;
        anything longer is left unread and the connection closed with the response."""
        async with self._session.exchange(
            method, path, headers={"Accept-Encoding": "identity", **headers}
        ) as response:
            try:
                info = content_info(
                    response.status_code, response.headers, asked_range="Range" in headers
                )
                expected = 0 if method == "HEAD" else _one_byte_asked(response)
            except ValueError as exc:
                raise protocol_error(response.request, exc) from exc
            if expected is not None:
                await _drain(response, expected)
            return info

    async def probe_many(
        self, download_ids: Sequence[int], *, at_once: int
    ) -> AsyncGenerator[tuple[int, ContentInfo | None], None]:
        """`ApiClient.probe_downloads`: one ``HEAD`` each on the batch path, the first
        alone while it is not known whether the server does ``HEAD``."""
        heads, session = self._heads, self._session
        if heads is None or self.head_works is False or not download_ids:
            for download_id in download_ids:
                yield download_id, None
            return
        token = await session.auth.current()
        headers = {
            **session.http.headers,
            "Accept-Encoding": "identity",
            "Authorization": f"Bearer {token}",
        }
        answered: set[int] = set()
        started = time.perf_counter()
        urls = _DownloadUrls(
            download_ids, session.url("/api/v1/downloads/"), lambda: self.head_works is True
        )
        batch = heads.heads(urls, headers, at_once=at_once, per_request=session.http.timeout)
        async with aclosing(batch) as answers:
            async for index, head in answers:
                answered.add(index)
                download_id = download_ids[index]
                info = self._batch_answer(f"HEAD /api/v1/downloads/{download_id}", head, started)
                yield download_id, info
                if info is None:
                    break
        for index, download_id in enumerate(download_ids):
            if index not in answered:
                yield download_id, None

    def _batch_answer(self, what: str, head: Head, started: float) -> ContentInfo | None:
        """Count one answer of a batch and learn from it whether ``HEAD`` works; what it
        says if it is a plain 200 with a size, else None."""
        self._session.count_head(what, head, started)
        if head.status in NO_HEAD_STATUSES:
            self.head_works = False
        elif 200 <= head.status < 300:
            self.head_works = True
        return None if head.error else plain_head_info(head.status, head.headers)


def _one_byte_asked(response: httpx.Response) -> int | None:
    """1 when a ranged probe's answer is the one byte asked for (so reading it costs
    nothing and keeps the connection), else None: the body is not read."""
    if response.status_code != 206:
        return None
    first, last, _ = content_range(response.headers.get("Content-Range", ""))
    return 1 if first == last == 0 else None


async def _drain(response: httpx.Response, expected: int) -> None:
    """Read a probe's body of ``expected`` bytes, stopping at the first chunk beyond (the
    response is then closed unread, and its connection with it)."""
    received = 0
    try:
        async for chunk in response.aiter_bytes():
            received += len(chunk)
            if received > expected:
                return
    except httpx.HTTPError as exc:
        raise map_httpx_error(exc, response.request) from exc


class _DownloadUrls(Sequence[str]):
    """The URLs of ``download_ids`` under ``prefix``, made as they are read: a batch of
    probes reads them as it goes, and takes ids added to the list meanwhile. Until
    ``wide()``, only the first is there (the batch sends it alone, then reads the length
    again after its answer)."""

    def __init__(self, download_ids: Sequence[int], prefix: str, wide: Callable[[], bool]) -> None:
        self._ids = download_ids
        self._prefix = prefix
        self._wide = wide

    def __len__(self) -> int:
        return len(self._ids) if self._wide() else min(1, len(self._ids))

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...
    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        if isinstance(index, slice):
            return [f"{self._prefix}{i}" for i in self._ids[index]]
        return f"{self._prefix}{self._ids[index]}"
