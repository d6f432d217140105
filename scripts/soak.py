#!/usr/bin/env python3
"""Soak test: many readers on one mkwfs mount for a while, with the server misbehaving.

Starts the emulator on 127.0.0.1 with FILES extra result ZIPs in one build, mounts mkwfs on
it (``mkwfs mount --foreground``, a cache bounded to a share of the files so bodies are
evicted and fetched again), turns faults on (a share of requests answered 502/503/504,
every body reset after some bytes, latency and jitter), and runs READERS threads for
SECONDS: each reads whole files (sha256 against the server's) and random ranges (byte for
byte against the server's body) of files it shares with every reader or has to itself,
always past the kernel's page cache, and lists the build now and then. Meanwhile the
daemon's resident memory (VmRSS) and open descriptors (/proc/PID/fd) are sampled.

Passes (exit 0) when no byte was wrong, no read failed, the daemon logged no traceback,
and memory and descriptors stayed flat: the median over the last fifth of the run grew by
at most ``--max-rss-growth`` MiB and ``--max-fd-growth`` descriptors over the median right
after the warm-up (the first fifth). Prints its figures either way. Whatever happens,
including Ctrl-C, it unmounts and stops what it started.

    .venv/bin/python scripts/soak.py                  # 150 s, 8 readers, 16 files
    .venv/bin/python scripts/soak.py --seconds 15     # what CI runs (tests/test_soak.py)
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from mkwfs.emulator import BUILDING_BUILD, DEMO_BUILD, Emulator, EmulatorConfig, serve_in_thread

MiB = 1 << 20


@dataclass
class Figures:
    """What the readers did; updated under ``lock``."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    whole_reads: int = 0
    range_reads: int = 0
    listings: int = 0
    bytes_checked: int = 0
    wrong: list[str] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)


@dataclass
class Sample:
    at: float
    rss_kib: int
    fds: int


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=150.0, help="how long readers run")
    parser.add_argument("--readers", type=int, default=8, help="reader threads")
    parser.add_argument("--files", type=int, default=16, help="result files read")
    parser.add_argument("--shared", type=int, default=4, help="of them, read by every reader")
    parser.add_argument("--max-file-size", type=int, default=4 * MiB, help="bytes, at most")
    parser.add_argument("--cache-share", type=float, default=0.25,
                        help="the cache bound, as a share of the files' bytes (so bodies "
                        "are evicted and fetched again)")  # fmt: skip
    parser.add_argument("--new-every", type=float, default=0.5,
                        help="seconds between two new files in the running build")  # fmt: skip
    parser.add_argument("--fail-rate", type=float, default=0.05, help="requests failed")
    parser.add_argument("--reset-after", type=int, default=1536 * 1024, help="body bytes")
    parser.add_argument("--latency", type=float, default=0.005, help="seconds per answer")
    parser.add_argument("--jitter", type=float, default=0.02, help="seconds, at most")
    parser.add_argument("--max-rss-growth", type=float, default=48.0, help="MiB")
    parser.add_argument("--max-fd-growth", type=int, default=16, help="descriptors")
    parser.add_argument("--seed", type=int, default=6, help="file sizes and reader choices")
    return parser.parse_args(argv)


def is_mounted(path: Path) -> bool:
    target = os.fsencode(os.path.abspath(path))
    with open("/proc/self/mountinfo", "rb") as mounts:
        return any(line.split(b" ")[4] == target for line in mounts)


def sample(pid: int) -> Sample:
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return Sample(time.monotonic(), rss, len(os.listdir(f"/proc/{pid}/fd")))


