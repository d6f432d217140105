"""The JSON of API answers: decoding with a depth bound, and Feathers pages.

Pure functions (no I/O, no httpx). Each raises ``ValueError`` with a message for an answer
that is not what the API promises; the API client adds the request to it and raises a
``ProtocolError``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

__all__ = [
    "JSON_BODY_LIMIT",
    "JSON_DEPTH_LIMIT",
    "PAGE_LIMIT",
    "Listing",
    "decode_json",
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


def decode_json(body: bytes) -> Any:
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
