"""End-to-end tests of the commands and the life cycle, through real FUSE mounts against the
emulator on loopback: background mounts in ``$(...)``, status, refresh, prefetch, startup
errors through the daemon, signals, fstab via ``mount -T``, the systemd unit's readiness,
logging and secrets. Every command runs with a timeout; mounts are cleaned up by the
``mounts`` fixture (see conftest)."""

from __future__ import annotations

import configparser
import errno
import hashlib
import http.server
import json
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from mkwfs.emulator import BIG_BUILD, DEMO_BUILD, MEDIUM_FILE, MEDIUM_FILE_SIZE, Emulator
from mkwfs.remote.api import PAGE_LIMIT
from tests.conftest import (
    REPO_ROOT,
    MountedFs,
    MountFactory,
    daemon_pids,
    is_mounted,
    require,
    wait_for,
)
from tests.e2e.test_e2e_mount import mkwfs, plain_names, read_cold

pytestmark = pytest.mark.e2e

LIST = "GET /api/v1/downloads"
BUILDS = "GET /api/v1/builds"


@pytest.fixture
def bg_mount(
    adopt_mount: Callable[..., MountedFs],
    emulator_url: str,
    mkwfs_env: dict[str, str],
    tmp_path: Path,
) -> Callable[..., tuple[MountedFs, subprocess.CompletedProcess[str]]]:
    """``bg_mount(*args, env=None, name="bg")``: ``mkwfs mount`` in the background against
    the emulator, the mount adopted for cleanup; returns (mount, the command's result)."""

    def mount(
        *args: str | Path, env: dict[str, str] | None = None, name: str = "bg"
    ) -> tuple[MountedFs, subprocess.CompletedProcess[str]]:
        mountpoint = tmp_path / name
        mountpoint.mkdir(exist_ok=True)
        log = tmp_path / f"{name}.log"
        mounted = adopt_mount(mountpoint, log)
        done = mkwfs(
            "mount", mountpoint, "--api-url", emulator_url, "--cache-dir", tmp_path / "cache",
            "--log-file", log, *args, env=env or mkwfs_env, timeout=60,
        )  # fmt: skip
        return mounted, done

    return mount


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


# --- life cycle -----------------------------------------------------------------------------


