"""Settings: the table of options, the layers that give each its value, the frozen Config.

Parsing and validation only; the only I/O is reading the config file and the secret files
the user named. Every option is one :class:`Option` entry, and from that one entry it is

======================  ==================================================================
``--foo-bar VALUE``     a command-line flag (``cli.py`` builds the parser from ``OPTIONS``)
``-o foo_bar=VALUE``    an item of a raw option list: fstab, ``mount.fuse.mkwfs``, ``-o``
``MKWFS_FOO_BAR``       an environment variable
``foo_bar = VALUE``     a key of the TOML config file, at its top level or in a
                        ``[profiles.NAME]`` table
======================  ==================================================================

Precedence, highest first: flag, ``-o`` item, environment, the profile's table, the file's
top level, the default. Secrets never come from the command line or the config file: a
token or password is read from a file the settings name (``token_file``, ``password_file``)
or from ``MKWFS_TOKEN`` / ``MKWFS_PASSWORD``; the token ``mkwfs login`` keeps is the last
resort. ``Config`` keeps secrets out of its ``repr``; :func:`describe` masks them.
"""

from __future__ import annotations

import grp
import json
import math
import os
import pwd
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from mkwfs.remote.errors import ConfigError

if TYPE_CHECKING:  # the API (httpx, trio) is imported by the daemon, not by every command
    from mkwfs.remote.auth import Credentials

DEFAULT_API_URL = "https://app.metakraftwerk.com"
DEFAULT_TTL = 60.0
#: Seconds an access that needs the server may wait for it before it fails with EIO.
DEFAULT_TIMEOUT = 15.0
DEFAULT_DEMO_BIG_FILE_SIZE = 256 * 2**20
ENV_PREFIX = "MKWFS_"
#: Environment variables that hold a secret itself (never a flag, -o item or file key).
SECRET_VARIABLES = {"token": "MKWFS_TOKEN", "password": "MKWFS_PASSWORD"}
#: Items of a raw option list that mount(8) or systemd act on; mkwfs ignores them.
#: (The mount is always read-only, so ``ro`` and ``rw`` change nothing either.)
MOUNT_ONLY_OPTIONS = frozenset(
    {"defaults", "auto", "noauto", "_netdev", "nofail", "user", "users", "nouser", "owner",
     "group", "ro", "rw"}
)  # fmt: skip
MASK = "***"


def default_cache_dir(name: str = "mkwfs") -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / name


