"""The JSON of API answers: decoding with a depth bound, and Feathers pages.

Pure functions (no I/O, no httpx). Each raises ``ValueError`` with a message for an answer
that is not what the API promises; the API client adds the request to it and raises a
``ProtocolError``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard, TypeVar, cast

T = TypeVar("T")

__all__ = [
    "JSON_BODY_LIMIT",
    "JSON_DEPTH_LIMIT",
    "PAGE_LIMIT",
    "Listing",
    "decode_json",
    "decode_list",
    "feathers_page",
    "is_count",
    "json_object",
    "kind",
    "nesting_exceeds",
]

#: The largest JSON answer read (a list of many thousand builds is a few MB): a bigger one
#: is a ``ProtocolError``, not a daemon out of memory.
JSON_BODY_LIMIT = 64 * 1024 * 1024
#: How deeply an answer's JSON may nest (the API's objects nest three levels): deeper is a
#: ``ProtocolError``, not a ``RecursionError`` in whatever walks it later.
JSON_DEPTH_LIMIT = 32
#: The ``$limit`` a list asks for. Feathers caps it silently at its ``paginate.max`` (50 in
#: a stock setup, against a default page of 10), so the largest page the server allows is
#: what comes; a service without pagination takes it as a limit, which `Listing` follows.
PAGE_LIMIT = 5000


def decode_json(body: bytes | bytearray) -> Any:
    """The JSON of an answer. Bytes that are not UTF-8 (a broken server) become U+FFFD, so
    one bad name does not hide a whole list; ``ValueError`` for what is not JSON or nests
    beyond ``JSON_DEPTH_LIMIT``."""
    try:
        try:
            data = json.loads(body)
        except UnicodeDecodeError:
            data = json.loads(body.decode("utf-8", "replace"))
    except ValueError as exc:
        raise ValueError(f"the answer is not valid JSON ({exc})") from exc
    except RecursionError as exc:
        raise ValueError("the answer's JSON nests too deeply") from exc
    if nesting_exceeds(data, JSON_DEPTH_LIMIT):
        raise ValueError(f"the answer's JSON nests more than {JSON_DEPTH_LIMIT} levels")
    return data


#: Bytes of the body decoded at a time by `decode_list`; a longer item widens the window.
LIST_WINDOW = 1 << 20
_SPACE = re.compile(rb"[ \t\n\r]*")
#: What a list item is turned into: its JSON value and its JSON text as sent.
ItemParser = Callable[[object, memoryview], T]


def decode_list(body: bytes | bytearray, parse: ItemParser[T]) -> list[T] | dict[str, Any]:
    """A list answer (a bare JSON array, or a Feathers page whose ``data`` is one) with
    each item given to ``parse`` as soon as it is read, with a view of its JSON text in
    ``body``: the dicts of one item at a time exist, never the whole answer's (a list of
    10,000 builds would take 200 MB as dicts). A page comes back as a dict whose ``data``
    is the parsed items. ``ValueError`` as `decode_json` (and for what ``parse`` refuses),
    but the items' depth is not walked here (a second of CPU at 10,000 builds): whoever
    decodes an item's text again checks it (`Build.raw`).
    """
    reader = _ListReader(body)
    start = reader.skip_space(0)
    opening = body[start : start + 1]
    if opening == b"[":
        found = reader.items(start, parse)
        if reader.skip_space(reader.end) != len(body):
            raise ValueError("the answer is not valid JSON (extra data after the array)")
        return found
    if opening != b"{":
        not_a_list: Any = decode_json(body)  # `Listing` says what it is
        return cast(dict[str, Any], not_a_list)
    page: dict[str, Any] = {}
    position = reader.skip_space(start + 1)
    while body[position : position + 1] != b"}":
        key, position = reader.value_at(position)
        position = reader.expect(position, b":")
        if key == "data" and body[position : position + 1] == b"[":
            page["data"] = reader.items(position, parse)
            position = reader.end
        else:
            page[str(key)], position = reader.value_at(position)
        position = reader.skip_space(position)
        if body[position : position + 1] == b",":
            position = reader.skip_space(position + 1)
        elif body[position : position + 1] != b"}":
            raise ValueError("the answer is not valid JSON (a page that does not go on)")
    if reader.skip_space(position + 1) != len(body):
        raise ValueError("the answer is not valid JSON (extra data after the page)")
    return page


class _ListReader:
    """Reads JSON values at byte offsets of a body, through a window of it decoded as
    Latin-1 (one character a byte, so the decoder's offsets are the body's; every byte of
    JSON's syntax is ASCII). An item with other bytes than ASCII is decoded again from its
    UTF-8, so its strings are right."""

    def __init__(self, body: bytes | bytearray) -> None:
        self._body = body
        self._view = memoryview(body)
        self._decoder = json.JSONDecoder()
        self._window = ""
        self._window_start = 0
        #: Where the last array read by `items` ended.
        self.end = 0

    def skip_space(self, position: int) -> int:
        match = _SPACE.match(self._body, position)
        return position if match is None else match.end()

    def expect(self, position: int, token: bytes) -> int:
        position = self.skip_space(position)
        if self._body[position : position + 1] != token:
            raise ValueError(f"the answer is not valid JSON (expected {token.decode()!r})")
        return self.skip_space(position + 1)

    def value_at(self, position: int) -> tuple[Any, int]:
        """The JSON value from byte ``position``, and the offset after it."""
        size = LIST_WINDOW
        while True:
            window_end = self._window_start + len(self._window)
            if not (self._window_start <= position < window_end):
                self._load(position, size)
                window_end = self._window_start + len(self._window)
            complete = window_end == len(self._body)
            try:
                value, end = self._decoder.raw_decode(self._window, position - self._window_start)
            except ValueError as exc:
                if complete:
                    raise ValueError(f"the answer is not valid JSON ({exc})") from exc
            except RecursionError as exc:
                raise ValueError("the answer's JSON nests too deeply") from exc
            else:
                # A number cut by the window's end decodes too: it must end before it.
                if complete or end < len(self._window):
                    return value, self._window_start + end
            size *= 2
            self._load(position, size)

    def items(self, start: int, parse: ItemParser[T]) -> list[T]:
        """The parsed items of the array at byte ``start``; `end` is set after it."""
        found: list[T] = []
        position = self.skip_space(start + 1)
        if self._body[position : position + 1] == b"]":
            self.end = position + 1
            return found
        ascii_only = self._body.isascii()
        while True:
            value, end = self.value_at(position)
            source = self._view[position:end]
            if not ascii_only and not bytes(source).isascii():
                value = decode_json(bytes(source))
            found.append(parse(value, source))
            position = self.skip_space(end)
            token = self._body[position : position + 1]
            if token == b"]":
                self.end = position + 1
                return found
            if token != b",":
                raise ValueError("the answer is not valid JSON (an array that does not go on)")
            position = self.skip_space(position + 1)

    def _load(self, position: int, size: int) -> None:
        self._window_start = position
        self._window = bytes(self._view[position : position + size]).decode("latin-1")


def nesting_exceeds(data: object, limit: int) -> bool:
    """Whether ``data`` has arrays or objects nested more than ``limit`` deep (level by
    level: no recursion however deep it is, and only containers are kept)."""
    level: list[Any] = [data] if isinstance(data, dict | list) else []
    for _ in range(limit):
        level = [
            child
            for value in level
            for child in (value.values() if isinstance(value, dict) else value)
            if isinstance(child, (dict, list))  # a tuple: faster than dict | list here
        ]
        if not level:
            return False
    return bool(level)


def feathers_page(data: object, *, skip: int) -> tuple[int, list[object]]:
    """``(total, data)`` of a Feathers page (``{"total", "limit", "skip", "data"}``) that
    must start at item ``skip``; a page without ``skip`` is taken to start there."""
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON array or a page, got {kind(data)}")
    total, page, page_skip = data.get("total"), data.get("data"), data.get("skip", skip)
    if not is_count(total) or not isinstance(page, list) or not is_count(page_skip):
        raise ValueError("a page without valid total, skip and data")
    if page_skip != skip:
        raise ValueError(f"asked for items from {skip}, got a page from {page_skip}")
    return total, page


@dataclass
class Listing:
    """The items of a list, gathered from its answers: a bare JSON array, or Feathers
    pages followed with ``$skip`` until their ``total``.

    Ask with `params` until `done`, giving each answer to `add`. A bare array of exactly
    ``limit`` items may be cut by the limit (a Feathers service without pagination takes
    ``$limit`` as such), so it is followed with ``$skip`` too, until a shorter one; an
    answer that starts with the list's first item again means the server ignores ``$skip``
    and sent the whole list: it ends the list.
    """

    limit: int = PAGE_LIMIT
    items: list[object] = field(default_factory=list)
    #: Whether the answers are pages; None before the first.
    paged: bool | None = None
    done: bool = False

    def params(self) -> dict[str, int]:
        """The paging parameters of the next request."""
        return {"$limit": self.limit, **({"$skip": len(self.items)} if self.items else {})}

    def add(self, data: object) -> None:
        """Take the answer to a request made with `params`. ``ValueError`` for one that
        does not fit the answers before it."""
        if isinstance(data, list) and not self.paged:
            self.paged = False
            if self.items and data and data[0] == self.items[0]:
                self.done = True
                return
            self.items.extend(data)
            self.done = len(data) != self.limit
            return
        if self.paged is False:
            raise ValueError(f"expected a JSON array after a JSON array, got {kind(data)}")
        self.paged = True
        total, page = feathers_page(data, skip=len(self.items))
        self.items.extend(page)
        self.done = len(self.items) >= total
        if not self.done and not page:
            raise ValueError(f"an empty page after {len(self.items)} of {total} items")


def is_count(value: object) -> TypeGuard[int]:
    """A JSON number that counts: an integer (not a bool) of at least 0."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def kind(value: object) -> str:
    """How messages name the JSON type of ``value``."""
    return "a JSON object" if isinstance(value, dict) else type(value).__name__


def json_object(item: object) -> Mapping[str, Any]:
    """``item`` as a JSON object; ``ValueError`` for anything else."""
    if not isinstance(item, dict):
        raise ValueError(f"expected a JSON object, got {kind(item)}")
    return item
