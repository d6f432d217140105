"""The JSON of API answers: decoding with a depth bound, and Feathers pages.

Pure functions (no I/O, no httpx). Each raises ``ValueError`` with a message for an answer
that is not what the API promises; the API client adds the request to it and raises a
``ProtocolError``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeGuard

__all__ = [
    "JSON_BODY_LIMIT",
    "JSON_DEPTH_LIMIT",
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