def config_home() -> Path:
    """``$XDG_CONFIG_HOME/mkwfs`` (``~/.config/mkwfs``): the config file and login tokens."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "mkwfs"


def login_token_path(profile: str | None) -> Path:
    """Where ``mkwfs login`` keeps the token of a profile (``token``, ``token.NAME``)."""
    return config_home() / ("token" if profile is None else f"token.{profile}")


# -- values ------------------------------------------------------------------------------------


def _text(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("expected text")
    return str(value).strip()


def parse_seconds(value: object) -> float:
    try:
        seconds = float(value) if isinstance(value, int | float) else float(_text(value))
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError("expected a number of seconds, 0 or more")
    return seconds


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_size(value: object) -> int:
    """Bytes from ``1048576``, ``500M``, ``10G``, ``1.5GiB`` (K, M, G, T are powers of 1024)."""
    match = _SIZE.fullmatch(_text(value))
    if match is None:
        raise ValueError("expected a size such as 500M or 10G")
    return int(float(match[1]) * _SIZE_UNITS[match[2].lower()])


def parse_umask(value: object) -> int:
    """An octal mask such as ``027`` (a TOML number 27 reads the same)."""
    try:
        mask = int(_text(value).removeprefix("0o"), 8)
    except ValueError:
        raise ValueError("expected an octal mask such as 022") from None
    if not 0 <= mask <= 0o777:
        raise ValueError("expected an octal mask from 000 to 777")
    return mask


#: ``--size-probes``: when a HEAD asks a body's size (see docs/semantics.md).
SizeProbes = Literal["ahead", "stat", "off"]
SIZE_PROBES: tuple[SizeProbes, ...] = ("ahead", "stat", "off")


def parse_size_probes(value: object) -> SizeProbes:
    text = _text(value).lower()
    for mode in SIZE_PROBES:
        if text == mode:
            return mode
    raise ValueError(f"expected one of {', '.join(SIZE_PROBES)}")


def parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = _text(value).lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _owner(lookup: Callable[[str], int], what: str) -> Callable[[object], int]:
    def parse(value: object) -> int:
        text = _text(value)
        if text.isdigit():
            return int(text)
        try:
            return lookup(text)
        except KeyError:
            raise ValueError(f"no {what} named {text!r}") from None

    return parse


parse_uid = _owner(lambda name: pwd.getpwnam(name).pw_uid, "user")
parse_gid = _owner(lambda name: grp.getgrnam(name).gr_gid, "group")


def parse_text(value: object) -> str:
    text = _text(value)
    if not text:
        raise ValueError("must not be empty")
    return text


def parse_url(value: object) -> str:
    """A base URL, without the trailing slash (checked by ``Config``)."""
    return parse_text(value).rstrip("/")


def parse_path(value: object) -> Path:
    return Path(os.path.expanduser(parse_text(value)))


# -- the option table --------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One setting, known by the same name as flag, ``-o`` item, variable and file key."""

    name: str
    help: str
    #: The flag's metavar; None for a switch (``--foo`` / ``--no-foo``).
    metavar: str | None
    parse: Callable[[object], Any]
    #: Which group of commands has it: "file" (which config and profile), "server"
    #: (where and who), "mount" (how to mount; the demo has these too).
    group: str
    #: The default as the help and ``mkwfs config`` show it.
    default_text: str = ""
    #: False: the option chooses the file, so the file cannot set it.
    in_file: bool = True

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def variable(self) -> str:
        return ENV_PREFIX + self.name.upper()


OPTIONS: tuple[Option, ...] = (
    Option("config", "the TOML config file", "FILE", parse_path, "file",
           "$XDG_CONFIG_HOME/mkwfs/config.toml", in_file=False),
    Option("profile", "use the [profiles.NAME] table of the config file", "NAME", parse_text,
           "file", "none"),
    Option("api_url", "the server's base URL; mkwfs adds /api/v1/... and /authentication",
           "URL", parse_url, "server", DEFAULT_API_URL),
    Option("token_file", "a file whose first line is an access token (or MKWFS_TOKEN holds "
           "the token itself)", "FILE", parse_path, "server", "the token of mkwfs login"),
    Option("email", "log in with this email, and again whenever the token expires", "EMAIL",
           parse_text, "server"),
    Option("password_file", "a file whose first line is the password for --email (or "
           "MKWFS_PASSWORD holds the password itself)", "FILE", parse_path, "server"),
    Option("cache_dir", "where downloaded bodies and sizes are kept", "DIR", parse_path,
           "mount", "$XDG_CACHE_HOME/mkwfs"),
    Option("cache_max_size", "bound on the bytes of cached bodies, e.g. 500M or 10G "
           "(K, M, G, T: powers of 1024); the least recently used go first", "SIZE",
           parse_size, "mount", "no bound"),
    Option("dir_ttl", "seconds a listing (the builds, a build's files) is cached", "SECONDS",
           parse_seconds, "mount", "60"),
    Option("attr_ttl", "seconds the kernel caches attributes (sizes, times)", "SECONDS",
           parse_seconds, "mount", "60"),
    Option("timeout", "seconds an access waits for the server (a listing, a size, a read "
           "whose bytes stopped coming) before it fails with EIO", "SECONDS", parse_seconds,
           "mount", "15"),
    Option("size_probes", "when sizes are asked with a HEAD, which some servers count as a "
           "download: ahead (during ls -l, many at once), stat (only the file stat'ed), off "
           "(never: a size is shown once the file was read)", "MODE", parse_size_probes,
           "mount", "ahead"),
    Option("foreground", "serve in this process until unmounted or SIGTERM/SIGINT, logging "
           "to stderr", None, parse_bool, "mount", "off"),
    Option("debug", "log every request: method, path, status, bytes, time", None, parse_bool,
           "mount", "off"),
    Option("log_file", "where the log goes", "FILE", parse_path, "mount",
           "stderr with --foreground, else CACHE_DIR/mkwfs.log"),
    Option("allow_other", "let other users see the mount (with default_permissions, so "
           "modes apply; needs user_allow_other in /etc/fuse.conf unless root)", None,
           parse_bool, "mount", "off"),
    Option("uid", "owner of every file (a user name or number)", "USER", parse_uid, "mount",
           "who mounts"),
    Option("gid", "group of every file (a group name or number)", "GROUP", parse_gid, "mount",
           "who mounts"),
    Option("umask", "octal mask taken off the modes 0444 (files) and 0555 (directories), "
           "e.g. 027", "MASK", parse_umask, "mount", "000"),
)  # fmt: skip
OPTION_BY_NAME: Mapping[str, Option] = {option.name: option for option in OPTIONS}


