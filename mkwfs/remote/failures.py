"""The API layer's error boundary: httpx failures and HTTP answers as mkwfs errors.

* no HTTP answer (refused, reset, timeout, truncated stream)   -> ``TransportError``
* an answer that is not what the API promises (bad JSON/shape)  -> ``ProtocolError``
* an error status                                              -> an ``HTTPStatusError`` subclass

The messages name the request (``GET /api/v1/builds/7``) and the server's own words, never
a token or a password.
"""

from __future__ import annotations

import html
import json
import logging
import re
from collections.abc import Mapping

import httpx

from mkwfs.remote.errors import (
    ApiError,
    AuthenticationError,
    HTTPStatusError,
    NotFound,
    PermissionDenied,
    ProtocolError,
    RangeNotSatisfiable,
    RateLimited,
    ServerError,
    TokenRejected,
    TransportError,
)
from mkwfs.remote.headers import readable_length, retry_after
from mkwfs.remote.payloads import JSON_BODY_LIMIT

__all__ = [
    "ERROR_BODY_LIMIT",
    "SERVER_MESSAGE_LIMIT",
    "map_httpx_error",
    "protocol_error",
    "public_url",
    "raise_for_status",
    "read_body",
    "server_message",
    "status_error",
    "where",
]

logger = logging.getLogger("mkwfs.api")

#: How much of an error body is read to find the server's message.
ERROR_BODY_LIMIT = 64 * 1024
#: How long ``server_message`` may get.
SERVER_MESSAGE_LIMIT = 200

_ERROR_CLASSES: Mapping[int, type[HTTPStatusError]] = {
    403: PermissionDenied,
    404: NotFound,
    416: RangeNotSatisfiable,
    429: RateLimited,
}
#: What Feathers' 500 says when Express refused a range with 416 (`send`'s message for it).
_FEATHERS_416_MESSAGE = "range not satisfiable"


def public_url(request: httpx.Request) -> str:
    """The request's URL for messages: no user info (the API URL never has any)."""
    return str(request.url.copy_with(userinfo=b""))


def where(request: httpx.Request) -> str:
    """``GET /api/v1/downloads?build_id=5139``: how messages and logs name a request."""
    return f"{request.method} {request.url.raw_path.decode('ascii')}"


def protocol_error(request: httpx.Request, problem: object) -> ProtocolError:
    """``ProtocolError`` for an answer to ``request`` that is not what the API promises:
    ``problem`` says what (a message, or the ``ValueError`` of a parser)."""
    return ProtocolError(f"{where(request)}: {problem}", url=public_url(request))


def map_httpx_error(exc: httpx.HTTPError, request: httpx.Request) -> ApiError:
    """The mkwfs error for an httpx failure: a body it could not decode is a protocol
    error, everything else means there was no (complete) answer."""
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, httpx.DecodingError):
        return protocol_error(request, f"undecodable body ({detail})")
    return TransportError(
        f"{where(request)}: connection failed ({detail})", url=public_url(request)
    )


async def read_body(response: httpx.Response) -> bytearray:
    """The whole body of a successful metadata response (not copied into ``bytes``: a list
    of many builds is tens of MB); ``ProtocolError`` beyond ``JSON_BODY_LIMIT`` bytes
    (whatever ``Content-Length`` claims)."""
    body = bytearray()
    try:
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > JSON_BODY_LIMIT:
                raise protocol_error(
                    response.request, f"an answer of more than {JSON_BODY_LIMIT} bytes"
                )
    except httpx.HTTPError as exc:
        raise map_httpx_error(exc, response.request) from exc
    return body


