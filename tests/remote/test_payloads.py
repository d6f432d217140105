"""The pure JSON readers: decoding with a depth bound, and Feathers pages, without a server."""

from __future__ import annotations

from typing import Any

import pytest

from mkwfs.remote.payloads import (
    JSON_DEPTH_LIMIT,
    Listing,
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


def test_a_listing_of_pages_follows_skip_until_the_total() -> None:
    listing = Listing(limit=50)
    assert listing.params() == {"$limit": 50}
    listing.add({"total": 12, "limit": 10, "skip": 0, "data": list(range(10))})
    assert (listing.done, listing.params()) == (False, {"$limit": 50, "$skip": 10})
    listing.add({"total": 12, "limit": 10, "skip": 10, "data": [10, 11]})
    assert (listing.done, listing.items) == (True, list(range(12)))


def test_a_listing_of_bare_arrays_ends_at_a_short_one() -> None:
    listing = Listing(limit=2)
    listing.add([{"id": 1}, {"id": 2}])
    assert (listing.done, listing.params()) == (False, {"$limit": 2, "$skip": 2})
    listing.add([{"id": 3}])
    assert (listing.done, listing.items) == (True, [{"id": 1}, {"id": 2}, {"id": 3}])


def test_a_listing_ends_when_the_server_sends_its_list_again() -> None:
    listing = Listing(limit=2)
    listing.add([{"id": 1}, {"id": 2}])
    listing.add([{"id": 1}, {"id": 2}])
    assert (listing.done, listing.items) == (True, [{"id": 1}, {"id": 2}])


@pytest.mark.parametrize(
    ("answers", "complaint"),
    [
        ([{"total": 3, "data": [1]}, {"total": 3, "skip": 1, "data": []}], "empty page after 1"),
        ([{"total": 3, "data": [1]}, [2]], "array or a page, got list"),
        ([[1, 2], {"total": 3, "data": [3]}], "JSON array after a JSON array, got a JSON object"),
    ],
)
def test_a_listing_refuses_answers_that_do_not_add_up(
    answers: list[object], complaint: str
) -> None:
    listing = Listing(limit=2)
    with pytest.raises(ValueError, match=complaint):
        for answer in answers:
            listing.add(answer)
