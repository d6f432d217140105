"""`mkwfs login` and `mkwfs logout`: a checked token, kept mode 0600 for later mounts."""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import getpass
import json
import os
import sys
from pathlib import Path

import trio

from mkwfs.cli.messages import EXIT_OK, server_message
from mkwfs.cli.parser import (
    FILE_NAMES,
    LOGIN_NAMES,
    flags_of,
)
from mkwfs.config import (
    DEFAULT_API_URL,
    login_token_path,
    resolve,
)
from mkwfs.fuse.checks import (
    StartupError,
)
from mkwfs.remote.api import Credentials
from mkwfs.remote.errors import (
    ConfigError,
    MkwfsError,
)


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
    from mkwfs.remote.api import ApiClient
    from mkwfs.remote.client import open_http_client

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


def login(args: argparse.Namespace) -> int:
    settings, _ = resolve(
        flags=flags_of(args, LOGIN_NAMES), env=os.environ, names=LOGIN_NAMES, use_login=False
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
        raise StartupError(server_message(exc, api_url, email, token_source)) from exc
    profile = values.get("profile")
    path = login_token_path(profile)
    _write_private(path, kept + "\n")
    expiry = _token_expiry(kept)
    until = f", valid until {expiry.isoformat(timespec='minutes')}" if expiry else ""
    who = f" as {email}" if email else ""
    print(f"logged in to {api_url}{who}; the token is kept in {path}{until}")
    return EXIT_OK


def logout(args: argparse.Namespace) -> int:
    settings, _ = resolve(flags=flags_of(args, FILE_NAMES), env=os.environ, names=FILE_NAMES)
    path = login_token_path(settings["profile"].value if "profile" in settings else None)
    try:
        path.unlink()
    except FileNotFoundError:
        print(f"not logged in (no {path})")
        return EXIT_OK
    print(f"removed {path}")
    return EXIT_OK
