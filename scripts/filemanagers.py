#!/usr/bin/env python3
"""Real file managers on a real mkwfs mount: what each action costs in API requests.

    .venv/bin/python scripts/filemanagers.py [--programs nautilus,thunar] [--results DIR]
                                             [--mkwfs-arg=--remote-hint ...] [--strace]

Under Xvfb and a private D-Bus session, each program (from Debian's packages: ``nautilus``,
``thunar``) performs each action on a fresh mount (a new ``mkwfs mount --foreground
--debug`` with an empty cache, so that one action's requests are not hidden by an earlier
one's cache) of the embedded emulator, whose dataset gets ``--extra-builds`` more builds so
that ``builds/`` holds 120+ of them. The actions:

* ``root``: open MOUNTPOINT; ``builds``: open ``builds/``;
* ``large``: open the build of 1,000 files and scroll to its end;
* ``latest``: open ``projects/DEMO_PROJECT/latest``;
* ``unpacked``: open ``unpacked/5141/STAGE_PC_HISTORY.zip/payload`` (members ``*.bin``,
  a name no MIME glob matches) and ``unpacked/5139/<iics>.zip`` (``*.json``, two globs);
* ``properties``: the properties dialog of a ZIP in a build.

The programs are driven over ``org.freedesktop.FileManager1`` (ShowFolders,
ShowItemProperties), which both implement. After an action the rig waits until no request
came for ``--quiet`` seconds, takes a screenshot of the screen (``import -window root``,
PNG under the results dir, by default /tmp/mkwfs-filemanagers) and counts the emulator's
requests by kind: list (every JSON GET), HEAD, body GET (``GET /downloads/:id``) and body
bytes. The same action done by ``ls -l`` (``baseline``) is measured the same way. The
table goes to stdout and, as JSON, to ``counts.json`` in the results dir.

Everything this script starts (Xvfb, dbus-daemon, the programs, strace, the mounts) is
stopped and unmounted on the way out, whatever happens.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from mkwfs.emulator import (  # noqa: E402
    BIG_BUILD,
    CANCELED_BUILD,
    DEMO_BUILD,
    LARGE_BUILD,
    Emulator,
    EmulatorConfig,
    serve_in_thread,
)

#: Seconds without a request after which an action counts as done.
DEFAULT_QUIET = 4.0
#: At most this long per action.
ACTION_TIMEOUT = 90.0
#: The first id of the builds added to the emulator's dataset.
EXTRA_BUILD_BASE = 9000
#: The programs the rig knows, in the order it runs them.
PROGRAMS = ("nautilus", "thunar")
UNKNOWN_TYPES_DIR = f"unpacked/{BIG_BUILD}/STAGE_PC_HISTORY.zip/payload"


# --- the dataset --------------------------------------------------------------------------


def add_builds(emulator: Emulator, count: int) -> None:
    """Append ``count`` builds, each with one small ZIP, to the emulator's dataset (before it
    serves): copies of the record of CANCELED_BUILD with new ids, FINISHED."""
    template = next(b for b in emulator.builds if b["id"] == CANCELED_BUILD)
    for index in range(count):
        record = copy.deepcopy(template)
        ident = EXTRA_BUILD_BASE + index
        record.update(id=ident, name=f"DEMO_PROJECT #{ident}", status="FINISHED",
                      downloads=[], progress=100)  # fmt: skip
        record["build_end"] = record["build_end"] or record["build_start"]
        emulator.builds.append(record)
        emulator.add_download(ident, f"EXTRA_{ident}.zip")


def request_kinds(requests: Counter[str]) -> dict[str, int]:
    """The emulator's per-endpoint counts as list / head / get (body) / other."""
    kinds = {"list": 0, "head": 0, "get": 0, "other": 0}
    for key, number in requests.items():
        if key == "GET /api/v1/downloads/:id":
            kinds["get"] += number
        elif key.startswith("HEAD "):
            kinds["head"] += number
        elif key.startswith("GET /api/v1/"):
            kinds["list"] += number
        else:
            kinds["other"] += number
    return kinds


# --- processes ----------------------------------------------------------------------------


