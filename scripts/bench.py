#!/usr/bin/env python3
"""Benchmark mkwfs's read path, side by side with the direct download and a peer.

    .venv/bin/python scripts/bench.py [--quick]
    .venv/bin/python scripts/bench.py --api-url URL --token-file PATH --big-build ID ...

In one run it measures the same files through

* the direct download, the limit: ``curl`` to /dev/null and ``httpx`` (an ``AsyncClient`` on
  trio, streamed, like mkwfs itself);
* the peer: ``rclone mount :http:`` over a plain HTML directory listing of the same files,
  once with ``--vfs-cache-mode off`` (rclone's default, streaming) and once with
  ``--vfs-cache-mode full`` (a disk cache, like mkwfs's);
* mkwfs: a real mount (``mkwfs mount --foreground`` as a subprocess), a fresh cache
  directory and a fresh mount for every cold figure;

and prints one table, the ratios, and the targets of issue 3 with pass or miss.

By default every server runs in a process of its own on 127.0.0.1, so that no server shares
a GIL with what is measured: the MetaKraftwerk emulator (``mkwfs.emulator``, served by
``serve_in_thread`` exactly as ``python -m mkwfs.emulator`` does, but in a child of this
script that also answers "how many requests so far" over a pipe) and, for rclone, a small
directory server whose files are symlinks to the emulator's generated bodies. Against any
other ``--api-url`` the requests are counted from mkwfs's own ``--debug`` log, and there is
no peer (it would need local copies of the bodies).

Every step has a timeout; whatever happens (an error, a timeout, Ctrl-C, SIGTERM) every
mount is unmounted and every process this script started is stopped. Children also get
SIGTERM from the kernel should this script die without cleaning up.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import email.utils
import functools
import hashlib
import html
import io
import json
import os
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any, Protocol, TypeVar

import httpx
import trio

from mkwfs.emulator import (
    BIG_BUILD,
    BIG_ZIP,
    LARGE_BUILD,
    LISTEN_BACKLOG,
    MEDIUM_FILE,
    FileBody,
    LoopServer,
)
from mkwfs.remote.models import parse_download
from mkwfs.tree.names import file_names

MiB = 2**20
#: Size of every read(2) a reader here issues, like ``dd bs=1M``.
READ_SIZE = MiB
#: Bytes a "first byte" read asks for.
FIRST_READ = 64 * 1024
#: The emulator's big ZIP in --quick runs (the full run uses the emulator's default).
QUICK_BIG_FILE_SIZE = 16 * MiB
PARALLEL_READERS = 8
#: Cold readers of different big files at once (--big-only), and the size of each file.
BIG_READERS = 4
BIG_READER_SIZE = 32 * MiB
SAME_FILE_READERS = 10
#: Size probes mkwfs sends at once (content._CONCURRENT_PROBES): curl's floor uses as many.
PROBES_AT_ONCE = 16
#: How long a mount may take to appear, and an unmount to finish.
MOUNT_TIMEOUT = 30.0
UNMOUNT_TIMEOUT = 10.0

T = TypeVar("T")


class BenchError(Exception):
    """A step could not be measured; the message says why."""


class StepTimeout(BenchError):
    """A step took longer than its timeout."""


# --- processes, directories and mounts this script owns ------------------------------------


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Ask the kernel for SIGTERM when the parent dies (PR_SET_PDEATHSIG), so that no
    server or mount outlives a benchmark killed with SIGKILL."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)


def _log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def _mounted_at(path: Path) -> str | None:
    """The filesystem type mounted at ``path``, if any (from /proc/mounts)."""
    wanted = os.fspath(path)
    with open("/proc/mounts", encoding="utf-8") as mounts:
        for line in mounts:
            fields = line.split()
            point = fields[1].encode().decode("unicode_escape")
            if len(fields) > 2 and point == wanted:
                return fields[2]
    return None


def _fusermount() -> str:
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    if tool is None:
        raise BenchError("fusermount3 not found (install the fuse3 package)")
    return tool


class Session:
    """Owns the temporary directory, the child processes and the mounts of one run, and
    takes them all down in `close`, whatever state they are in."""

    def __init__(self, step_timeout: float) -> None:
        self.step_timeout = step_timeout
        self.root = Path(tempfile.mkdtemp(prefix="mkwfs-bench-"))
        self._processes: list[subprocess.Popen[bytes]] = []
        self._mountpoints: list[Path] = []
        self._serial = 0

    def new_dir(self, name: str) -> Path:
        self._serial += 1
        path = self.root / f"{self._serial:02d}-{name}"
        path.mkdir(mode=0o700)
        return path

    def spawn(
        self,
        argv: Sequence[str],
        *,
        stdin: int | None = subprocess.DEVNULL,
        stdout: int | IO[Any] | None = subprocess.DEVNULL,
        stderr: int | IO[Any] | None = subprocess.DEVNULL,
    ) -> subprocess.Popen[bytes]:
        """Start a long-lived child in a session of its own (Ctrl-C reaches only this
        script, which then stops the children in order). Call from the main thread only:
        the parent-death signal fires when the spawning *thread* ends."""
        process = subprocess.Popen(
            list(argv),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self._processes.append(process)
        return process

    def add_mountpoint(self, path: Path) -> None:
        self._mountpoints.append(path)

    def bounded(self, what: str, action: Callable[[], T], abort: Callable[[], None]) -> T:
        """Run ``action`` in a thread for at most ``step_timeout`` seconds. A blocked FUSE
        read cannot be interrupted, so on timeout ``abort`` must make it fail (by killing
        the filesystem's daemon), and then `StepTimeout` is raised."""
        outcome: list[T] = []
        failure: list[BaseException] = []

        def run() -> None:
            try:
                outcome.append(action())
            except BaseException as exc:
                failure.append(exc)

        worker = threading.Thread(target=run, name=f"bench: {what}", daemon=True)
        worker.start()
        try:
            worker.join(self.step_timeout)
        except BaseException:  # Ctrl-C: free the blocked reader before unmounting
            abort()
            raise
        if worker.is_alive():
            abort()
            worker.join(UNMOUNT_TIMEOUT)
            raise StepTimeout(f"{what}: no result within {self.step_timeout:.0f} s")
        if failure:
            raise failure[0]
        return outcome[0]

    def close(self) -> None:
        """Unmount everything, stop every child (SIGTERM, then SIGKILL), remove the files."""
        for mountpoint in reversed(self._mountpoints):
            if _mounted_at(mountpoint) is not None:
                _log(f"cleanup: unmounting {mountpoint}")
                _force_unmount(mountpoint)
        for process in reversed(self._processes):
            stop_process(process)
        shutil.rmtree(self.root, ignore_errors=True)


def stop_process(process: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(grace)


def _force_unmount(mountpoint: Path) -> None:
    with contextlib.suppress(BenchError, OSError, subprocess.SubprocessError):
        subprocess.run(
            [_fusermount(), "-u", "-z", os.fspath(mountpoint)],
            capture_output=True,
            timeout=UNMOUNT_TIMEOUT,
            check=False,
        )


@dataclass
class Mounted:
    """A mounted filesystem and the process that serves it."""

    label: str
    path: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    def abort(self) -> None:
        """Kill the daemon (blocked readers then fail with ENOTCONN) and detach the mount."""
        with contextlib.suppress(OSError):
            self.process.kill()
        _force_unmount(self.path)

    def peak_rss(self) -> int | None:
        """The daemon's peak resident set (VmHWM) in bytes."""
        return _proc_status_bytes(self.process.pid, "VmHWM")

    def rss(self) -> int | None:
        return _proc_status_bytes(self.process.pid, "VmRSS")

    def readahead_kb(self) -> int | None:
        """The kernel's readahead for this mount (its backing device info)."""
        device = os.stat(self.path).st_dev
        bdi = Path(f"/sys/class/bdi/{os.major(device)}:{os.minor(device)}/read_ahead_kb")
        try:
            return int(bdi.read_text())
        except (OSError, ValueError):
            return None

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])


