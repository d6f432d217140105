"""Serving a mount: in the foreground, or as a daemon started in a new session that gets
its configuration (secrets included) over a pipe and reports ready on another."""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import select
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import NoReturn

from mkwfs.cli.messages import EXIT_FAILED, EXIT_OK, startup_message
from mkwfs.config import (
    SECRET_VARIABLES,
    Config,
)
from mkwfs.remote.errors import (
    MkwfsError,
)

log = logging.getLogger("mkwfs")


#: How long ``mkwfs mount`` waits for the daemon to report the mount ready.
READY_TIMEOUT = 120.0

#: Variables the daemon must not inherit: they hold secrets (it gets them over a pipe).
_SECRET_ENV = tuple(SECRET_VARIABLES.values())


_DAEMON_COMMAND = (sys.executable, "-m", "mkwfs", "_serve")


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
    import trio

    from mkwfs.fuse.mount import serve

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    with _server_for(config) as effective:
        trio.run(serve, effective, on_ready)


def run_foreground(config: Config) -> int:
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


def run_exec_foreground(config_fd: int) -> int:
    """``_exec_without_secrets`` arrives here."""
    with os.fdopen(config_fd, "rb") as pipe:
        config = Config.from_json(pipe.read().decode())
    return run_foreground(config)


def run_daemon(ready_fd: int) -> int:
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


def spawn_daemon(config: Config) -> int:
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