@dataclass
class Processes:
    """Every process the rig started; ``stop_all`` ends them (SIGTERM, then SIGKILL)."""

    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(
        self, argv: Sequence[str], env: dict[str, str], log: Path
    ) -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:
            # A group of its own: stopping strace must stop the program it traces too.
            process = subprocess.Popen(
                argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        self.started.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            try:
                process.wait(timeout=5)
                break
            except subprocess.TimeoutExpired:
                continue
        with contextlib.suppress(ValueError):
            self.started.remove(process)

    def stop_all(self) -> None:
        for process in reversed(list(self.started)):
            self.stop(process)


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def is_mounted(path: Path) -> bool:
    target = os.path.abspath(path)
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as mounts:
        return any(line.split(" ")[4] == target for line in mounts)


@dataclass
class Desktop:
    """Xvfb and a session bus; ``env`` is the environment the programs run in."""

    processes: Processes
    workdir: Path
    display: str = ":77"
    env: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        log = self.workdir / "desktop.log"
        xvfb = ["Xvfb", self.display, "-screen", "0", "1280x900x24", "-nolisten", "tcp"]
        self.processes.start(xvfb, dict(os.environ), log)
        socket = Path(f"/tmp/.X11-unix/X{self.display[1:]}")
        if not wait_until(socket.exists, 10):
            raise RuntimeError("Xvfb did not start")
        home = self.workdir / "home"
        for sub in ("config", "cache", "data", "runtime"):
            (home / sub).mkdir(parents=True, exist_ok=True)
        (home / "runtime").chmod(0o700)
        env = {key: value for key, value in os.environ.items() if not key.startswith("MKWFS_")}
        env.update(DISPLAY=self.display, HOME=str(home), XDG_CONFIG_HOME=str(home / "config"),
                   XDG_CACHE_HOME=str(home / "cache"), XDG_DATA_HOME=str(home / "data"),
                   XDG_RUNTIME_DIR=str(home / "runtime"), GSK_RENDERER="cairo",
                   NO_AT_BRIDGE="1", GTK_A11Y="none")  # fmt: skip
        bus = self.processes.start(
            ["dbus-daemon", "--session", "--nofork", "--print-address=1"], env, log
        )
        if not wait_until(lambda: bool(_bus_address(log)) or bus.poll() is not None, 10):
            raise RuntimeError("dbus-daemon did not start")
        address = _bus_address(log)
        if not address:
            raise RuntimeError("dbus-daemon did not start")
        env["DBUS_SESSION_BUS_ADDRESS"] = address
        self.env = env

    def screenshot(self, path: Path) -> None:
        subprocess.run(["import", "-display", self.display, "-window", "root", str(path)],
                       env=self.env, check=False, timeout=30, capture_output=True)  # fmt: skip

    def gsettings(self, schema: str, key: str, value: str) -> None:
        subprocess.run(["gsettings", "set", schema, key, value], env=self.env, check=True,
                       timeout=20, capture_output=True)  # fmt: skip

    def call(self, method: str, *args: str) -> None:
        """Call ``org.freedesktop.FileManager1.<method>`` of the running file manager."""
        argv = ["gdbus", "call", "--session", "--dest", "org.freedesktop.FileManager1",
                "--object-path", "/org/freedesktop/FileManager1",
                "--method", f"org.freedesktop.FileManager1.{method}", *args]  # fmt: skip
        subprocess.run(argv, env=self.env, check=True, timeout=30, capture_output=True)

    def xdotool(self, *args: str) -> None:
        subprocess.run(["xdotool", *args], env=self.env, check=False, timeout=30,
                       capture_output=True)  # fmt: skip

    def has_bus_name(self, name: str) -> bool:
        argv = ["gdbus", "call", "--session", "--dest", "org.freedesktop.DBus", "--object-path",
                "/org/freedesktop/DBus", "--method", "org.freedesktop.DBus.NameHasOwner",
                name]  # fmt: skip
        done = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=10)
        return "true" in done.stdout


def _bus_address(log: Path) -> str:
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("unix:"):
            return line.strip()
    return ""


# --- the mount and the server -------------------------------------------------------------


@dataclass
class Server:
    emulator: Emulator
    url: str
    token: str

    def snapshot(self) -> tuple[Counter[str], int]:
        return Counter(self.emulator.requests), self.emulator.bytes_sent


