"""Command line: argv, environment and config file -> Config; logging; the daemon; the
commands that talk to a running mount; errors -> one line on stderr and an exit code.

Exit codes: 0 done; 1 failed (a startup check, the server, the mount, or ``status`` found
the server out of reach); 2 bad usage or configuration (options, environment, config file).

Without ``--foreground``, ``mkwfs mount`` runs the startup checks, then starts a daemon
(``python -m mkwfs _serve``) in a new session with stdin, stdout and stderr detached from
the caller, hands it the configuration (secrets included) over a pipe rather than argv or
the environment, and returns once the daemon reports the mount ready, or with its error.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import getpass
import json
import logging
import os
import resource
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

import trio

from mkwfs import __version__
from mkwfs.config import (
    DEFAULT_API_URL,
    DEFAULT_DEMO_BIG_FILE_SIZE,
    OPTION_BY_NAME,
    SECRET_VARIABLES,
    Config,
    Setting,
    default_cache_dir,
    describe,
    login_token_path,
    options_of,
    resolve,
)
from mkwfs.fuse import control
from mkwfs.fuse.checks import (
    NO_FUSERMOUNT,
    StartupError,
    check_allow_other,
    check_fuse,
    check_mountpoint,
    mkwfs_root,
    mounted_type,
)
from mkwfs.remote.api import Credentials
from mkwfs.remote.errors import (
    AuthenticationError,
    ConfigError,
    HTTPStatusError,
    LoginFailed,
    MkwfsError,
    NotFound,
    PermissionDenied,
    ProtocolError,
    TokenRejected,
    TransportError,
)

log = logging.getLogger("mkwfs")

#: How long ``mkwfs mount`` waits for the daemon to report the mount ready.
READY_TIMEOUT = 120.0
#: How long ``mkwfs umount`` waits for the daemon to exit after the unmount.
DAEMON_EXIT_TIMEOUT = 15.0
#: Variables the daemon must not inherit: they hold secrets (it gets them over a pipe).
_SECRET_ENV = tuple(SECRET_VARIABLES.values())

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
_DAEMON_COMMAND = (sys.executable, "-m", "mkwfs", "_serve")

_MOUNT_NAMES = [o.name for o in options_of("file", "server", "mount")]
_DEMO_NAMES = [o.name for o in options_of("mount")]
_LOGIN_NAMES = [o.name for o in options_of("file", "server")]
_FILE_NAMES = [o.name for o in options_of("file")]


# -- the parser ----------------------------------------------------------------------------


def _add_options(parser: argparse.ArgumentParser, names: Sequence[str]) -> None:
    for name in names:
        option = OPTION_BY_NAME[name]
        where = f"env {option.variable}"
        if option.in_file:
            where += f", config key {name}"
        text = f"{option.help} ({where}; default: {option.default_text or 'none'})"
        if option.metavar is None:
            parser.add_argument(
                option.flag, dest=name, action=argparse.BooleanOptionalAction, help=text
            )
        else:
            parser.add_argument(option.flag, dest=name, metavar=option.metavar, help=text)


def _add_raw_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o",
        dest="raw_options",
        action="append",
        default=[],
        metavar="OPT[,OPT...]",
        help="options as in fstab: any long option as foo_bar=VALUE (or a switch as foo_bar), "
        "mount(8) options such as noauto or _netdev are ignored, anything else goes to "
        "FUSE as a raw mount option",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mkwfs",
        description="Mount MetaKraftwerk build results as a read-only filesystem.",
        epilog="Exit codes: 0 done, 1 failed, 2 bad usage or configuration. "
        "`mkwfs COMMAND --help` explains each command's options.",
    )
    parser.add_argument("--version", action="version", version=f"mkwfs {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, description: str = "") -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, description=description or help)

    mount = command(
        "mount",
        "mount the MetaKraftwerk API at MOUNTPOINT",
        "Mount the MetaKraftwerk API at MOUNTPOINT and return once it is ready (the daemon "
        "keeps serving in the background), or serve in the foreground with --foreground. "
        "Every option can also be set as MKWFS_* variable and in the config file; "
        "precedence: flags, -o, environment, config file profile, config file, defaults.",
    )
    mount.add_argument("mountpoint", metavar="MOUNTPOINT", help="an existing empty directory")
    _add_options(mount, _MOUNT_NAMES)
    _add_raw_options(mount)

    umount = command("umount", "unmount a mounted mkwfs (the daemon then exits)")
    umount.add_argument("mountpoint", metavar="MOUNTPOINT", help="where mkwfs is mounted")
    umount.add_argument(
        "-z", "--lazy", action="store_true", help="detach now even if busy (fusermount3 -uz)"
    )

    demo = command(
        "demo",
        "mount a built-in emulator of the API with sample builds",
        "Start the built-in emulator of the API on 127.0.0.1 (in the daemon) and mount it; "
        "no credentials needed. The config file is not read.",
    )
    demo.add_argument("mountpoint", metavar="MOUNTPOINT", help="an existing empty directory")
    _add_options(demo, _DEMO_NAMES)
    _add_raw_options(demo)
    demo.add_argument(
        "--big-file-size",
        type=int,
        default=DEFAULT_DEMO_BIG_FILE_SIZE,
        help="size in bytes of the demo's big ZIP in build 5141 (default %(default)s)",
    )

    status = command(
        "status",
        "show a mount's state: server reachable or not, requests, bytes, errors, cache use",
        "Ask the daemon of MOUNTPOINT for its state; it asks the server for the builds to "
        "tell whether it is reachable. Exit 0 when it is, 1 when not or nothing is mounted.",
    )
    status.add_argument("mountpoint", metavar="MOUNTPOINT", help="where mkwfs is mounted")
    status.add_argument("--json", action="store_true", help="print the state as JSON")

    refresh = command(
        "refresh",
        "drop a mount's cached listings now",
        "Drop the cached listings of the mount at MOUNTPOINT (the same as sending SIGHUP to "
        "its daemon), so the next access asks the server. With PATH (inside the mount), the "
        "kernel's cached attributes of PATH are dropped too.",
    )
    refresh.add_argument("mountpoint", metavar="MOUNTPOINT", help="where mkwfs is mounted")
    refresh.add_argument("path", metavar="PATH", nargs="?", help="a directory or file in it")

    prefetch = command(
        "prefetch",
        "download files into the cache for offline use",
        "Read every file at or under each PATH (on an mkwfs mount) once, so that its daemon "
        "caches it; shows a progress bar on a terminal.",
    )
    prefetch.add_argument(
        "paths", metavar="PATH", nargs="+", type=Path, help="a file or directory on the mount"
    )
    prefetch.add_argument(
        "-j", "--jobs", type=int, default=4, help="files read at once (default %(default)s)"
    )

    login = command(
        "login",
        "check credentials and keep a token for later mounts",
        "Log in with --email and a password (from --password-file, MKWFS_PASSWORD, or a "
        "prompt), or check a token (--token-file, MKWFS_TOKEN); then keep the token, mode "
        "0600, in $XDG_CONFIG_HOME/mkwfs/token (token.PROFILE with --profile), where mount "
        "finds it when it is given no other credentials.",
    )
    _add_options(login, _LOGIN_NAMES)

    logout = command("logout", "forget the token mkwfs login kept")
    _add_options(logout, _FILE_NAMES)

    config = command(
        "config",
        "show the effective settings, secrets masked",
        "Show each setting mount would use with these options, and where it comes from.",
    )
    config.add_argument("mountpoint", metavar="MOUNTPOINT", nargs="?", help="shown if given")
    _add_options(config, _MOUNT_NAMES)
    _add_raw_options(config)

    serve = commands.add_parser("_serve")  # internal: the daemon, or a foreground mount
    outcome = serve.add_mutually_exclusive_group(required=True)
    outcome.add_argument("--ready-fd", type=int)  # the daemon: config on stdin
    outcome.add_argument("--config-fd", type=int)  # in the foreground: config on this fd
    serve.add_argument("mountpoint", nargs="?")
    return parser


def _mountpoint(argument: str) -> Path:
    """A mount point as the mount table shows it: absolute, symbolic links resolved."""
    return Path(os.path.realpath(argument))


def _flags(args: argparse.Namespace, names: Sequence[str]) -> dict[str, object]:
    return {name: getattr(args, name, None) for name in names}


# -- configuration ---------------------------------------------------------------------------


def _mount_settings(
    args: argparse.Namespace, names: Sequence[str], *, demo: bool = False
) -> tuple[dict[str, Setting], tuple[str, ...]]:
    settings, fuse_options = resolve(
        flags=_flags(args, names),
        raw_options=args.raw_options,
        env=os.environ,
        names=names,
        use_file=not demo,
    )
    if demo and "cache_dir" not in settings:
        settings["cache_dir"] = Setting(default_cache_dir("mkwfs-demo"), "default")
    return settings, fuse_options


def _config_from_args(args: argparse.Namespace) -> Config:
    """The mount's Config from the command line, the environment and the config file."""
    demo = args.command == "demo"
    settings, fuse_options = _mount_settings(args, _DEMO_NAMES if demo else _MOUNT_NAMES, demo=demo)
    extra: dict[str, Any] = {}
    if demo:
        extra = {"demo": True, "demo_big_file_size": args.big_file_size}
    return Config.from_settings(_mountpoint(args.mountpoint), settings, fuse_options, **extra)


