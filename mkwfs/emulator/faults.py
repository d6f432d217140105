"""A server under fire: failures queued by tests (`Faults.fail_next`) or drawn at
``config.fail_rate``, what a failing server or its proxy answers, latency and jitter, and
the stalls of bodies that tests release."""

from __future__ import annotations

import random
import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass

import httpx

from mkwfs.emulator.bodies import Stall
from mkwfs.emulator.config import EmulatorConfig, FailureBody
from mkwfs.emulator.responses import bytes_response, cut_json, error_response, phrase
from mkwfs.emulator.routes import ANY_ENDPOINT, ENDPOINTS


@dataclass
class _Failure:
    """Queued by `Emulator.fail_next`: the next ``remaining`` requests of ``endpoints``
    (None: any) are answered with ``status`` and a ``body`` of that kind."""

    endpoints: frozenset[str] | None
    status: int
    body: FailureBody
    remaining: int


def injected_response(status: int, kind: FailureBody, retry_after: int | str) -> httpx.Response:
    """What a failing server or the proxy in front of it answers (see `Emulator.fail_next`)."""
    headers = {"Retry-After": str(retry_after)} if status == 429 else {}
    if kind in ("json", "malformed"):
        response = error_response(status, phrase(status), headers=headers)
        return response if kind == "json" else cut_json(response)
    if kind == "html":
        title = f"{status} {phrase(status)}"
        page = (
            f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
            f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
            "</body>\r\n</html>\r\n"
        )
        return bytes_response(status, page.encode(), "text/html", headers)
    return bytes_response(status, b"", None, headers)


class Faults:
    """The faults of one emulator; thread-safe. Random choices (jitter, ``fail_rate``) come
    from one generator seeded with ``seed``, so the same requests in the same order meet the
    same faults."""

    def __init__(self, seed: int) -> None:
        #: Guards _failures and _rng.
        self._lock = threading.Lock()
        self._failures: list[_Failure] = []
        self._rng = random.Random(seed)
        self._stalls: weakref.WeakSet[Stall] = weakref.WeakSet()

    def draw(self, key: str, config: EmulatorConfig) -> tuple[httpx.Response | None, float]:
        """For a request of endpoint ``key``: the failure to answer it with instead (None:
        the real answer), and the seconds to wait before the answer."""
        with self._lock:
            injected = self._next_failure(key, config)
            delay = config.latency + (self._rng.uniform(0, config.jitter) if config.jitter else 0)
        if injected is None:
            return None, delay
        return injected_response(*injected, config.retry_after), delay

    def fail_next(
        self,
        endpoint: str | Iterable[str],
        status: int,
        count: int = 1,
        body: FailureBody = "json",
    ) -> None:
        """Answer the next ``count`` requests of ``endpoint`` with ``status`` instead of the
        real answer. ``endpoint`` is a key of `ENDPOINTS`, several keys (whose requests share
        the ``count``), or `ANY_ENDPOINT` for every request. ``body`` is a Feathers JSON
        error, an nginx-style HTML page, an empty body, or a Feathers error cut in half
        ("malformed"); 429s carry ``Retry-After: config.retry_after``. Calls queue up behind
        each other: a request meets the oldest queued failure that matches it."""
        keys = {endpoint} if isinstance(endpoint, str) else set(endpoint)
        unknown = keys - ENDPOINTS - {ANY_ENDPOINT}
        if unknown or not keys:
            raise ValueError(
                f"unknown endpoint key {sorted(unknown)!r}; one of {sorted(ENDPOINTS)} "
                f"or {ANY_ENDPOINT!r}"
            )
        if body not in ("json", "html", "empty", "malformed"):
            raise ValueError(f"unknown failure body {body!r}")
        endpoints = None if ANY_ENDPOINT in keys else frozenset(keys)
        if count > 0:
            with self._lock:
                self._failures.append(_Failure(endpoints, status, body, count))

    def clear(self) -> None:
        """Forget the failures `fail_next` queued and release every stalled body."""
        with self._lock:
            self._failures.clear()
        self.release_stalls()

    def release_stalls(self) -> None:
        """Let every body stalled by ``config.stall_after`` go on (later ones stall again)."""
        with self._lock:
            stalls = list(self._stalls)
        for stall in stalls:
            stall.release()

    def _next_failure(self, key: str, config: EmulatorConfig) -> tuple[int, FailureBody] | None:
        """The failure to answer a request of endpoint ``key`` with: the oldest queued one
        that matches, else one drawn with ``config.fail_rate``. Call with the lock held."""
        for failure in self._failures:
            if failure.endpoints is None or key in failure.endpoints:
                failure.remaining -= 1
                if not failure.remaining:
                    self._failures.remove(failure)
                return failure.status, failure.body
        if config.fail_rate and self._rng.random() < config.fail_rate:
            return self._rng.choice(config.fail_statuses), self._rng.choice(config.fail_bodies)
        return None

    def stall(self, config: EmulatorConfig) -> Stall | None:
        """A new stall per ``config.stall_after``, which `release_stalls` can release."""
        if config.stall_after is None:
            return None
        stall = Stall(config.stall_after, config.stall_seconds)
        with self._lock:
            self._stalls.add(stall)
        return stall
