"""The frozen mount configuration: parsing and validation only, no I/O beyond reading the
secret files the user named."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mkwfs.api import Credentials
from mkwfs.errors import ConfigError

DEFAULT_API_URL = "https://app.metakraftwerk.com"
DEFAULT_TTL = 60.0
DEFAULT_DEMO_BIG_FILE_SIZE = 256 * 2**20


def default_cache_dir(name: str = "mkwfs") -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / name


@dataclass(frozen=True)
class Config:
    mountpoint: Path
    api_url: str = DEFAULT_API_URL
    token: str | None = field(default=None, repr=False)
    email: str | None = None
    password: str | None = field(default=None, repr=False)
    cache_dir: Path = field(default_factory=default_cache_dir)
    dir_ttl: float = DEFAULT_TTL
    attr_ttl: float = DEFAULT_TTL
    foreground: bool = False
    debug: bool = False
    log_file: Path | None = None
    #: Serve the embedded emulator instead of a real server (``mkwfs demo``).
    demo: bool = False
    demo_big_file_size: int = DEFAULT_DEMO_BIG_FILE_SIZE

    def __post_init__(self) -> None:
        parts = urlsplit(self.api_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"--api-url must be an http(s) URL, not {self.api_url!r}")
        if parts.username or parts.password:
            raise ConfigError("--api-url must not carry credentials; use --token-file or --email")
        for name in ("dir_ttl", "attr_ttl"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must not be negative")
        if self.demo:
            return
        if self.email and not self.password:
            raise ConfigError("--email needs a password: --password-file or MKWFS_PASSWORD")
        if not self.token and not self.email:
            raise ConfigError(
                "no credentials: give a token (--token-file or MKWFS_TOKEN) "
                "or --email with --password-file"
            )

    @property
    def credentials(self) -> Credentials:
        return Credentials(token=self.token, email=self.email, password=self.password)

    def with_server(self, api_url: str, token: str) -> Config:
        return replace(self, api_url=api_url.rstrip("/"), token=token)

    def to_json(self) -> str:
        """For handing the configuration to the daemon over a pipe (secrets included)."""
        data = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> Config:
        data: dict[str, Any] = json.loads(text)
        paths = {f.name for f in fields(cls) if "Path" in str(f.type)}
        for key in paths:
            if data.get(key) is not None:
                data[key] = Path(data[key])
        return cls(**data)


def read_secret_file(path: Path, what: str) -> str:
    """The first line of a secret file, stripped. The message never shows the content."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} file {path}: {exc.strerror}") from exc
    secret = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not secret:
        raise ConfigError(f"the {what} file {path} is empty")
    return secret