def _startup_checks(config: Config) -> None:
    """What can be checked before the daemon starts; raises ``StartupError``."""
    check_mountpoint(config.mountpoint)
    check_fuse()
    if config.allow_other:
        check_allow_other()


def startup_message(exc: MkwfsError, config: Config) -> str:
    """One actionable line for a failure to start serving ``config``."""
    return _server_message(exc, config.api_url, config.email, config.token_source)


def _server_message(exc: MkwfsError, url: str, email: str | None, token_source: str | None) -> str:
    if isinstance(exc, LoginFailed):
        return (
            f"the server at {url} refused the login of {email}: check the email and "
            "the password (--password-file or MKWFS_PASSWORD)"
        )
    if isinstance(exc, TokenRejected):
        return (
            f"the server at {url} rejected the token from {token_source} (expired or "
            "wrong): run `mkwfs login`, or give a new token (--token-file or MKWFS_TOKEN)"
        )
    if isinstance(exc, AuthenticationError):
        return f"the server at {url} refused to authenticate: {exc}"
    if isinstance(exc, TransportError):
        return (
            f"cannot reach the MetaKraftwerk API at {url}: {exc}; check --api-url and the network"
        )
    if isinstance(exc, NotFound | ProtocolError):
        return (
            f"{url} answers, but not as the MetaKraftwerk API ({exc}); check --api-url: it is "
            f"the server's root, such as {DEFAULT_API_URL}"
        )
    if isinstance(exc, PermissionDenied):
        return f"the server at {url} does not let this account list builds: {exc}"
    if isinstance(exc, HTTPStatusError):
        return f"the MetaKraftwerk API at {url} failed: {exc}"
    return str(exc)


