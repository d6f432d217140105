"""Fixtures shared by the test suite: the emulator on loopback, and real FUSE mounts of mkwfs.

The emulator runs once per session (its generated bodies live in its data directory, by
default the user's cache, so the big ZIP is generated once per machine, not once per run);
its request counters and config are reset for every test.

``mount_fs`` starts ``python -m mkwfs mount MNT --foreground`` against it, waits (bounded)
until the mount is there, and always unmounts and stops the daemon afterwards. A test fails
when the daemon logged a traceback. Every mount has a watchdog: when a test runs longer than
its limit, the daemon is killed, so that file I/O blocked on the mount returns ``ENOTCONN``
instead of hanging the suite, and the test fails.

CI rule: with ``CI=true`` a test that needs FUSE or the emulator FAILS when either is missing;
elsewhere it is skipped with the reason. ``require()`` is the one place that decides.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from mkwfs.emulator import Emulator

REPO_ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}

#: Seconds to wait for a mount to appear.
MOUNT_READY_TIMEOUT = 20.0
#: Default per-mount watchdog, seconds: how long a test may use one mount.
DEFAULT_WATCHDOG = 120.0


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """XDG_CONFIG_HOME and XDG_CACHE_HOME in tmp_path, no MKWFS_* variables of the caller."""
    for name in list(os.environ):
        if name.startswith("MKWFS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    yield tmp_path


def require(condition: bool, reason: str) -> None:
    """Skip the test for ``reason`` unless ``condition``; under CI=true fail instead."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: this must work in CI, so the test fails)", pytrace=False)
    pytest.skip(reason)


def fuse_problem() -> str | None:
    """Why a FUSE mount cannot work on this machine, or None when it can."""
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse (in a container, pass --device /dev/fuse)"
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "/dev/fuse is not readable and writable for this user"
    if shutil.which("fusermount3") is None:
        return "no fusermount3 (apt-get install fuse3, or run scripts/setup.sh)"
    return None


def is_mounted(path: Path) -> bool:
    """Whether ``path`` is a mount point, from /proc/self/mountinfo (never blocks on FUSE)."""
    target = os.path.abspath(path)
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as mounts:
        for line in mounts:
            fields = line.split(" ")
            if len(fields) > 4 and _unescape_mountinfo(fields[4]) == target:
                return True
    return False


