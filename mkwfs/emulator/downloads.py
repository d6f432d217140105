"""``GET`` and ``HEAD /api/v1/downloads/:id``: the body of a download, as the server's
``get`` (which checks the permission and counts ``downloaded``) and the Express middleware
after it (which sends the file) answer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

from mkwfs.emulator.bodies import BodyStore, FileBody
from mkwfs.emulator.config import EmulatorConfig, Ending
from mkwfs.emulator.dataset import FORBIDDEN_BUILD, Records
from mkwfs.emulator.faults import Faults
from mkwfs.emulator.responses import UNSATISFIABLE, content_disposition, error_response, parse_range
from mkwfs.emulator.stats import Stats


class Downloads:
    """Answers the requests for bodies. ``config`` gives the current `EmulatorConfig`;
    ``stats`` counts downloads and the body bytes read and sent."""

    def __init__(
        self,
        records: Records,
        bodies: BodyStore,
        faults: Faults,
        config: Callable[[], EmulatorConfig],
        stats: Stats,
    ) -> None:
        self._records = records
        self._bodies = bodies
        self._faults = faults
        self._config = config
        self._stats = stats

    def answer(self, request: httpx.Request, ident: str) -> httpx.Response:
        """GET or HEAD of a body: 403 in FORBIDDEN_BUILD and for ``config.forbidden_downloads``,
        Range per ``config.ranges`` and ``config.send_buffer``, Content-Length or chunked per
        ``config.content_length``, cut, stalled and paced per ``config``; a GET counts as a
        download, and a HEAD with ``config.head_counts``."""
        entry = self._records.record("downloads", ident)
        if entry is None:
            return error_response(404, f"No record found for id '{ident}'")
        config = self._config()
        download_id = entry["id"]
        if entry["build_id"] == FORBIDDEN_BUILD or download_id in config.forbidden_downloads:
            return error_response(403, "You don't have permissions to download build results!")
        path = self.body_path(download_id)
        size = self._bodies.size(path)
        filename = entry["name"] or entry["file_name"] or f"{download_id}.zip"
        headers = {
            "Content-Type": "application/zip",
            "Content-Disposition": content_disposition(filename),
        }
        part = self._part(request, config, size, headers)
        if isinstance(part, httpx.Response):
            return part
        status, offset, length = part
        if config.content_length or config.send_buffer:
            headers["Content-Length"] = str(length)
        else:
            headers["Transfer-Encoding"] = "chunked"
        get = request.method.upper() == "GET"
        if get or config.head_counts:
            self._records.count_download(entry)
            self._stats.count_download(download_id)
        if config.send_buffer:  # the handler reads the whole file before answering
            self._stats.count_read(size)
        if not get:
            return httpx.Response(status, headers=headers)
        body = self._body(request, config, path, offset, length)
        return httpx.Response(status, headers=headers, stream=body)

    @staticmethod
    def _part(
        request: httpx.Request, config: EmulatorConfig, size: int, headers: dict[str, str]
    ) -> tuple[int, int, int] | httpx.Response:
        """``(status, offset, length)`` of what is sent of a ``size``-byte body, as the
        request's Range and ``config`` say (adding the headers that go with it); or the error
        of an unsatisfiable Range."""
        if not config.ranges or config.send_buffer:
            return 200, 0, size
        headers["Accept-Ranges"] = "bytes"
        wanted = parse_range(request.headers.get("range", ""), size)
        if wanted == UNSATISFIABLE:
            status = config.unsatisfiable_status
            return error_response(
                status,
                "Range Not Satisfiable",
                headers={"Content-Range": f"bytes */{size}"},
            )
        if wanted is None:
            return 200, 0, size
        headers["Content-Range"] = f"bytes {wanted[0]}-{wanted[1]}/{size}"
        return 206, wanted[0], wanted[1] - wanted[0] + 1

    def body_path(self, download_id: int) -> Path:
        """The file holding the download's body, generated on first use (KeyError for an
        unknown id); see `BodyStore.path`."""
        spec = self._records.body_spec(download_id)
        if spec is None:
            raise KeyError(download_id)
        return self._bodies.path(download_id, spec)

    def answers_at_once(self, download_id: int) -> bool:
        """Whether the body of ``download_id`` needs no generation (or there is none)."""
        spec = self._records.body_spec(download_id)
        return spec is None or self._bodies.known(download_id, spec)

    def _body(
        self, request: httpx.Request, config: EmulatorConfig, path: Path, offset: int, length: int
    ) -> FileBody:
        """The body of a GET, cut, stalled and paced as ``config`` says."""
        cuts: list[tuple[int, Ending]] = [(length, "close")]
        if config.drop_after is not None:
            cuts.append((config.drop_after, "close"))
        if config.reset_after is not None:
            cuts.append((config.reset_after, "reset"))
        limit, ending = min(cuts)
        # With send_buffer the file was read whole already; what goes out is only sent.
        on_sent = self._stats.count_sent if config.send_buffer else self._stats.count_streamed
        return FileBody(
            path, offset, length, limit=limit, ending=ending, throttle=config.throttle,
            stall=self._faults.stall(config), on_sent=on_sent, request=request,
            burst=(config.burst_bytes, config.burst_pause) if config.burst_bytes else None,
        )  # fmt: skip
