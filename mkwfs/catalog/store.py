"""Where the catalog keeps the last good copy of each fact, with the time it was fetched and
its validator.

A store hands out one table per kind of fact (builds, a build's downloads, build records,
projects and patterns, a group's builds). ``MemoryStore`` keeps them for the life of the
mount, least recently used first out; ``sqlite.SqliteStore`` keeps them on disk, across
mounts, through the ``Codec`` each table is made with (a table without one stays in memory).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Hashable
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

import cachetools

from mkwfs.remote.validators import Validator

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(frozen=True)
class Fetched(Generic[V]):
    """A fact as the API gave it, when (``time.time()``: fetched, or last found unchanged
    by a 304), and the validator to ask with whether it changed."""

    value: V
    fetched_at: float
    validator: Validator | None = None


@dataclass(frozen=True)
class Codec(Generic[K, V]):
    """How a table's keys and values are written down: ``key`` gives a key's text (one
    per key), ``encode`` a value's bytes, ``decode`` the value again (``ValueError`` for
    bytes it cannot read)."""

    key: Callable[[K], str]
    encode: Callable[[V], bytes]
    decode: Callable[[bytes], V]


class FactTable(abc.ABC, Generic[K, V]):
    """The facts of one kind by key, at most one per key (the newest put)."""

    @abc.abstractmethod
    def get(self, key: K) -> Fetched[V] | None:
        """The fact kept for ``key``, or None."""

    @abc.abstractmethod
    def put(self, key: K, fact: Fetched[V]) -> None:
        """Keep ``fact`` for ``key``, in place of any older one."""

    def renew(self, key: K, fetched_at: float) -> Fetched[V] | None:
        """The server said the fact for ``key`` is unchanged at ``fetched_at`` (a 304):
        keep it with that time. The renewed fact, None when there is none."""
        fact = self.get(key)
        if fact is None:
            return None
        renewed = replace(fact, fetched_at=fetched_at)
        self.put(key, renewed)
        return renewed


class FactStore(abc.ABC):
    """The tables of facts of one mount."""

    @abc.abstractmethod
    def table(
        self, name: str, *, maxsize: int, codec: Codec[K, V] | None = None
    ) -> FactTable[K, V]:
        """The table called ``name``, holding up to ``maxsize`` keys (a hint: a store on
        disk may keep more); ``codec`` says how to write its facts down."""


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

    def table(
        self, name: str, *, maxsize: int, codec: Codec[K, V] | None = None
    ) -> FactTable[K, V]:
        return _MemoryTable[K, V](maxsize)
