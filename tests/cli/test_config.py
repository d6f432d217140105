"""Settings: values, layers and their precedence, the config file and its profiles, secrets,
and the daemon hand-off."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mkwfs.cli.main import _config_from_args
from mkwfs.cli.parser import build_parser
from mkwfs.config import (
    MASK,
    OPTIONS,
    Config,
    describe,
    login_token_path,
    parse_bool,
    parse_size,
    parse_umask,
    read_secret_file,
    resolve,
    split_raw_options,
)
from mkwfs.remote.errors import ConfigError

MOUNT_NAMES = [o.name for o in OPTIONS]


@pytest.fixture
def home(home: Path) -> Path:
    """The shared ``home``, with the config directory made."""
    (home / "config" / "mkwfs").mkdir(parents=True)
    return home


def write_config(home: Path, text: str) -> Path:
    path = home / "config" / "mkwfs" / "config.toml"
    path.write_text(text)
    return path


def settings_of(argv: list[str], env: dict[str, str] | None = None) -> dict[str, object]:
    args = build_parser().parse_args(["config", *argv])
    flags = {name: getattr(args, name) for name in MOUNT_NAMES}
    settings, _ = resolve(
        flags=flags, raw_options=args.raw_options, env=env or {}, names=MOUNT_NAMES
    )
    return {name: s.value for name, s in settings.items()}


# -- values ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [("1048576", 2**20), ("500M", 500 * 2**20), ("10G", 10 * 2**30), ("1.5GiB", 3 * 2**29),
     ("2k", 2048), ("1T", 2**40), ("7 MB", 7 * 2**20)],
)  # fmt: skip
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "ten", "10X", "-1G", "1.2.3M"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


def test_umask_and_bool() -> None:
    assert parse_umask("027") == 0o27
    assert parse_umask(22) == 0o22  # a TOML number reads as octal digits
    assert parse_umask("0o077") == 0o77
    for bad in ("8", "1000", "rwx"):
        with pytest.raises(ValueError):
            parse_umask(bad)
    assert parse_bool("yes") is parse_bool(True) is parse_bool("1") is True
    assert parse_bool("off") is parse_bool(False) is False
    with pytest.raises(ValueError):
        parse_bool("maybe")


def test_credentials_are_required_unless_demo(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no credentials: run `mkwfs login`"):
        Config(mountpoint=tmp_path)
    with pytest.raises(ConfigError, match="needs a password"):
        Config(mountpoint=tmp_path, email="a@b.c")
    Config(mountpoint=tmp_path, demo=True)
    Config(mountpoint=tmp_path, token="t")
    Config(mountpoint=tmp_path, email="a@b.c", password="p")


@pytest.mark.parametrize(
    "url", ["ftp://x", "app.metakraftwerk.com", "http://", "https://user:pw@host"]
)
def test_bad_api_urls_are_refused(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError, match="api-url"):
        Config(mountpoint=tmp_path, token="t", api_url=url)


def test_negative_ttls_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--dir-ttl"):
        Config(mountpoint=tmp_path, token="t", dir_ttl=-1)


def test_timeout_defaults_to_15_s_comes_from_every_layer_and_must_be_positive(
    tmp_path: Path,
) -> None:
    assert Config(mountpoint=tmp_path, token="t").timeout == 15.0
    assert settings_of(["--timeout", "3"])["timeout"] == 3.0
    assert settings_of(["-o", "timeout=4"])["timeout"] == 4.0
    assert settings_of([], {"MKWFS_TIMEOUT": "5"})["timeout"] == 5.0
    with pytest.raises(ConfigError, match="--timeout"):
        Config(mountpoint=tmp_path, token="t", timeout=0)


@pytest.mark.parametrize(
    ("allow_other", "raw", "expected"),
    [
        (False, (), {"default_permissions"}),  # pyfuse3 sets it anyway
        (True, (), {"allow_other", "default_permissions"}),
        (False, ("allow_root",), {"allow_root", "default_permissions"}),
    ],
)
def test_other_users_get_into_a_mount_only_with_default_permissions(
    tmp_path: Path, allow_other: bool, raw: tuple[str, ...], expected: set[str]
) -> None:
    from mkwfs.fuse.mount import _mount_options

    config = Config(mountpoint=tmp_path, token="t", allow_other=allow_other, fuse_options=raw)
    others = {"allow_other", "allow_root", "default_permissions"}
    assert _mount_options(config) & others == expected


def test_secrets_stay_out_of_repr_but_survive_the_hand_off(tmp_path: Path) -> None:
    config = Config(
        mountpoint=tmp_path, token="tok-SECRET", email="a@b.c", password="pw-SECRET",
        fuse_options=("noatime",), umask=0o27, cache_max_size=2**30,
    )  # fmt: skip
    assert "SECRET" not in repr(config)
    assert "SECRET" not in repr(config.credentials)
    again = Config.from_json(config.to_json())
    assert again == config
    assert isinstance(again.cache_dir, Path)


def test_secret_files(tmp_path: Path) -> None:
    good = tmp_path / "token"
    good.write_text("  abc.def.ghi \n\n")
    assert read_secret_file(good, "token") == "abc.def.ghi"
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        read_secret_file(empty, "token")
    with pytest.raises(ConfigError, match="cannot read the password file") as info:
        read_secret_file(tmp_path / "missing", "password")
    assert "abc" not in str(info.value)


# -- layers ----------------------------------------------------------------------------------


def test_flags_win_over_the_environment(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token_file = home / "token"
    token_file.write_text("from-file\n")
    monkeypatch.setenv("MKWFS_TOKEN", "from-env")
    monkeypatch.setenv("MKWFS_API_URL", "https://env.example")
    monkeypatch.setenv("MKWFS_CACHE_DIR", str(home / "env-cache"))
    args = build_parser().parse_args(["mount", str(home), "--token-file", str(token_file)])
    config = _config_from_args(args)
    assert config.token == "from-file"
    assert config.token_source == f"--token-file ({token_file})"
    assert config.api_url == "https://env.example"
    assert config.cache_dir == home / "env-cache"
    args = build_parser().parse_args(
        ["mount", str(home), "--api-url", "http://flag.example/", "--cache-dir", "rel"]
    )
    config = _config_from_args(args)
    assert config.token == "from-env"
    assert config.token_source == "MKWFS_TOKEN"
    assert config.api_url == "http://flag.example"
    assert config.cache_dir.is_absolute()


def test_precedence_flag_then_o_then_env_then_profile_then_file(home: Path) -> None:
    write_config(
        home,
        'dir_ttl = 1\nattr_ttl = 1\numask = "007"\ncache_max_size = "1G"\ndebug = true\n'
        '[profiles.prod]\ndir_ttl = 2\nattr_ttl = 2\numask = "077"\n'
        '[profiles.test]\napi_url = "http://test.example"\n',
    )
    env = {"MKWFS_PROFILE": "prod", "MKWFS_DIR_TTL": "3", "MKWFS_ATTR_TTL": "3"}
    got = settings_of(["-o", "dir_ttl=4,umask=027", "--dir-ttl", "5"], env)
    assert got["dir_ttl"] == 5.0  # flag
    assert got["umask"] == 0o27  # -o beats the profile
    assert got["attr_ttl"] == 3.0  # environment beats the profile
    assert got["cache_max_size"] == 2**30  # top level of the file
    assert got["debug"] is True
    assert "api_url" not in got  # the default
    got = settings_of(["--profile", "test", "--no-debug"], env)  # the flag beats MKWFS_PROFILE
    assert got["api_url"] == "http://test.example"
    assert got["dir_ttl"] == 3.0
    assert got["debug"] is False


def test_the_file_can_name_its_profile_and_paths_are_relative_to_it(home: Path) -> None:
    path = write_config(
        home,
        'profile = "prod"\n[profiles.prod]\ntoken_file = "prod-token"\ncache_dir = "~/c"\n',
    )
    (path.parent / "prod-token").write_text("prod-secret\n")
    got = settings_of([])
    assert got["profile"] == "prod"
    assert got["token"] == "prod-secret"
    assert got["cache_dir"] == Path(os.path.expanduser("~/c"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("dir_tl = 1\n", "unknown setting 'dir_tl'"),
        ('token = "abc"\n', "no secrets in the config file; use token_file"),
        ('[profiles.x]\npassword = "abc"\n', "no secrets in the config file"),
        ("dir_ttl = \n", "not valid TOML"),
        ('dir_ttl = "soon"\n', "dir_ttl: expected a number of seconds"),
        ('profile = "nope"\n[profiles.a]\n[profiles.b]\n', "no profile 'nope' in .* a, b"),
    ],
)
def test_bad_config_files_name_the_problem(home: Path, text: str, message: str) -> None:
    path = write_config(home, text)
    with pytest.raises(ConfigError, match=message) as info:
        settings_of([])
    assert str(path) in str(info.value)
    assert "abc" not in str(info.value)


def test_an_explicit_config_file_must_exist(home: Path) -> None:
    assert settings_of([])["config"] == home / "config" / "mkwfs" / "config.toml"
    with pytest.raises(ConfigError, match="does not exist"):
        settings_of(["--config", str(home / "nope.toml")])
    with pytest.raises(ConfigError, match="does not exist"):
        settings_of([], {"MKWFS_CONFIG": str(home / "nope.toml")})


def test_bad_values_name_their_source(home: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--cache-max-size: expected a size"):
        settings_of(["--cache-max-size", "10X"])
    with pytest.raises(ConfigError, match=r"^MKWFS_DIR_TTL: expected a number"):
        settings_of([], {"MKWFS_DIR_TTL": "soon"})
    with pytest.raises(ConfigError, match=r"^-o uid: no user named"):
        settings_of(["-o", "uid=no-such-user-here"])


def test_raw_options_split_into_mkwfs_mount_and_fuse_options() -> None:
    known, fuse = split_raw_options(
        ["ro,noauto,_netdev,nofail,x-systemd.automount,api_url=http://x,allow_other",
         "cache-max-size=10G,max_write=131072,dev,suid,comment=hi,defaults,rw"]
    )  # fmt: skip
    assert known == {"api_url": "http://x", "allow_other": True, "cache_max_size": "10G"}
    assert fuse == ("max_write=131072", "dev", "suid")
    with pytest.raises(ConfigError, match="-o token_file needs a value"):
        split_raw_options(["token_file"])


def test_the_login_token_is_the_last_resort(home: Path) -> None:
    kept = login_token_path(None)
    kept.write_text("kept-token\n")
    got = settings_of([])
    assert got["token"] == "kept-token"
    assert settings_of([], {"MKWFS_TOKEN": "env-token"})["token"] == "env-token"
    assert "token" not in settings_of(["--email", "a@b.c"])  # email: log in instead
    login_token_path("prod").write_text("prod-token\n")
    assert settings_of(["--profile", "prod"])["token"] == "prod-token"


def test_describe_masks_every_secret(home: Path) -> None:
    (home / "pw").write_text("pw-SECRET\n")
    args = build_parser().parse_args(
        ["config", "--email", "a@b.c", "--password-file", str(home / "pw")]
    )
    flags = {name: getattr(args, name) for name in MOUNT_NAMES}
    settings, _ = resolve(flags=flags, env={"MKWFS_TOKEN": "tok-SECRET"}, names=MOUNT_NAMES)
    rows = {name: (value, source) for name, value, source in describe(settings, MOUNT_NAMES)}
    assert rows["token"] == (MASK, "MKWFS_TOKEN")
    assert rows["password"][0] == MASK
    assert rows["email"] == ("a@b.c", "--email")
    assert rows["dir_ttl"] == ("60", "default")
    assert "SECRET" not in repr(rows)


def test_a_raw_option_that_would_end_the_session_is_refused() -> None:
    with pytest.raises(ConfigError, match="max_read: not supported"):
        split_raw_options(["ro,max_read=131072"])


def test_size_probes_from_every_layer(home: Path) -> None:
    assert "size_probes" not in settings_of([])  # the default: ahead
    assert Config(Path("/m"), token="t").size_probes == "ahead"
    write_config(home, 'size_probes = "stat"\n')
    assert settings_of([])["size_probes"] == "stat"
    assert settings_of([], {"MKWFS_SIZE_PROBES": "OFF"})["size_probes"] == "off"
    assert (
        settings_of(["-o", "size_probes=ahead"], {"MKWFS_SIZE_PROBES": "off"})["size_probes"]
        == "ahead"
    )
    assert settings_of(["--size-probes", "off", "-o", "size_probes=stat"])["size_probes"] == "off"
    with pytest.raises(ConfigError, match="ahead, stat, off"):
        settings_of(["--size-probes", "never"])
