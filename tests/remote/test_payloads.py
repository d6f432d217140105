"""The pure JSON readers: decoding with a depth bound, and Feathers pages, without a server."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mkwfs.remote.payloads import (
    JSON_DEPTH_LIMIT,
    LIST_WINDOW,
    Listing,
    decode_json,
    decode_list,
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


def _with_text(item: object, source: memoryview) -> tuple[object, bytes]:
    return item, bytes(source)


@pytest.mark.parametrize(
    "items",
    [
        [],
        [{"id": 1, "name": "a"}, {"id": 2, "name": "Übergabe Größe", "n": [1, [2, {"x": None}]]}],
        [{"id": 3, "name": "x" * (3 * LIST_WINDOW)}, {"id": 4, "n": 12345678901234567890}],
        [{"id": 5, "name": "bad \udce4 byte"}, 7, "text", None],
    ],
    ids=["empty", "non-ascii", "beyond-the-window", "odd-items"],
)
@pytest.mark.parametrize("paged", [False, True], ids=["array", "page"])
@pytest.mark.parametrize("indent", [None, 2])
def test_decode_list_gives_each_item_with_its_text_as_sent(
    items: list[object], paged: bool, indent: int | None
) -> None:
    answer: object = {"total": 9, "limit": 50, "skip": 0, "data": items} if paged else items
    body = json.dumps(answer, ensure_ascii=False, indent=indent).encode("utf-8", "surrogateescape")
    decoded: Any = decode_list(bytearray(body), _with_text)
    parsed = decoded["data"] if paged else decoded
    assert isinstance(parsed, list)
    expected = json.loads(body.decode("utf-8", "replace"))
    assert [item for item, _ in parsed] == (expected["data"] if paged else expected)
    for item, text in parsed:
        assert text in body  # the item's own bytes, as sent
        assert decode_json(text) == item
    if paged:
        assert isinstance(decoded, dict)
        assert {k: v for k, v in decoded.items() if k != "data"} == {
            "total": 9, "limit": 50, "skip": 0
        }  # fmt: skip


@pytest.mark.parametrize(
    "body",
    [b"[{}", b"[{} {}]", b"[1,]", b'{"data": [1, 2}', b"[1] x", b'{"total": 1 "data": []}'],
)
def test_decode_list_refuses_what_is_not_json(body: bytes) -> None:
    with pytest.raises(ValueError, match="not valid JSON"):
        decode_list(body, _with_text)


def test_decode_list_leaves_other_answers_to_the_listing() -> None:
    answer: object = decode_list(b'"text"', _with_text)
    assert answer == "text"