def options_of(*groups: str) -> tuple[Option, ...]:
    return tuple(option for option in OPTIONS if option.group in groups)


# -- layers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """Raw values from one source; ``label(name)`` says where a value came from."""

    values: Mapping[str, object]
    kind: str  # "flag", "-o", "env", "file", "login", "default"
    where: str = ""

    def label(self, name: str) -> str:
        option = OPTION_BY_NAME.get(name)
        match self.kind:
            case "flag":
                return option.flag if option else name
            case "-o":
                return f"-o {name}"
            case "env":
                return SECRET_VARIABLES.get(name) or (option.variable if option else name)
            case "file":
                return f"{self.where}: {name}"
            case _:
                return self.kind


@dataclass(frozen=True)
class Setting:
    value: Any
    source: str
    secret: bool = False


#: Raw FUSE options that would break the mount, and why.
UNSUPPORTED_FUSE_OPTIONS = {
    # libfuse ends the session at once when this differs from the size the daemon asks for.
    "max_read": "not supported; mkwfs sizes its reads itself (see the README on readahead)",
}


def split_raw_options(items: Sequence[str]) -> tuple[dict[str, object], tuple[str, ...]]:
    """``-o a,b=c`` items -> (mkwfs options, raw FUSE options). ``foo_bar`` and ``foo-bar``
    both name ``--foo-bar``; a bare switch name means true. Items that mount(8) acts on
    (``noauto``, ``_netdev``, ``x-systemd.*``, ...) are dropped."""
    known: dict[str, object] = {}
    fuse: list[str] = []
    for item in (part.strip() for chunk in items for part in chunk.split(",")):
        key, has_value, value = item.partition("=")
        name = key.replace("-", "_")
        if not item or item in MOUNT_ONLY_OPTIONS or key.startswith(("x-", "comment")):
            continue
        option = OPTION_BY_NAME.get(name)
        if key in UNSUPPORTED_FUSE_OPTIONS:
            raise ConfigError(f"-o {key}: {UNSUPPORTED_FUSE_OPTIONS[key]}")
        if option is None:
            fuse.append(item)
        elif has_value:
            known[name] = value
        elif option.metavar is None:
            known[name] = True
        else:
            raise ConfigError(f"-o {key} needs a value: -o {name}=...")
    return known, tuple(fuse)


def environment_layer(env: Mapping[str, str], names: Sequence[str]) -> Layer:
    values: dict[str, object] = {}
    for name in names:
        value = env.get(OPTION_BY_NAME[name].variable, "")
        if value.strip():
            values[name] = value
    return Layer(values, "env")


