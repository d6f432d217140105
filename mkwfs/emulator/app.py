"""`Emulator`: the MetaKraftwerk API in process, a function from an ``httpx.Request`` to an
``httpx.Response``, put together from its rooms (records, authentication, queries,
downloads, faults, counters) and the controls tests use to change it while it runs."""

from __future__ import annotations

import hashlib
import time
import weakref
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import trio

from mkwfs.emulator.auth import Authority
from mkwfs.emulator.bodies import BodyStore, FileBody, default_data_dir
from mkwfs.emulator.config import DEFAULT_CONFIG, JSON, EmulatorConfig, FailureBody
from mkwfs.emulator.dataset import RESOURCES, Records
from mkwfs.emulator.downloads import Downloads
from mkwfs.emulator.faults import Faults
from mkwfs.emulator.responses import (
    SERVICE_METHODS,
    cut_json,
    error_response,
    is_json_success,
    response_delay,
    with_delay,
    with_etag,
)
from mkwfs.emulator.routes import DOWNLOAD_TARGET, Queries, Route, route
from mkwfs.emulator.stats import Stats

if TYPE_CHECKING:
    from mkwfs.emulator.server import EmulatorServer


class _MockTransport(httpx.MockTransport):
    """`Emulator.handle` without a network: waits out each response's delay (on trio's clock
    for an ``AsyncClient``) and lets the httpx errors of a refused connection and of bodies
    through, as a real connection would raise them."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        time.sleep(response_delay(response))
        return response

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        await trio.sleep(response_delay(response))
        return response


class Emulator:
    """The MetaKraftwerk API in process; thread-safe, for `EmulatorServer`'s threads.

    ``builds``, ``downloads``, ``projects`` and ``patterns`` are the server's data (a build's
    ``downloads`` are the same objects as in ``downloads``); change them with the methods
    below while a server runs. ``requests`` counts every request by endpoint key (see
    `ENDPOINTS`; other paths count as ``"<METHOD> <path>"``), including failed and injected
    ones but not refused connections; ``bytes_sent`` counts download body bytes that went out.
    """

    def __init__(self, config: EmulatorConfig = DEFAULT_CONFIG) -> None:
        self._config = config
        self._records = Records(
            config.big_file_size, config.extra_builds, config.downloads_per_build
        )
        self.builds: list[JSON] = self._records.builds
        self.downloads: dict[int, JSON] = self._records.downloads
        self.projects: list[JSON] = self._records.projects
        self.patterns: list[JSON] = self._records.patterns
        self.stats = Stats()
        self._faults = Faults(config.seed)
        self._authority = Authority(lambda: self._config)
        self._queries = Queries(self._records, lambda: self._config)
        data_dir = config.data_dir or default_data_dir(config.seed, config.big_file_size)
        self._downloads = Downloads(
            self._records, BodyStore(data_dir, config.seed), self._faults,
            lambda: self._config, self.stats,
        )  # fmt: skip
        self._servers: weakref.WeakSet[EmulatorServer] = weakref.WeakSet()

    @property
    def config(self) -> EmulatorConfig:
        """How the server behaves; assign a new one at any time (``dataclasses.replace``).
        A change of ``down`` stops or restarts every `EmulatorServer` of this emulator before
        the assignment returns."""
        return self._config

    @config.setter
    def config(self, config: EmulatorConfig) -> None:
        self._config = config
        for server in list(self._servers):
            server._follow_emulator()

    @property
    def requests(self) -> Counter[str]:
        """Requests by endpoint key (`Stats.requests`)."""
        return self.stats.requests

    @property
    def bytes_sent(self) -> int:
        """Download body bytes that went out (`Stats.bytes_sent`)."""
        return self.stats.bytes_sent

    @property
    def connections(self) -> int:
        """Connections open to the HTTP servers now."""
        return self.stats.connections

    @property
    def peak_connections(self) -> int:
        """The most connections open at once since the last `reset_counters`."""
        return self.stats.peak_connections

    # -- test controls --

    def issue_token(self, lifetime: float | None = None) -> str:
        """A new JWT as the server issues at login (each with its own ``jti``), valid for
        ``lifetime`` seconds from now (default ``config.token_lifetime``; negative gives an
        already expired token)."""
        return self._authority.issue_token(lifetime)

    def fail_next(
        self,
        endpoint: str | Iterable[str],
        status: int,
        count: int = 1,
        body: FailureBody = "json",
    ) -> None:
        """Answer the next ``count`` requests of ``endpoint`` with ``status`` (see
        `Faults.fail_next`)."""
        self._faults.fail_next(endpoint, status, count, body)

    def clear_failures(self) -> None:
        """Forget the failures `fail_next` queued and release every stalled body."""
        self._faults.clear()

    def release_stalls(self) -> None:
        """Let every body stalled by ``config.stall_after`` go on (later ones stall again)."""
        self._faults.release_stalls()

    def reset_counters(self) -> None:
        """Zero ``requests``, ``bytes_sent`` and every download's ``downloaded``; the peak
        of connections starts again from those open now."""
        self.stats.reset()
        self._records.zero_downloaded()

    def add_download(
        self, build_id: int, name: str | None, size: int = 0, *, pattern_id: int | None = None
    ) -> int:
        """Add a download named ``name`` to build ``build_id`` (KeyError if the build is not
        there) and return its new id (never one used before). It is listed from now on;
        its body is a ZIP of ``size`` random bytes in one stored member (of a few KB of DDL
        when 0), made on first use. ``pattern_id`` defaults to the build's first pattern."""
        return self._records.add_download(build_id, name, size, pattern_id)

    def remove_download(self, download_id: int) -> None:
        """Take the download away (KeyError if it is not there): no longer listed, and its
        GET and HEAD answer 404."""
        self._records.remove_download(download_id)

    def remove_build(self, build_id: int) -> None:
        """Take the build away with its downloads (KeyError if it is not there): not listed,
        ``GET /builds/:id`` and its downloads' GET and HEAD answer 404, its downloads list
        answers as ``config.missing_build_list`` says. `restore_build` brings it back."""
        self._records.remove_build(build_id)

    def restore_build(self, build_id: int) -> None:
        """Bring back a build that `remove_build` took away, as it was (KeyError if none)."""
        self._records.restore_build(build_id)

    def finish_build(self, build_id: int, status: str = "FINISHED") -> None:
        """End the build (KeyError if it is not there) with ``status``: ``build_end`` and
        ``updated_at`` now (at least a second after its start), the flags and message that go
        with the status, and progress 100 when FINISHED."""
        self._records.finish_build(build_id, status)

    def reset_data(self) -> None:
        """Builds and downloads as they were when the emulator was made: undoes
        `add_download`, `remove_download`, `remove_build` and `finish_build`, and zeroes the
        ``downloaded`` counts. Ids that `add_download` gave are not given again."""
        self._records.reset()

    def downloads_of(self, build_id: int) -> list[JSON]:
        """The download objects ``GET /api/v1/downloads?build_id=`` returns, as copies."""
        return self._records.downloads_of(build_id)

    def body_path(self, download_id: int) -> Path:
        """The file holding the download's body, generated on first use (KeyError for an
        unknown id). Generation happens once however many threads ask at the same time,
        writes a temporary file and renames it, and is skipped when the file exists."""
        return self._downloads.body_path(download_id)

    def body_sha256(self, download_id: int) -> str:
        with self.body_path(download_id).open("rb") as file:
            return hashlib.file_digest(file, "sha256").hexdigest()

    def mock_transport(self) -> httpx.MockTransport:
        """An httpx transport answering with `handle`, without a network: it waits each
        response's `response_delay` (with ``trio.sleep`` for an ``AsyncClient``) and raises
        ``ConnectError`` while ``config.down``; bodies raise as `FileBody` says. Requests run
        on the caller's thread (including a body's generation on first use); download bodies
        are read through trio threads by an ``AsyncClient``."""
        return _MockTransport(self.handle)

    # -- the API --

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer one request as the server would. A download body is a `FileBody`; the
        delay before the answer is `response_delay` of it. While ``config.down`` no server
        answers: raises ``httpx.ConnectError`` and counts nothing."""
        config = self.config
        if config.down:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        method = request.method.upper()
        where = route(method, request.url.path)
        self.stats.count_request(where.key, where.kind)
        injected, delay = self._faults.draw(where.key, config)
        if injected is not None:
            return with_delay(injected, delay)
        response = self._dispatch(method, where, request)
        head = method == "HEAD"
        if not head and config.malformed_json and where.resource in RESOURCES:
            response = cut_json(response) if is_json_success(response) else response
        if config.etags and where.kind in ("list", "record") and response.status_code == 200:
            response = with_etag(request, response)
            if response.status_code == 304:
                self.stats.count_not_modified()
        if head and not isinstance(response.stream, FileBody) and response.content:
            response = httpx.Response(response.status_code, headers=response.headers)
        return with_delay(response, delay)

    def _dispatch(self, method: str, where: Route, request: httpx.Request) -> httpx.Response:
        if where.resource is None:
            return error_response(404, "Page not found", data={"url": request.url.path})
        if method == "HEAD" and self.config.head_405:  # Feathers 5.0.49 knows no HEAD
            return error_response(405, "Method HEAD not allowed")
        if where.resource == "authentication":
            allowed = {"POST"}
        else:
            allowed = {"GET", "HEAD"} if self.config.head else {"GET"}
        if method not in allowed:
            service_method = SERVICE_METHODS.get((method, where.ident is not None))
            return error_response(
                405,
                f"Method `{service_method or method.lower()}` is not supported by this endpoint.",
            )
        if where.resource == "authentication":
            return self._authority.login(request)
        rejection = self._authority.authenticate(request)
        if rejection is not None:
            return rejection
        if where.resource == "downloads" and where.ident is not None:
            return self._downloads.answer(request, where.ident)
        if where.ident is not None:
            return self._queries.get(where.resource, where.ident)
        return self._queries.find(where.resource, request.url.params)

    # -- for the servers (`HttpApp`) --

    def answers_at_once(self, target: str) -> bool:
        """Whether `handle` answers a request for ``target`` without waiting: not one for a
        download whose body this process has not looked at yet (it may be generated)."""
        match = DOWNLOAD_TARGET.match(target)
        return match is None or self._downloads.answers_at_once(int(match[1]))

    def count_connection(self, change: int) -> None:
        self.stats.count_connection(change)