@contextlib.contextmanager
def mounted(server: Server, workdir: Path, name: str, extra: Sequence[str]) -> Iterator[Path]:
    """A fresh mount (new cache dir) at ``workdir/name/mnt``; unmounted on the way out."""
    base = workdir / name
    mnt = base / "mnt"
    mnt.mkdir(parents=True)
    env = {key: value for key, value in os.environ.items() if not key.startswith("MKWFS_")}
    env["MKWFS_TOKEN"] = server.token
    env["PYTHONPATH"] = str(REPO_ROOT)
    argv = [sys.executable, "-m", "mkwfs", "mount", str(mnt), "--foreground", "--debug",
            "--api-url", server.url, "--cache-dir", str(base / "cache"), *extra]  # fmt: skip
    with open(base / "mkwfs.log", "wb") as log:
        daemon = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                  stderr=subprocess.STDOUT)  # fmt: skip
    try:
        if not wait_until(lambda: is_mounted(mnt) or daemon.poll() is not None, 20):
            raise RuntimeError(f"mkwfs did not mount {mnt}")
        if not is_mounted(mnt):
            raise RuntimeError(f"mkwfs exited: {(base / 'mkwfs.log').read_text()[-2000:]}")
        yield mnt
    finally:
        for flags in ("-u", "-uz"):
            if is_mounted(mnt):
                subprocess.run(["fusermount3", flags, str(mnt)], capture_output=True, timeout=15)
        try:
            daemon.wait(timeout=10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(timeout=10)


def settle(server: Server, quiet: float, minimum: float = 3.0) -> None:
    """Wait (at least ``minimum`` s) until no request came for ``quiet`` seconds."""
    start = time.monotonic()
    last = sum(server.emulator.requests.values())
    changed = time.monotonic()
    while time.monotonic() - start < ACTION_TIMEOUT:
        time.sleep(0.25)
        now = sum(server.emulator.requests.values())
        if now != last:
            last, changed = now, time.monotonic()
        elif time.monotonic() - changed >= quiet and time.monotonic() - start >= minimum:
            return


# --- the actions --------------------------------------------------------------------------


def action_paths(mnt: Path) -> dict[str, Path]:
    """Each action's directory (``properties``: its file)."""
    large = mnt / "builds" / str(LARGE_BUILD)
    return {
        "root": mnt,
        "builds": mnt / "builds",
        "large": large,
        "latest": mnt / "projects" / "DEMO_PROJECT" / "latest",
        "unpacked": mnt / UNKNOWN_TYPES_DIR,
        "properties": mnt / "builds" / str(DEMO_BUILD) / "DWH_DDL_2026-4-2_10_14.zip",
    }


ACTIONS = ("root", "builds", "large", "latest", "unpacked", "properties")


class FileManager:
    """One program, driven over org.freedesktop.FileManager1."""

    name = ""
    argv: tuple[str, ...] = ()
    window_class = ""

    def __init__(self, desktop: Desktop, processes: Processes, log: Path, strace: Path | None):
        self.desktop = desktop
        self.processes = processes
        self.log = log
        self.strace = strace
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = list(self.argv)
        if self.strace is not None:
            trace = ["strace", "-f", "-tt", "-e", "trace=%file,%desc", "-o", str(self.strace)]
            argv = [*trace, *argv]
        self.process = self.processes.start(argv, self.desktop.env, self.log)
        if not wait_until(lambda: self.desktop.has_bus_name("org.freedesktop.FileManager1"), 30):
            raise RuntimeError(f"{self.name} did not take org.freedesktop.FileManager1")

    def stop(self) -> None:
        if self.process is not None:
            self.processes.stop(self.process)
            self.process = None
        wait_until(lambda: not self.desktop.has_bus_name("org.freedesktop.FileManager1"), 10)

    def open(self, path: Path) -> None:
        self.desktop.call("ShowFolders", f"['{path.as_uri()}']", "")

    def properties(self, path: Path) -> None:
        self.desktop.call("ShowItemProperties", f"['{path.as_uri()}']", "")

    def scroll_to_end(self) -> None:
        self.desktop.xdotool("search", "--onlyvisible", "--class", self.window_class,
                             "windowactivate", "--sync")  # fmt: skip
        self.desktop.xdotool("mousemove", "640", "450")
        self.desktop.xdotool("key", "--delay", "100", "ctrl+End", "End")
        self.desktop.xdotool("click", "--repeat", "150", "--delay", "20", "5")


class Nautilus(FileManager):
    name = "nautilus"
    argv = ("nautilus", "--gapplication-service")
    window_class = "nautilus"


class Thunar(FileManager):
    name = "thunar"
    argv = ("thunar", "--daemon")
    window_class = "thunar"


MANAGERS: dict[str, type[FileManager]] = {"nautilus": Nautilus, "thunar": Thunar}


def run_ls(path: Path, *, action: str) -> None:
    """``ls -l`` of the action's directory (``properties``: ``stat`` of its file)."""
    argv = ["stat", str(path)] if action == "properties" else ["ls", "-l", str(path) + "/"]
    subprocess.run(argv, capture_output=True, timeout=60, check=False)


@dataclass
class Rig:
    server: Server
    desktop: Desktop
    processes: Processes
    results: Path
    workdir: Path
    mkwfs_args: Sequence[str]
    quiet: float
    strace: bool
    actions: Sequence[str] = ACTIONS
    counts: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)

    def measure(self, program: str, action: str, do: Callable[[Path], None]) -> None:
        with mounted(self.server, self.workdir, f"{program}-{action}", self.mkwfs_args) as mnt:
            self.server.emulator.reset_counters()
            do(action_paths(mnt)[action])
            settle(self.server, self.quiet)
            if program != "baseline":
                self.desktop.screenshot(self.results / f"{program}-{action}.png")
            requests, sent = self.server.snapshot()
            kinds = request_kinds(requests) | {"bytes": sent}
            self.counts.setdefault(program, {})[action] = kinds
            print(f"{program:9} {action:11} {kinds}", flush=True)

    def baseline(self) -> None:
        for action in self.actions:
            self.measure("baseline", action, functools.partial(run_ls, action=action))

    def program(self, name: str) -> None:
        for action in self.actions:
            strace = self.results / f"{name}-{action}.strace" if self.strace else None
            manager = MANAGERS[name](self.desktop, self.processes,
                                     self.results / f"{name}.log", strace)  # fmt: skip
            manager.start()
            try:
                self.measure(name, action, functools.partial(self._act, manager, action))
            finally:
                manager.stop()

    def _act(self, manager: FileManager, action: str, path: Path) -> None:
        if action == "properties":
            manager.properties(path)
            return
        manager.open(path)
        if action == "large":
            settle(self.server, self.quiet)
            manager.scroll_to_end()


