#!/usr/bin/env python3
"""Issue 13's small-file figures: a cold 1000-file build, side by side in one run.

    .venv/bin/python scripts/bench_smallfiles.py [--runs 3] [--only curl,rclone,mkwfs,prefetch]
    .venv/bin/python scripts/bench_smallfiles.py --only mkwfs --runs 1 --profile DIR

Figures (medians of ``--runs``, each mkwfs/rclone run on a fresh cache and a fresh mount):

* curl, one process, one GET after another (``curl -K``: one connection, reused);
* curl ``--parallel --parallel-max 16``;
* rclone mount ``:http:`` ``--vfs-cache-mode off``, ``cp -r`` of the build (the peer's
  server is bench.py's directory server, symlinks to the emulator's bodies);
* mkwfs ``cp -r`` of the build, with the daemon's CPU seconds per file (utime + stime of
  the daemon from /proc/<pid>/stat) and the requests the emulator counted;
* ``mkwfs prefetch`` of the build (default ``-j``), on a fresh mount;
* ``big``: cold readers of different ~32 MiB files at once, aggregate MiB/s, for curl (one
  process a file, from the emulator), rclone and mkwfs. The emulator has only two such
  files (its big ZIP, run here at 32 MiB, and MEDIUM_FILE): issue 13's four readers need
  two more 32 MiB files in the emulator's dataset.

It reuses bench.py's machinery (Session, the emulator child, the directory server, the
mount helpers), so the servers, cleanup and timeouts are the same as there. ``--profile DIR``
records the mkwfs ``cp -r`` with py-spy (``/work/tools/bin/py-spy``, or ``--py-spy``) into
DIR/pyspy.txt (collapsed stacks) and, in a second cold run, ``strace -c -f`` into
DIR/strace.txt.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench

FIGURES = ("curl", "rclone", "mkwfs", "prefetch", "big")
#: The emulator's big ZIP here: 32 MiB, so that it and MEDIUM_FILE make two 32 MiB readers.
BIG_SIZE = 32 * bench.MiB
CURL_PARALLEL = 16
TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def _load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def _curl_config(session: bench.Session, server: bench.Server, static_url: str | None) -> Path:
    """A curl -K file of the build's URLs: the API's downloads, or ``static_url``'s files."""
    path = session.new_dir("curl") / "urls.conf"
    lines = [f'header = "Authorization: Bearer {server.token}"']
    for file in server.large_files:
        url = (
            server.download_url(file)
            if static_url is None
            else f"{static_url}/{urllib.parse.quote(file.rel)}"
        )
        lines += [f'url = "{url}"', 'output = "/dev/null"']
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("\n".join(lines) + "\n")
    return path


