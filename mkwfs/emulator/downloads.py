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


class Downloads:
    """Answers the requests for bodies. ``config`` gives the current `EmulatorConfig`;
    ``on_sent`` is told every count of body bytes that goes out."""

    def __init__(
        self,
        records: Records,
        bodies: BodyStore,
        faults: Faults,
        config: Callable[[], EmulatorConfig],
        on_sent: Callable[[int], None],
    ) -> None:
        self._records = records
        self._bodies = bodies
        self._faults = faults
        self._config = config
        self._on_sent = on_sent

    def answer(self, request: httpx.Request, ident: str) -> httpx.Response:
        """GET or HEAD of a body: 403 in FORBIDDEN_BUILD and for ``config.forbidden_downloads``,
        Range per ``config.ranges``, Content-Length or chunked per ``config.content_length``,
        cut and stalled per ``config``; a GET counts as a download."""
        entry = self._records.record("downloads", ident)
        if entry is None:
            return error_response(404, f"No record found for id '{ident}'")
        config = self._config()
        download_id = entry["id"]
        if entry["build_id"] == FORBIDDEN_BUILD or download_id in config.forbidden_downloads:
            return error_response(403, "You don't have permissions to download build results!")
        path = self.body_path(download_id)
        size = self._bodies.size(path)
        status, offset, length = 200, 0, size
        filename = entry["name"] or entry["file_name"] or f"{download_id}.zip"
        headers = {
            "Content-Type": "application/zip",
            "Content-Disposition": content_disposition(filename),
        }
        if config.ranges:
            headers["Accept-Ranges"] = "bytes"
            wanted = parse_range(request.headers.get("range", ""), size)
            if wanted == UNSATISFIABLE:
                return error_response(
                    416, "Range Not Satisfiable", headers={"Content-Range": f"bytes */{size}"}
                )
            if isinstance(wanted, tuple):
                status, offset, length = 206, wanted[0], wanted[1] - wanted[0] + 1
                headers["Content-Range"] = f"bytes {wanted[0]}-{wanted[1]}/{size}"
        if config.content_length:
            headers["Content-Length"] = str(length)
        else:
            headers["Transfer-Encoding"] = "chunked"
        if request.method.upper() != "GET":
            return httpx.Response(status, headers=headers)
        self._records.count_download(entry)
        body = self._body(request, config, path, offset, length)
        return httpx.Response(status, headers=headers, stream=body)

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
        return FileBody(
            path, offset, length, limit=limit, ending=ending, throttle=config.throttle,
            stall=self._faults.stall(config), on_sent=self._on_sent, request=request,
        )  # fmt: skip
