"""How the emulated server behaves: `EmulatorConfig`, read on every request."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

JSON = dict[str, Any]
FailureBody = Literal["json", "html", "empty", "malformed"]
#: How a connection ends after a cut body: a clean close (FIN) or a reset (RST).
Ending = Literal["close", "reset"]


@dataclass(frozen=True)
class EmulatorConfig:
    """How the emulated server behaves. ``seed``, ``big_file_size``, ``data_dir``,
    ``extra_builds`` and ``downloads_per_build`` are read when an `Emulator` is created;
    everything else on every request, so a test may swap the config of a running emulator
    with ``dataclasses.replace`` (setting ``down`` acts at once).

    Random choices (``jitter``, ``fail_rate``) come from one generator seeded with ``seed``,
    so the same requests in the same order meet the same faults."""

    seed: int = 5139
    #: Size of BIG_ZIP; the ZIP is this plus a few KB of small members and headers.
    big_file_size: int = 256 * 2**20
    #: Where generated bodies live; default $XDG_CACHE_HOME/mkwfs-emulator/<seed>-<size>.
    data_dir: Path | None = None
    #: Builds added to the fixed ones (ids from ``EXTRA_BUILDS``), each FINISHED with
    #: ``downloads_per_build`` small downloads embedded in its object as real builds carry
    #: them: a dataset of many builds for benchmarks (10,000 x 10: 31 MB of builds list).
    extra_builds: int = 0
    downloads_per_build: int = 10
    email: str = "demo@metakraftwerk.example"
    password: str = "demo-password"
    #: Seconds a token is valid from its issue (to the server exactly; the ``exp`` claim is,
    #: like jsonwebtoken's, whole seconds from a whole-second ``iat``).
    token_lifetime: float = 86400.0
    #: The login answer's ``authentication`` also holds the ``accessToken`` (older setups);
    #: False: ``{"strategy": "local", "payload": <the token's claims>}``, as Feathers 5.
    login_token_copy: bool = False
    #: A login without email or password -> 400 ``'email' is required`` (a validating
    #: hook); False: 401 ``Invalid login``, as Feathers' local strategy answers.
    login_validation: bool = False
    #: None: lists are bare arrays; N: Feathers pages {"total","limit","skip","data"} of N
    #: records unless ``$limit`` asks for another number (Feathers' ``paginate.default``).
    page_size: int | None = None
    #: The most records a page holds, whatever ``$limit`` asks (Feathers' ``paginate.max``,
    #: capped silently); None: ``page_size``. Feathers' standard: page_size 10, page_max 50.
    page_max: int | None = None
    #: Build objects carry their ``downloads``, as the API documents; False: without the
    #: key (a server that leaves them out: a build's files then need their list request).
    embed_downloads: bool = True
    #: False: HEAD -> 405 MethodNotAllowed (Feathers 5).
    head: bool = True
    #: HEAD of any API path -> 405 ``Method HEAD not allowed``, before authentication, as
    #: Feathers 5.0.49 and earlier answer (``head=False`` words it as a missing method).
    head_405: bool = False
    #: A HEAD of a download runs the download handler and counts in ``downloaded``, as
    #: Feathers 5.0.50 answers (HEAD mapped to the service's ``get``).
    head_counts: bool = False
    #: Bodies sent as Express' ``res.send(buffer)``: Range ignored (200 and the whole body,
    #: always with Content-Length), and the server reads the whole file for a GET and a HEAD.
    send_buffer: bool = False
    #: True: Range -> 206 with Content-Range; False: Range ignored, 200 and the whole body.
    ranges: bool = True
    #: The status of an unsatisfiable Range: 416 (Express alone), or 500 GeneralError
    #: ``Range Not Satisfiable`` as Feathers' error handler answers (it drops Express' 416).
    unsatisfiable_status: Literal[416, 500] = 416
    #: False: download bodies are sent chunked, without Content-Length.
    content_length: bool = True
    #: Bytes per second for download bodies; None: full speed.
    throttle: int | None = None
    #: Bodies go out in bursts of this many bytes with ``burst_pause`` seconds between
    #: them, as Express streams (slower and burstier than nginx); None: no pauses.
    burst_bytes: int | None = None
    burst_pause: float = 0.0
    #: List and get answers carry a weak ETag ``W/"..."`` as Express computes it, and a GET
    #: or HEAD whose If-None-Match matches is answered 304 Not Modified without a body.
    etags: bool = False
    #: Close the connection cleanly (FIN) after this many body bytes of each download GET: a
    #: body shorter than its Content-Length (or a chunked body without its last chunk).
    drop_after: int | None = None
    #: Reset the connection (RST) after this many body bytes of each download GET. When both
    #: are set, the smaller of ``drop_after`` and ``reset_after`` cuts (a tie: a clean close).
    reset_after: int | None = None
    #: Stop sending after this many body bytes of each download GET, the connection left
    #: open, until `Emulator.release_stalls`, ``stall_seconds`` or the server stops; then the
    #: rest follows. No stall when the body (or its cut) is not longer than this.
    stall_after: int | None = None
    #: None: a stall lasts until released.
    stall_seconds: float | None = None
    #: Seconds every response waits before its status line, plus a uniform random share of
    #: ``jitter`` seconds.
    latency: float = 0.0
    jitter: float = 0.0
    #: Probability that a request (any endpoint) is answered with a failure instead, of a
    #: status from ``fail_statuses`` and a body from ``fail_bodies`` (see `Emulator.fail_next`).
    fail_rate: float = 0.0
    fail_statuses: tuple[int, ...] = (500, 502, 503, 504)
    fail_bodies: tuple[FailureBody, ...] = ("json", "html", "empty")
    #: ``Retry-After`` of injected 429s: seconds, or an HTTP date.
    retry_after: int | str = 1
    #: 2xx JSON answers of the list and get endpoints cut in half (Content-Length fits the cut).
    malformed_json: bool = False
    #: Download ids whose GET and HEAD are answered 403, as every download of FORBIDDEN_BUILD.
    forbidden_downloads: frozenset[int] = frozenset()
    #: ``GET /api/v1/downloads?build_id=N`` for a build N that does not exist (or was removed):
    #: "empty": ``[]`` as Feathers' find; "404": NotFound, as a hook that checks the build would.
    missing_build_list: Literal["empty", "404"] = "empty"
    #: The server is down: every `EmulatorServer` of the emulator stops listening and cuts its
    #: connections (clients get ECONNREFUSED), and `Emulator.handle` raises
    #: ``httpx.ConnectError``. False again: the servers listen again on the same ports.
    down: bool = False


DEFAULT_CONFIG: Final = EmulatorConfig()
