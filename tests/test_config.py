"""Config validation, secret files, and the daemon hand-off."""

from __future__ import annotations

from pathlib import Path

import pytest

from mkwfs.cli import _config_from_args, _parser
from mkwfs.config import Config, read_secret_file
from mkwfs.errors import ConfigError


def test_credentials_are_required_unless_demo(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no credentials"):
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


def test_secrets_stay_out_of_repr_but_survive_the_hand_off(tmp_path: Path) -> None:
    config = Config(mountpoint=tmp_path, token="tok-SECRET", email="a@b.c", password="pw-SECRET")
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


def test_flags_win_over_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    monkeypatch.setenv("MKWFS_TOKEN", "from-env")
    monkeypatch.setenv("MKWFS_API_URL", "https://env.example")
    monkeypatch.setenv("MKWFS_CACHE_DIR", str(tmp_path / "env-cache"))
    args = _parser().parse_args(["mount", str(tmp_path), "--token-file", str(token_file)])
    config = _config_from_args(args)
    assert config.token == "from-file"
    assert config.api_url == "https://env.example"
    assert config.cache_dir == tmp_path / "env-cache"
    args = _parser().parse_args(
        ["mount", str(tmp_path), "--api-url", "http://flag.example/", "--cache-dir", "rel"]
    )
    config = _config_from_args(args)
    assert config.token == "from-env"
    assert config.api_url == "http://flag.example"
    assert config.cache_dir.is_absolute()


def test_a_missing_mountpoint_is_a_config_error(tmp_path: Path) -> None:
    args = _parser().parse_args(["mount", str(tmp_path / "nope")])
    with pytest.raises(ConfigError, match="not an existing directory"):
        _config_from_args(args)