def test_mount_in_command_substitution_then_status_refresh_umount(
    adopt_mount: Callable[..., MountedFs],
    emulator: Emulator,
    emulator_url: str,
    mkwfs_env: dict[str, str],
    tmp_path: Path,
) -> None:
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    log = tmp_path / "daemon.log"
    mounted = adopt_mount(mountpoint, log)
    # `out=$(mkwfs mount ...)` returns only if the daemon keeps none of the caller's output.
    script = 'out=$("$@"); code=$?; printf "%s|%s" "$code" "$out"'
    argv = [sys.executable, "-m", "mkwfs", "mount", str(mountpoint), "--api-url", emulator_url,
            "--cache-dir", str(tmp_path / "cache"), "--log-file", str(log),
            "--cache-max-size", "10G"]  # fmt: skip
    done = subprocess.run(
        ["bash", "-c", script, "bash", *argv], capture_output=True, text=True, timeout=60,
        env=mkwfs_env, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    assert done.stdout == "0|", done.stdout + done.stderr
    assert mounted.is_mounted()
    assert daemon_pids(mountpoint), "the daemon's command line names no mount point"

    again = mkwfs("mount", mountpoint, "--api-url", emulator_url, env=mkwfs_env)
    assert again.returncode == 1
    assert f"{mountpoint} is already mounted (fuse.mkwfs)" in one_line(again)

    status = mkwfs("status", mountpoint, env=mkwfs_env)
    assert status.returncode == 0, status.stderr
    assert f"server:    {emulator_url}: reachable" in status.stdout
    state = json.loads(mkwfs("status", mountpoint, "--json", env=mkwfs_env).stdout)
    assert state["api"]["reachable"] is True
    assert state["api"]["requests"][BUILDS] >= 2  # the startup check and the status checks
    assert state["api"]["bytes_received"] > 0
    assert state["cache"]["max_bytes"] == 10 * 2**30
    assert state["cache"]["dir"] == str(tmp_path / "cache")

    build_dir = mountpoint / "builds" / str(DEMO_BUILD)
    other_dir = mountpoint / "builds" / str(BIG_BUILD)
    emulator.reset_counters()
    os.listdir(build_dir)
    os.listdir(build_dir)
    os.listdir(other_dir)
    assert emulator.requests[LIST] == 2
    refreshed = mkwfs("refresh", mountpoint, f"builds/{DEMO_BUILD}", env=mkwfs_env)
    assert refreshed.returncode == 0, refreshed.stderr
    os.listdir(build_dir)
    assert emulator.requests[LIST] == 3
    os.listdir(other_dir)  # refresh PATH drops PATH's listing only
    assert emulator.requests[LIST] == 3

    emulator.fail_next(BUILDS, 500)
    status = mkwfs("status", mountpoint, env=mkwfs_env)
    assert status.returncode == 1
    assert "NOT reachable" in status.stdout and "HTTP 500 x1" in status.stdout

    done = mkwfs("umount", mountpoint, env=mkwfs_env)
    assert done.returncode == 0, done.stderr
    assert not mounted.is_mounted()
    assert mounted.wait_daemon_gone(15)


@pytest.fixture
def html_server() -> Iterator[str]:
    """A web server on loopback that answers every GET with an HTML page: not the API."""

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<html><head><title>Welcome</title></head><body>hello</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    "failure", ["token rejected", "login refused", "unreachable", "html", "not found"]
)
def test_startup_errors_from_the_server_are_one_line_and_mount_nothing(
    bg_mount: Callable[..., tuple[MountedFs, subprocess.CompletedProcess[str]]],
    mkwfs_env: dict[str, str],
    emulator_url: str,
    html_server: str,
    failure: str,
) -> None:
    env = dict(mkwfs_env)
    args: list[str] = []
    secret = env["MKWFS_TOKEN"]
    if failure == "token rejected":
        env["MKWFS_TOKEN"] = secret = "not-a-valid-token"
        words = "rejected the token from MKWFS_TOKEN (expired or wrong): run `mkwfs login`"
    elif failure == "login refused":
        del env["MKWFS_TOKEN"]
        env["MKWFS_PASSWORD"] = secret = "wrong-password"
        args = ["--email", "demo@metakraftwerk.example"]
        words = "refused the login of demo@metakraftwerk.example: check the email"
    elif failure == "unreachable":
        url = f"http://127.0.0.1:{closed_port()}"
        args = ["--api-url", url]
        words = f"cannot reach the MetaKraftwerk API at {url}"
    else:
        url = html_server if failure == "html" else emulator_url + "/elsewhere"
        args = ["--api-url", url]
        words = f"{url} answers, but not as the MetaKraftwerk API"
    mounted, done = bg_mount(*args, env=env)
    assert done.returncode == 1
    assert words in one_line(done)
    assert secret not in done.stderr + mounted.log()
    assert not mounted.is_mounted()
    assert mounted.wait_daemon_gone(15)


def test_sighup_drops_cached_listings(mount_fs: MountFactory, emulator: Emulator) -> None:
    mounted = mount_fs("--dir-ttl", "3600")
    assert mounted.process is not None
    build_dir = mounted.path / "builds" / str(DEMO_BUILD)
    os.listdir(build_dir)
    os.listdir(build_dir)
    assert emulator.requests[LIST] == 1
    mounted.process.send_signal(signal.SIGHUP)
    # The signal is handled asynchronously: list until the listing is asked for again.
    assert wait_for(lambda: bool(os.listdir(build_dir)) and emulator.requests[LIST] == 2, 10)
    assert mounted.is_mounted()


