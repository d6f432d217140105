"""Facts on disk: a ``FactStore`` in SQLite (WAL mode), ``<cache dir>/catalog.db``.

One table, ``facts(server, kind, key, fetched_at, etag, last_modified, value)``, a row per
fact: ``server`` the API's URL (a cache directory used with two servers keeps each one's
listings apart), ``kind`` the catalog's table name, ``key`` and ``value`` what the table's
``Codec`` makes of them (the JSON the server sent). ``PRAGMA user_version`` is
``SCHEMA_VERSION``.

* Reads come from memory (what this mount put or read already), else one query by primary
  key on the caller's thread: a row of one listing, well under a millisecond.
* Writes go to memory at once and to disk in batches, encoded and written by a worker
  thread, ``WRITE_DELAY`` seconds after the first of a batch and when the store closes
  (``open_sqlite_store``). A 304 (``renew``) writes only the new time.
* A file that is not this database (corrupt, not SQLite, another schema or version) is set
  aside as ``catalog.db.broken-<time>`` with a log line, and a new one is made: never fatal.
  A failure later (disk full, I/O) is logged once and the store goes on in memory.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import cachetools
import trio

from mkwfs.catalog.store import Codec, FactStore, FactTable, Fetched, MemoryStore
from mkwfs.remote.validators import Validator

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

log = logging.getLogger(__name__)

#: ``PRAGMA user_version`` of the database this module writes.
SCHEMA_VERSION = 1
#: The file's name in the cache directory.
FILE_NAME = "catalog.db"
#: Seconds a batch of writes gathers before the worker thread writes it.
WRITE_DELAY = 0.5

_SCHEMA = """
CREATE TABLE facts (
    server TEXT NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    fetched_at REAL NOT NULL,
    etag TEXT,
    last_modified TEXT,
    value BLOB NOT NULL,
    PRIMARY KEY (server, kind, key)
) WITHOUT ROWID
"""


_COLUMNS = ["server", "kind", "key", "fetched_at", "etag", "last_modified", "value"]


class _Unusable(Exception):
    """The file is not a catalog database of this version."""


#: A write waiting for the worker: a whole fact, or (a 304) only its new time.
_Pending = tuple[Codec[Any, Any], Fetched[Any] | float]


class SqliteStore(FactStore):
    """Facts in ``path`` (see the module docstring). Make it with ``open_sqlite_store``,
    which runs its writes and closes it."""

    def __init__(self, path: Path, server: str = "") -> None:
        self.path = path
        self.server = server
        self._reader, self._writer = _connect(path)
        self._lock = threading.Lock()  # guards _pending between trio and the worker
        #: Held by a read and by close: a read may run in a worker thread (the catalog's
        #: start reads the list of builds aside), and the mount may end meanwhile.
        self._reading = threading.Lock()
        self._closed = False
        self._pending: dict[tuple[str, str], _Pending] = {}
        self._dirty = trio.Event()
        self._failed = False
        self._memory = MemoryStore()

    # -- tables ----------------------------------------------------------------------

    def table(
        self, name: str, *, maxsize: int, codec: Codec[K, V] | None = None
    ) -> FactTable[K, V]:
        if codec is None:
            return self._memory.table(name, maxsize=maxsize)
        return _SqliteTable[K, V](self, name, maxsize, codec)

    # -- reads (the caller's thread) ---------------------------------------------------

    def waiting(self, kind: str, key: str) -> Fetched[Any] | float | None:
        """What is queued for one fact and not written yet: the fact, its new time, or None."""
        with self._lock:
            earlier = self._pending.get((kind, key))
        return None if earlier is None else earlier[1]

    def read(self, kind: str, key: str) -> tuple[float, Validator | None, bytes] | None:
        """The row of one fact: fetch time, validator, encoded value; None without one."""
        with self._reading:
            if self._failed or self._closed:
                return None
            try:
                row = self._reader.execute(
                    "SELECT fetched_at, etag, last_modified, value FROM facts "
                    "WHERE server = ? AND kind = ? AND key = ?",
                    (self.server, kind, key),
                ).fetchone()
            except sqlite3.Error as exc:
                self._fail("read", exc)
                return None
        if row is None:
            return None
        fetched_at, etag, last_modified, value = row
        validator = (
            None if etag is None and last_modified is None else Validator(etag, last_modified)
        )
        return float(fetched_at), validator, bytes(value)

    # -- writes (a worker thread) ------------------------------------------------------

    def queue(
        self, kind: str, key: str, codec: Codec[Any, Any], write: Fetched[Any] | float
    ) -> None:
        """Write a fact (or, a float, only its new time) with the next batch."""
        if self._failed:
            return
        with self._lock:
            earlier = self._pending.get((kind, key))
            if isinstance(write, float) and earlier is not None:
                before = earlier[1]
                if not isinstance(before, float):  # not written yet: write it, newly timed
                    write = Fetched(before.value, write, before.validator)
            self._pending[(kind, key)] = (codec, write)
        self._dirty.set()

    async def serve_writes(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Write the queued facts in batches until cancelled."""
        task_status.started()
        while True:
            await self._dirty.wait()
            await trio.sleep(WRITE_DELAY)
            self._dirty = trio.Event()
            await trio.to_thread.run_sync(self._write_pending)

    def _write_pending(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        if not pending or self._failed:
            return
        facts, times = [], []
        for (kind, key), (codec, write) in pending.items():
            if isinstance(write, float):
                times.append((write, self.server, kind, key))
                continue
            try:
                value = codec.encode(write.value)
            except (TypeError, ValueError) as exc:
                log.warning("catalog: %s %s not kept on disk: %s", kind, key, exc)
                continue
            validator = write.validator or Validator()
            facts.append(
                (
                    self.server,
                    kind,
                    key,
                    write.fetched_at,
                    validator.etag,
                    validator.last_modified,
                    value,
                )
            )
        try:
            with self._writer:
                self._writer.executemany(
                    "INSERT OR REPLACE INTO facts VALUES (?, ?, ?, ?, ?, ?, ?)", facts
                )
                self._writer.executemany(
                    "UPDATE facts SET fetched_at = ? WHERE server = ? AND kind = ? AND key = ?",
                    times,
                )
        except sqlite3.Error as exc:
            self._fail("write", exc)

    def close(self) -> None:
        """Write what is queued and close the database (blocking: from a thread)."""
        self._write_pending()
        with self._reading:
            self._closed = True
            self._reader.close()
        self._writer.close()

    def _fail(self, what: str, exc: sqlite3.Error) -> None:
        if not self._failed:
            self._failed = True
            log.warning(
                "catalog: cannot %s %s (%s): listings are kept in memory only until the next mount",
                what,
                self.path,
                exc,
            )


class _SqliteTable(FactTable[K, V]):
    """One kind of fact: the ones used lately in memory, all of them on disk."""

    def __init__(self, store: SqliteStore, kind: str, maxsize: int, codec: Codec[K, V]) -> None:
        self._store = store
        self._kind = kind
        self._codec = codec
        self._facts: cachetools.LRUCache[K, Fetched[V]] = cachetools.LRUCache(maxsize=maxsize)

    def get(self, key: K) -> Fetched[V] | None:
        fact = self._facts.get(key)
        if fact is not None:
            return fact
        text = self._codec.key(key)
        waiting = self._store.waiting(self._kind, text)  # put, left memory, not written yet
        if isinstance(waiting, Fetched):
            return waiting
        row = self._store.read(self._kind, text)
        if row is None:
            return None
        fetched_at, validator, value = row
        if waiting is not None:
            fetched_at = waiting
        try:
            fact = Fetched(self._codec.decode(value), fetched_at, validator)
        except ValueError as exc:
            log.warning(
                "catalog: %s %r on disk is unreadable, asked again: %s", self._kind, key, exc
            )
            return None
        self._facts[key] = fact
        return fact

    def put(self, key: K, fact: Fetched[V]) -> None:
        self._facts[key] = fact
        self._store.queue(self._kind, self._codec.key(key), self._codec, fact)

    def renew(self, key: K, fetched_at: float) -> Fetched[V] | None:
        fact = self.get(key)
        if fact is None:
            return None
        renewed = Fetched(fact.value, fetched_at, fact.validator)
        self._facts[key] = renewed
        self._store.queue(self._kind, self._codec.key(key), self._codec, fetched_at)
        return renewed


@asynccontextmanager
async def open_sqlite_store(cache_dir: Path, server: str = "") -> AsyncIterator[FactStore]:
    """The store of ``server``'s facts in ``cache_dir/catalog.db`` (made, or set aside and
    made again, as the module docstring says), its writes running; on exit the last ones
    are written. When no database can be made there at all (a read-only cache directory),
    a ``MemoryStore``, with a log line."""
    path = cache_dir / FILE_NAME
    try:
        store = await trio.to_thread.run_sync(SqliteStore, path, server)
    except (OSError, sqlite3.Error) as exc:
        log.warning("catalog: cannot keep listings in %s (%s): memory only", path, exc)
        yield MemoryStore()
        return
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(store.serve_writes)
            try:
                yield store
            finally:
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(store.close)


# -- opening ---------------------------------------------------------------------------------


def _connect(path: Path) -> tuple[sqlite3.Connection, sqlite3.Connection]:
    """A reader and a writer connection to the catalog database at ``path``, made first
    when there is none; a file that is not one is set aside for a new one."""
    try:
        return _open_checked(path)
    except (sqlite3.DatabaseError, _Unusable) as exc:
        aside = _set_aside(path)
        log.warning(
            "catalog: %s is not a usable catalog database (%s): set aside as %s; listings "
            "are fetched again",
            path,
            exc,
            aside.name,
        )
    return _open_checked(path)


def _open_checked(path: Path) -> tuple[sqlite3.Connection, sqlite3.Connection]:
    writer = sqlite3.connect(path, timeout=5.0, check_same_thread=False)
    try:
        _check(writer)
        reader = sqlite3.connect(path, timeout=5.0, check_same_thread=False)
    except BaseException:
        writer.close()
        raise
    return reader, writer


def _check(db: sqlite3.Connection) -> None:
    """Make the schema in an empty database; ``_Unusable`` or ``sqlite3.DatabaseError``
    for a file that is something else."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if version == 0 and not tables:
        db.execute("PRAGMA journal_mode = WAL")
        with db:
            db.execute(_SCHEMA)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    elif version != SCHEMA_VERSION or "facts" not in tables:
        raise _Unusable(f"schema version {version}, tables {sorted(tables)}")
    elif (columns := [row[1] for row in db.execute("PRAGMA table_info(facts)")]) != _COLUMNS:
        raise _Unusable(f"facts with the columns {columns}")
    else:
        problems = [row[0] for row in db.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise _Unusable("; ".join(problems[:3]))
        db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")


def _set_aside(path: Path) -> Path:
    """Rename the database and its WAL files out of the way; the new name of the database."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    aside = path.with_name(f"{path.name}.broken-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        old = path.with_name(path.name + suffix)
        with suppress(FileNotFoundError):
            old.rename(aside.with_name(aside.name + suffix))
    return aside


__all__ = ["FILE_NAME", "SCHEMA_VERSION", "WRITE_DELAY", "SqliteStore", "open_sqlite_store"]