def _proc_status_bytes(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@contextlib.contextmanager
def mounted(
    session: Session, label: str, argv_for: Callable[[Path], list[str]], log_path: Path
) -> Iterator[Mounted]:
    """Start ``argv_for(mountpoint)`` (a foreground FUSE daemon), wait for its mount, yield
    it, and unmount it (and stop the daemon) on the way out."""
    mountpoint = session.new_dir(f"{label}-mnt")
    with log_path.open("ab") as log_file:
        process = session.spawn(argv_for(mountpoint), stdout=log_file, stderr=log_file)
    session.add_mountpoint(mountpoint)
    mount = Mounted(label, mountpoint, process, log_path)
    try:
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while _mounted_at(mountpoint) is None:
            if process.poll() is not None:
                raise BenchError(f"{label} exited with {process.returncode}: {mount.log_tail()}")
            if time.monotonic() > deadline:
                raise BenchError(f"{label} did not mount within {MOUNT_TIMEOUT:.0f} s")
            time.sleep(0.02)
        try:
            yield mount
        except Exception as exc:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(0.5)
            if process.returncode is None or isinstance(exc, StepTimeout):
                raise
            tail = mount.log_tail()
            raise BenchError(
                f"{exc} ({label} exited with {process.returncode}{': ' + tail if tail else ''})"
            ) from exc
    finally:
        unmount(mount)


def unmount(mount: Mounted) -> None:
    """``fusermount3 -u``, then wait for the daemon; lazy unmount and kill as a last resort."""
    if _mounted_at(mount.path) is not None:
        for _ in range(3):
            result = subprocess.run(
                [_fusermount(), "-u", os.fspath(mount.path)],
                capture_output=True,
                timeout=UNMOUNT_TIMEOUT,
                check=False,
            )
            if result.returncode == 0 or _mounted_at(mount.path) is None:
                break
            time.sleep(0.5)  # busy: a reader of an aborted step may still be leaving
        else:
            _force_unmount(mount.path)
    try:
        mount.process.wait(UNMOUNT_TIMEOUT)
    except subprocess.TimeoutExpired:
        stop_process(mount.process)


# --- request counters -----------------------------------------------------------------------


@dataclass(frozen=True)
class Counts:
    """Requests a server saw, by endpoint key, and the body bytes it sent."""

    requests: Counter[str] = field(default_factory=Counter)
    body_bytes: int = 0

    def __sub__(self, before: Counts) -> Counts:
        requests = Counter(self.requests)
        requests.subtract(before.requests)
        return Counts(+requests, self.body_bytes - before.body_bytes)

    def of_kind(self, kind: str) -> int:
        return sum(n for key, n in self.requests.items() if request_kind(key) == kind)

    @property
    def total(self) -> int:
        return sum(self.requests.values())

    def describe(self) -> str:
        """``1 list + 1000 probe = 1001``."""
        kinds: Counter[str] = Counter()
        for key, n in self.requests.items():
            kinds[request_kind(key)] += n
        parts = [
            f"{kinds[k]} {k}" for k in ("list", "probe", "download", "auth", "other") if kinds[k]
        ]
        if not parts:
            return "0"
        return parts[0] if len(parts) == 1 else " + ".join(parts) + f" = {self.total}"


#: Request kinds by endpoint key: the emulator's keys, and the directory server's.
_KINDS: Mapping[str, str] = {
    "GET /api/v1/builds": "list",
    "GET /api/v1/builds/:id": "list",
    "GET /api/v1/downloads": "list",
    "GET /api/v1/projects": "list",
    "GET /api/v1/patterns": "list",
    "HEAD /api/v1/downloads/:id": "probe",
    "GET /api/v1/downloads/:id": "download",
    "POST /authentication": "auth",
    "GET dir": "list",
    "HEAD file": "probe",
    "GET file": "download",
}


def request_kind(key: str) -> str:
    """list (a listing), probe (HEAD of a body), download (GET of a body), auth, other."""
    return _KINDS.get(key, "other")


class RequestCounter(Protocol):
    """Where a target's request counts come from."""

    source: str

    def snapshot(self) -> Counts: ...


class _Rpc:
    """JSON lines to and from a child server of this script."""

    def __init__(self, process: subprocess.Popen[bytes], timeout: float) -> None:
        assert process.stdin is not None and process.stdout is not None
        self._process = process
        self._stdin = process.stdin
        self._stdout = process.stdout
        self._timeout = timeout
        self._lock = threading.Lock()

    def receive(self, timeout: float | None = None) -> dict[str, Any]:
        readable, _, _ = select.select([self._stdout], [], [], timeout or self._timeout)
        line = self._stdout.readline() if readable else b""
        if not line:
            state = "exited" if self._process.poll() is not None else "did not answer"
            raise BenchError(f"server child {state}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def call(self, request: Mapping[str, Any], timeout: float | None = None) -> dict[str, Any]:
        with self._lock:
            self._stdin.write(json.dumps(request).encode() + b"\n")
            self._stdin.flush()
            return self.receive(timeout)


class RpcCounter:
    def __init__(self, rpc: _Rpc, source: str) -> None:
        self._rpc = rpc
        self.source = source

    def snapshot(self) -> Counts:
        answer = self._rpc.call({"op": "counts"})
        return Counts(Counter(answer["requests"]), int(answer["bytes"]))


_API_LOG_LINE = re.compile(r"mkwfs\.api: (?P<method>[A-Z]+) (?P<path>\S+) -> \S+, (?P<n>\d+) bytes")
_TRAILING_ID = re.compile(r"/\d+$")


class LogCounter:
    """Counts from the ``mkwfs.api`` lines of mkwfs's ``--debug`` log (one per request,
    written when the response is closed: complete only after unmount)."""

    source = "mkwfs --debug log"

    def __init__(self) -> None:
        self.logs: list[Path] = []

    def snapshot(self) -> Counts:
        requests: Counter[str] = Counter()
        body_bytes = 0
        for log_path in self.logs:
            try:
                text = log_path.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            for match in _API_LOG_LINE.finditer(text):
                path = _TRAILING_ID.sub("/:id", match["path"].split("?")[0])
                key = f"{match['method']} {path}"
                requests[key] += 1
                if request_kind(key) == "download":
                    body_bytes += int(match["n"])
        return Counts(requests, body_bytes)


# --- child: the emulator, with counters over a pipe ------------------------------------------


def _child_emulator(big_file_size: int) -> int:
    """Serve the emulator on 127.0.0.1; print {"url", "token"}; then answer JSON lines on
    stdin: {"op": "counts"}, {"op": "paths", "ids": [...]} and {"op": "add", "build": N,
    "names": [...], "size": BYTES} (new downloads, their ids); stop at EOF or SIGTERM."""
    from mkwfs.emulator import Emulator, EmulatorConfig, serve_in_thread

    emulator = Emulator(EmulatorConfig(big_file_size=big_file_size))
    with serve_in_thread(emulator) as url:
        _answer({"url": url, "token": emulator.issue_token()})
        for line in sys.stdin:
            request = json.loads(line)
            if request["op"] == "counts":
                _answer({"requests": dict(emulator.requests), "bytes": emulator.bytes_sent})
            elif request["op"] == "paths":
                paths = {str(i): os.fspath(emulator.body_path(int(i))) for i in request["ids"]}
                _answer({"paths": paths})
            elif request["op"] == "add":
                ids = [
                    emulator.add_download(int(request["build"]), name, int(request["size"]))
                    for name in request["names"]
                ]
                _answer({"ids": ids})
    return 0


def _answer(message: Mapping[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


# --- child: a plain directory server for the peer --------------------------------------------


class _DirApp:
    """HTML listings of directories, files with HEAD, one ``Range`` and sendfile: what a
    static web server (nginx, Apache) gives rclone's http backend. Served by the emulator's
    own `LoopServer`, so that the peer's server costs what the emulator does per request."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: Counter[str] = Counter()
        self.bytes_sent = 0
        self.lock = threading.Lock()

    def count(self, key: str, sent: int = 0) -> None:
        with self.lock:
            if key:
                self.requests[key] += 1
            self.bytes_sent += sent

    def answers_at_once(self, target: str) -> bool:
        return True  # a stat or a directory read; bodies go out from a thread anyway

    def count_connection(self, change: int) -> None:
        """Connections are not counted here."""

    def handle(self, request: httpx.Request) -> httpx.Response:
        method = request.method
        url_path = urllib.parse.unquote(request.url.raw_path.decode("ascii").split("?")[0])
        parts = [p for p in url_path.split("/") if p]
        if any(p in (".", "..") for p in parts):
            return self._empty(method, 404)
        path = self.root.joinpath(*parts)
        if path.is_dir():
            if not url_path.endswith("/"):
                return self._empty(method, 301, {"Location": url_path + "/"})
            return self._listing(method, path)
        if path.is_file():
            return self._file(request, path)
        return self._empty(method, 404)

    def _empty(self, method: str, status: int, headers: Mapping[str, str] = {}) -> httpx.Response:
        self.count(f"{method} other")
        return httpx.Response(status, headers={**headers, "Content-Length": "0"})

    def _listing(self, method: str, path: Path) -> httpx.Response:
        self.count(f"{method} dir")
        entries = sorted(path.iterdir())
        links = "".join(
            f'<li><a href="{urllib.parse.quote(e.name)}{"/" if e.is_dir() else ""}">'
            f"{html.escape(e.name)}</a></li>\n"
            for e in entries
        )
        body = f"<!DOCTYPE html><html><body><ul>\n{links}</ul></body></html>\n".encode()
        headers = {"Content-Type": "text/html; charset=utf-8", "Content-Length": str(len(body))}
        return httpx.Response(200, headers=headers, content=body if method == "GET" else b"")

    def _file(self, request: httpx.Request, path: Path) -> httpx.Response:
        self.count(f"{request.method} file")
        stat = path.stat()
        size = stat.st_size
        status, start, end = 200, 0, size
        match = _RANGE.match(request.headers.get("Range", ""))
        if match and (match[1] or match[2]):
            if match[1]:
                start = int(match[1])
                end = min(size, int(match[2]) + 1) if match[2] else size
            else:
                start = max(0, size - int(match[2]))
            if start >= size or start >= end:
                headers = {"Content-Range": f"bytes */{size}", "Content-Length": "0"}
                return httpx.Response(416, headers=headers)
            status = 206
        headers = {
            "Content-Type": "application/zip",
            "Content-Length": str(end - start),
            "Accept-Ranges": "bytes",
            "Last-Modified": email.utils.formatdate(stat.st_mtime, usegmt=True),
        }
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        if request.method != "GET":
            return httpx.Response(status, headers=headers)
        body = FileBody(
            path, start, end - start, limit=end - start, throttle=None,
            on_sent=lambda sent: self.count("", sent), request=request,
        )  # fmt: skip
        return httpx.Response(status, headers=headers, stream=body)


_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


def _child_dirserver(root: Path) -> int:
    """Serve ``root``; print {"url"}; answer {"op": "counts"} on stdin; stop at EOF."""
    app = _DirApp(root)
    server = LoopServer(("127.0.0.1", 0), app)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    _answer({"url": f"http://127.0.0.1:{server.server_port}"})
    for line in sys.stdin:
        if json.loads(line)["op"] == "counts":
            with app.lock:
                _answer({"requests": dict(app.requests), "bytes": app.bytes_sent})
    server.shutdown()
    server.server_close()
    server.close_connections()
    return 0


# --- the files to measure --------------------------------------------------------------------


@dataclass(frozen=True)
class File:
    build_id: int
    download_id: int
    name: str

    @property
    def rel(self) -> str:
        """The path below a mount, and below the directory server's root."""
        return f"builds/{self.build_id}/{self.name}"


@dataclass
class Server:
    """The API under test, the files of the run, and how to count its requests."""

    url: str
    token: str
    counter: RequestCounter
    big: File
    medium: File
    large_build: int
    large_files: list[File]
    #: The big file's size, once known (from the emulator's body, or the first full read).
    big_size: int | None = None
    #: Body files on this machine (emulator only): what the peer serves and hashes check.
    body_paths: dict[int, Path] = field(default_factory=dict)

    def download_url(self, file: File) -> str:
        return f"{self.url}/api/v1/downloads/{file.download_id}"

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def _list_downloads(client: httpx.Client, url: str, build_id: int) -> list[File]:
    """A build's files with the names mkwfs gives them (Feathers pages followed)."""
    records: list[Any] = []
    while True:
        response = client.get(
            f"{url}/api/v1/downloads", params={"build_id": build_id, "$skip": len(records)}
        )
        response.raise_for_status()
        page = response.json()
        if isinstance(page, list):
            records.extend(page)
            break
        records.extend(page["data"])
        if not page["data"] or len(records) >= page["total"]:
            break
    named = file_names(parse_download(r) for r in records)
    return [File(build_id, d.id, os.fsdecode(name)) for name, d in named]


def _find(files: Sequence[File], download_id: int, build_id: int) -> File:
    for file in files:
        if file.download_id == download_id:
            return file
    raise BenchError(f"download {download_id} is not in build {build_id}")


def describe_server(
    url: str, token: str, counter: RequestCounter, args: argparse.Namespace
) -> Server:
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=60.0) as client:
        big_build = _list_downloads(client, url, args.big_build)
        medium_build = (
            big_build
            if args.medium_build in (None, args.big_build)
            else _list_downloads(client, url, args.medium_build)
        )
        large = _list_downloads(client, url, args.large_build)
    if len(large) < PARALLEL_READERS:
        raise BenchError(f"build {args.large_build} has fewer than {PARALLEL_READERS} files")
    return Server(
        url=url,
        token=token,
        counter=counter,
        big=_find(big_build, args.big_file, args.big_build),
        medium=_find(medium_build, args.medium_file, args.medium_build or args.big_build),
        large_build=args.large_build,
        large_files=large,
    )


# --- readers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Read:
    size: int
    seconds: float
    digest: str = ""

    @property
    def mib_per_s(self) -> float:
        return self.size / MiB / self.seconds if self.seconds > 0 else float("inf")


def read_file(path: Path, *, digest: bool = False) -> Read:
    """Read the whole file with 1 MiB read(2)s (like ``dd bs=1M``)."""
    buffer = bytearray(READ_SIZE)
    view = memoryview(buffer)
    hasher = hashlib.sha256() if digest else None
    size = 0
    started = time.perf_counter()
    with open(path, "rb", buffering=0) as file:
        while n := file.readinto(buffer):
            size += n
            if hasher is not None:
                hasher.update(view[:n])
    elapsed = time.perf_counter() - started
    return Read(size, elapsed, hasher.hexdigest() if hasher else "")


def first_byte(path: Path) -> float:
    """Seconds from open(2) to the first read(2) returning data."""
    started = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.read(fd, FIRST_READ)
        elapsed = time.perf_counter() - started
    finally:
        os.close(fd)
    if not data:
        raise BenchError(f"{path.name}: empty read")
    return elapsed


def read_concurrently(paths: Sequence[Path], *, digest: bool = False) -> tuple[float, list[Read]]:
    """Read all ``paths`` at once, one thread each, started together; wall time and reads."""
    barrier = threading.Barrier(len(paths) + 1)
    results: list[Read | BaseException | None] = [None] * len(paths)

    def reader(index: int) -> None:
        try:
            barrier.wait()
            results[index] = read_file(paths[index], digest=digest)
        except BaseException as exc:
            results[index] = exc

    threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(len(paths))]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    reads: list[Read] = []
    for result in results:
        if not isinstance(result, Read):
            raise BenchError(f"a reader failed: {result!r}")
        reads.append(result)
    return elapsed, reads


@dataclass(frozen=True)
class ZipRead:
    member: str
    member_size: int
    seconds: float


def read_zip_member(file: IO[bytes] | Path, *, whole: bool = False) -> ZipRead:
    """Open a ZIP with Python's zipfile, pick the largest member (the middle one of equals)
    and read it (1 MiB reads, or one read when ``whole``); zipfile checks its CRC."""
    started = time.perf_counter()
    with zipfile.ZipFile(file) as archive:
        infos = archive.infolist()
        largest = max(info.compress_size for info in infos)
        candidates = [info for info in infos if info.compress_size == largest]
        member = candidates[len(candidates) // 2]
        with archive.open(member) as stream:
            if whole:
                stream.read()
            else:
                while stream.read(READ_SIZE):
                    pass
    return ZipRead(member.filename, member.compress_size, time.perf_counter() - started)


class _RangeFile(io.RawIOBase):
    """A file over HTTP that fetches exactly the ranges asked for: the reference for what
    reading one ZIP member must cost."""

    def __init__(self, client: httpx.Client, url: str) -> None:
        self._client = client
        self._url = url
        self._position = 0
        self.requests = 1
        head = client.head(url)
        head.raise_for_status()
        self.size = int(head.headers["Content-Length"])
        self.body_bytes = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self.size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        count = min(len(view), self.size - self._position)
        if count <= 0:
            return 0
        end = self._position + count - 1
        response = self._client.get(self._url, headers={"Range": f"bytes={self._position}-{end}"})
        self.requests += 1
        if response.status_code != 206:
            raise BenchError(f"server answered Range with {response.status_code}, not 206")
        data = response.content
        self.body_bytes += len(data)
        view[: len(data)] = data
        self._position += len(data)
        return len(data)


# --- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One measured figure: ``value`` (None: not measured) and how it is printed."""

    value: float | None
    text: str
    note: str = ""
    counts: Counts | None = None


def na(reason: str) -> Cell:
    return Cell(None, "n/a", reason)


COLUMNS = ("curl", "httpx", "rclone off", "rclone full", "mkwfs")
PEERS = ("rclone off", "rclone full")


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    #: "higher" or "lower" is better (figures with ratios); "" for counts.
    better: str = ""


def rows(big_label: str) -> list[Row]:
    return [
        Row("cold", f"cold sequential read, {big_label} (MiB/s)", "higher"),
        Row("warm", "warm re-read, same mount (MiB/s, median of 3)", "higher"),
        Row("ttfb", "first byte of a cold 32 MiB file (ms)", "lower"),
        Row("ls_time", "ls -l, cold 1000-file build (s)", "lower"),
        Row("ls_reqs", "  requests"),
        Row("ls2_time", "ls -l after a remount (s)", "lower"),
        Row("ls2_reqs", "  requests"),
        Row("par", f"{PARALLEL_READERS} parallel cold readers, different files (ms)", "lower"),
        Row("same", f"{SAME_FILE_READERS} concurrent cold readers of one file (GETs)"),
        Row("zip_reqs", f"one member of a cold {big_label} ZIP (requests)"),
        Row("zip_extra", "  MiB fetched besides the member"),
        Row("zip_time", "  time (s)"),
        Row("rss", f"daemon peak RSS reading {big_label} (MiB)"),
    ]


Results = dict[str, dict[str, Cell]]


def record(results: Results, column: str, key: str, cell: Cell) -> None:
    results.setdefault(key, {})[column] = cell


def guarded(results: Results, column: str, keys: Sequence[str], step: Callable[[], None]) -> None:
    """Run one step; if it fails, its figures say why instead of stopping the run."""
    try:
        step()
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        reason = str(exc) if isinstance(exc, BenchError) else f"{type(exc).__name__}: {exc}"
        _log(f"{column}: {reason}")
        for key in keys:
            if column not in results.get(key, {}):
                record(results, column, key, na(reason))


def _ms(seconds: float) -> Cell:
    return Cell(seconds * 1000, f"{seconds * 1000:.1f}")


def _rate(read: Read) -> Cell:
    return Cell(read.mib_per_s, f"{read.mib_per_s:.0f}")


def _mib(n: int) -> Cell:
    return Cell(n / MiB, f"{n / MiB:.1f}")


def _requests(counts: Counts, prefix: str = "") -> Cell:
    return Cell(counts.total, str(counts.total), prefix + counts.describe(), counts)


# --- direct downloads ------------------------------------------------------------------------


def _curl(
    session: Session,
    header_file: Path,
    urls: Sequence[str],
    *,
    head: bool = False,
    at_once: int | None = None,
) -> list[tuple[float, float, int]]:
    """Download ``urls`` to /dev/null with one curl (in parallel if several, ``at_once`` at
    a time, default all), or only ask for their heads; per URL the seconds to the first
    byte, the total seconds and the bytes. The token is in a header file, never on the
    command line."""
    argv = ["curl", "--silent", "--show-error", "--fail", "-H", f"@{header_file}"]
    if head:
        argv.append("--head")
    if len(urls) > 1:
        parallel = str(at_once or len(urls))
        argv += ["--parallel", "--parallel-immediate", "--parallel-max", parallel]
    argv += ["-w", r"%{time_starttransfer} %{time_total} %{size_download}\n"]
    for url in urls:
        argv += ["-o", "/dev/null", url]
    result = subprocess.run(argv, capture_output=True, timeout=session.step_timeout, check=False)
    if result.returncode != 0:
        raise BenchError(f"curl failed: {result.stderr.decode(errors='replace').strip()}")
    out: list[tuple[float, float, int]] = []
    for line in result.stdout.decode().splitlines():
        start, total, size = line.split()
        out.append((float(start), float(total), int(size)))
    return out


def measure_curl(session: Session, server: Server, results: Results) -> None:
    if shutil.which("curl") is None:
        for key in ("cold", "ttfb", "par", "ls_time"):
            record(results, "curl", key, na("curl is not installed"))
        return
    header_file = session.root / "curl-headers"
    fd = os.open(header_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as headers:
        headers.write(f"Authorization: Bearer {server.token}\n")

    def cold() -> None:
        ((_, total, size),) = _curl(session, header_file, [server.download_url(server.big)])
        server.big_size = server.big_size or size
        record(results, "curl", "cold", _rate(Read(size, total)))

    def ttfb() -> None:
        ((start, _, _),) = _curl(session, header_file, [server.download_url(server.medium)])
        record(results, "curl", "ttfb", _ms(start))

    def parallel() -> None:
        urls = [server.download_url(f) for f in server.large_files[:PARALLEL_READERS]]
        started = time.perf_counter()
        _curl(session, header_file, urls)
        record(results, "curl", "par", _ms(time.perf_counter() - started))

    def probes() -> None:
        """The server's own floor for a cold ls -l: a HEAD for every file, as many at a
        time as mkwfs sends, with nothing else (no list, no FUSE)."""
        urls = [server.download_url(f) for f in server.large_files]
        started = time.perf_counter()
        _curl(session, header_file, urls, head=True, at_once=PROBES_AT_ONCE)
        elapsed = time.perf_counter() - started
        note = f"{len(urls)} HEADs, {PROBES_AT_ONCE} at a time: the server's floor"
        record(results, "curl", "ls_time", Cell(elapsed, f"{elapsed:.3f}", note))

    guarded(results, "curl", ["cold"], cold)
    guarded(results, "curl", ["ttfb"], ttfb)
    guarded(results, "curl", ["par"], parallel)
    guarded(results, "curl", ["ls_time"], probes)
    not_applicable = ("warm", "ls_reqs", "ls2_time", "ls2_reqs", "same", "rss")
    for key in (*not_applicable, "zip_reqs", "zip_extra", "zip_time"):
        record(results, "curl", key, Cell(None, "—"))


async def _httpx_get(client: httpx.AsyncClient, url: str) -> tuple[float, float, int]:
    """Stream one GET; seconds to the first body chunk, seconds in all, bytes."""
    started = time.perf_counter()
    first = 0.0
    size = 0
    async with client.stream("GET", url) as response:
        response.raise_for_status()
        async for chunk in response.aiter_raw():
            if not first:
                first = time.perf_counter() - started
            size += len(chunk)
    return first, time.perf_counter() - started, size


def _run_httpx(
    session: Session, server: Server, urls: Sequence[str]
) -> list[tuple[float, float, int]]:
    """GET ``urls`` at once with one fresh AsyncClient on trio (the connection setup is
    measured, the client's construction is not)."""

    async def main() -> list[tuple[float, float, int]]:
        out: list[tuple[float, float, int]] = [(0.0, 0.0, 0)] * len(urls)
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
        async with httpx.AsyncClient(
            headers=server.auth_headers, timeout=60.0, limits=limits
        ) as client:
            with trio.fail_after(session.step_timeout):

                async def one(index: int) -> None:
                    out[index] = await _httpx_get(client, urls[index])

                async with trio.open_nursery() as nursery:
                    for index in range(len(urls)):
                        nursery.start_soon(one, index)
        return out

    try:
        return trio.run(main)
    except trio.TooSlowError as exc:
        raise StepTimeout(f"httpx: no result within {session.step_timeout:.0f} s") from exc


def measure_httpx(session: Session, server: Server, results: Results) -> None:
    def cold() -> None:
        ((_, total, size),) = _run_httpx(session, server, [server.download_url(server.big)])
        server.big_size = server.big_size or size
        record(results, "httpx", "cold", _rate(Read(size, total)))

    def ttfb() -> None:
        ((first, _, _),) = _run_httpx(session, server, [server.download_url(server.medium)])
        record(results, "httpx", "ttfb", _ms(first))

    def parallel() -> None:
        urls = [server.download_url(f) for f in server.large_files[:PARALLEL_READERS]]
        started = time.perf_counter()
        _run_httpx(session, server, urls)
        record(results, "httpx", "par", _ms(time.perf_counter() - started))

    def zip_member() -> None:
        with httpx.Client(headers=server.auth_headers, timeout=60.0) as client:
            raw = _RangeFile(client, server.download_url(server.big))
            started = time.perf_counter()
            read = read_zip_member(io.BufferedReader(raw, 64 * 1024), whole=True)
            elapsed = time.perf_counter() - started
        record(
            results,
            "httpx",
            "zip_reqs",
            Cell(raw.requests, f"{raw.requests}", "HEAD + a ranged GET per buffered read"),
        )
        record(results, "httpx", "zip_extra", _mib(raw.body_bytes - read.member_size))
        record(results, "httpx", "zip_time", Cell(elapsed, f"{elapsed:.2f}"))

    guarded(results, "httpx", ["cold"], cold)
    guarded(results, "httpx", ["ttfb"], ttfb)
    guarded(results, "httpx", ["par"], parallel)
    guarded(results, "httpx", ["zip_reqs", "zip_extra", "zip_time"], zip_member)
    for key in ("warm", "ls_time", "ls_reqs", "ls2_time", "ls2_reqs", "same", "rss"):
        record(results, "httpx", key, Cell(None, "—"))


# --- filesystems: mkwfs and rclone -----------------------------------------------------------


@dataclass
class Target:
    """A FUSE filesystem to measure: how to mount it on a cache directory, and where its
    server's request counts come from."""

    column: str
    mount: Callable[[Path], contextlib.AbstractContextManager[Mounted]]
    counter: RequestCounter
    notes: list[str] = field(default_factory=list)


def mkwfs_target(session: Session, server: Server, debug_log: bool) -> Target:
    token_file = session.root / "token"
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as token:
        token.write(server.token + "\n")
    counter = server.counter
    logs = counter.logs if isinstance(counter, LogCounter) else None

    @contextlib.contextmanager
    def mount(cache_dir: Path) -> Iterator[Mounted]:
        log_path = session.new_dir("mkwfs-log") / "mkwfs.log"
        if logs is not None:
            logs.append(log_path)

        def argv(mountpoint: Path) -> list[str]:
            extra = ["--debug"] if debug_log else []
            return [
                sys.executable, "-m", "mkwfs", "mount", os.fspath(mountpoint), "--foreground",
                "--api-url", server.url, "--token-file", os.fspath(token_file),
                "--cache-dir", os.fspath(cache_dir), *extra,
            ]  # fmt: skip

        with mounted(session, "mkwfs", argv, log_path) as mnt:
            yield mnt

    return Target("mkwfs", mount, counter)


#: rclone options besides the cache mode: read-only, a fresh --cache-dir per cold figure,
#: and rclone's defaults for everything else (as a user would run it).
RCLONE_OPTIONS = ("--read-only",)


def rclone_target(session: Session, url: str, counter: RequestCounter, mode: str) -> Target:
    config = session.root / "rclone.conf"
    config.touch(mode=0o600)

    @contextlib.contextmanager
    def mount(cache_dir: Path) -> Iterator[Mounted]:
        log_path = session.new_dir(f"rclone-{mode}-log") / "rclone.log"

        def argv(mountpoint: Path) -> list[str]:
            return [
                "rclone", "mount", ":http:", os.fspath(mountpoint), "--http-url", url + "/",
                *RCLONE_OPTIONS, "--vfs-cache-mode", mode, "--cache-dir", os.fspath(cache_dir),
                "--config", os.fspath(config), "--log-level", "NOTICE",
            ]  # fmt: skip

        with mounted(session, f"rclone-{mode}", argv, log_path) as mnt:
            yield mnt

    return Target(f"rclone {mode}", mount, counter)


def _settle() -> None:
    """Let servers finish counting what they sent before the connection closed."""
    time.sleep(0.2)


def measure_fs(session: Session, server: Server, target: Target, results: Results) -> None:
    """Every figure of one filesystem; each cold figure on a fresh cache and mount."""
    column = target.column
    big = server.big
    bounded = session.bounded
    expected_digests: dict[int, str] = {}

    def digest_of(file: File) -> str | None:
        path = server.body_paths.get(file.download_id)
        if path is None:
            return None
        if file.download_id not in expected_digests:
            with path.open("rb") as body:
                expected_digests[file.download_id] = hashlib.file_digest(body, "sha256").hexdigest()
        return expected_digests[file.download_id]

    def counted_since(before: Counts) -> Counts:
        """Requests since ``before``, read after the unmount: with every stream closed,
        what the access cost the server in all."""
        _settle()
        return target.counter.snapshot() - before

    def cold_warm_rss() -> None:
        with target.mount(session.new_dir(f"{column}-cache")) as mnt:
            path = mnt.path / big.rel
            baseline = mnt.rss()
            cold = bounded(f"{column}: cold read", lambda: read_file(path), mnt.abort)
            if cold.size == 0:
                raise BenchError("the big file read as empty")
            server.big_size = server.big_size or cold.size
            peak = mnt.peak_rss()
            record(results, column, "cold", _rate(cold))
            if peak is not None:
                note = f"baseline {baseline / MiB:.0f} MiB" if baseline else ""
                record(results, column, "rss", Cell(peak / MiB, f"{peak / MiB:.0f}", note))
            warm = [
                bounded(f"{column}: warm read", lambda: read_file(path), mnt.abort)
                for _ in range(3)
            ]
            rate = statistics.median(r.mib_per_s for r in warm)
            record(results, column, "warm", Cell(rate, f"{rate:.0f}"))
            readahead = mnt.readahead_kb()
            if readahead is not None:
                target.notes.append(f"kernel readahead {readahead} KiB")
            expected = digest_of(big)
            if expected is not None:
                check = bounded(
                    f"{column}: verify", lambda: read_file(path, digest=True), mnt.abort
                )
                if check.digest != expected:
                    target.notes.append("WRONG BYTES in the big file")
                    raise BenchError("the big file's bytes differ from the server's")
        _log(f"{column}: cold {cold.mib_per_s:.0f} MiB/s, warm {rate:.0f} MiB/s")

    def ttfb() -> None:
        with target.mount(session.new_dir(f"{column}-cache")) as mnt:
            path = mnt.path / server.medium.rel
            os.stat(path)  # the directory listed and the size known, as after ls -l
            seconds = bounded(f"{column}: first byte", lambda: first_byte(path), mnt.abort)
            record(results, column, "ttfb", _ms(seconds))

    def ls() -> None:
        cache = session.new_dir(f"{column}-cache")
        directory = f"builds/{server.large_build}"
        for key in ("ls", "ls2"):
            with target.mount(cache) as mnt:
                before = target.counter.snapshot()

                def run_ls(path: Path = mnt.path / directory) -> tuple[float, bytes]:
                    started = time.perf_counter()
                    result = subprocess.run(
                        ["ls", "-l", os.fspath(path)],
                        capture_output=True,
                        env={**os.environ, "LC_ALL": "C"},
                        check=False,
                        timeout=session.step_timeout,
                    )
                    elapsed = time.perf_counter() - started
                    if result.returncode != 0:
                        raise BenchError(
                            f"ls -l failed: {result.stderr.decode(errors='replace')[:200]}"
                        )
                    return elapsed, result.stdout

                elapsed, listing = bounded(f"{column}: ls -l", run_ls, mnt.abort)
            counts = counted_since(before)
            entries = listing.count(b"\n") - 1
            note = "" if entries == len(server.large_files) else f"{entries} entries listed"
            record(results, column, f"{key}_time", Cell(elapsed, f"{elapsed:.3f}", note))
            record(results, column, f"{key}_reqs", _requests(counts))

    def parallel() -> None:
        with target.mount(session.new_dir(f"{column}-cache")) as mnt:
            paths = [mnt.path / f.rel for f in server.large_files[:PARALLEL_READERS]]
            for path in paths:
                os.stat(path)
            elapsed, reads = bounded(
                f"{column}: parallel", lambda: read_concurrently(paths), mnt.abort
            )
            total = sum(r.size for r in reads)
            record(
                results,
                column,
                "par",
                Cell(elapsed * 1000, f"{elapsed * 1000:.1f}", f"{total / 1024:.0f} KiB in all"),
            )

    def same_file() -> None:
        medium = server.medium
        with target.mount(session.new_dir(f"{column}-cache")) as mnt:
            path = mnt.path / medium.rel
            os.stat(path)
            before = target.counter.snapshot()
            paths = [path] * SAME_FILE_READERS
            _, reads = bounded(
                f"{column}: same file", lambda: read_concurrently(paths, digest=True), mnt.abort
            )
        counts = counted_since(before)
        digests = {r.digest for r in reads}
        expected = digest_of(medium)
        if len(digests) != 1 or (expected is not None and digests != {expected}):
            raise BenchError("concurrent readers of one file got different or wrong bytes")
        gets = counts.of_kind("download")
        note = f"{counts.describe()}, {counts.body_bytes / MiB:.1f} MiB sent"
        record(results, column, "same", Cell(gets, str(gets), note, counts))

    def zip_member() -> None:
        with target.mount(session.new_dir(f"{column}-cache")) as mnt:
            before = target.counter.snapshot()
            read = bounded(
                f"{column}: zip member", lambda: read_zip_member(mnt.path / big.rel), mnt.abort
            )
            _settle()
            during = target.counter.snapshot() - before
        counts = counted_since(before)
        extra = counts.body_bytes - read.member_size
        member = f"{read.member} ({read.member_size / MiB:.1f} MiB)"
        record(results, column, "zip_reqs", _requests(counts, f"member {member}: "))
        note = f"{(during.body_bytes - read.member_size) / MiB:.1f} MiB by the end of the read"
        record(results, column, "zip_extra", Cell(extra / MiB, f"{extra / MiB:.1f}", note))
        record(results, column, "zip_time", Cell(read.seconds, f"{read.seconds:.2f}"))

    guarded(results, column, ["cold", "warm", "rss"], cold_warm_rss)
    guarded(results, column, ["ttfb"], ttfb)
    guarded(results, column, ["ls_time", "ls_reqs", "ls2_time", "ls2_reqs"], ls)
    guarded(results, column, ["par"], parallel)
    guarded(results, column, ["same"], same_file)
    guarded(results, column, ["zip_reqs", "zip_extra", "zip_time"], zip_member)


# --- the report ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Goal:
    text: str
    check: Callable[[Mapping[str, Cell]], bool | None]


def _value(cells: Mapping[str, Cell], column: str) -> float | None:
    cell = cells.get(column)
    return None if cell is None else cell.value


def _at_most(limit: float) -> Callable[[Mapping[str, Cell]], bool | None]:
    def check(cells: Mapping[str, Cell]) -> bool | None:
        value = _value(cells, "mkwfs")
        return None if value is None else value <= limit

    return check


def _at_least(limit: float) -> Callable[[Mapping[str, Cell]], bool | None]:
    def check(cells: Mapping[str, Cell]) -> bool | None:
        value = _value(cells, "mkwfs")
        return None if value is None else value >= limit

    return check


def _exactly(wanted: float) -> Callable[[Mapping[str, Cell]], bool | None]:
    def check(cells: Mapping[str, Cell]) -> bool | None:
        value = _value(cells, "mkwfs")
        return None if value is None else value == wanted

    return check


def _beats_peer(cells: Mapping[str, Cell]) -> bool | None:
    mine = _value(cells, "mkwfs")
    peers = [v for v in (_value(cells, p) for p in PEERS) if v is not None]
    if mine is None or not peers:
        return None
    return mine >= max(peers)


def _ls_first(cells: Mapping[str, Cell]) -> bool | None:
    cell = cells.get("mkwfs")
    if cell is None or cell.counts is None:
        return None
    counts = cell.counts
    return (
        counts.of_kind("list") == 1 and counts.of_kind("download") == 0 and counts.total - 1 <= 1000
    )


TARGETS: dict[str, Goal] = {
    "cold": Goal(">= 1.0x peer (best rclone)", _beats_peer),
    "warm": Goal(">= 2048 MiB/s", _at_least(2048)),
    "ttfb": Goal("<= 50 ms", _at_most(50)),
    "ls_time": Goal("<= 0.5 s", _at_most(0.5)),
    "ls_reqs": Goal("1 list + <= 1000 probes", _ls_first),
    "ls2_reqs": Goal("exactly 1", _exactly(1)),
    "same": Goal("exactly 1 download", _exactly(1)),
    "zip_reqs": Goal("<= 4 requests", _at_most(4)),
    "zip_extra": Goal("<= 1 MiB", _at_most(1.0)),
    "rss": Goal("<= 150 MiB", _at_most(150)),
}


def _ratio(row: Row, cells: Mapping[str, Cell], other: str) -> str:
    mine, theirs = _value(cells, "mkwfs"), _value(cells, other)
    if mine is None or theirs is None or mine <= 0 or theirs <= 0:
        return "n/a"
    return f"{mine / theirs:.2f}x"


def report(
    results: Results, row_list: Sequence[Row], targets: Sequence[Target], header: str
) -> str:
    lines = [header, ""]
    width = max(len(r.label) for r in row_list)
    cols = (*COLUMNS, "target", "result")
    widths = [max(12, len(c)) for c in COLUMNS] + [26, 6]
    footnotes: list[str] = []

    titles: dict[str, str] = {}
    parent = ""
    for row in row_list:
        if row.label.startswith(" "):
            titles[row.key] = f"{parent.split(' (')[0]}, {row.label.strip()}"
        else:
            parent = titles[row.key] = row.label

    def cell_text(row: Row, column: str) -> str:
        cell = results.get(row.key, {}).get(column)
        if cell is None:
            return "n/a"
        if cell.note and cell.value is None:
            text = f"{column}: {cell.note}"
            if text not in footnotes:
                footnotes.append(text)
            return f"n/a[{footnotes.index(text) + 1}]"
        return cell.text

    lines.append(
        f"{'figure':<{width}}  " + "  ".join(f"{c:>{w}}" for c, w in zip(cols, widths, strict=True))
    )
    lines.append("-" * (width + 2 + sum(widths) + 2 * (len(widths) - 1)))
    details: list[str] = []
    for row in row_list:
        cells = results.get(row.key, {})
        texts = [cell_text(row, c) for c in COLUMNS]
        goal = TARGETS.get(row.key)
        verdict = ""
        if goal is not None:
            outcome = goal.check(cells)
            verdict = "n/a" if outcome is None else ("pass" if outcome else "MISS")
        texts += [goal.text if goal else "", verdict]
        lines.append(
            f"{row.label:<{width}}  "
            + "  ".join(f"{t:>{w}}" for t, w in zip(texts, widths, strict=True))
        )
        for column in COLUMNS:
            cell = cells.get(column)
            if cell is not None and cell.note and cell.value is not None:
                details.append(f"  {column}, {titles[row.key]}: {cell.note}")
    lines.append("")
    lines.append(
        "Ratios, mkwfs / other (throughput: > 1 means mkwfs is faster; "
        "times: < 1 means mkwfs is faster):"
    )
    ratio_cols = ("curl", "httpx", *PEERS)
    lines.append(f"{'figure':<{width}}  " + "  ".join(f"{'mkwfs/' + c:>17}" for c in ratio_cols))
    for row in row_list:
        if not row.better:
            continue
        cells = results.get(row.key, {})
        lines.append(
            f"{row.label:<{width}}  "
            + "  ".join(f"{_ratio(row, cells, c):>17}" for c in ratio_cols)
        )
    cold = results.get("cold", {})
    mine, curl = _value(cold, "mkwfs"), _value(cold, "curl")
    if mine is not None and curl is not None and curl > 0:
        aim = "reached" if mine / curl >= 0.5 else "not reached"
        lines.append(f"aim beyond the target: cold read >= 0.5x curl: {mine / curl:.2f}x, {aim}")
    if details:
        lines += ["", "Details:", *details]
    notes = [f"  {t.column}: {', '.join(t.notes)}" for t in targets if t.notes]
    if notes:
        lines += ["", "Mounts:", *notes]
    if footnotes:
        lines += ["", "Not measured:"] + [f"  [{i}] {text}" for i, text in enumerate(footnotes, 1)]
    return "\n".join(lines)


# --- the run ---------------------------------------------------------------------------------


def _start_child(session: Session, role: list[str], timeout: float) -> tuple[_Rpc, dict[str, Any]]:
    process = session.spawn(
        [sys.executable, os.path.abspath(__file__), *role],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=None,
    )
    rpc = _Rpc(process, timeout)
    return rpc, rpc.receive(timeout)


def _credentials(args: argparse.Namespace) -> str:
    """The token for an external API: a token file, MKWFS_TOKEN, or a login."""
    if args.token_file is not None:
        return Path(args.token_file).read_text().splitlines()[0].strip()
    if os.environ.get("MKWFS_TOKEN"):
        return os.environ["MKWFS_TOKEN"]
    email = args.email or os.environ.get("MKWFS_EMAIL")
    if args.password_file is not None:
        password = Path(args.password_file).read_text().splitlines()[0]
    else:
        password = os.environ.get("MKWFS_PASSWORD", "")
    if not email or not password:
        raise BenchError("--api-url needs --token-file (or MKWFS_TOKEN), or an email and password")
    response = httpx.post(
        f"{args.api_url.rstrip('/')}/authentication",
        json={"strategy": "local", "email": email, "password": password},
        timeout=30.0,
    )
    if response.status_code != 201:
        raise BenchError(f"login failed with {response.status_code}")
    token: str = response.json()["accessToken"]
    return token


def _peer_tree(session: Session, server: Server, extra: Sequence[File] = ()) -> Path:
    """builds/<id>/<name> symlinks to the emulator's bodies, for the directory server."""
    root = session.new_dir("peer-root")
    for file in {server.big, server.medium, *server.large_files, *extra}:
        link = root / file.rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(server.body_paths[file.download_id])
    return root


class _NginxCounter:
    """bench_smallfiles.py's nginx access-log counter, as a `RequestCounter`."""

    source = "nginx access log"

    def __init__(self, log: Any) -> None:
        self._log = log

    def snapshot(self) -> Counts:
        counts: Counts = self._log.snapshot()
        return counts


def start_peer_server(
    kind: str, session: Session, server: Server, extra: Sequence[File] = ()
) -> tuple[str, RequestCounter]:
    """The static server rclone reads from: this script's directory server (``dirapp``, on
    the emulator's LoopServer) or nginx (bench_smallfiles.py's, one worker, sendfile)."""
    tree = _peer_tree(session, server, extra)
    if kind == "nginx":
        import bench_smallfiles  # imported here: it imports this module

        url, log = bench_smallfiles.start_nginx(session, tree)
        return url, _NginxCounter(log)
    rpc, hello = _start_child(session, ["_dirserver", os.fspath(tree)], 60)
    return hello["url"], RpcCounter(rpc, "directory server counters")


def _warm_server_files(server: Server) -> None:
    """Read the bodies once so the server side serves every contender from the page cache."""
    for path in server.body_paths.values():
        with path.open("rb") as body:
            while body.read(8 * MiB):
                pass


def run(args: argparse.Namespace, session: Session) -> str:
    started = time.monotonic()
    load_before = "/".join(f"{x:.1f}" for x in os.getloadavg())
    rclone = shutil.which("rclone")
    peer_reason = ""
    if args.api_url is None:
        big_size = QUICK_BIG_FILE_SIZE if args.quick else args.big_file_size
        _log(f"starting the emulator (big file {big_size / MiB:.0f} MiB) in a child process")
        rpc, hello = _start_child(session, ["_emulator", "--big-file-size", str(big_size)], 600)
        counter: RequestCounter = RpcCounter(rpc, "emulator counters")
        server = describe_server(hello["url"], hello["token"], counter, args)
        ids = {f.download_id for f in (server.big, server.medium, *server.large_files)}
        _log("generating / locating the emulator's bodies (once per data directory)")
        paths = rpc.call({"op": "paths", "ids": sorted(ids)}, timeout=900)["paths"]
        server.body_paths = {int(i): Path(p) for i, p in paths.items()}
        server.big_size = server.body_paths[server.big.download_id].stat().st_size
        _warm_server_files(server)
        source = "the emulator's own counters (a child process of this script)"
    else:
        counter = LogCounter()
        server = describe_server(args.api_url.rstrip("/"), _credentials(args), counter, args)
        source = "mkwfs's --debug log (one mkwfs.api line per request)"
        peer_reason = "the peer needs local copies of the bodies: run against the emulator"
    if rclone is None:
        peer_reason = "install rclone (apt-get install -y rclone)"
    if args.no_peer:
        peer_reason = "--no-peer"

    results: Results = {}
    _log("direct download: curl")
    measure_curl(session, server, results)
    _log("direct download: httpx")
    measure_httpx(session, server, results)
    targets: list[Target] = []
    if peer_reason:
        _log(f"peer: n/a ({peer_reason})")
        for column in PEERS:
            for row in rows(""):
                record(results, column, row.key, na(f"peer: {peer_reason}"))
    else:
        peer_url, peer_counter = start_peer_server(args.peer_server, session, server)
        for mode in args.rclone_modes:
            target = rclone_target(session, peer_url, peer_counter, mode)
            targets.append(target)
            _log(f"peer: rclone mount, --vfs-cache-mode {mode}")
            measure_fs(session, server, target, results)
    mkwfs = mkwfs_target(session, server, debug_log=isinstance(counter, LogCounter))
    targets.append(mkwfs)
    _log("mkwfs")
    measure_fs(session, server, mkwfs, results)

    big_label = "big file" if server.big_size is None else f"{server.big_size / MiB:.0f} MiB"
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    header = "\n".join(
        [
            f"mkwfs benchmark{' (--quick)' if args.quick else ''}: {server.url}, "
            f"{os.cpu_count()} CPUs, load average {load_before} before, {load} after, "
            f"{time.monotonic() - started:.0f} s",
            f"  big file: download {server.big.download_id} ({server.big.rel}); "
            f"32 MiB file: download {server.medium.download_id}; "
            f"1000-file build: {server.large_build} ({len(server.large_files)} files)",
            f"  requests counted by {source}",
            *(
                []
                if args.api_url
                else [
                    "  servers in child processes, each a LoopServer (one thread with a "
                    f"selector, bodies from threads), listen backlog {LISTEN_BACKLOG}"
                ]
            ),
            f"  rclone {_rclone_version() if rclone else 'not installed'}: "
            f"{' '.join(RCLONE_OPTIONS)} --vfs-cache-mode off|full, defaults otherwise",
        ]
    )
    return report(results, rows(big_label), targets, header)


# --- the big-file figures, --runs times side by side (--big-only) ---------------------------


class BigRuns:
    """The --big-only figures: one value per run for each, with the load at the time."""

    def __init__(self) -> None:
        self.values: dict[str, list[float]] = {}
        self.loads: dict[str, list[str]] = {}

    def add(self, name: str, value: float) -> None:
        load = "/".join(f"{x:.1f}" for x in os.getloadavg())
        self.values.setdefault(name, []).append(value)
        self.loads.setdefault(name, []).append(load)
        _log(f"{name}: {value:.2f} (load {load})")

    def median(self, name: str) -> float | None:
        values = self.values.get(name)
        return statistics.median(values) if values else None


def _usage(pid: int) -> tuple[float, int]:
    """CPU seconds (user + system, all threads) and minor page faults of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), int(fields[7])


def _add_reader_files(rpc: _Rpc, server: Server, build_id: int) -> list[File]:
    """BIG_READERS new downloads of BIG_READER_SIZE in ``build_id`` (the emulator has only
    two such files), as listed by the API."""
    names = [f"reader-{i + 1}.zip" for i in range(BIG_READERS)]
    request = {"op": "add", "build": build_id, "names": names, "size": BIG_READER_SIZE}
    ids = set(rpc.call(request)["ids"])
    with httpx.Client(headers=server.auth_headers, timeout=60.0) as client:
        return [f for f in _list_downloads(client, server.url, build_id) if f.download_id in ids]


def _curl_aggregate(session: Session, header_file: Path, urls: Sequence[str]) -> float:
    """Download ``urls`` at once with one curl; aggregate MiB/s."""
    started = time.perf_counter()
    results = _curl(session, header_file, urls)
    elapsed = time.perf_counter() - started
    return sum(size for _, _, size in results) / MiB / elapsed


def _verify(paths: Sequence[Path], expected: Mapping[Path, str]) -> None:
    """Read ``paths`` again (warm) and compare with the server's bodies."""
    for path in paths:
        if read_file(path, digest=True).digest != expected[path]:
            raise BenchError(f"{path.name}: bytes differ from the server's")


def run_big(args: argparse.Namespace, session: Session) -> str:
    """Cold sequential reads of the big file and BIG_READERS cold readers of different files,
    for curl, rclone and mkwfs, ``args.runs`` times in turn; medians and ratios."""
    load_before = "/".join(f"{x:.1f}" for x in os.getloadavg())
    big_size = QUICK_BIG_FILE_SIZE if args.quick else args.big_file_size
    rpc, hello = _start_child(session, ["_emulator", "--big-file-size", str(big_size)], 600)
    server = describe_server(
        hello["url"], hello["token"], RpcCounter(rpc, "emulator counters"), args
    )
    readers = _add_reader_files(rpc, server, args.big_build)
    files = [server.big, server.medium, *server.large_files, *readers]
    paths = rpc.call({"op": "paths", "ids": [f.download_id for f in files]}, timeout=900)
    server.body_paths = {int(i): Path(p) for i, p in paths["paths"].items()}
    _warm_server_files(server)
    digests: dict[int, str] = {}
    for file in (server.big, *readers):
        with server.body_paths[file.download_id].open("rb") as body:
            digests[file.download_id] = hashlib.file_digest(body, "sha256").hexdigest()
    header_file = session.root / "curl-headers"
    fd = os.open(header_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as headers:
        headers.write(f"Authorization: Bearer {server.token}\n")
    peers: list[Target] = []
    peer_url = None
    if not args.no_peer and shutil.which("rclone"):
        peer_url, peer_counter = start_peer_server(args.peer_server, session, server, readers)
        peers = [rclone_target(session, peer_url, peer_counter, m) for m in args.rclone_modes]
    mkwfs = mkwfs_target(session, server, debug_log=False)
    cold = f"cold {big_size // MiB} MiB"
    par = f"{BIG_READERS} x {BIG_READER_SIZE // MiB} MiB"
    figures = BigRuns()
    for index in range(args.runs):
        _log(f"run {index + 1} of {args.runs}")
        reader_urls = [server.download_url(f) for f in readers]
        ((_, total, size),) = _curl(session, header_file, [server.download_url(server.big)])
        figures.add(f"{cold}, curl (emulator)", size / MiB / total)
        figures.add(f"{par}, curl (emulator)", _curl_aggregate(session, header_file, reader_urls))
        if peer_url is not None and args.peer_server == "nginx":
            url = f"{peer_url}/{urllib.parse.quote(server.big.rel)}"
            ((_, total, size),) = _curl(session, header_file, [url])
            figures.add(f"{cold}, curl (nginx)", size / MiB / total)
            urls = [f"{peer_url}/{urllib.parse.quote(f.rel)}" for f in readers]
            figures.add(f"{par}, curl (nginx)", _curl_aggregate(session, header_file, urls))
        for target in [*peers, mkwfs]:
            verify = index == 0
            with target.mount(session.new_dir(f"{target.column}-cache")) as mnt:
                path = mnt.path / server.big.rel
                before = _usage(mnt.process.pid)
                read = session.bounded(
                    f"{target.column}: cold", functools.partial(read_file, path), mnt.abort
                )
                after = _usage(mnt.process.pid)
                figures.add(f"{cold}, {target.column}", read.mib_per_s)
                figures.add(f"{cold}, {target.column} CPU s", after[0] - before[0])
                figures.add(f"{cold}, {target.column} minor faults", after[1] - before[1])
                if verify:
                    _verify([path], {path: digests[server.big.download_id]})
            with target.mount(session.new_dir(f"{target.column}-cache")) as mnt:
                reader_paths = [mnt.path / f.rel for f in readers]
                elapsed, reads = session.bounded(
                    f"{target.column}: {par}",
                    functools.partial(read_concurrently, reader_paths),
                    mnt.abort,
                )
                figures.add(f"{par}, {target.column}", sum(r.size for r in reads) / MiB / elapsed)
                if verify:
                    _verify(
                        reader_paths,
                        {
                            p: digests[f.download_id]
                            for p, f in zip(reader_paths, readers, strict=True)
                        },
                    )
    return _big_report(args, figures, cold, par, load_before)


def _big_report(
    args: argparse.Namespace, figures: BigRuns, cold: str, par: str, load_before: str
) -> str:
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [
        f"mkwfs big-file benchmark: {args.runs} runs, {os.cpu_count()} CPUs, load average "
        f"{load_before} before, {load} after; rclone against {args.peer_server}, "
        "mkwfs and curl (emulator) against the emulator",
        "| figure | median | runs | load at each run | vs rclone off | vs curl (emulator) |"
        + (" vs curl (nginx) |" if args.peer_server == "nginx" else ""),
        "|---|---|---|---|---|---|" + ("---|" if args.peer_server == "nginx" else ""),
    ]
    for name, values in figures.values.items():
        value = statistics.median(values)
        group = cold if name.startswith(cold) else par
        cells = []
        bases = ["rclone off", "curl (emulator)"]
        if args.peer_server == "nginx":
            bases.append("curl (nginx)")
        for base in bases:
            reference = figures.median(f"{group}, {base}")
            rate = not name.endswith(("CPU s", "faults"))
            cells.append(f"{value / reference:.2f}x" if rate and reference else "")
        lines.append(
            f"| {name} | {value:.2f} | {', '.join(f'{v:.2f}' for v in values)} | "
            f"{'; '.join(figures.loads[name])} | {' | '.join(cells)} |"
        )

    def ratio(name: str, base: str) -> float | None:
        value, reference = figures.median(name), figures.median(base)
        return None if value is None or not reference else value / reference

    checks = [
        (f"{cold}: mkwfs >= 1.3x rclone off", ratio(f"{cold}, mkwfs", f"{cold}, rclone off"), 1.3),
        (f"{par}: mkwfs >= rclone off", ratio(f"{par}, mkwfs", f"{par}, rclone off"), 1.0),
        (f"{cold}: aim mkwfs >= 0.5x curl (emulator)",
         ratio(f"{cold}, mkwfs", f"{cold}, curl (emulator)"), 0.5),
    ]  # fmt: skip
    for text, found, limit in checks:
        verdict = (
            "n/a" if found is None else f"{found:.2f}x, {'pass' if found >= limit else 'MISS'}"
        )
        lines.append(f"{text}: {verdict}")
    return "\n".join(lines)


def _rclone_version() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        result = subprocess.run(["rclone", "version"], capture_output=True, timeout=10, check=False)
        return result.stdout.decode().split("\n", 1)[0].removeprefix("rclone ").strip()
    return "?"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/bench.py",
        description="Benchmark mkwfs against the direct download (curl, httpx) and rclone.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: a {QUICK_BIG_FILE_SIZE // MiB} MiB big file, short timeouts",
    )
    parser.add_argument("--api-url", help="measure this server instead of the emulator")
    parser.add_argument("--token-file", type=Path, help="access token (or env MKWFS_TOKEN)")
    parser.add_argument("--email", help="log in with this email (or env MKWFS_EMAIL)")
    parser.add_argument("--password-file", type=Path, help="password (or env MKWFS_PASSWORD)")
    parser.add_argument(
        "--big-build",
        type=int,
        default=BIG_BUILD,
        help="build holding the big ZIP (default %(default)s)",
    )
    parser.add_argument(
        "--big-file",
        type=int,
        default=BIG_ZIP,
        help="download id of the big ZIP (default %(default)s)",
    )
    parser.add_argument(
        "--medium-build", type=int, help="build holding the 32 MiB file (default: --big-build)"
    )
    parser.add_argument(
        "--medium-file",
        type=int,
        default=MEDIUM_FILE,
        help="download id of the ~32 MiB file (default %(default)s)",
    )
    parser.add_argument(
        "--large-build",
        type=int,
        default=LARGE_BUILD,
        help="a build of ~1000 files (default %(default)s)",
    )
    parser.add_argument(
        "--big-file-size",
        type=int,
        default=256 * MiB,
        help="emulator only: size of the big ZIP's payload (default %(default)s)",
    )
    parser.add_argument(
        "--rclone-modes",
        type=lambda s: [m for m in s.split(",") if m],
        help="rclone --vfs-cache-mode values to measure (default off,full; off with --big-only)",
    )
    parser.add_argument("--no-peer", action="store_true", help="skip rclone")
    parser.add_argument(
        "--peer-server",
        choices=("dirapp", "nginx"),
        default="dirapp",
        help="static server rclone reads from: this script's directory server on the "
        "emulator's LoopServer (default), or nginx (also curl's second server with --big-only)",
    )
    parser.add_argument(
        "--big-only",
        action="store_true",
        help="emulator only: only the big-file figures (cold sequential read, "
        f"{BIG_READERS} cold readers of {BIG_READERS} different 32 MiB files), "
        "--runs times each, side by side, medians",
    )
    parser.add_argument(
        "--runs", type=int, default=3, help="runs of each figure with --big-only (default 3)"
    )
    parser.add_argument(
        "--step-timeout",
        type=float,
        help="seconds any one step may take (default 120, 60 with --quick)",
    )
    return parser


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_emulator"]:
        return _child_emulator(int(argv[2]))
    if argv[:1] == ["_dirserver"]:
        return _child_dirserver(Path(argv[1]))
    args = _parser().parse_args(argv)
    if args.step_timeout is None:
        args.step_timeout = 60.0 if args.quick else 120.0
    # Explicitly: a shell starts background jobs with SIGINT ignored, which Python inherits.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    if args.rclone_modes is None:
        args.rclone_modes = ["off"] if args.big_only else ["off", "full"]
    if args.big_only and args.api_url is not None:
        _parser().error("--big-only measures the emulator: leave out --api-url")
    session = Session(args.step_timeout)
    try:
        output = run_big(args, session) if args.big_only else run(args, session)
    except KeyboardInterrupt:
        _log("interrupted: cleaning up")
        return 130
    except BenchError as exc:
        _log(f"failed: {exc}")
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        session.close()
    print(output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