def _timed(argv: Sequence[str], timeout: float) -> float:
    started = time.monotonic()
    subprocess.run(
        list(argv),
        check=True,
        timeout=timeout,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.monotonic() - started


class Run:
    """The figures of one run: name -> list of values (seconds, or a text for requests)."""

    def __init__(self) -> None:
        self.values: dict[str, list[float]] = {}
        self.notes: dict[str, str] = {}
        self.loads: dict[str, list[str]] = {}

    def add(self, name: str, value: float) -> None:
        self.values.setdefault(name, []).append(value)
        self.loads.setdefault(name, []).append(_load())
        bench._log(f"{name}: {value:.4f} (load {_load()})")

    def median(self, name: str) -> float | None:
        values = self.values.get(name)
        return statistics.median(values) if values else None


def _copy_tree(mnt: bench.Mounted, server: bench.Server, session: bench.Session) -> Path:
    build_dir = mnt.path / Path(server.large_files[0].rel).parent
    dest = session.new_dir("copy") / "build"
    subprocess.run(
        ["cp", "-r", os.fspath(build_dir), os.fspath(dest)],
        check=True,
        timeout=session.step_timeout,
    )
    missing = {Path(f.rel).name for f in server.large_files} - set(os.listdir(dest))
    if missing:
        raise bench.BenchError(f"cp -r missed {len(missing)} of {len(server.large_files)} files")
    return dest


def measure_fs_copy(
    session: bench.Session,
    server: bench.Server,
    target: bench.Target,
    run: Run,
    name: str,
    profile: Callable[[int], Callable[[], None]] | None = None,
) -> None:
    """One cold ``cp -r`` of the build through ``target``; daemon CPU and requests too."""
    with target.mount(session.new_dir(f"{name}-cache")) as mnt:
        pid = mnt.process.pid
        before, cpu = target.counter.snapshot(), _cpu_seconds(pid)
        stop = profile(pid) if profile is not None else None
        started = time.monotonic()
        dest = _copy_tree(mnt, server, session)
        elapsed = time.monotonic() - started
        if stop is not None:
            stop()
        cpu = _cpu_seconds(pid) - cpu
        bench._settle()
        counted = target.counter.snapshot() - before
        shutil.rmtree(dest.parent, ignore_errors=True)
    n = len(server.large_files)
    run.add(f"{name} cp -r", elapsed)
    run.add(f"{name} CPU ms/file", 1000 * cpu / n)
    goal = _request_goal(counted, n) if name == "mkwfs" else ""
    run.notes[f"{name} requests"] = f"{counted.describe()}{goal}"


def _request_goal(counted: bench.Counts, n: int) -> str:
    """Issue 13's bound for N cold files: no more than 1 list + N HEAD + N GET."""
    within = (
        counted.of_kind("list") <= 1
        and counted.of_kind("probe") <= n
        and counted.of_kind("download") <= n
        and counted.of_kind("list") + counted.of_kind("probe") + counted.of_kind("download")
        == counted.total
    )
    return f" ({'within' if within else 'MISS:'} <= 1 list + {n} probe + {n} download)"


def measure_prefetch(
    session: bench.Session, server: bench.Server, target: bench.Target, run: Run
) -> None:
    with target.mount(session.new_dir("prefetch-cache")) as mnt:
        build_dir = mnt.path / Path(server.large_files[0].rel).parent
        pid = mnt.process.pid
        before, cpu = target.counter.snapshot(), _cpu_seconds(pid)
        elapsed = _timed(
            [sys.executable, "-m", "mkwfs", "prefetch", os.fspath(build_dir)], session.step_timeout
        )
        cpu = _cpu_seconds(pid) - cpu
        bench._settle()
        counted = target.counter.snapshot() - before
    run.add("mkwfs prefetch", elapsed)
    run.add("mkwfs prefetch CPU ms/file", 1000 * cpu / len(server.large_files))
    run.notes["mkwfs prefetch requests"] = (
        f"{counted.describe()}{_request_goal(counted, len(server.large_files))}"
    )


def measure_big(
    session: bench.Session, server: bench.Server, target: bench.Target, run: Run
) -> None:
    """Cold readers of the different ~32 MiB files at once (the emulator has two: the big
    ZIP at 32 MiB and MEDIUM_FILE), aggregate MiB/s."""
    files = (server.big, server.medium)
    with target.mount(session.new_dir(f"{target.column}-big-cache")) as mnt:
        elapsed, reads = bench.read_concurrently([mnt.path / f.rel for f in files])
    run.add(f"{target.column} {len(files)} big readers MiB/s", _aggregate(elapsed, reads))


def _aggregate(elapsed: float, reads: Sequence[bench.Read]) -> float:
    return sum(r.size for r in reads) / bench.MiB / elapsed


def measure_curl_big(session: bench.Session, server: bench.Server, run: Run) -> None:
    files = (server.big, server.medium)
    auth = f"Authorization: Bearer {server.token}"
    started = time.monotonic()
    processes = [
        subprocess.Popen(["curl", "-sf", "-H", auth, "-o", "/dev/null", server.download_url(f)])
        for f in files
    ]
    if any(p.wait(session.step_timeout) for p in processes):
        raise bench.BenchError("curl of a big file failed")
    size = sum(server.body_paths[f.download_id].stat().st_size for f in files)
    run.add(f"curl {len(files)} big readers MiB/s", size / bench.MiB / (time.monotonic() - started))


def _py_spy(args: argparse.Namespace) -> Callable[[int], Callable[[], None]]:
    def start(pid: int) -> Callable[[], None]:
        out = args.profile / "pyspy.txt"
        process = subprocess.Popen(
            [args.py_spy, "record", "-p", str(pid), "-r", "250", "-f", "raw", "-o", os.fspath(out),
             "--threads", "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(1.0)  # py-spy attaches

        def stop() -> None:
            process.send_signal(2)
            process.wait(30)

        return stop

    return start


def _strace(args: argparse.Namespace) -> Callable[[int], Callable[[], None]]:
    def start(pid: int) -> Callable[[], None]:
        out = args.profile / "strace.txt"
        process = subprocess.Popen(
            ["strace", "-c", "-f", "-p", str(pid), "-o", os.fspath(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(1.0)

        def stop() -> None:
            process.send_signal(2)
            process.wait(30)

        return stop

    return start


_NGINX_CONF = """user root; worker_processes 1; daemon off;
pid {d}/nginx.pid; error_log {d}/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log {d}/access.log; sendfile on; tcp_nopush on; keepalive_requests 100000;
  client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d};
  uwsgi_temp_path {d}; scgi_temp_path {d};
  server {{ listen 127.0.0.1:{port}; root {root}; location / {{ autoindex on; }} }}
}}
"""
_ACCESS_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) [^"]*" \d+ (?P<bytes>\d+)')


class AccessLogCounter:
    """Requests of nginx, from its access log: the directory server's keys (GET dir, ...)."""

    def __init__(self, log: Path) -> None:
        self._log = log

    def snapshot(self) -> bench.Counts:
        requests: Counter[str] = Counter()
        sent = 0
        text = self._log.read_text() if self._log.exists() else ""
        for match in _ACCESS_LINE.finditer(text):
            kind = "dir" if match["path"].endswith("/") else "file"
            requests[f"{match['method']} {kind}"] += 1
            sent += int(match["bytes"])
        return bench.Counts(requests, sent)


def start_nginx(session: bench.Session, root: Path) -> tuple[str, AccessLogCounter]:
    """nginx (one worker, autoindex, sendfile) serving ``root`` on a free loopback port."""
    directory = session.new_dir("nginx")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    conf = directory / "nginx.conf"
    conf.write_text(_NGINX_CONF.format(d=directory, port=port, root=root))
    session.spawn(["nginx", "-p", os.fspath(directory), "-c", os.fspath(conf)])
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise bench.BenchError("nginx did not start (see its error.log)") from None
            time.sleep(0.05)
    return f"http://127.0.0.1:{port}", AccessLogCounter(directory / "access.log")


def _peer(
    args: argparse.Namespace, session: bench.Session, server: bench.Server
) -> tuple[str, bench.RequestCounter]:
    """The static server of the peer: bench.py's directory server, or nginx."""
    tree = bench._peer_tree(session, server)
    if args.peer_server == "nginx":
        return start_nginx(session, tree)
    rpc, hello = bench._start_child(session, ["_dirserver", os.fspath(tree)], 60)
    return hello["url"], bench.RpcCounter(rpc, "directory server")


def run_figures(args: argparse.Namespace, session: bench.Session) -> str:
    load_before = _load()
    rpc, hello = bench._start_child(session, ["_emulator", "--big-file-size", str(BIG_SIZE)], 600)
    counter = bench.RpcCounter(rpc, "emulator counters")
    server = bench.describe_server(
        hello["url"], hello["token"], counter, bench._parser().parse_args([])
    )
    ids = {f.download_id for f in (server.big, server.medium, *server.large_files)}
    paths = rpc.call({"op": "paths", "ids": sorted(ids)}, timeout=900)["paths"]
    server.body_paths = {int(i): Path(p) for i, p in paths.items()}
    bench._warm_server_files(server)
    run = Run()
    only = set(args.only)
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
        target = bench.mkwfs_target(session, server, debug_log=False)
        measure_fs_copy(session, server, target, run, "mkwfs", _py_spy(args))
        measure_fs_copy(session, server, target, run, "mkwfs", _strace(args))
        return _table(run, server, load_before)
    peer_url, peer_counter = _peer(args, session, server)
    conf = _curl_config(session, server, peer_url if args.peer_server == "nginx" else None)
    rclone: bench.Target | None = None
    if "rclone" in only and shutil.which("rclone"):
        rclone = bench.rclone_target(session, peer_url, peer_counter, "off")
    mkwfs = bench.mkwfs_target(session, server, debug_log=False)
    for index in range(args.runs):
        bench._log(f"run {index + 1} of {args.runs}")
        if "curl" in only:
            run.add("curl sequential", _timed(["curl", "-s", "-K", os.fspath(conf)], 120))
            run.add(
                f"curl --parallel {CURL_PARALLEL}",
                _timed(["curl", "-s", "--parallel", "--parallel-max", str(CURL_PARALLEL),
                        "-K", os.fspath(conf)], 120),
            )  # fmt: skip
        if rclone is not None:
            measure_fs_copy(session, server, rclone, run, "rclone off")
        if "mkwfs" in only:
            measure_fs_copy(session, server, mkwfs, run, "mkwfs")
        if "prefetch" in only:
            measure_prefetch(session, server, mkwfs, run)
        if "big" in only:
            measure_curl_big(session, server, run)
            if rclone is not None:
                measure_big(session, server, rclone, run)
            measure_big(session, server, mkwfs, run)
    return _table(run, server, load_before) + (
        f"\ncurl and rclone against {args.peer_server}; mkwfs against the emulator"
        if args.peer_server == "nginx"
        else "\ncurl and mkwfs against the emulator, rclone against bench.py's directory server"
    )


def _table(run: Run, server: bench.Server, load_before: str) -> str:
    n = len(server.large_files)
    sizes = [server.body_paths[f.download_id].stat().st_size for f in server.large_files]
    lines = [
        f"cold build {server.large_build}: {n} files, {statistics.median(sizes)} bytes median; "
        f"{os.cpu_count()} CPUs, load {load_before} before, {_load()} after",
        "| figure | median | runs | load at each run | vs curl seq | vs curl par | vs rclone |",
        "|---|---|---|---|---|---|---|",
    ]
    seq = run.median("curl sequential")
    par = run.median(f"curl --parallel {CURL_PARALLEL}")
    peer = run.median("rclone off cp -r")
    big_curl = next((run.median(k) for k in run.values if k.startswith("curl 2 big")), None)
    big_peer = next((run.median(k) for k in run.values if k.startswith("rclone off 2 big")), None)
    for name, values in run.values.items():
        value = statistics.median(values)
        rate = "MiB/s" in name
        unit = "ms" if "CPU" in name else "" if rate else "s"

        def ratio(base: float | None, name: str = name, value: float = value) -> str:
            return "" if base is None or "CPU" in name else f"{value / base:.2f}x"

        # A rate's ratios (higher is better): to curl's in the first column, rclone's last.
        cells = (
            (ratio(big_curl), "", ratio(big_peer))
            if rate
            else (ratio(seq), ratio(par), ratio(peer))
        )
        lines.append(
            f"| {name} | {value:.3f} {unit} | {', '.join(f'{v:.3f}' for v in values)} | "
            f"{'; '.join(run.loads[name])} | {' | '.join(cells)} |"
        )
    for name, text in run.notes.items():
        lines.append(f"{name} (last run): {text}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/bench_smallfiles.py",
        description="Cold 1000-file build: curl, rclone, mkwfs cp -r and mkwfs prefetch.",
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (default 3)")
    parser.add_argument(
        "--only",
        default=",".join(FIGURES),
        type=lambda s: [f for f in s.split(",") if f],
        help=f"figures to measure, of {','.join(FIGURES)} (default all)",
    )
    parser.add_argument(
        "--peer-server",
        choices=("dirapp", "nginx"),
        default="dirapp",
        help="static server for rclone (and, with nginx, for curl too): bench.py's directory "
        "server on the emulator's LoopServer (default), or nginx",
    )
    parser.add_argument("--profile", type=Path, help="py-spy + strace -c of mkwfs cp -r into DIR")
    parser.add_argument("--py-spy", default="/work/tools/bin/py-spy", help="py-spy binary")
    parser.add_argument("--step-timeout", type=float, default=120.0, help="seconds per step")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    unknown = set(args.only) - set(FIGURES)
    if unknown:
        _parser().error(f"unknown figures: {', '.join(sorted(unknown))}")
    session = bench.Session(args.step_timeout)
    try:
        output = run_figures(args, session)
    except bench.BenchError as exc:
        bench._log(f"failed: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        session.close()
    print(output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