def file_layers(path: Path, profile: str | None, *, required: bool) -> list[Layer]:
    """The profile's table, then the top level, of the config file at ``path``.

    Relative paths in the file are relative to the file's directory. A missing file is
    no layer at all, unless ``required``.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if required:
            raise ConfigError(f"the config file {path} does not exist") from None
        return []
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"the config file {path} is not valid TOML: {exc}") from exc
    profiles = data.pop("profiles", {})
    if not isinstance(profiles, dict) or not all(isinstance(t, dict) for t in profiles.values()):
        raise ConfigError(f"{path}: [profiles.NAME] must be tables")
    top = _file_values(data, f"{path}", path.parent)
    named_in_file = top.get("profile")
    if profile is None and named_in_file is not None:
        profile = _value((named_in_file, f"{path}: profile"), "profile")
    # Every table is checked, so that a typo shows before the profile is used.
    tables = {
        name: _file_values(table, f"{path} [profiles.{name}]", path.parent)
        for name, table in profiles.items()
    }
    if profile is None:
        return [Layer(top, "file", str(path))]
    if profile not in profiles:
        known = ", ".join(sorted(profiles)) or "none"
        raise ConfigError(f"no profile {profile!r} in {path} (profiles: {known})")
    chosen = tables[profile]
    chosen.pop("profile", None)
    return [Layer(chosen, "file", f"{path} [profiles.{profile}]"), Layer(top, "file", str(path))]


def _file_values(table: dict[str, Any], where: str, base: Path) -> dict[str, object]:
    values: dict[str, object] = {}
    for key, value in table.items():
        name = key.replace("-", "_")
        option = OPTION_BY_NAME.get(name)
        if name in SECRET_VARIABLES:
            raise ConfigError(
                f"{where}: no secrets in the config file; use {name}_file = PATH instead"
            )
        if option is None or not option.in_file:
            raise ConfigError(f"{where}: unknown setting {key!r}")
        if option.parse is parse_path and isinstance(value, str):
            value = str(base / os.path.expanduser(value))
        values[name] = value
    return values


def resolve(
    *,
    flags: Mapping[str, object],
    raw_options: Sequence[str] = (),
    env: Mapping[str, str],
    names: Sequence[str],
    use_file: bool = True,
    use_login: bool = True,
) -> tuple[dict[str, Setting], tuple[str, ...]]:
    """Each named option's value and source, layer by layer; and the raw FUSE options.

    ``flags`` holds only what was given on the command line. Also resolves the secrets:
    ``token`` and ``password`` (from the ``*_file`` settings or ``MKWFS_TOKEN`` /
    ``MKWFS_PASSWORD``, whichever layer is higher; then, if ``use_login`` and there is
    no email either, the token ``mkwfs login`` kept).
    """
    from_o, fuse_options = split_raw_options(raw_options)
    layers = [
        Layer({k: v for k, v in flags.items() if v is not None}, "flag"),
        Layer(from_o, "-o"),
        environment_layer(env, [n for n in OPTION_BY_NAME if n in names]),
    ]
    if use_file:
        early = {n: _first(layers, n) for n in ("config", "profile")}
        config_path = _value(early["config"], "config")
        profile = _value(early["profile"], "profile")
        path = config_path or config_home() / "config.toml"
        layers += file_layers(path, profile, required=config_path is not None)

    settings: dict[str, Setting] = {}
    for name in names:
        found = _first(layers, name)
        if found is not None:
            settings[name] = Setting(_value(found, name), found[1])
    if use_file and "config" in names:
        settings.setdefault("config", Setting(path, "default"))
    for secret, variable in SECRET_VARIABLES.items():
        if f"{secret}_file" in names:
            _resolve_secret(settings, layers, secret, variable, env)
    if use_login and "token_file" in names and "token" not in settings and "email" not in settings:
        profile = settings["profile"].value if "profile" in settings else None
        path = login_token_path(profile)
        if path.exists():
            token = read_secret_file(path, "token")
            settings["token"] = Setting(token, f"mkwfs login ({path})", secret=True)
    return settings, fuse_options


def _first(layers: Sequence[Layer], name: str) -> tuple[object, str] | None:
    for layer in layers:
        if name in layer.values:
            return layer.values[name], layer.label(name)
    return None


def _value(found: tuple[object, str] | None, name: str) -> Any:
    if found is None:
        return None
    raw, source = found
    try:
        value = OPTION_BY_NAME[name].parse(raw)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc} (got {raw!r})") from exc
    return Path(os.path.abspath(value)) if isinstance(value, Path) else value


def _resolve_secret(
    settings: dict[str, Setting],
    layers: Sequence[Layer],
    secret: str,
    variable: str,
    env: Mapping[str, str],
) -> None:
    """The secret from the highest layer that has its file or (environment) its value."""
    file_name = f"{secret}_file"
    for layer in layers:
        if layer.kind == "env" and env.get(variable, "").strip():
            settings[secret] = Setting(env[variable].strip(), variable, secret=True)
            return
        if file_name in layer.values:
            path = settings[file_name].value
            settings[secret] = Setting(
                read_secret_file(path, secret), f"{settings[file_name].source} ({path})", True
            )
            return


def read_secret_file(path: Path, what: str) -> str:
    """The first line of a secret file, stripped. The message never shows the content."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"the {what} file {path} is not UTF-8 text") from exc
    secret = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not secret:
        raise ConfigError(f"the {what} file {path} is empty")
    return secret


