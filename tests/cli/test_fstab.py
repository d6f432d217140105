"""The mount(8) helper's reading of its arguments (mkwfs.cli.fstab)."""

from __future__ import annotations

import pytest

from mkwfs.cli.fstab import HelperCall, UsageError, main, parse


def test_options_from_every_spelling_join_in_order() -> None:
    call = parse(["mkwfs", "/mnt/mkw", "-o", "ro,api_url=http://h", "-onoauto", "-o", "dir_ttl=5"])
    assert call == HelperCall("/mnt/mkw", "ro,api_url=http://h,noauto,dir_ttl=5", fake=False)
    assert call.mount_argv() == ["mount", "/mnt/mkw", "-o", "ro,api_url=http://h,noauto,dir_ttl=5"]


def test_flags_that_change_nothing_are_taken() -> None:
    call = parse(["mkwfs", "/mnt/mkw", "-s", "-n", "-v", "-t", "fuse.mkwfs", "-o", "ro"])
    assert call == HelperCall("/mnt/mkw", "ro", fake=False)


def test_without_options_the_mount_has_none() -> None:
    assert parse(["mkwfs", "/mnt/mkw"]).mount_argv() == ["mount", "/mnt/mkw"]


@pytest.mark.parametrize(
    "argv",
    [[], ["mkwfs"], ["mkwfs", "/mnt", "-o"], ["mkwfs", "/mnt", "-t"], ["mkwfs", "/mnt", "-x"]],
)
def test_other_arguments_are_a_usage_error(argv: list[str]) -> None:
    with pytest.raises(UsageError):
        parse(argv)


def test_fake_mount_does_nothing_and_succeeds(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["mkwfs", "/nonexistent/mountpoint", "-f", "-o", "ro"]) == 0
    assert capsys.readouterr() == ("", "")


def test_usage_error_exits_1_with_the_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["mkwfs"]) == 1
    assert "usage: mount.fuse.mkwfs" in capsys.readouterr().err
