"""Authentication: the credentials, the token in use, and logging in for a new one.

A token is used as given; with email and password the client logs in lazily on the first
request, and after a 401 logs in again, once for every request that was refused the same
token. ``POST /authentication`` answers Feathers' shape: the token is the top-level
``accessToken`` (``authentication`` holds only ``strategy`` and ``payload``).

Neither a token nor a password ever appears in a message, a log line or a ``repr``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import httpx
import trio

from mkwfs.remote.errors import ConfigError, LoginFailed
from mkwfs.remote.failures import (
    protocol_error,
    raise_for_status,
    read_body,
    status_error,
)
from mkwfs.remote.payloads import decode_json

__all__ = ["Authenticator", "Credentials", "Send"]

#: How the authenticator sends its login: one request, the response yielded unread (the
#: client's counting and logging `ApiSession.sent`).
Send = Callable[[httpx.Request], AbstractAsyncContextManager[httpx.Response]]


@dataclass(frozen=True)
class Credentials:
    """A token, or an email and password to log in with (or both: the token is tried first)."""

    token: str | None = None
    email: str | None = None
    password: str | None = None

    @property
    def can_login(self) -> bool:
        return bool(self.email) and bool(self.password)

    def __repr__(self) -> str:
        token = None if self.token is None else "***"
        password = None if self.password is None else "***"
        return f"Credentials(token={token!r}, email={self.email!r}, password={password!r})"


class Authenticator:
    """The token to send, and the logins that renew it (``login_url``, sent with ``send``)."""

    def __init__(
        self, http: httpx.AsyncClient, login_url: str, credentials: Credentials, send: Send
    ) -> None:
        self._http = http
        self._login_url = login_url
        self.credentials = credentials
        self._send = send
        self._token = credentials.token or None
        self._lock = trio.Lock()

    @property
    def token(self) -> str | None:
        """The token in use, the one from the last login if there was one; None before
        the first login when none was given. Never logged."""
        return self._token

    async def login(self) -> None:
        """Log in now, and use the new token from now on."""
        async with self._lock:
            self._token = await self._post_login()

    async def current(self, *, stale: str | None = None) -> str:
        """The token to send: the current one, or a new one from a login when there is none
        yet or it is ``stale`` (refused with a 401). Concurrent callers share one login."""
        if self._token is not None and self._token != stale:
            return self._token
        async with self._lock:
            if self._token is None or self._token == stale:
                self._token = await self._post_login()
            token: str = self._token
        return token

    async def _post_login(self) -> str:
        """``POST /authentication`` and return the new access token. ``LoginFailed`` when
        the server refuses the credentials (401 ``Invalid login``, or a 400 of a validating
        hook); ``ProtocolError`` for an answer without a token."""
        email, password = self.credentials.email, self.credentials.password
        if not email or not password:
            raise ConfigError("cannot log in to the API without an email and a password")
        request = self._http.build_request(
            "POST",
            self._login_url,
            json={"strategy": "local", "email": email, "password": password},
        )
        async with self._send(request) as response:
            if response.status_code in (400, 401):
                raise await status_error(
                    response,
                    LoginFailed,
                    prefix=f"the server refused the credentials of {email}",
                    secret=password,
                )
            await raise_for_status(response, can_login=True)
            try:
                body = decode_json(await read_body(response))
            except ValueError as exc:
                raise protocol_error(request, exc) from exc
        token = body.get("accessToken") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise protocol_error(request, "the answer has no accessToken")
        return token
