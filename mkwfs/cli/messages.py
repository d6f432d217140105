"""Errors -> one actionable line and an exit code."""

from __future__ import annotations

from mkwfs.config import (
    DEFAULT_API_URL,
    Config,
)
from mkwfs.remote.errors import (
    AuthenticationError,
    HTTPStatusError,
    LoginFailed,
    MkwfsError,
    NotFound,
    PermissionDenied,
    ProtocolError,
    TokenRejected,
    TransportError,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def startup_message(exc: MkwfsError, config: Config) -> str:
    """One actionable line for a failure to start serving ``config``."""
    return server_message(exc, config.api_url, config.email, config.token_source)


def server_message(exc: MkwfsError, url: str, email: str | None, token_source: str | None) -> str:
    if isinstance(exc, LoginFailed):
        return (
            f"the server at {url} refused the login of {email}: check the email and "
            "the password (--password-file or MKWFS_PASSWORD)"
        )
    if isinstance(exc, TokenRejected):
        return (
            f"the server at {url} rejected the token from {token_source} (expired or "
            "wrong): run `mkwfs login`, or give a new token (--token-file or MKWFS_TOKEN)"
        )
    if isinstance(exc, AuthenticationError):
        return f"the server at {url} refused to authenticate: {exc}"
    if isinstance(exc, TransportError):
        return (
            f"cannot reach the MetaKraftwerk API at {url}: {exc}; check --api-url and the network"
        )
    if isinstance(exc, NotFound | ProtocolError):
        return (
            f"{url} answers, but not as the MetaKraftwerk API ({exc}); check --api-url: it is "
            f"the server's root, such as {DEFAULT_API_URL}"
        )
    if isinstance(exc, PermissionDenied):
        return f"the server at {url} does not let this account list builds: {exc}"
    if isinstance(exc, HTTPStatusError):
        return f"the MetaKraftwerk API at {url} failed: {exc}"
    return str(exc)