async def raise_for_status(response: httpx.Response, *, can_login: bool) -> None:
    """Raise the ``HTTPStatusError`` for an error status; nothing for a success. A 401 is
    ``TokenRejected`` without credentials to log in again (``can_login``), else the
    refusal of a token fresh from login. A 416, or a Feathers 500 that says "Range Not
    Satisfiable" to a ``Range`` request, is ``RangeNotSatisfiable``."""
    if response.is_success:
        return
    status = response.status_code
    error_class: type[HTTPStatusError]
    if status == 401 and not can_login:
        prefix = "the API rejected the token; get a new one (or use email and password)"
        error_class = TokenRejected
    elif status == 401:
        prefix, error_class = "the API rejected a token fresh from login", AuthenticationError
    else:
        prefix, error_class = "", _ERROR_CLASSES.get(status, ServerError)
    error = await status_error(response, error_class, prefix=prefix)
    if (
        status == 500
        and "range" in response.request.headers
        and error.server_message.lower() == _FEATHERS_416_MESSAGE
    ):
        error = RangeNotSatisfiable(
            str(error), url=error.url, status=status, server_message=error.server_message
        )
    raise error


async def status_error(
    response: httpx.Response,
    error_class: type[HTTPStatusError],
    *,
    prefix: str = "",
    secret: str | None = None,
) -> HTTPStatusError:
    """The error for an error response: ``GET /x: 503 Service Unavailable (upstream down)``.
    A ``secret`` the server might echo is masked."""
    said = server_message(await _read_error_body(response), response)
    if secret:
        said = said.replace(secret, "***")
    status = response.status_code
    status_line = f"{status} {response.reason_phrase}".rstrip()
    message = f"{where(response.request)}: {status_line}"
    if said.lower() not in status_line.lower():  # a proxy page just repeating it
        message += f" ({said})"
    if prefix:
        message = f"{prefix}: {message}"
    url = public_url(response.request)
    if error_class is RateLimited:
        return RateLimited(
            message,
            url=url,
            status=status,
            server_message=said,
            retry_after=retry_after(response.headers.get("Retry-After")),
        )
    if error_class is RangeNotSatisfiable:
        return RangeNotSatisfiable(
            message, url=url, status=status, server_message=said, size=_unsatisfied_size(response)
        )
    return error_class(message, url=url, status=status, server_message=said)


def _unsatisfied_size(response: httpx.Response) -> int | None:
    """The size a 416 gives (``Content-Range: bytes */N``), None when it gives none."""
    value = response.headers.get("Content-Range", "").strip()
    unit, _, size = value.partition(" */")
    return readable_length(size) if unit.lower() == "bytes" else None


async def _read_error_body(response: httpx.Response) -> bytes:
    """Up to ``ERROR_BODY_LIMIT`` bytes of an error body; what arrived if the connection
    fails (the status says enough)."""
    body = bytearray()
    try:
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) >= ERROR_BODY_LIMIT:
                break
    except httpx.HTTPError:
        logger.debug("%s: error body cut short", where(response.request))
    return bytes(body)


def server_message(body: bytes, response: httpx.Response) -> str:
    """The server's own words in an error body: a Feathers ``message``, an HTML page's
    title or text, or a plain text; shortened, ``""`` for an empty body."""
    text = body.decode(response.charset_encoding or "utf-8", errors="replace").strip()
    if not text:
        return ""
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        text = data["message"]
    elif "html" in response.headers.get("Content-Type", "") or text.startswith("<"):
        text = _html_text(text)
    return _shorten(" ".join(text.split()))


_HTML_TITLE = re.compile(r"<title[^>]*>(.*?)</title\s*>", re.IGNORECASE | re.DOTALL)
_HTML_NOISE = re.compile(r"<(script|style|head)\b.*?</\1\s*>|<!--.*?-->", re.IGNORECASE | re.DOTALL)
_HTML_TAG = re.compile(r"<[^>]*>")


def _html_text(page: str) -> str:
    title = _HTML_TITLE.search(page)
    text = title.group(1) if title else _HTML_TAG.sub(" ", _HTML_NOISE.sub(" ", page))
    return html.unescape(text)


def _shorten(text: str) -> str:
    if len(text) <= SERVER_MESSAGE_LIMIT:
        return text
    return text[: SERVER_MESSAGE_LIMIT - 1].rstrip() + "…"
