"""A MetaKraftwerk API emulator for tests, demos and benchmarks.

It plays the Feathers.js server of ``/work/shared/api``: local login with real HS256 JWTs,
builds, downloads (whose bodies are real, deterministic ZIP files), projects and patterns,
Feathers error bodies, and every undocumented behaviour a client must cope with, chosen by
`EmulatorConfig` (HEAD or 405, Range honoured or ignored, chunked bodies, pagination) or
injected per request with `Emulator.fail_next`.

It also plays a server under fire, switchable per test: latency and jitter, bursts of errors
(`Emulator.fail_next`, ``config.fail_rate``), 429 with ``Retry-After``, a server that is down
(``config.down``, `EmulatorServer.stop`), bodies cut by a clean close or a reset, bodies that
stall, malformed JSON, expiring tokens, forbidden downloads, and builds and downloads that
appear, change and vanish (`Emulator.add_download`, `Emulator.remove_build`, ...).

`Emulator.handle` is the whole API, a function from an ``httpx.Request`` to an
``httpx.Response``. A download body is not bytes but a `FileBody` stream that describes it
(file, offset, length, throttle, stall, where and how the connection ends), and the delay
before a response is kept with it (`response_delay`): `Emulator.mock_transport` plays both
in process, raising the httpx exception a real socket would give, and `EmulatorServer` sends
them over a socket (bodies with ``sendfile``). No status, header, body or fault is decided
anywhere else.

Ids and names are fixed (see the module constants); ``config.seed`` drives the bodies' bytes.
Bodies are generated on first use into ``data_dir`` and reused across runs and processes.

The rooms: `config` (EmulatorConfig), `app` (Emulator), `routes` (endpoints, lists and
gets), `auth` (login and tokens), `downloads` (the body endpoint), `bodies` (FileBody,
Stall, the body files), `zips` (what a body holds), `dataset` (the records), `faults`,
`stats`, `responses` (Feathers' answers), and the HTTP side: `wire`, `loop` (LoopServer),
`threaded` (_HTTPServer), `server` (EmulatorServer, serve_in_thread), `cli` (main).
"""

from mkwfs.emulator.app import Emulator
from mkwfs.emulator.bodies import FileBody, Stall
from mkwfs.emulator.cli import main
from mkwfs.emulator.config import EmulatorConfig, Ending, FailureBody
from mkwfs.emulator.dataset import (
    AWKWARD_BUILD,
    BIG_BUILD,
    BIG_ZIP,
    BUILDING_BUILD,
    CANCELED_BUILD,
    DEMO_BUILD,
    FAILED_BUILD,
    FORBIDDEN_BUILD,
    LARGE_BUILD,
    MEDIUM_FILE,
    MEDIUM_FILE_SIZE,
)
from mkwfs.emulator.loop import HttpApp, LoopServer
from mkwfs.emulator.responses import response_delay
from mkwfs.emulator.routes import ANY_ENDPOINT, ENDPOINTS
from mkwfs.emulator.server import EmulatorServer, serve_in_thread
from mkwfs.emulator.stats import Stats
from mkwfs.emulator.threaded import _HTTPServer
from mkwfs.emulator.wire import LISTEN_BACKLOG

__all__ = [
    "ANY_ENDPOINT",
    "AWKWARD_BUILD",
    "BIG_BUILD",
    "BIG_ZIP",
    "BUILDING_BUILD",
    "CANCELED_BUILD",
    "DEMO_BUILD",
    "ENDPOINTS",
    "FAILED_BUILD",
    "FORBIDDEN_BUILD",
    "LARGE_BUILD",
    "LISTEN_BACKLOG",
    "MEDIUM_FILE",
    "MEDIUM_FILE_SIZE",
    "Emulator",
    "EmulatorConfig",
    "EmulatorServer",
    "Ending",
    "FailureBody",
    "FileBody",
    "HttpApp",
    "LoopServer",
    "Stall",
    "Stats",
    "_HTTPServer",
    "main",
    "response_delay",
    "serve_in_thread",
]
