"""Where the catalog keeps the last good copy of each fact, with the time it was fetched.

A store hands out one table per kind of fact (builds, a build's downloads, build records,
projects and patterns, a group's builds). ``MemoryStore`` keeps them for the life of the
mount, least recently used first out; a store on disk (issue 14: SQLite, with each fact's
validator) implements the same two classes, so the catalog does not change.
"""

from __future__ import annotations

import abc
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

import cachetools

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(frozen=True)
class Fetched(Generic[V]):
    """A fact as the API gave it, and when (``time.time()``)."""

    value: V
    fetched_at: float


class FactTable(abc.ABC, Generic[K, V]):
    """The facts of one kind by key, at most one per key (the newest put)."""

    @abc.abstractmethod
    def get(self, key: K) -> Fetched[V] | None:
        """The fact kept for ``key``, or None."""

    @abc.abstractmethod
    def put(self, key: K, fact: Fetched[V]) -> None:
        """Keep ``fact`` for ``key``, in place of any older one."""


class FactStore(abc.ABC):
    """The tables of facts of one mount."""

    @abc.abstractmethod
    def table(self, name: str, *, maxsize: int) -> FactTable[K, V]:
        """The table called ``name``, holding up to ``maxsize`` keys (a hint: a store on
        disk may keep more)."""


class _MemoryTable(FactTable[K, V]):
    def __init__(self, maxsize: int) -> None:
        self._facts: cachetools.LRUCache[K, Fetched[V]] = cachetools.LRUCache(maxsize=maxsize)

    def get(self, key: K) -> Fetched[V] | None:
        return self._facts.get(key)

    def put(self, key: K, fact: Fetched[V]) -> None:
        self._facts[key] = fact


class MemoryStore(FactStore):
    """Facts in memory, for the life of the mount; each table drops its least recently used
    key once it holds ``maxsize``."""

    def table(self, name: str, *, maxsize: int) -> FactTable[K, V]:
        return _MemoryTable[K, V](maxsize)
