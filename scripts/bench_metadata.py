#!/usr/bin/env python3
"""Metadata at scale: a mount over the emulator with many builds (issue 14).

Starts ``python -m mkwfs.emulator --extra-builds N --downloads-per-build M`` once, then
``--runs`` times, each on a fresh cache directory: ``mkwfs mount`` (the daemon; the time is
until the command returns, i.e. the mount is ready), ``ls builds``, ``ls -l`` of one
build, the daemon's peak RSS (VmHWM, read before anything else asks it), the requests the
daemon sent by kind (its status answer, less the status check's own list of builds), and
unmounts; then a remount on the same cache directory (``mkwfs mount`` until it returns,
with the listings kept in ``catalog.db``) and ``ls builds`` there, and unmounts again.
Prints each run and the medians, and the load.

With ``--nginx``, the mounts go to nginx serving the emulator's list of builds as one static
file (``/api/v1/builds``, a bare JSON array; nginx ignores the query and the token): the
same list, without the emulator's time to make it (``ls -l`` of a build, whose sizes would
need the emulator, is skipped).

    .venv/bin/python scripts/bench_metadata.py [--builds 10000] [--per-build 10] [--runs 3]
        [--nginx]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Run from "/", so that ``-m mkwfs`` imports the installed package or ``--product``'s
#: checkout, never one in the current directory.
MKWFS = [sys.executable, "-m", "mkwfs"]
#: The first id of the emulator's extra builds (mkwfs.emulator.dataset.EXTRA_BUILDS).
EXTRA_BUILDS = 100_000


def _start_emulator(builds: int, per_build: int) -> tuple[subprocess.Popen[str], dict[str, str]]:
    argv = [sys.executable, "-m", "mkwfs.emulator", "--port", "0", "--big-file-size", "1048576",
            "--extra-builds", str(builds), "--downloads-per-build", str(per_build)]  # fmt: skip
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert process.stdout is not None
    settings: dict[str, str] = {}
    while "MKWFS_TOKEN" not in settings:
        line = process.stdout.readline()
        if not line:
            raise SystemExit("the emulator did not start")
        key, _, value = line.strip().partition("=")
        settings[key] = value
    return process, settings


def _start_nginx(url: str, token: str, scratch: Path) -> tuple[subprocess.Popen[bytes], str]:
    """nginx serving the emulator's list of builds at ``url`` as one file, bare array."""
    from bench_smallfiles import _NGINX_CONF  # the same nginx as the small-files bench

    items: list[object] = []
    while True:
        query = urllib.parse.urlencode({"$limit": 5000, "$skip": len(items)})
        request = urllib.request.Request(
            f"{url}/api/v1/builds?{query}", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=120) as answer:
            page = json.load(answer)
        data = page if isinstance(page, list) else page["data"]  # a bare array, or a page
        items += data
        if len(data) < 5000 or (isinstance(page, dict) and len(items) >= page["total"]):
            break
    root = scratch / "root"
    (root / "api" / "v1").mkdir(parents=True)
    (root / "api" / "v1" / "builds").write_text(json.dumps(items, separators=(",", ":")))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    conf = scratch / "nginx.conf"
    conf.write_text(_NGINX_CONF.format(d=scratch, port=port, root=root))
    process = subprocess.Popen(["nginx", "-p", str(scratch), "-c", str(conf)])
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, f"http://127.0.0.1:{port}"
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                raise SystemExit("nginx did not start") from None
            time.sleep(0.05)


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def _daemon_of(mountpoint: Path) -> int:
    """The pid of the mkwfs daemon serving ``mountpoint`` (its command line names it)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"_serve" in argv and os.fsencode(mountpoint) in argv:
                return int(entry.name)
    raise RuntimeError(f"no daemon serves {mountpoint}")


def _status(mountpoint: Path, env: dict[str, str]) -> dict[str, object]:
    result = subprocess.run([*MKWFS, "status", "--json", str(mountpoint)], env=env, cwd="/",
                            capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
    answer: dict[str, object] = json.loads(result.stdout)
    return answer


def _requests(status: dict[str, object]) -> Counter[str]:
    api = status["api"]
    assert isinstance(api, dict)
    return Counter(api["requests"])


def _umount(mountpoint: Path, env: dict[str, str], daemon: int) -> None:
    """Unmount, and wait for the daemon to exit (its last writes to catalog.db done)."""
    subprocess.run([*MKWFS, "umount", str(mountpoint)], env=env, cwd="/", check=False, timeout=60)
    deadline = time.monotonic() + 60
    while Path(f"/proc/{daemon}").exists() and time.monotonic() < deadline:
        time.sleep(0.02)


def _timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        argv, env=env, cwd="/", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120
    )
    if done.returncode != 0:
        raise SystemExit(f"{argv[-1]}: {done.stderr.decode(errors='replace')}")
    return time.perf_counter() - start


def one_run(url: str, token: str, build_id: int | None, product: Path | None) -> dict[str, object]:
    """One mount, and one remount; ``build_id`` None: no ``ls -l`` of a build."""
    with tempfile.TemporaryDirectory(prefix="mkwfs-bench-meta-") as scratch:
        mountpoint, cache = Path(scratch) / "mnt", Path(scratch) / "cache"
        mountpoint.mkdir()
        env = {**os.environ, "MKWFS_TOKEN": token, "MKWFS_API_URL": url,
               "MKWFS_CACHE_DIR": str(cache), "MKWFS_CONFIG": os.devnull}  # fmt: skip
        env.pop("MKWFS_EMAIL", None)
        if product is not None:  # another checkout's mkwfs, against this emulator
            env["PYTHONPATH"] = str(product)
        mount_s = _timed([*MKWFS, "mount", str(mountpoint)], env)
        daemon = _daemon_of(mountpoint)
        try:
            ls_s = _timed(["ls", str(mountpoint / "builds")], env)
            ls_l_s = 0.0
            if build_id is not None:
                ls_l_s = _timed(["ls", "-l", str(mountpoint / "builds" / str(build_id))], env)
            peak = _peak_rss_mib(daemon)  # before status lists the builds
            first = _status(mountpoint, env)
            second = _status(mountpoint, env)
            check = _requests(second) - _requests(first)
            sent = _requests(first) - check
        finally:
            _umount(mountpoint, env, daemon)
        remount_s = _timed([*MKWFS, "mount", str(mountpoint)], env)
        daemon = _daemon_of(mountpoint)
        try:
            remount_ls_s = _timed(["ls", str(mountpoint / "builds")], env)
        finally:
            _umount(mountpoint, env, daemon)
    return {"mount_s": mount_s, "ls_builds_s": ls_s, "ls_l_build_s": ls_l_s,
            "peak_rss_mib": peak, "remount_s": remount_s, "remount_ls_builds_s": remount_ls_s,
            "remount_and_ls_s": remount_s + remount_ls_s,
            "requests": dict(sorted(sent.items()))}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--builds", type=int, default=10_000)
    parser.add_argument("--per-build", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--product", type=Path, metavar="CHECKOUT",
                        help="measure the mkwfs of this checkout (e.g. main) instead")  # fmt: skip
    parser.add_argument("--nginx", action="store_true",
                        help="mount nginx serving the list of builds as one file")  # fmt: skip
    args = parser.parse_args()
    emulator, settings = _start_emulator(args.builds, args.per_build)
    url, token = settings["MKWFS_API_URL"], settings["MKWFS_TOKEN"]
    build_id: int | None = EXTRA_BUILDS + args.builds // 2 if args.builds else 5139
    runs = []
    nginx = None
    with tempfile.TemporaryDirectory(prefix="mkwfs-bench-meta-nginx-") as scratch:
        try:
            if args.nginx:
                nginx, url = _start_nginx(url, token, Path(scratch))
                build_id = None
            for number in range(args.runs):
                run = one_run(url, token, build_id, args.product)
                print(f"run {number + 1}: {json.dumps(run)}", flush=True)
                runs.append(run)
        finally:
            emulator.terminate()
            emulator.wait(timeout=30)
            if nginx is not None:
                nginx.terminate()
                nginx.wait(timeout=30)
    server = "nginx (a static file)" if args.nginx else "the emulator"
    print(f"medians of {len(runs)} runs, {args.builds} extra builds x {args.per_build} "
          f"downloads, from {server}:")  # fmt: skip
    figures = ("mount_s", "ls_builds_s", "ls_l_build_s", "peak_rss_mib", "remount_s",
               "remount_ls_builds_s", "remount_and_ls_s")  # fmt: skip
    for key in figures:
        values = [float(str(run[key])) for run in runs]
        low, high = min(values), max(values)
        print(f"  {key:19} {statistics.median(values):8.3f}  (range {low:.3f}-{high:.3f})")
    print(f"  requests            {runs[-1]['requests']}")
    print(f"  load                {Path('/proc/loadavg').read_text().strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
