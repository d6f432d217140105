"""The command line without a mount: help, version, exit codes, startup checks that come
before the daemon, login and logout against the emulator, and the messages for failures.
Commands run in-process through ``main()``; the end-to-end ones are in test_e2e_cli.py."""

from __future__ import annotations

import argparse
import stat
from pathlib import Path

import pytest

from mkwfs import __version__
from mkwfs.cli.main import main
from mkwfs.cli.messages import startup_message
from mkwfs.cli.parser import build_parser
from mkwfs.config import OPTIONS, Config, login_token_path
from mkwfs.emulator import Emulator
from mkwfs.fuse.checks import StartupError, check_allow_other, check_fuse, check_mountpoint
from mkwfs.remote.errors import (
    LoginFailed,
    MkwfsError,
    NotFound,
    ProtocolError,
    ServerError,
    TokenRejected,
    TransportError,
)

COMMANDS = ["mount", "umount", "demo", "status", "refresh", "prefetch", "login", "logout",
            "config"]  # fmt: skip


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"mkwfs {__version__}"


@pytest.mark.parametrize("command", COMMANDS)
def test_help_on_every_command_explains_every_option(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    sub = commands._name_parser_map[command]
    for action in sub._actions:
        for flag in action.option_strings:
            assert flag in text, flag
        assert action.help, f"{command} {action.option_strings or action.dest} has no help"
    if command in ("mount", "config"):
        for option in OPTIONS:
            assert option.flag in text and option.variable in text, option.name


def test_every_mount_option_has_flag_variable_and_file_key() -> None:
    for option in OPTIONS:
        assert option.flag == "--" + option.name.replace("_", "-")
        assert option.variable == "MKWFS_" + option.name.upper()


def test_bad_usage_and_values_exit_2_with_one_line(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["mount"])
    assert info.value.code == 2
    capsys.readouterr()
    for argv in (
        ["mount", str(home), "--dir-ttl", "soon"],
        ["mount", str(home), "--cache-max-size", "10X", "--token-file", "/nope"],
        ["mount", str(home)],  # no credentials
        ["mount", str(home), "--config", str(home / "none.toml")],
    ):
        code, _out, err = run(argv, capsys)
        assert code == 2, argv
        assert err.startswith("mkwfs: ") and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "does not exist; create it: mkdir -p"),
        ("file", "is not a directory"),
        ("not empty", "is not empty"),
    ],
)
def test_mountpoint_checks_exit_1_before_anything_starts(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    setup: str, message: str,
) -> None:  # fmt: skip
    monkeypatch.setenv("MKWFS_TOKEN", "t")
    target = home / "mnt"
    if setup == "file":
        target.write_text("x")
    elif setup == "not empty":
        target.mkdir()
        (target / "something").write_text("x")
    code, _out, err = run(["mount", str(target), "--api-url", "http://127.0.0.1:9"], capsys)
    assert code == 1
    assert message in err and len(err.strip().splitlines()) == 1, err
    with pytest.raises(StartupError, match=message):
        check_mountpoint(target)


def test_fuse_checks_name_the_package(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match=r"modprobe fuse.*--device /dev/fuse"):
        check_fuse(tmp_path / "no-fuse")
    device = tmp_path / "fuse"
    device.write_text("")
    with pytest.raises(StartupError, match="apt-get install fuse3"):
        check_fuse(device, which=lambda _name: None)
    check_fuse(device, which=lambda name: f"/usr/bin/{name}")


def test_allow_other_needs_user_allow_other_unless_root(tmp_path: Path) -> None:
    conf = tmp_path / "fuse.conf"
    conf.write_text("# user_allow_other\nmount_max = 1000\n")
    with pytest.raises(StartupError, match="user_allow_other in"):
        check_allow_other(conf, uid=1000)
    check_allow_other(conf, uid=0)
    conf.write_text("user_allow_other  # for mkwfs\n")
    check_allow_other(conf, uid=1000)


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (LoginFailed("x", url="u", status=401), "refused the login of me@x.y: check the email"),
        (TokenRejected("x", url="u", status=401), "rejected the token from MKWFS_TOKEN"),
        (TransportError("GET /api/v1/builds: connection failed", url="u"),
         "cannot reach the MetaKraftwerk API at http://h.example"),
        (NotFound("GET /api/v1/builds: 404", url="u", status=404),
         "answers, but not as the MetaKraftwerk API"),
        (ProtocolError("not JSON", url="u"), "answers, but not as the MetaKraftwerk API"),
        (ServerError("503", url="u", status=503),
         "the MetaKraftwerk API at http://h.example failed"),
    ],
)  # fmt: skip
def test_startup_messages_say_what_to_do(error: MkwfsError, words: str) -> None:
    config = Config(
        mountpoint=Path("/m"), api_url="http://h.example", token="tok-SECRET", email="me@x.y",
        password="pw-SECRET", token_source="MKWFS_TOKEN",
    )  # fmt: skip
    message = startup_message(error, config)
    assert words in message
    assert "SECRET" not in message and "\n" not in message


