"""Command line: argv and environment -> Config, logging, the daemon, errors -> exit codes.

Exit codes: 0 done; 1 the mount failed or ended with an error; 2 bad usage or configuration.

Without ``--foreground``, ``mkwfs mount`` starts a daemon (``python -m mkwfs _serve``) in a
new session with stdin, stdout and stderr detached from the caller, hands it the
configuration (secrets included) over a pipe rather than argv or the environment, and
returns once the daemon reports the mount ready, or with the daemon's error.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import select
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import trio

from mkwfs import __version__
from mkwfs.config import (
    DEFAULT_API_URL,
    DEFAULT_DEMO_BIG_FILE_SIZE,
    DEFAULT_TTL,
    Config,
    default_cache_dir,
    read_secret_file,
)
from mkwfs.errors import ConfigError, MkwfsError

log = logging.getLogger("mkwfs")

#: How long ``mkwfs mount`` waits for the daemon to report the mount ready.
READY_TIMEOUT = 120.0
_SECRET_VARIABLES = ("MKWFS_TOKEN", "MKWFS_PASSWORD")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mkwfs",
        description="Mount MetaKraftwerk build results as a read-only filesystem.",
    )
    parser.add_argument("--version", action="version", version=f"mkwfs {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add_common(sub: argparse.ArgumentParser, cache_default: str) -> None:
        sub.add_argument("mountpoint", metavar="MOUNTPOINT", help="an existing empty directory")
        sub.add_argument(
            "--cache-dir",
            type=Path,
            help=f"where file contents are cached (env MKWFS_CACHE_DIR; default {cache_default})",
        )
        sub.add_argument(
            "--dir-ttl",
            type=float,
            default=DEFAULT_TTL,
            help="seconds a directory listing is cached (default %(default)s)",
        )
        sub.add_argument(
            "--attr-ttl",
            type=float,
            default=DEFAULT_TTL,
            help="seconds the kernel caches file attributes (default %(default)s)",
        )
        sub.add_argument(
            "--foreground", action="store_true", help="serve in this process until unmounted"
        )
        sub.add_argument("--debug", action="store_true", help="log every request")
        sub.add_argument(
            "--log-file",
            type=Path,
            help="log here (default: stderr in the foreground, CACHE_DIR/mkwfs.log otherwise)",
        )

    mount = commands.add_parser("mount", help="mount the MetaKraftwerk API at MOUNTPOINT")
    add_common(mount, "$XDG_CACHE_HOME/mkwfs")
    mount.add_argument(
        "--api-url",
        help=f"the server's base URL (env MKWFS_API_URL; default {DEFAULT_API_URL})",
    )
    mount.add_argument(
        "--token-file", type=Path, help="file holding an access token (or env MKWFS_TOKEN)"
    )
    mount.add_argument("--email", help="log in with this email (env MKWFS_EMAIL)")
    mount.add_argument(
        "--password-file",
        type=Path,
        help="file holding the password for --email (or env MKWFS_PASSWORD)",
    )

    demo = commands.add_parser(
        "demo", help="mount a built-in emulator of the API with sample builds"
    )
    add_common(demo, "$XDG_CACHE_HOME/mkwfs-demo")
    demo.add_argument(
        "--big-file-size",
        type=int,
        default=DEFAULT_DEMO_BIG_FILE_SIZE,
        help="size in bytes of the demo's big ZIP (default %(default)s)",
    )

    umount = commands.add_parser("umount", help="unmount a mounted mkwfs")
    umount.add_argument("mountpoint", metavar="MOUNTPOINT")

    serve = commands.add_parser("_serve")  # internal: the daemon
    serve.add_argument("--ready-fd", type=int, required=True)
    return parser


def _config_from_args(args: argparse.Namespace) -> Config:
    env = os.environ
    demo = args.command == "demo"
    token = env.get("MKWFS_TOKEN") or None
    password = env.get("MKWFS_PASSWORD") or None
    email = None
    api_url = DEFAULT_API_URL
    if not demo:
        if args.token_file is not None:
            token = read_secret_file(args.token_file, "token")
        if args.password_file is not None:
            password = read_secret_file(args.password_file, "password")
        email = args.email or env.get("MKWFS_EMAIL") or None
        api_url = args.api_url or env.get("MKWFS_API_URL") or DEFAULT_API_URL
    cache_dir = args.cache_dir or (
        Path(env["MKWFS_CACHE_DIR"])
        if env.get("MKWFS_CACHE_DIR")
        else default_cache_dir("mkwfs-demo" if demo else "mkwfs")
    )
    mountpoint = Path(os.path.abspath(args.mountpoint))
    if not mountpoint.is_dir():
        raise ConfigError(f"mountpoint {mountpoint} is not an existing directory")
    return Config(
        mountpoint=mountpoint,
        api_url=api_url.rstrip("/"),
        token=None if demo else token,
        email=email,
        password=None if demo else password,
        cache_dir=Path(os.path.abspath(cache_dir)),
        dir_ttl=args.dir_ttl,
        attr_ttl=args.attr_ttl,
        foreground=args.foreground,
        debug=args.debug,
        log_file=Path(os.path.abspath(args.log_file)) if args.log_file else None,
        demo=demo,
        demo_big_file_size=getattr(args, "big_file_size", DEFAULT_DEMO_BIG_FILE_SIZE),
    )


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
    from mkwfs.mount import serve

    with _server_for(config) as effective:
        trio.run(serve, effective, on_ready)


def _run_foreground(config: Config) -> int:
    _setup_logging(config)
    try:
        _serve(config, lambda: log.info("ready"))
    except MkwfsError as exc:
        print(f"mkwfs: {exc}", file=sys.stderr)
        return 1
    return 0


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
        log.error("%s", exc)
        report(f"error: {exc}")
        return 1
    except BaseException as exc:
        log.exception("mkwfs daemon failed")
        report(f"error: the daemon failed: {exc!r}")
        raise
    return 0


def _spawn_daemon(config: Config) -> int:
    """Start the daemon and wait for its word; the daemon keeps none of our descriptors."""
    config.cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    log_path = config.log_file or config.cache_dir / "mkwfs.log"
    config = replace(config, log_file=log_path)
    env = {k: v for k, v in os.environ.items() if k not in _SECRET_VARIABLES}
    read_fd, write_fd = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mkwfs", "_serve", "--ready-fd", str(write_fd)],
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
        return 0
    if not line:
        proc.kill()
        line = f"error: the daemon did not report ready; see {log_path}"
    print(f"mkwfs: {line.removeprefix('error: ')}", file=sys.stderr)
    return 1


def _umount(mountpoint: str) -> int:
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    if tool is None:
        print("mkwfs: fusermount3 not found (install the fuse3 package)", file=sys.stderr)
        return 1
    result = subprocess.run([tool, "-u", mountpoint], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        print(f"mkwfs: {result.stderr.strip() or 'unmount failed'}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "_serve":
        return _run_daemon(args.ready_fd)
    if args.command == "umount":
        return _umount(args.mountpoint)
    try:
        config = _config_from_args(args)
    except ConfigError as exc:
        print(f"mkwfs: {exc}", file=sys.stderr)
        return 2
    if config.foreground:
        return _run_foreground(config)
    return _spawn_daemon(config)