# -- mounting --------------------------------------------------------------------------------


def _setup_logging(config: Config) -> None:
    handler: logging.Handler
    if config.log_file is not None:
        config.log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(config.log_file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if config.debug else logging.WARNING)
    # httpx logs every request at INFO; mkwfs.api logs them itself, without noise.
    for noisy in ("httpx", "httpcore", "hpack"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@contextlib.contextmanager
def _server_for(config: Config) -> Iterator[Config]:
    """The configuration to mount with: for the demo, an emulator is started first."""
    if not config.demo:
        yield config
        return
    from mkwfs.emulator import Emulator, EmulatorConfig, serve_in_thread

    emulator = Emulator(EmulatorConfig(big_file_size=config.demo_big_file_size))
    with serve_in_thread(emulator) as url:
        yield config.with_server(url, emulator.issue_token())


def _serve(config: Config, on_ready: Callable[[], None]) -> None:
    """Serve the mount in this process. No core dumps: the process holds secrets."""
    from mkwfs.fuse.mount import serve

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    with _server_for(config) as effective:
        trio.run(serve, effective, on_ready)


def _run_foreground(config: Config) -> int:
    if any(name in os.environ for name in _SECRET_ENV):
        _exec_without_secrets(config)
    _setup_logging(config)
    try:
        _serve(config, lambda: log.info("ready"))
    except MkwfsError as exc:
        print(f"mkwfs: {startup_message(exc, config)}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _exec_without_secrets(config: Config) -> NoReturn:
    """Become ``mkwfs _serve`` with the configuration on a pipe and the secret variables
    out of the environment, which ``/proc/PID/environ`` and ``ps e`` show for as long as
    the process lives. exec keeps the process (its pid, its terminal, systemd's watch)."""
    read_fd, write_fd = os.pipe()
    with os.fdopen(write_fd, "wb") as pipe:  # a pipe holds 64 KiB; a config is a few
        pipe.write(config.to_json().encode())
    os.set_inheritable(read_fd, True)
    env = {k: v for k, v in os.environ.items() if k not in _SECRET_ENV}
    argv = [*_DAEMON_COMMAND, "--config-fd", str(read_fd), str(config.mountpoint)]
    os.execve(sys.executable, argv, env)


def _run_exec_foreground(config_fd: int) -> int:
    """``_exec_without_secrets`` arrives here."""
    with os.fdopen(config_fd, "rb") as pipe:
        config = Config.from_json(pipe.read().decode())
    return _run_foreground(config)


def _run_daemon(ready_fd: int) -> int:
    """The daemon: configuration from stdin, one line of outcome to ``ready_fd``."""
    config = Config.from_json(sys.stdin.read())
    _setup_logging(config)
    reported = False

    def report(line: str) -> None:
        nonlocal reported
        if reported:
            return
        reported = True
        with contextlib.suppress(OSError):
            os.write(ready_fd, line.encode("utf-8", "replace") + b"\n")
            os.close(ready_fd)

    try:
        _serve(config, lambda: report("ready"))
    except MkwfsError as exc:
        message = startup_message(exc, config)
        log.error("%s", message)
        report(f"error: {message}")
        return EXIT_FAILED
    except BaseException as exc:
        log.exception("mkwfs daemon failed")
        report(f"error: the daemon failed: {exc!r}")
        raise
    return EXIT_OK


def _spawn_daemon(config: Config) -> int:
    """Start the daemon and wait for its word; the daemon keeps none of our descriptors."""
    config.cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    log_path = config.log_file or config.cache_dir / "mkwfs.log"
    config = replace(config, log_file=log_path)
    env = {k: v for k, v in os.environ.items() if k not in _SECRET_ENV}
    read_fd, write_fd = os.pipe()
    try:
        proc = subprocess.Popen(
            # The mount point in argv only tells ps (and fstab users) what a daemon serves.
            [*_DAEMON_COMMAND, "--ready-fd", str(write_fd), str(config.mountpoint)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(write_fd,),
            start_new_session=True,
            env=env,
            cwd="/",
        )
    finally:
        os.close(write_fd)
    assert proc.stdin is not None
    with contextlib.suppress(BrokenPipeError):
        proc.stdin.write(config.to_json().encode())
        proc.stdin.close()
    with os.fdopen(read_fd, "rb") as ready:
        readable, _, _ = select.select([ready], [], [], READY_TIMEOUT)
        line = ready.readline().decode("utf-8", "replace").strip() if readable else ""
    if line == "ready":
        if config.demo:
            print(
                f"mkwfs demo mounted on {config.mountpoint}\n"
                f"  try:       ls -l {config.mountpoint}/builds/5139\n"
                f"  unmount:   mkwfs umount {config.mountpoint}"
            )
        return EXIT_OK
    if not line:
        proc.kill()
        line = f"error: the daemon did not report ready; see {log_path}"
    print(f"mkwfs: {line.removeprefix('error: ')}", file=sys.stderr)
    return EXIT_FAILED


def _mount(args: argparse.Namespace) -> int:
    config = _config_from_args(args)
    _startup_checks(config)
    if config.foreground:
        return _run_foreground(config)
    return _spawn_daemon(config)


def _umount(args: argparse.Namespace) -> int:
    mountpoint = _mountpoint(args.mountpoint)
    if mounted_type(mountpoint) is None:
        raise StartupError(f"{mountpoint} is not mounted")
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    if tool is None:
        raise StartupError(NO_FUSERMOUNT)
    flags = "-uz" if args.lazy else "-u"
    result = subprocess.run(
        [tool, flags, str(mountpoint)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        detail = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed"
        hint = "; close what uses it, or use --lazy" if "busy" in detail.lower() else ""
        raise StartupError(f"cannot unmount {mountpoint}: {detail}{hint}")
    deadline = time.monotonic() + DAEMON_EXIT_TIMEOUT
    while control.is_served(mountpoint) and time.monotonic() < deadline:
        time.sleep(0.05)
    return EXIT_OK


# -- commands on a running mount ---------------------------------------------------------------


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _ago(when: float | None, now: float) -> str:
    if when is None:
        return "never"
    return f"{max(0.0, now - when):.0f} s ago"


def _format_status(state: Mapping[str, Any]) -> str:
    now = time.time()
    api, cache = state["api"], state["cache"]
    started = dt.datetime.fromtimestamp(state["mounted_at"]).isoformat(timespec="seconds")
    profile = f" (profile {state['profile']})" if state.get("profile") else ""
    reach = "reachable" if api["reachable"] else f"NOT reachable: {api['error']}"
    stale = state.get("stale") or {}
    if stale.get("serving"):
        reach += (
            f"; serving cached listings since {_ago(stale['since'], now)} "
            f"({stale['served']} stale answers)"
        )
    requests = api["requests"]
    by_kind = ", ".join(f"{k} {v}" for k, v in sorted(requests.items()))
    failures = api["failures"]
    errors = (
        ", ".join(f"{k} x{v}" for k, v in sorted(failures.items()))
        + f"; last {_ago(api['last_failure'], now)}: {api['last_error']}"
        if failures
        else "none"
    )
    return "\n".join([
        f"mount:     {state['mountpoint']} (mkwfs {state['version']}, pid {state['pid']}, "
        f"since {started})",
        f"server:    {state['api_url']}{profile}: {reach}",
        f"requests:  {sum(requests.values())} ({by_kind or 'none'}), "
        f"{_size(api['bytes_received'])} received; last success {_ago(api['last_success'], now)}",
        f"errors:    {errors}",
        f"cache:     {cache['dir']}: {_size(cache['cached_bytes'])} "
        f"({'of ' + _size(cache['max_bytes']) if cache['max_bytes'] else 'no bound'}); "
        f"{cache['transfers']} downloads "
        f"({cache['failed_transfers']} failed, {_size(cache['bytes_received'])}), "
        f"{cache['reads']} reads",
    ])  # fmt: skip


def _status(args: argparse.Namespace) -> int:
    mountpoint = _mountpoint(args.mountpoint)
    state = control.request(mountpoint, {"command": "status"})
    print(json.dumps(state, indent=2) if args.json else _format_status(state))
    return EXIT_OK if state["api"]["reachable"] else EXIT_FAILED


def _refresh(args: argparse.Namespace) -> int:
    mountpoint = _mountpoint(args.mountpoint)
    message: dict[str, Any] = {"command": "refresh"}
    if args.path is not None:
        path = Path(os.path.abspath(mountpoint / args.path))
        if path != mountpoint and mountpoint not in path.parents:
            raise ConfigError(f"{args.path} is not inside {mountpoint}")
        if not control.is_served(mountpoint):
            raise control.ControlError(f"no mkwfs daemon serves {mountpoint}")
        try:
            message["inode"] = os.stat(path).st_ino
        except OSError as exc:
            raise StartupError(f"{path}: {exc.strerror}") from exc
    control.request(mountpoint, message)
    return EXIT_OK


def _prefetch(args: argparse.Namespace) -> int:
    from mkwfs.cli.prefetch import prefetch

    roots = {mkwfs_root(path) for path in args.paths}
    result = prefetch(args.paths, jobs=max(1, args.jobs))
    for path, error in result.failures:
        print(f"mkwfs: {path}: {error}", file=sys.stderr)
    where = ", ".join(str(root) for root in sorted(roots))
    print(f"prefetched {result.files} files ({_size(result.bytes)}) into the cache of {where}")
    return EXIT_FAILED if result.failures else EXIT_OK


# -- login -----------------------------------------------------------------------------------


def _token_expiry(token: str) -> dt.datetime | None:
    """The ``exp`` claim of a JWT, unverified (for information only)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return dt.datetime.fromtimestamp(float(claims["exp"]))
    except (IndexError, ValueError, KeyError, TypeError):
        return None


async def _checked_token(api_url: str, credentials: Credentials) -> str:
    """Log in (with email and password) or use the token, list the builds to prove it
    works, and return the token."""
    from mkwfs.fuse.mount import open_http_client
    from mkwfs.remote.api import ApiClient

    async with open_http_client() as http:
        api = ApiClient(http, api_url, credentials)
        if credentials.can_login:
            await api.login()
        await api.list_builds()
        token = api.token
    assert token is not None
    return token


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600 from the first byte, replacing it whole."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _login(args: argparse.Namespace) -> int:
    settings, _ = resolve(
        flags=_flags(args, _LOGIN_NAMES), env=os.environ, names=_LOGIN_NAMES, use_login=False
    )
    values = {name: setting.value for name, setting in settings.items()}
    api_url = str(values.get("api_url", DEFAULT_API_URL)).rstrip("/")
    email, password, token = values.get("email"), values.get("password"), values.get("token")
    if email and not password:
        if not sys.stdin.isatty():
            raise ConfigError("--email needs a password: --password-file or MKWFS_PASSWORD")
        password = getpass.getpass(f"password for {email} at {api_url}: ")
    if not email and not token:
        raise ConfigError(
            "nothing to log in with: give --email (with --password-file or MKWFS_PASSWORD, "
            "or type the password), or a token (--token-file or MKWFS_TOKEN)"
        )
    credentials = Credentials(token=None if email else token, email=email, password=password)
    token_source = settings["token"].source if "token" in settings else None
    try:
        kept = trio.run(_checked_token, api_url, credentials)
    except MkwfsError as exc:
        raise StartupError(_server_message(exc, api_url, email, token_source)) from exc
    profile = values.get("profile")
    path = login_token_path(profile)
    _write_private(path, kept + "\n")
    expiry = _token_expiry(kept)
    until = f", valid until {expiry.isoformat(timespec='minutes')}" if expiry else ""
    who = f" as {email}" if email else ""
    print(f"logged in to {api_url}{who}; the token is kept in {path}{until}")
    return EXIT_OK


def _logout(args: argparse.Namespace) -> int:
    settings, _ = resolve(flags=_flags(args, _FILE_NAMES), env=os.environ, names=_FILE_NAMES)
    path = login_token_path(settings["profile"].value if "profile" in settings else None)
    try:
        path.unlink()
    except FileNotFoundError:
        print(f"not logged in (no {path})")
        return EXIT_OK
    print(f"removed {path}")
    return EXIT_OK


def _show_config(args: argparse.Namespace) -> int:
    settings, fuse_options = _mount_settings(args, _MOUNT_NAMES)
    settings.setdefault("cache_dir", Setting(default_cache_dir(), "default"))
    rows = describe(settings, _MOUNT_NAMES)
    if args.mountpoint is not None:
        rows.insert(0, ("mountpoint", str(_mountpoint(args.mountpoint)), "argument"))
    if fuse_options:
        rows.append(("fuse options", ",".join(fuse_options), "-o"))
    width = max(len(name) for name, _, _ in rows)
    value_width = min(48, max(len(value) for _, value, _ in rows))
    for name, value, source in rows:
        print(f"{name:<{width}}  {value:<{value_width}}  ({source})")
    return EXIT_OK


# -- main ------------------------------------------------------------------------------------


_COMMANDS: Mapping[str, Callable[[argparse.Namespace], int]] = {
    "mount": _mount,
    "demo": _mount,
    "umount": _umount,
    "status": _status,
    "refresh": _refresh,
    "prefetch": _prefetch,
    "login": _login,
    "logout": _logout,
    "config": _show_config,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "_serve":
        if args.config_fd is not None:
            return _run_exec_foreground(args.config_fd)
        return _run_daemon(args.ready_fd)
    try:
        return _COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"mkwfs: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except MkwfsError as exc:
        print(f"mkwfs: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
