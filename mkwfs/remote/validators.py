"""Conditional requests: what a list answer's validator is, and what a revalidation gives.

A ``Validator`` is what a server sent to name one version of an answer (``ETag``,
``Last-Modified``); sent back (``If-None-Match``, ``If-Modified-Since``), it lets the server
answer 304 Not Modified: no body, nothing to parse. An ``Answer`` is the outcome of a
conditional call: the new value with its validator, or ``value`` None for "not modified".
Pure (no I/O, no httpx).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

__all__ = ["Answer", "Validator"]


@dataclass(frozen=True)
class Validator:
    """The ``ETag`` and ``Last-Modified`` of an answer, as the server sent them."""

    etag: str | None = None
    last_modified: str | None = None

    @classmethod
    def of(cls, headers: Mapping[str, str]) -> Validator | None:
        """The validator in a response's headers (by lower-case name), None without one."""
        etag = headers.get("etag") or None
        last_modified = headers.get("last-modified") or None
        if etag is None and last_modified is None:
            return None
        return cls(etag, last_modified)

    def headers(self) -> dict[str, str]:
        """The request headers that ask for a 304 while the answer is unchanged."""
        asked = {}
        if self.etag is not None:
            asked["If-None-Match"] = self.etag
        if self.last_modified is not None:
            asked["If-Modified-Since"] = self.last_modified
        return asked


@dataclass(frozen=True)
class Answer(Generic[T]):
    """A conditional call's outcome: ``value`` None when the server said "not modified"
    (304); ``validator`` the one to send next time (None: the answer had none, or came in
    more than one page, which one validator cannot vouch for)."""

    value: T | None
    validator: Validator | None

    @property
    def not_modified(self) -> bool:
        return self.value is None