def print_table(counts: dict[str, dict[str, dict[str, int]]]) -> None:
    print(f"\n| program | {' | '.join(ACTIONS)} |")
    print(f"|---|{'---|' * len(ACTIONS)}")
    for program, actions in counts.items():
        cells = []
        for action in ACTIONS:
            kinds = actions.get(action)
            if kinds is None:
                cells.append("-")
                continue
            sent = f" ({kinds['bytes'] // 1024} KiB)" if kinds["bytes"] else ""
            cells.append(f"{kinds['list']} / {kinds['head']} / {kinds['get']}{sent}")
        print(f"| {program} | {' | '.join(cells)} |")
    print("\n(list / HEAD / body GET per action, on a fresh mount each)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--programs", default=",".join(PROGRAMS))
    results = Path(tempfile.gettempdir()) / "mkwfs-filemanagers"
    parser.add_argument("--results", type=Path, default=results)
    parser.add_argument("--extra-builds", type=int, default=120)
    parser.add_argument("--mkwfs-arg", action="append", default=[], dest="mkwfs_args")
    parser.add_argument("--quiet", type=float, default=DEFAULT_QUIET)
    parser.add_argument("--actions", default=",".join(ACTIONS))
    parser.add_argument("--strace", action="store_true", help="strace -f each program")
    parser.add_argument("--setting", action="append", default=[],
                        help="SCHEMA KEY VALUE for gsettings, e.g. "
                             "'org.gnome.nautilus.preferences show-directory-item-counts "
                             "never'")  # fmt: skip
    options = parser.parse_args(argv)
    missing = [tool for tool in ("Xvfb", "dbus-daemon", "gdbus", "import", "xdotool")
               if shutil.which(tool) is None]  # fmt: skip
    if missing:
        parser.error(f"missing {', '.join(missing)} (see docs/filemanagers.md)")
    options.results.mkdir(parents=True, exist_ok=True)
    emulator = Emulator(EmulatorConfig(big_file_size=4 * 2**20))
    add_builds(emulator, options.extra_builds)
    processes = Processes()
    with tempfile.TemporaryDirectory(prefix="mkwfs-fm-") as tmp, serve_in_thread(emulator) as url:
        workdir = Path(tmp)
        desktop = Desktop(processes, workdir)
        server = Server(emulator, url, emulator.issue_token())
        rig = Rig(server, desktop, processes, options.results, workdir, options.mkwfs_args,
                  options.quiet, options.strace, options.actions.split(","))  # fmt: skip
        try:
            desktop.start()
            for setting in options.setting:
                desktop.gsettings(*setting.split(" ", 2))
            rig.baseline()
            for name in options.programs.split(","):
                if name:
                    rig.program(name)
        finally:
            processes.stop_all()
        (options.results / "counts.json").write_text(json.dumps(rig.counts, indent=2) + "\n")
        print_table(rig.counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