def test_commands_on_no_mount_fail_with_one_line(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv, words in (
        (["status", str(home)], "no mkwfs daemon serves"),
        (["refresh", str(home)], "no mkwfs daemon serves"),
        (["umount", str(home)], "is not mounted"),
    ):
        code, _out, err = run(argv, capsys)
        assert code == 1, argv
        assert words in err and len(err.strip().splitlines()) == 1, err


def test_prefetch_of_no_mount_is_a_usage_error(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv, words in (
        (["prefetch", str(home)], "is not on an mkwfs mount"),
        (["prefetch", "-j", "0", str(home)], "-j must be at least 1"),
    ):
        code, _out, err = run(argv, capsys)
        assert code == 2, argv
        assert words in err and len(err.strip().splitlines()) == 1, err


def test_config_shows_sources_and_masks_secrets(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config_dir = home / "config" / "mkwfs"
    config_dir.mkdir(parents=True)
    (config_dir / "config.toml").write_text(
        '[profiles.test]\napi_url = "http://test.example"\npassword_file = "pw"\n'
    )
    (config_dir / "pw").write_text("pw-SECRET\n")
    monkeypatch.setenv("MKWFS_TOKEN", "tok-SECRET")
    monkeypatch.setenv("MKWFS_PROFILE", "test")
    code, out, _err = run(["config", "--email", "me@x.y", "-o", "noatime"], capsys)
    assert code == 0
    assert "SECRET" not in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "***" in lines["token"] and "(MKWFS_TOKEN)" in lines["token"]
    assert "***" in lines["password"]
    assert "http://test.example" in lines["api_url"] and "[profiles.test]" in lines["api_url"]
    assert "(MKWFS_PROFILE)" in lines["profile"]
    assert "(--email)" in lines["email"]
    assert "noatime" in out


# -- login and logout, against the emulator over HTTP -------------------------------------------


def test_login_keeps_a_0600_token_that_mount_then_uses(
    home: Path, emulator: Emulator, emulator_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    password = home / "pw"
    password.write_text(emulator.config.password + "\n")
    code, out, err = run(
        ["login", "--api-url", emulator_url, "--email", emulator.config.email,
         "--password-file", str(password), "--profile", "emu"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    kept = login_token_path("emu")
    assert kept == home / "config" / "mkwfs" / "token.emu"
    assert f"the token is kept in {kept}" in out and "valid until" in out
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert stat.S_IMODE(kept.parent.stat().st_mode) == 0o700
    assert emulator.requests["POST /authentication"] == 1
    assert emulator.config.password not in out + err

    # A later mount with no other credentials uses the kept token.
    code, out, _ = run(["config", "--profile", "emu"], capsys)
    assert code == 0
    token_line = next(line for line in out.splitlines() if line.startswith("token "))
    assert f"mkwfs login ({kept})" in token_line

    code, out, _ = run(["logout", "--profile", "emu"], capsys)
    assert (code, out.strip()) == (0, f"removed {kept}")
    assert not kept.exists()
    code, out, _ = run(["logout", "--profile", "emu"], capsys)
    assert code == 0 and "not logged in" in out


def test_login_with_a_token_checks_it_and_keeps_it(
    home: Path, emulator: Emulator, emulator_url: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    token = emulator.issue_token()
    monkeypatch.setenv("MKWFS_TOKEN", token)
    code, _out, err = run(["login", "--api-url", emulator_url], capsys)
    assert code == 0, err
    assert login_token_path(None).read_text().strip() == token
    assert emulator.requests["GET /api/v1/builds"] == 1


@pytest.mark.parametrize("credential", ["password", "token"])
def test_login_refused_exits_1_and_keeps_nothing(
    home: Path, emulator_url: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch, credential: str,
) -> None:  # fmt: skip
    if credential == "password":
        monkeypatch.setenv("MKWFS_PASSWORD", "wrong-SECRET")
        argv = ["login", "--api-url", emulator_url, "--email", "demo@metakraftwerk.example"]
        words = "refused the login of demo@metakraftwerk.example"
    else:
        monkeypatch.setenv("MKWFS_TOKEN", "bad-SECRET")
        argv = ["login", "--api-url", emulator_url]
        words = "rejected the token from MKWFS_TOKEN"
    code, out, err = run(argv, capsys)
    assert code == 1
    assert words in err and len(err.strip().splitlines()) == 1, err
    assert "SECRET" not in out + err
    assert not login_token_path(None).exists()


def test_login_without_credentials_is_usage(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = run(["login"], capsys)
    assert code == 2 and "nothing to log in with" in err