def read_past_page_cache(path: Path, offset: int, length: int | None) -> bytes:
    """``length`` bytes at ``offset`` (None: to the end), after dropping the kernel's cached
    pages, so that the read reaches the daemon."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        if length is not None:
            return os.pread(fd, length, offset)
        chunks = []
        while chunk := os.read(fd, MiB):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


#: (path on the mount, the server's body, its sha256)
File = tuple[Path, Path, str]


def producer(
    emulator: Emulator,
    build_dir: Path,
    files: list[File],
    every: float,
    max_size: int,
    deadline: float,
    figures: Figures,
) -> None:
    """Until ``deadline``, adds a result file to the running build every ``every`` seconds
    and appends it to ``files`` (where readers pick it up) once the mount lists it."""
    rng = random.Random(len(files))
    number = 0
    while time.monotonic() + every < deadline:
        time.sleep(every)
        number += 1
        name = f"NEW_{number:05d}.zip"
        ident = emulator.add_download(BUILDING_BUILD, name, rng.randint(max_size // 8, max_size))
        body = emulator.body_path(ident)
        until = time.monotonic() + 10
        try:
            while name not in os.listdir(build_dir):
                if time.monotonic() > until:
                    raise OSError(0, "not listed within 10 s")
                time.sleep(0.1)
        except OSError as exc:
            with figures.lock:
                figures.errors[f"new file: {exc.strerror}"] += 1
            continue
        files.append((build_dir / name, body, emulator.body_sha256(ident)))


def reader(
    number: int,
    files: list[File],
    own: list[int],
    shared: list[int],
    deadline: float,
    figures: Figures,
    seed: int,
) -> None:
    """Reads until ``deadline``: whole files and random ranges, checked; a listing now and
    then. Picks a file the producer added lately (cold, fetched through the faults) a third
    of the time, else a shared one or one of its ``own``."""
    rng = random.Random(seed * 1000 + number)
    first_new = len(files)
    while time.monotonic() < deadline:
        roll, count = rng.random(), len(files)
        if roll < 0.33 and count > first_new:
            choice = rng.randrange(max(first_new, count - 3), count)
        else:
            choice = rng.choice(shared if (roll < 0.66 or not own) else own)
        path, body, digest = files[choice]
        build_dir = path.parent
        kind = rng.choice(["whole", "range", "range", "list"])
        try:
            if kind == "list":
                assert path.name in os.listdir(build_dir), f"{path.name} not listed"
                with figures.lock:
                    figures.listings += 1
                continue
            if kind == "whole":
                data = read_past_page_cache(path, 0, None)
                ok = hashlib.sha256(data).hexdigest() == digest
            else:
                size = body.stat().st_size
                offset = rng.randrange(size)
                length = rng.randint(1, MiB)
                data = read_past_page_cache(path, offset, length)
                with open(body, "rb") as f:
                    ok = data == os.pread(f.fileno(), length, offset)
            with figures.lock:
                figures.bytes_checked += len(data)
                if kind == "whole":
                    figures.whole_reads += 1
                else:
                    figures.range_reads += 1
                if not ok:
                    figures.wrong.append(f"{kind} read of {path.name}")
        except OSError as exc:
            with figures.lock:
                figures.errors[f"{kind}: {os.strerror(exc.errno or 0)}"] += 1
        except AssertionError as exc:
            with figures.lock:
                figures.wrong.append(str(exc))


def growth(samples: list[Sample], attribute: str) -> tuple[float, float, float]:
    """(median after the warm-up, median at the end, maximum) of a sampled figure."""
    values = [getattr(s, attribute) for s in samples]
    fifth = max(1, len(values) // 5)
    return (
        statistics.median(values[fifth : 2 * fifth]),
        statistics.median(values[-fifth:]),
        max(values),
    )


def fifths(samples: list[Sample]) -> list[float]:
    """The median VmRSS (KiB) of each fifth of the run."""
    size = max(1, len(samples) // 5)
    return [statistics.median(s.rss_kib for s in samples[i : i + size])
            for i in range(0, size * 5, size) if samples[i : i + size]]  # fmt: skip


def run(args: argparse.Namespace, work: Path) -> bool:
    rng = random.Random(args.seed)
    emulator = Emulator(EmulatorConfig(seed=args.seed, big_file_size=MiB))
    ids = [
        emulator.add_download(
            DEMO_BUILD,
            f"SOAK_{i:03d}.zip",
            rng.randint(args.max_file_size // 8, args.max_file_size),
        )
        for i in range(args.files)
    ]
    bodies = [emulator.body_path(i) for i in ids]
    total = sum(b.stat().st_size for b in bodies)
    bound = max(int(total * args.cache_share), args.max_file_size * 2)
    mountpoint, cache = work / "mnt", work / "cache"
    mountpoint.mkdir()
    log_path = work / "mkwfs.log"
    with serve_in_thread(emulator) as url, open(log_path, "wb") as log:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MKWFS_")}
        env["MKWFS_TOKEN"] = emulator.issue_token()
        daemon = subprocess.Popen(
            [sys.executable, "-m", "mkwfs", "mount", str(mountpoint), "--foreground",
             "--api-url", url, "--cache-dir", str(cache), "--dir-ttl", "1",
             "--cache-max-size", str(bound)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        try:
            started = time.monotonic()
            while not is_mounted(mountpoint):
                if daemon.poll() is not None or time.monotonic() - started > 30:
                    print("soak: the mount did not come up; its log:\n" + log_path.read_text())
                    return False
                time.sleep(0.05)
            build_dir = mountpoint / "builds" / str(DEMO_BUILD)
            files = [
                (build_dir / f"SOAK_{i:03d}.zip", body, emulator.body_sha256(ident))
                for i, (ident, body) in enumerate(zip(ids, bodies, strict=True))
            ]
            emulator.config = replace(
                emulator.config, fail_rate=args.fail_rate, fail_statuses=(502, 503, 504),
                reset_after=args.reset_after, latency=args.latency, jitter=args.jitter,
            )  # fmt: skip
            figures = Figures()
            samples = [sample(daemon.pid)]
            deadline = time.monotonic() + args.seconds
            shared = list(range(min(args.shared, args.files)))
            rest = list(range(len(shared), args.files))
            threads = [
                threading.Thread(
                    target=reader,
                    args=(n, files, rest[n :: args.readers], shared, deadline, figures, args.seed),
                    daemon=True,
                )
                for n in range(args.readers)
            ]
            threads.append(
                threading.Thread(
                    target=producer,
                    args=(emulator, mountpoint / "builds" / str(BUILDING_BUILD), files,
                          args.new_every, args.max_file_size, deadline, figures),
                    daemon=True,
                )
            )  # fmt: skip
            for thread in threads:
                thread.start()
            while any(t.is_alive() for t in threads):
                time.sleep(0.5)
                samples.append(sample(daemon.pid))
                if time.monotonic() > deadline + 120:
                    figures.errors["readers still running 120 s after the end"] += 1
                    break
            elapsed = time.monotonic() - deadline + args.seconds
            emulator.config = replace(emulator.config, fail_rate=0.0, reset_after=None)
        finally:
            subprocess.run(["fusermount3", "-u", str(mountpoint)], capture_output=True, timeout=30)
            try:
                daemon.wait(timeout=20)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait(timeout=20)
            if is_mounted(mountpoint):
                subprocess.run(
                    ["fusermount3", "-uz", str(mountpoint)], capture_output=True, timeout=30
                )
    traceback = "Traceback (most recent call last)" in log_path.read_text(errors="replace")
    rss = growth(samples, "rss_kib")
    fds = growth(samples, "fds")
    requests = sum(emulator.requests.values())
    print(
        f"soak: {args.seconds:g} s, {args.readers} readers, {args.files} files "
        f"({args.shared} shared, {total / MiB:.1f} MiB, cache bound {bound / MiB:.1f} MiB), "
        "faults: "
        f"fail rate {args.fail_rate:g} (502/503/504), reset after {args.reset_after} bytes, "
        f"latency {args.latency:g} s + jitter {args.jitter:g} s\n"
        f"reads:     {figures.whole_reads} whole files, {figures.range_reads} ranges, "
        f"{figures.listings} listings; {figures.bytes_checked / MiB:.1f} MiB checked "
        f"({figures.bytes_checked / MiB / elapsed:.1f} MiB/s)\n"
        f"server:    {requests} requests ({emulator.requests['GET /api/v1/downloads/:id']} "
        f"body GETs), {emulator.bytes_sent / MiB:.1f} MiB sent\n"
        f"wrong:     {len(figures.wrong)} {figures.wrong[:5]}\n"
        f"errors:    {sum(figures.errors.values())} {dict(figures.errors)}\n"
        f"daemon:    VmRSS {rss[0] / 1024:.1f} -> {rss[1] / 1024:.1f} MiB "
        f"(max {rss[2] / 1024:.1f}), fds {fds[0]:.0f} -> {fds[1]:.0f} (max {fds[2]:.0f}), "
        f"{len(samples)} samples; traceback in log: {'yes' if traceback else 'no'}\n"
        f"VmRSS by fifth of the run (MiB): {' '.join(f'{v / 1024:.0f}' for v in fifths(samples))}"
    )
    problems = []
    if figures.wrong:
        problems.append("wrong bytes")
    if figures.errors:
        problems.append("failed reads")
    if traceback:
        problems.append(f"a traceback in the daemon's log ({log_path})")
    if (rss[1] - rss[0]) / 1024 > args.max_rss_growth:
        problems.append(f"VmRSS grew more than {args.max_rss_growth:g} MiB")
    if fds[1] - fds[0] > args.max_fd_growth:
        problems.append(f"open descriptors grew by more than {args.max_fd_growth}")
    print("soak: PASS" if not problems else f"soak: FAIL: {'; '.join(problems)}")
    if problems and traceback:
        print(log_path.read_text(errors="replace")[-4000:])
    return not problems


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="mkwfs-soak-"))
    try:
        return 0 if run(args, work) else 1
    except KeyboardInterrupt:
        return 130
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
