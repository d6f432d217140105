"""Feathers' local authentication: `Authority` issues real HS256 JWTs at login and checks
the ``Authorization`` of every API call, answering as Feathers and jsonwebtoken word it."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import math
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from typing import Final

import httpx

from mkwfs.emulator.config import JSON, EmulatorConfig
from mkwfs.emulator.responses import error_response, iso, json_response

#: Issued tokens remembered before the expired ones are forgotten.
_TOKEN_RECORDS: Final = 4096
#: The ``aud`` claim of Feathers' default JWT options.
_AUDIENCE: Final = "https://yourdomain.com"


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Authority:
    """Issues tokens and checks them; thread-safe. Its secret is its own, so a token of
    another emulator is rejected. ``config`` gives the current `EmulatorConfig`."""

    def __init__(self, config: Callable[[], EmulatorConfig]) -> None:
        self._config = config
        self._secret = secrets.token_bytes(32)
        #: Guards _token_expiry and _verified.
        self._lock = threading.Lock()
        #: jti -> time.time() when the server stops accepting that token.
        self._token_expiry: dict[str, float] = {}
        #: Tokens whose signature checked out, and their claims (a check costs two JSON
        #: decodes and an HMAC, on every request).
        self._verified: dict[str, JSON] = {}

    def issue_token(self, lifetime: float | None = None) -> str:
        """A new JWT as the server issues at login (each with its own ``jti``), valid for
        ``lifetime`` seconds from now (default ``config.token_lifetime``; negative gives an
        already expired token)."""
        return self._issue(lifetime)[0]

    def _issue(self, lifetime: float | None) -> tuple[str, JSON]:
        """A new token and its claims."""
        moment = time.time()
        now = int(moment)
        seconds = self._config().token_lifetime if lifetime is None else lifetime
        jti = str(uuid.uuid4())
        header = {"alg": "HS256", "typ": "access"}
        claims: JSON = {
            "iat": now, "exp": now + math.ceil(seconds), "aud": _AUDIENCE, "sub": "1", "jti": jti,
        }  # fmt: skip
        signing_input = ".".join(
            _b64encode(json.dumps(part, separators=(",", ":")).encode())
            for part in (header, claims)
        )
        with self._lock:
            if len(self._token_expiry) >= _TOKEN_RECORDS:  # only the expired ones go
                self._token_expiry = {k: v for k, v in self._token_expiry.items() if v > moment}
            self._token_expiry[jti] = moment + seconds
        return f"{signing_input}.{_b64encode(self._sign(signing_input))}", claims

    def login(self, request: httpx.Request) -> httpx.Response:
        """``POST /authentication`` with the local strategy: 201 with a new token, as
        Feathers 5 shapes it (see ``config.login_token_copy``); 401 ``Invalid login`` for
        wrong or missing credentials (400 for missing ones with ``config.login_validation``)."""
        config = self._config()
        try:
            body = json.loads(request.content or b"{}")
        except ValueError:
            return error_response(400, "Unexpected token in JSON body")
        if not isinstance(body, dict):
            body = {}
        strategy = body.get("strategy")
        if not strategy:
            return error_response(401, "Invalid authentication information (no `strategy` set)")
        if strategy != "local":
            return error_response(
                401, "Invalid authentication information (strategy not allowed in authStrategies)"
            )
        email, password = body.get("email"), body.get("password")
        for field_name, value in (("email", email), ("password", password)):
            if not isinstance(value, str) or not value:
                if config.login_validation:
                    return error_response(400, f"'{field_name}' is required")
                return error_response(401, "Invalid login")
        if not (
            hmac.compare_digest(str(email).encode(), config.email.encode())
            & hmac.compare_digest(str(password).encode(), config.password.encode())
        ):
            return error_response(401, "Invalid login")
        token, claims = self._issue(None)
        authentication: JSON = {"strategy": "local"}
        if config.login_token_copy:
            authentication["accessToken"] = token
        else:
            authentication["payload"] = claims
        answer = {"accessToken": token, "authentication": authentication,
                  "user": {"id": 1, "email": config.email}}  # fmt: skip
        return json_response(201, answer)

    def _sign(self, signing_input: str) -> bytes:
        return hmac.new(self._secret, signing_input.encode(), hashlib.sha256).digest()

    def authenticate(self, request: httpx.Request) -> httpx.Response | None:
        """None for a valid ``Authorization: Bearer <JWT>``, else the 401 to answer with,
        worded as Feathers/jsonwebtoken words it."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() not in ("bearer", "jwt") or not token:
            return error_response(401, "Not authenticated")
        with self._lock:
            claims = self._verified.get(token)
        if claims is None:
            claims_or_error = self._verify(token)
            if isinstance(claims_or_error, httpx.Response):
                return claims_or_error
            claims = claims_or_error
            with self._lock:
                if len(self._verified) >= _TOKEN_RECORDS:
                    self._verified.clear()
                self._verified[token] = claims
        expires = claims.get("exp")
        if not isinstance(expires, int | float):
            return _token_error("invalid exp value")
        with self._lock:  # the exact expiry of a token issued here; exp is whole seconds
            expires = self._token_expiry.get(str(claims.get("jti")), expires)
        if time.time() >= expires:
            expired_at = iso(dt.datetime.fromtimestamp(expires, dt.UTC))
            data = {"name": "TokenExpiredError", "expiredAt": expired_at}
            return error_response(401, "jwt expired", data=data)
        return None

    def _verify(self, token: str) -> JSON | httpx.Response:
        """The claims of a JWT signed here, else the 401 to answer with."""
        parts = token.split(".")
        try:
            header, claims = (json.loads(_b64decode(part)) for part in parts[:2])
            signature = _b64decode(parts[2])
        except (ValueError, IndexError):
            return _token_error("jwt malformed")
        if not isinstance(header, dict) or not isinstance(claims, dict) or len(parts) != 3:
            return _token_error("jwt malformed")
        if header.get("alg") != "HS256":
            return _token_error("invalid algorithm")
        if not hmac.compare_digest(signature, self._sign(f"{parts[0]}.{parts[1]}")):
            return _token_error("invalid signature")
        return claims


def _token_error(message: str) -> httpx.Response:
    """Feathers' 401 for a token jsonwebtoken refuses: its message, and the error's own
    fields (its ``name``) as ``data``."""
    return error_response(401, message, data={"name": "JsonWebTokenError"})
