#!/usr/bin/env python3
"""Measure what listings that last cost (issue 14): against the emulator on loopback
(weak ETags and 304s on, as Express sends them), with real FUSE mounts.

Per run:
  1. revalidation: mount, ``ls builds``, ``ls -l`` of a build; unmount; remount, ``ls
     builds``, ``ls -l`` of the same build: the requests of the remount (from the daemon's
     --debug log), how many were 304, their body bytes, and the bytes both ways on the wire
     (counted by a TCP relay between mkwfs and the emulator: headers included);
  2. offline: the server stopped, the seconds from ``mkwfs mount --foreground`` to the
     mount being there (a cold Python process included; beside it the same for the
     remount of step 1, with the server up), and the seconds an uncached read
     takes to fail (EIO) with --timeout 3;
  3. the same mount with the server stopped and no catalog kept: seconds until it fails.

Prints each run and the medians, and the load average. Takes about 10 s a run.
    python scripts/bench_offline.py [--runs 3]
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mkwfs.emulator import DEMO_BUILD, Emulator, EmulatorConfig, serve_in_thread  # noqa: E402

_REQUEST = re.compile(r"mkwfs\.api: (GET|HEAD|POST) (\S+) -> (\S+), (\d+) bytes")


def is_mounted(path: Path) -> bool:
    target = os.path.abspath(path)
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as mounts:
        return any(line.split(" ")[4] == target for line in mounts)


class Mount:
    """``mkwfs mount --foreground`` of ``url`` on ``path``, logging to ``log``."""

    def __init__(self, url: str, token: str, path: Path, cache: Path, log: Path) -> None:
        path.mkdir(exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MKWFS_")}
        env["MKWFS_TOKEN"] = token
        env["PYTHONPATH"] = str(REPO)
        self.path, self.log = path, log
        argv = [
            sys.executable, "-m", "mkwfs", "mount", str(path), "--foreground", "--debug",
            "--api-url", url, "--cache-dir", str(cache), "--timeout", "3",
        ]  # fmt: skip
        self.started = time.perf_counter()
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env
            )  # fmt: skip

    def wait(self, timeout: float = 30.0) -> float | None:
        """Seconds until mounted, or None when the daemon exited first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if is_mounted(self.path):
                return time.perf_counter() - self.started
            if self.process.poll() is not None:
                return None
            time.sleep(0.005)
        raise TimeoutError(f"{self.path} not mounted within {timeout} s")

    def exited(self) -> float:
        self.process.wait(timeout=60)
        return time.perf_counter() - self.started

    def close(self) -> None:
        if is_mounted(self.path):
            subprocess.run(["fusermount3", "-u", str(self.path)], check=False)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def requests(self) -> list[tuple[str, str, str, int]]:
        text = self.log.read_text(errors="replace")
        return [(m[1], m[2], m[3], int(m[4])) for m in _REQUEST.finditer(text)]


class Relay:
    """A TCP relay on loopback to ``target`` (host, port) that counts the bytes both ways."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.bytes = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            client, _ = self._listener.accept()
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                with self._lock:
                    self.bytes += len(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)


def browse(root: Path) -> None:
    os.listdir(root / "builds")
    build = root / "builds" / str(DEMO_BUILD)
    for name in os.listdir(build):
        os.stat(build / name)


def one_run(emulator: Emulator, relay: Relay, work: Path) -> dict[str, float]:
    cache = work / "cache"
    token = emulator.issue_token()
    url = relay.url  # every mount goes through the relay: the catalog is kept per API URL
    first = Mount(url, token, work / "mnt", cache, work / "first.log")
    try:
        first.wait()
        browse(first.path)
        build = first.path / "builds" / str(DEMO_BUILD)
        cached = sorted(os.listdir(build))[0]
        with open(build / cached, "rb") as f:
            f.read()
    finally:
        first.close()
    relay.bytes = 0
    again = Mount(url, token, work / "mnt", cache, work / "again.log")
    try:
        online_s = again.wait()
        browse(again.path)
        sent = again.requests()
        wire = relay.bytes
    finally:
        again.close()

    emulator.config = replace(emulator.config, down=True)
    try:
        offline = Mount(url, token, work / "mnt", cache, work / "offline.log")
        try:
            mount_s = offline.wait()
            build = offline.path / "builds" / str(DEMO_BUILD)
            uncached = next(
                n for n in sorted(os.listdir(build)) if n not in (cached, ".build.json")
            )
            started = time.perf_counter()
            try:
                with open(build / uncached, "rb") as f:
                    f.read()
                eio_s = float("nan")
            except OSError as exc:
                eio_s = time.perf_counter() - started if exc.errno == errno.EIO else float("nan")
        finally:
            offline.close()
        bare = Mount(url, token, work / "mnt", work / "no-cache", work / "bare.log")
        try:
            assert bare.wait() is None, "mounted without the server and without a catalog"
            fail_s = bare.exited()
        finally:
            bare.close()
    finally:
        emulator.config = replace(emulator.config, down=False)
    return {
        "remount requests": len(sent),
        "remount 304s": sum(status == "304" for _, _, status, _ in sent),
        "remount body bytes": sum(size for *_, size in sent),
        "remount bytes on the wire": wire,
        "remount, server up (s)": float("nan") if online_s is None else online_s,
        "offline mount (s)": float("nan") if mount_s is None else mount_s,
        "offline uncached read -> EIO (s)": eio_s,
        "no catalog, server gone: fails after (s)": fail_s,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs to take the median of")
    args = parser.parse_args()
    emulator = Emulator(EmulatorConfig(etags=True, big_file_size=4 * 2**20))
    results: list[dict[str, float]] = []
    with serve_in_thread(emulator) as url, tempfile.TemporaryDirectory() as tmp:
        host, port = url.removeprefix("http://").split(":")
        relay = Relay((host, int(port)))
        for run in range(args.runs):
            work = Path(tmp, f"run{run}")
            work.mkdir()
            results.append(one_run(emulator, relay, work))
            print(f"run {run + 1}: " + ", ".join(f"{k} {v:.3g}" for k, v in results[-1].items()))
    print("median of", args.runs, "runs:")
    for key in results[0]:
        values = [r[key] for r in results]
        print(
            f"  {key}: {statistics.median(values):.3g} (range {min(values):.3g}-{max(values):.3g})"
        )
    print("load:", Path("/proc/loadavg").read_text().strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