def test_sigterm_mid_download_unmounts_and_the_download_resumes(
    mount_fs: MountFactory, emulator: Emulator, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    # The content store records what is on disk (``<id>.map``) every so many bytes; once
    # it has, a SIGTERM must leave those bytes to be resumed, not fetched again.
    recorded = cache / "content" / f"{MEDIUM_FILE}.map"
    emulator.config = replace(emulator.config, throttle=8 * 2**20)
    first = mount_fs(cache_dir=cache)
    assert first.process is not None
    build = emulator.downloads[MEDIUM_FILE]["build_id"]
    relative = Path("builds", str(build), emulator.downloads[MEDIUM_FILE]["name"])
    reader = subprocess.Popen(["cat", str(first.path / relative)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        assert wait_for(recorded.exists, 30), "no progress was recorded"
        first.process.send_signal(signal.SIGTERM)
        assert first.process.wait(timeout=15) == 0
        assert not first.is_mounted()
        assert reader.wait(timeout=15) != 0, "the read completed before the SIGTERM"
    finally:
        reader.kill()
    assert not (cache / "content" / str(MEDIUM_FILE)).exists()

    emulator.config = replace(emulator.config, throttle=None)
    second = mount_fs(cache_dir=cache)
    data = read_cold(second.path / relative)
    assert hashlib.sha256(data).hexdigest() == emulator.body_sha256(MEDIUM_FILE)
    assert emulator.bytes_sent < MEDIUM_FILE_SIZE, "the download started over"


# --- prefetch -------------------------------------------------------------------------------


def test_prefetch_then_reads_need_no_server(
    mount_fs: MountFactory, emulator: Emulator, mkwfs_env: dict[str, str]
) -> None:
    mnt = mount_fs("--dir-ttl", "3600", "--attr-ttl", "3600").path
    build_dir = mnt / "builds" / str(DEMO_BUILD)
    done = mkwfs("prefetch", build_dir, env=mkwfs_env, timeout=60)
    assert done.returncode == 0, done.stderr
    expected = plain_names(emulator, DEMO_BUILD)
    assert done.stdout.startswith(f"prefetched {len(os.listdir(build_dir))} files (")
    assert emulator.requests["GET /api/v1/downloads/:id"] == len(expected)

    emulator.reset_counters()  # from here on, the server is not needed
    for name, download in expected.items():
        data = read_cold(build_dir / name)
        assert hashlib.sha256(data).hexdigest() == emulator.body_sha256(download["id"]), name
    assert sum(emulator.requests.values()) == 0, dict(emulator.requests)


# --- fstab and systemd ----------------------------------------------------------------------


HELPER = REPO_ROOT / "scripts" / "mount.fuse.mkwfs"
UNIT = REPO_ROOT / "scripts" / "mkwfs@.service"


def test_fstab_line_mounts_with_mount_T(
    adopt_mount: Callable[..., MountedFs],
    emulator: Emulator,
    emulator_url: str,
    mkwfs_env: dict[str, str],
    tmp_path: Path,
) -> None:
    require(
        (REPO_ROOT / ".venv" / "bin" / "mkwfs").exists(),
        "the helper runs .venv/bin/mkwfs of this checkout (scripts/setup.sh makes it)",
    )

    # mount(8) only looks in /sbin for helpers; without installing it there, mount.fuse3
    # runs the helper named before the '#' (see the helper's header and README).
    def line(where: Path, options: str) -> str:
        return f"{HELPER}#mkwfs {where} fuse {options} 0 0"

    mount_from_fstab(adopt_mount, emulator, emulator_url, mkwfs_env, tmp_path, line)


def test_packaged_helper_mounts_a_fuse_mkwfs_line(
    adopt_mount: Callable[..., MountedFs],
    emulator: Emulator,
    emulator_url: str,
    mkwfs_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """The console script pip installs is the helper: one `ln -s` into /sbin, as the README
    says, and a line of type fuse.mkwfs mounts."""
    helper = Path(sys.executable).parent / "mount.fuse.mkwfs"
    require(helper.exists(), f"{helper}: the package's console script (pip install) is missing")
    installed = Path("/sbin/mount.fuse.mkwfs")
    require(os.geteuid() == 0, "installing a helper in /sbin needs root")
    require(not installed.exists() and not installed.is_symlink(),
            f"{installed} exists already: not replacing the machine's own helper")  # fmt: skip

    def line(where: Path, options: str) -> str:
        return f"mkwfs {where} fuse.mkwfs {options} 0 0"

    installed.symlink_to(helper)
    try:
        mount_from_fstab(adopt_mount, emulator, emulator_url, mkwfs_env, tmp_path, line)
    finally:
        installed.unlink()


def mount_from_fstab(
    adopt_mount: Callable[..., MountedFs],
    emulator: Emulator,
    emulator_url: str,
    mkwfs_env: dict[str, str],
    tmp_path: Path,
    line: Callable[[Path, str], str],
) -> None:
    """Mount with `mount -T FSTAB` from the fstab line ``line(mountpoint, options)`` makes,
    list the builds, and unmount with umount(8)."""
    require(os.geteuid() == 0, "mount -T with an fstab line needs root")
    require(shutil.which("mount") is not None, "no mount(8)")
    mountpoint = tmp_path / "fstab-mnt"
    mountpoint.mkdir()
    token = tmp_path / "token"
    token.write_text(mkwfs_env["MKWFS_TOKEN"] + "\n")
    cache, log = tmp_path / "cache", tmp_path / "fstab.log"
    options = (f"ro,noauto,_netdev,api_url={emulator_url},token_file={token},"
               f"cache_dir={cache},log_file={log},dir_ttl=30")  # fmt: skip
    fstab = tmp_path / "fstab"
    fstab.write_text(line(mountpoint, options) + "\n")
    mounted = adopt_mount(mountpoint, log)
    env = {k: v for k, v in mkwfs_env.items() if not k.startswith("MKWFS_")}
    done = run_env(["mount", "-T", str(fstab), str(mountpoint)], env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert mounted.is_mounted()
    assert str(DEMO_BUILD) in os.listdir(mountpoint / "builds")
    assert emulator.requests[BUILDS] >= 1

    done = run_env(["umount", str(mountpoint)], env)
    assert done.returncode == 0, done.stderr
    assert not mounted.is_mounted()
    assert mounted.wait_daemon_gone(15)


def run_env(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env,
                          stdin=subprocess.DEVNULL, check=False)  # fmt: skip


def test_systemd_unit_reports_ready_and_stops_cleanly(
    mounts: list[MountedFs], mkwfs_env: dict[str, str], emulator_url: str, tmp_path: Path
) -> None:
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(UNIT)
    assert unit["Service"]["Type"] == "notify"
    mountpoint = tmp_path / "unit-mnt"
    mountpoint.mkdir()
    if shutil.which("systemd-analyze"):
        verify_dir = tmp_path / "units"
        verify_dir.mkdir()
        text = UNIT.read_text().replace(
            "/usr/local/bin/mkwfs", str(Path(sys.executable).parent / "mkwfs")
        )
        (verify_dir / "mkwfs@.service").write_text(text)
        checked = subprocess.run(
            ["systemd-analyze", "verify", "--man=no", str(verify_dir / "mkwfs@mnt-x.service")],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert checked.returncode == 0 and not checked.stderr.strip(), checked.stderr

    # Run ExecStart as systemd would: %f is the mount point, NOTIFY_SOCKET is set, the
    # settings come from MKWFS_* variables (not /etc, as the unit's Environment= says).
    command = shlex.split(unit["Service"]["ExecStart"].replace("%f", str(mountpoint)))
    assert command[0] == "/usr/local/bin/mkwfs"
    command[:1] = [sys.executable, "-m", "mkwfs"]
    notify_path = tmp_path / "notify"
    env = dict(mkwfs_env, NOTIFY_SOCKET=str(notify_path), MKWFS_API_URL=emulator_url,
               MKWFS_CACHE_DIR=str(tmp_path / "cache"))  # fmt: skip
    log = tmp_path / "unit.log"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))
        notify.settimeout(30)
        with open(log, "wb") as out:
            process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL)  # fmt: skip
        mounted = MountedFs(mountpoint, tmp_path / "cache", log, process)
        mounts.append(mounted)
        mounted.start_watchdog(120)
        ready = notify.recv(4096).decode()
        assert "READY=1" in ready.splitlines(), ready
        assert is_mounted(mountpoint), "READY=1 came before the mount"
        assert str(DEMO_BUILD) in os.listdir(mountpoint / "builds")

        process.send_signal(signal.SIGTERM)  # systemctl stop
        assert notify.recv(4096).decode() == "STOPPING=1"
        assert process.wait(timeout=15) == 0
    assert not is_mounted(mountpoint)


# --- logging and secrets --------------------------------------------------------------------


def test_quiet_by_default_debug_logs_each_request_and_no_secret_anywhere(
    mount_fs: MountFactory,
    bg_mount: Callable[..., tuple[MountedFs, subprocess.CompletedProcess[str]]],
    emulator: Emulator,
    mkwfs_env: dict[str, str],
) -> None:
    quiet = mount_fs()
    name = next(iter(plain_names(emulator, DEMO_BUILD)))
    read_cold(quiet.path / "builds" / str(DEMO_BUILD) / name)
    assert quiet.log().strip() == "", quiet.log()

    password = emulator.config.password
    env = {k: v for k, v in mkwfs_env.items() if k != "MKWFS_TOKEN"}
    env["MKWFS_PASSWORD"] = password
    mounted, done = bg_mount("--debug", "--email", emulator.config.email, env=env)
    assert done.returncode == 0, done.stderr
    path = mounted.path / "builds" / str(DEMO_BUILD) / name
    size = len(read_cold(path))
    download_id = plain_names(emulator, DEMO_BUILD)[name]["id"]
    exchange = f"GET /api/v1/downloads/{download_id} ->"
    # Logged when the response is closed, which may be just after the reader got its bytes.
    wait_for(lambda: exchange in mounted.log(), timeout=10)
    log = mounted.log()
    assert "POST /authentication -> 201" in log
    listing = f"GET /api/v1/downloads?build_id={DEMO_BUILD}&%24limit={PAGE_LIMIT} -> 200, "
    assert listing in log
    lines = [line for line in log.splitlines() if exchange in line]
    # method and path -> status, bytes, time (a body may come as 200, or as 206 to a Range)
    assert lines and re.search(rf"-> 20[06], {size} bytes, \d+ ms$", lines[0]), lines

    pids = daemon_pids(mounted.path)
    assert pids
    for pid in pids:
        for what in ("cmdline", "environ"):
            assert password.encode() not in Path(f"/proc/{pid}/{what}").read_bytes(), what
        limits = Path(f"/proc/{pid}/limits").read_text()
        assert any(line.startswith("Max core file size") and " 0 " in line
                   for line in limits.splitlines()), limits  # fmt: skip
    assert password not in log and "eyJ" not in log  # "eyJ": how every JWT starts


def test_no_secret_in_logs_ps_proc_status_or_cache_files_even_after_a_relogin(
    bg_mount: Callable[..., tuple[MountedFs, subprocess.CompletedProcess[str]]],
    emulator: Emulator,
    mkwfs_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """A token that expires, a login and failures on the way, all logged with --debug: no
    token or password anywhere another process or file could show it. The cache directory
    is made 0700."""
    token = emulator.issue_token(lifetime=2)
    password = emulator.config.password
    env = dict(mkwfs_env, MKWFS_TOKEN=token, MKWFS_PASSWORD=password)
    mounted, done = bg_mount("--debug", "--email", emulator.config.email, env=env)
    assert done.returncode == 0, done.stderr
    build_dir = mounted.path / "builds" / str(DEMO_BUILD)
    emulator.fail_next(LIST, 403)
    assert not os.access(build_dir / "x", os.F_OK)  # a failure logged with its message
    threading.Event().wait(2.5)  # the token expires: mkwfs logs in with the password
    for name in plain_names(emulator, DEMO_BUILD):
        read_cold(build_dir / name)
    status = mkwfs("status", "--json", mounted.path, env=mkwfs_env)
    assert status.returncode == 0, status.stderr
    log = mounted.log()
    assert "POST /authentication -> 201" in log

    secrets = [token.encode(), password.encode(), b"eyJ"]  # "eyJ": how every JWT starts
    ps = subprocess.run(["ps", "axww", "-o", "args"], capture_output=True, timeout=30, check=True)
    shown = {"log": log.encode(), "status": status.stdout.encode(), "ps": ps.stdout}
    for pid in daemon_pids(mounted.path):
        for what in ("cmdline", "environ"):
            shown[f"/proc/{pid}/{what}"] = Path(f"/proc/{pid}/{what}").read_bytes()
    for path in (tmp_path / "cache").rglob("*"):
        if path.is_file():
            shown[str(path)] = path.read_bytes()
    for where, text in shown.items():
        for secret in secrets:
            assert secret not in text, f"a secret in {where}"
    for directory in (tmp_path / "cache", tmp_path / "cache" / "content"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory


#: Reads a file relative to a directory descriptor it inherited, so that no directory above
#: the mount (the test's private tmp_path) stands in the way: prints its length or the errno.
_READ_AS_OTHER = """
import os, sys
try:
    fd = os.open(sys.argv[2], os.O_RDONLY, dir_fd=int(sys.argv[1]))
    print(len(os.read(fd, 1 << 24)))
except OSError as exc:
    print("errno", exc.errno)
"""


def read_as(uid: int, gid: int, mountpoint: Path, relative: str) -> str:
    """What user ``uid`` (group ``gid``, no others) gets reading ``relative`` in the mount."""
    directory = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY)
    try:
        done = subprocess.run(
            ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
             "/usr/bin/python3", "-c", _READ_AS_OTHER, str(directory), relative],
            capture_output=True, text=True, timeout=30, check=True, pass_fds=(directory,),
        )  # fmt: skip
    finally:
        os.close(directory)
    return done.stdout.strip()


def test_other_users_are_refused_without_allow_other_and_meet_the_modes_with_it(
    mount_fs: MountFactory, emulator: Emulator
) -> None:
    require(shutil.which("setpriv") is not None and os.geteuid() == 0, "needs root and setpriv")
    name = next(iter(plain_names(emulator, DEMO_BUILD)))
    relative = f"builds/{DEMO_BUILD}/{name}"
    size = len(emulator.body_path(plain_names(emulator, DEMO_BUILD)[name]["id"]).read_bytes())
    nobody, nogroup, stranger = 65534, 65534, 12345

    private = mount_fs().path
    assert len((private / relative).read_bytes()) == size  # the user who mounted reads
    assert read_as(nobody, nogroup, private, relative) == f"errno {errno.EACCES}"

    shared = mount_fs("--allow-other", "--gid", str(nogroup), "--umask", "027").path
    assert stat.S_IMODE((shared / relative).stat().st_mode) == 0o440
    assert read_as(nobody, nogroup, shared, relative) == str(size)  # the group may read
    assert read_as(stranger, stranger, shared, relative) == f"errno {errno.EACCES}"


def test_owner_modes_and_raw_fuse_options(mount_fs: MountFactory, emulator: Emulator) -> None:
    mnt = mount_fs("--uid", "1234", "--gid", "4321", "--umask", "027", "--allow-other",
                   "-o", "noexec,noauto").path  # fmt: skip
    name = next(iter(plain_names(emulator, DEMO_BUILD)))
    st = os.stat(mnt / "builds" / str(DEMO_BUILD) / name)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (1234, 4321, 0o440)
    assert os.stat(mnt / "builds").st_mode & 0o777 == 0o550
    options = next(
        line.split()[3] for line in Path("/proc/self/mounts").read_text().splitlines()
        if line.split()[1] == str(mnt)
    )  # fmt: skip
    assert {"ro", "noexec", "allow_other", "default_permissions"} <= set(options.split(",")), (
        options
    )
