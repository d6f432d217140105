"""The pure JSON readers: decoding with a depth bound, and Feathers pages, without a server."""

from __future__ import annotations

from typing import Any

import pytest

from mkwfs.remote.payloads import (
    JSON_DEPTH_LIMIT,
    decode_json,
    feathers_page,
    is_count,
    json_object,
    nesting_exceeds,
)


def test_decode_json_keeps_a_list_with_one_bad_byte() -> None:
    assert decode_json(b'[{"name": "a\xffb"}]') == [{"name": "a\ufffdb"}]


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        (b"[{", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[" * (JSON_DEPTH_LIMIT + 1) + b"]" * (JSON_DEPTH_LIMIT + 1), "more than 32 levels"),
        (b"[" * 100_000 + b"]" * 100_000, "nests"),
    ],
)
def test_decode_json_refuses(body: bytes, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        decode_json(body)


@pytest.mark.parametrize(
    ("data", "limit", "exceeds"),
    [
        (1, 0, False),
        ([], 0, True),
        ([[[]]], 3, False),
        ([[[]]], 2, True),
        ({"a": [{"b": 1}]}, 3, False),
        ({"a": [{"b": {}}]}, 3, True),
    ],
)
def test_nesting_exceeds(data: object, limit: int, exceeds: bool) -> None:
    assert nesting_exceeds(data, limit) is exceeds


def test_feathers_page() -> None:
    page = {"total": 3, "limit": 2, "skip": 2, "data": [{"id": 3}]}
    assert feathers_page(page, skip=2) == (3, [{"id": 3}])
    assert feathers_page({"total": 3, "data": []}, skip=5) == (3, [])  # no skip: taken as asked


@pytest.mark.parametrize(
    ("data", "complaint"),
    [
        ([], "array or a page, got list"),
        ("page", "got str"),
        ({"total": -1, "data": []}, "without valid"),
        ({"total": True, "data": []}, "without valid"),
        ({"total": 1, "data": {}}, "without valid"),
        ({"total": 1, "skip": "0", "data": []}, "without valid"),
        ({"total": 4, "skip": 0, "data": []}, "asked for items from 2, got a page from 0"),
    ],
)
def test_broken_pages_are_value_errors(data: Any, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        feathers_page(data, skip=2)


def test_counts_and_objects() -> None:
    assert is_count(0) and not is_count(False) and not is_count(1.0) and not is_count(-1)
    assert json_object({"a": 1}) == {"a": 1}
    with pytest.raises(ValueError, match="expected a JSON object, got list"):
        json_object([])
