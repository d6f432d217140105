"""The pure header readers: sizes, ranges, filenames and ``Retry-After``, without a server."""

from __future__ import annotations

import pytest

from mkwfs.remote.headers import (
    MAX_BODY_SIZE,
    content_info,
    content_length,
    content_range,
    disposition_filename,
    is_identity,
    plain_head_info,
    readable_length,
    retry_after,
)
from mkwfs.remote.models import ContentInfo


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("bytes 0-0/12345", (0, 0, 12345)),
        ("bytes 100-199/*", (100, 199, None)),
        ("  BYTES  5-9/10 ", (5, 9, 10)),
        (f"bytes 0-{MAX_BODY_SIZE - 1}/{MAX_BODY_SIZE}", (0, MAX_BODY_SIZE - 1, MAX_BODY_SIZE)),
    ],
)
def test_content_range_reads_first_last_and_total(
    value: str, parsed: tuple[int, int, int | None]
) -> None:
    assert content_range(value) == parsed


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("", "unreadable"),
        ("bytes */500", "unreadable"),
        ("bytes 9-5/10", "unreadable"),
        ("items 0-1/2", "unreadable"),
        (f"bytes 0-{MAX_BODY_SIZE}/*", "unreadable"),
        ("bytes 0-9/9", "impossible"),
        (f"bytes 0-9/{MAX_BODY_SIZE + 1}", "impossible"),
    ],
)
def test_broken_content_ranges_are_value_errors(value: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        content_range(value)


@pytest.mark.parametrize(
    ("value", "length"),
    [("0", 0), (" 42 ", 42), (str(MAX_BODY_SIZE), MAX_BODY_SIZE), (str(MAX_BODY_SIZE + 1), None),
     ("-1", None), ("1e3", None), ("", None), ("12, 12", None)],
)  # fmt: skip
def test_readable_length(value: str, length: int | None) -> None:
    assert readable_length(value) == length


def test_content_length_of_an_encoded_body_is_unknown() -> None:
    assert content_length({"content-length": "10"}) == 10
    assert content_length({"content-length": "10", "content-encoding": "gzip"}) is None
    assert content_length({}) is None
    with pytest.raises(ValueError, match="unreadable Content-Length"):
        content_length({"content-length": "ten"})


def test_identity_encodings() -> None:
    assert is_identity({})
    assert is_identity({"content-encoding": " Identity "})
    assert is_identity({"content-encoding": ""})
    assert not is_identity({"content-encoding": "br"})


def test_content_info_of_a_206_takes_the_total() -> None:
    headers = {"content-range": "bytes 0-0/777", "content-length": "1"}
    assert content_info(206, headers, asked_range=True) == ContentInfo(777, True, None)


def test_content_info_of_a_200_to_a_range_says_ranges_are_ignored() -> None:
    headers = {"content-length": "777", "accept-ranges": "bytes"}
    assert content_info(200, headers, asked_range=True) == ContentInfo(777, False, None)
    assert content_info(200, headers, asked_range=False) == ContentInfo(777, True, None)


def test_plain_head_info_takes_only_a_plain_200() -> None:
    headers = {"content-length": "5", "content-disposition": 'attachment; filename="a.zip"'}
    assert plain_head_info(200, headers) == ContentInfo(5, False, "a.zip")
    assert plain_head_info(206, headers) is None
    assert plain_head_info(405, headers) is None
    assert plain_head_info(200, {}) is None
    assert plain_head_info(200, {**headers, "content-encoding": "gzip"}) is None


@pytest.mark.parametrize(
    ("value", "filename"),
    [
        ('attachment; filename="CORE_DV.zip"', "CORE_DV.zip"),
        ("attachment; filename*=UTF-8''%E2%82%AC.zip", "€.zip"),
        ("attachment; filename*=nonsense''%41.zip; filename=\"y.zip\"", "y.zip"),
        ('attachment; filename="../../etc/passwd"', "../../etc/passwd"),  # never a path
        ("", None),
    ],
)
def test_disposition_filename(value: str, filename: str | None) -> None:
    assert disposition_filename(value) == filename


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("7", 7.0),
        (" 0.5 ", 0.5),
        ("-3", 0.0),
        ("Thu, 01 Jan 1970 00:01:40 GMT", 60.0),  # 100 s after the epoch, now at 40 s
        ("Thu, 01 Jan 1970 00:00:10 GMT", 0.0),
        ("nan", None),
        ("soon", None),
        (None, None),
    ],
)
def test_retry_after(value: str | None, seconds: float | None) -> None:
    assert retry_after(value, now=lambda: 40.0) == seconds