def _unescape_mountinfo(field: str) -> str:
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def daemon_pids(mountpoint: Path) -> list[int]:
    """Pids of mkwfs processes whose command line names ``mountpoint``."""
    target = os.fsencode(os.path.abspath(mountpoint))
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            args = Path("/proc", entry, "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if target in args and any(b"mkwfs" in arg for arg in args):
            pids.append(int(entry))
    return pids


def unmount(mountpoint: Path) -> None:
    """Unmount ``mountpoint`` if mounted: ``fusermount3 -u``, falling back to ``-uz``."""
    for flags in ("-u", "-uz"):
        if not is_mounted(mountpoint):
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            command = ["fusermount3", flags, str(mountpoint)]
            subprocess.run(command, capture_output=True, timeout=15, check=False)


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# --- the emulator -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[tuple[Emulator, str]]:
    """One emulator for the session, served over HTTP on 127.0.0.1: (emulator, base URL).

    Its data directory is ``$MKWFS_E2E_DATA_DIR`` when set, else the emulator's default
    (under ``$XDG_CACHE_HOME``), so generated bodies survive across runs.
    """
    try:
        from mkwfs.emulator import Emulator, EmulatorConfig, serve_in_thread
    except ImportError as exc:
        require(False, f"the emulator is not available: {exc}")
        raise  # unreachable: require() raised
    data_dir = os.environ.get("MKWFS_E2E_DATA_DIR")
    emulator = Emulator(EmulatorConfig(data_dir=Path(data_dir) if data_dir else None))
    with serve_in_thread(emulator) as url:
        yield emulator, url


@pytest.fixture
def emulator(emulator_server: tuple[Emulator, str]) -> Iterator[Emulator]:
    """The session's emulator with zeroed counters; its config is restored after the test."""
    emu, _url = emulator_server
    original = emu.config
    emu.reset_counters()
    try:
        yield emu
    finally:
        emu.config = original
        emu.clear_failures()
        emu.reset_data()


@pytest.fixture
def emulator_url(emulator_server: tuple[Emulator, str]) -> str:
    return emulator_server[1]


@pytest.fixture
def base_url(emulator: Emulator) -> Iterator[str]:
    """The test's ``emulator`` served over HTTP on 127.0.0.1 for this test alone: for the
    modules that make a fresh emulator of their own (``emulator_url`` serves the session's)."""
    from mkwfs.emulator import serve_in_thread

    with serve_in_thread(emulator) as url:
        yield url


@pytest.fixture
def mkwfs_env(emulator: Emulator) -> dict[str, str]:
    """Environment for an ``mkwfs`` subprocess: a valid token in MKWFS_TOKEN, no other
    MKWFS_* variables of the caller, and this checkout first on the import path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MKWFS_")}
    env["MKWFS_TOKEN"] = emulator.issue_token()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


# --- real mounts ------------------------------------------------------------------------


@dataclasses.dataclass
class MountedFs:
    """One mount of mkwfs made by a fixture; ``unmount()`` is idempotent."""

    path: Path
    cache_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None
    watchdog: threading.Timer | None = None
    watchdog_fired: bool = False

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log file)"

    def is_mounted(self) -> bool:
        return is_mounted(self.path)

    def wait_daemon_gone(self, timeout: float) -> bool:
        """Whether the daemon serving this mount has exited within ``timeout`` seconds."""
        if self.process is not None:
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        return wait_for(lambda: not daemon_pids(self.path), timeout)

    def unmount(self) -> None:
        """Unmount, then stop the daemon (SIGTERM, then SIGKILL) if it did not exit."""
        if self.watchdog is not None:
            self.watchdog.cancel()
        unmount(self.path)
        if self.process is not None:
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.terminate()
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=10)
        elif not wait_for(lambda: not daemon_pids(self.path), 10):
            _kill(daemon_pids(self.path))

    def fire_watchdog(self) -> None:
        """Kill the daemon so that I/O blocked on the mount fails instead of hanging."""
        self.watchdog_fired = True
        pids = [self.process.pid] if self.process is not None else daemon_pids(self.path)
        _kill(pids)
        unmount(self.path)

    def start_watchdog(self, seconds: float) -> None:
        self.watchdog = threading.Timer(seconds, self.fire_watchdog)
        self.watchdog.daemon = True
        self.watchdog.start()


_MOUNTS = pytest.StashKey[list[MountedFs]]()

MountFactory = Callable[..., MountedFs]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach each daemon's log to the report of a failed test."""
    report = yield
    if report.failed and report.when in {"setup", "call"}:
        for mounted in item.stash.get(_MOUNTS, []):
            report.sections.append((f"mkwfs daemon log ({mounted.path})", mounted.log()))
    return report


@pytest.fixture
def fuse_available() -> None:
    problem = fuse_problem()
    require(problem is None, f"FUSE is not usable here: {problem}")


@pytest.fixture
def mounts(request: pytest.FixtureRequest, fuse_available: None) -> Iterator[list[MountedFs]]:
    """The mounts a test made. At teardown each is unmounted and its daemon stopped; a
    mount still there, a fired watchdog or a traceback in a daemon's log fails the test."""
    made: list[MountedFs] = []
    request.node.stash[_MOUNTS] = made
    try:
        yield made
    finally:
        problems = []
        for mounted in made:
            mounted.unmount()
            if is_mounted(mounted.path):
                problems.append(f"{mounted.path} is still mounted after the test")
            if mounted.watchdog_fired:
                problems.append(f"the watchdog killed the daemon of {mounted.path}: test too slow")
            if "Traceback (most recent call last)" in mounted.log():
                problems.append(f"the daemon of {mounted.path} logged a traceback")
        if problems:
            logs = "\n".join(f"--- log of {m.path}:\n{m.log()}" for m in made)
            pytest.fail("; ".join(problems) + "\n" + logs, pytrace=False)


@pytest.fixture
def mount_fs(
    mounts: list[MountedFs],
    emulator: Emulator,
    emulator_url: str,
    mkwfs_env: dict[str, str],
    tmp_path: Path,
) -> MountFactory:
    """A factory: ``mount_fs(*extra_cli_args, cache_dir=None, watchdog=120.0) -> MountedFs``.

    Starts ``python -m mkwfs mount MNT --foreground --api-url URL --cache-dir DIR`` with
    MKWFS_TOKEN set, output to a log file, and returns once MNT is a mount point; then zeroes
    the emulator's counters so that a test sees only what it caused. See ``mounts`` for the
    teardown.
    """

    def factory(
        *extra_args: str, cache_dir: Path | None = None, watchdog: float = DEFAULT_WATCHDOG
    ) -> MountedFs:
        number = len(mounts)
        mountpoint = tmp_path / f"mnt{number}"
        mountpoint.mkdir()
        if cache_dir is None:
            cache_dir = tmp_path / f"cache{number}"
        log_path = tmp_path / f"mkwfs{number}.log"
        argv = [
            sys.executable, "-m", "mkwfs", "mount", str(mountpoint), "--foreground",
            "--api-url", emulator_url, "--cache-dir", str(cache_dir), *extra_args,
        ]  # fmt: skip
        if os.environ.get("MKWFS_E2E_DEBUG"):
            argv.append("--debug")
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=mkwfs_env, cwd=tmp_path,
            )  # fmt: skip
        mounted = MountedFs(mountpoint, cache_dir, log_path, process)
        mounts.append(mounted)
        mounted.start_watchdog(watchdog)
        ready = wait_for(
            lambda: is_mounted(mountpoint) or process.poll() is not None, MOUNT_READY_TIMEOUT
        )
        if not (ready and is_mounted(mountpoint)):
            status = process.poll()
            why = f"exited with {status}" if status is not None else "is still starting"
            pytest.fail(
                f"mkwfs did not mount {mountpoint} within {MOUNT_READY_TIMEOUT:.0f} s "
                f"(the daemon {why}); its log:\n{mounted.log()}",
                pytrace=False,
            )
        assert os.path.ismount(mountpoint)
        emulator.reset_counters()
        return mounted

    return factory


@pytest.fixture
def mnt(mount_fs: MountFactory) -> Path:
    """The mount point of a default mount of mkwfs (see ``mount_fs``)."""
    return mount_fs().path


@pytest.fixture
def adopt_mount(mounts: list[MountedFs], tmp_path: Path) -> Callable[..., MountedFs]:
    """``adopt_mount(path, log_path=None, watchdog=120.0)``: take charge of a mount made by a
    background ``mkwfs`` command (no process handle; its daemon is found by pid from its
    command line), with the same watchdog and teardown as ``mount_fs``. Call it before the
    command runs, so that a failed test still cleans up."""

    def adopt(
        path: Path, log_path: Path | None = None, watchdog: float = DEFAULT_WATCHDOG
    ) -> MountedFs:
        mounted = MountedFs(path, tmp_path, log_path or tmp_path / "no-log", None)
        mounts.append(mounted)
        mounted.start_watchdog(watchdog)
        return mounted

    return adopt