def describe(settings: Mapping[str, Setting], names: Sequence[str]) -> list[tuple[str, str, str]]:
    """``(name, value, source)`` rows for ``mkwfs config``: every option and secret, each
    secret masked, defaults shown as the help shows them."""
    rows = []
    for name in [*names, *(s for s in SECRET_VARIABLES if f"{s}_file" in names)]:
        setting = settings.get(name)
        if setting is None:
            option = OPTION_BY_NAME.get(name)
            rows.append((name, (option.default_text if option else "") or "none", "default"))
        elif setting.secret:
            rows.append((name, MASK, setting.source))
        else:
            value = setting.value
            shown = str(value).lower() if isinstance(value, bool) else str(value)
            if name == "umask":
                shown = f"{value:03o}"
            rows.append((name, shown, setting.source))
    return rows


# -- the mount's configuration -----------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """Everything a mount needs, validated. Secrets stay out of ``repr``."""

    mountpoint: Path
    api_url: str = DEFAULT_API_URL
    token: str | None = field(default=None, repr=False)
    email: str | None = None
    password: str | None = field(default=None, repr=False)
    cache_dir: Path = field(default_factory=default_cache_dir)
    cache_max_size: int | None = None
    dir_ttl: float = DEFAULT_TTL
    attr_ttl: float = DEFAULT_TTL
    timeout: float = DEFAULT_TIMEOUT
    size_probes: SizeProbes = "ahead"
    foreground: bool = False
    debug: bool = False
    log_file: Path | None = None
    allow_other: bool = False
    uid: int | None = None
    gid: int | None = None
    umask: int = 0
    #: Raw FUSE mount options (``-o`` items mkwfs does not know), passed to the kernel.
    fuse_options: tuple[str, ...] = ()
    #: Where the token came from, for the message when the server rejects it.
    token_source: str | None = None
    profile: str | None = None
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
        if not self.timeout > 0:
            raise ConfigError("--timeout must be more than 0 seconds")
        if self.demo:
            return
        if self.email and not self.password:
            raise ConfigError("--email needs a password: --password-file or MKWFS_PASSWORD")
        if not self.token and not self.email:
            raise ConfigError(
                "no credentials: run `mkwfs login`, or give a token (--token-file or "
                "MKWFS_TOKEN) or --email with --password-file"
            )

    @classmethod
    def from_settings(
        cls,
        mountpoint: Path,
        settings: Mapping[str, Setting],
        fuse_options: tuple[str, ...] = (),
        **extra: Any,
    ) -> Config:
        """The Config of resolved settings; what no setting gives keeps its default."""
        names = {f.name for f in fields(cls)}
        values = {k: s.value for k, s in settings.items() if k in names}
        token = settings.get("token")
        return cls(
            mountpoint=mountpoint,
            fuse_options=fuse_options,
            token_source=token.source if token else None,
            **{**values, **extra},
        )

    @property
    def credentials(self) -> Credentials:
        from mkwfs.remote.auth import Credentials

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
        data["fuse_options"] = tuple(data.get("fuse_options", ()))
        return cls(**data)
