"""Feathers' answers as ``httpx.Response`` objects: JSON bodies, error bodies, the
Content-Disposition and Range rules of Express, and the delay a response keeps with it."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from http import HTTPStatus
from typing import Final, Literal
from urllib.parse import quote

import httpx

from mkwfs.emulator.config import JSON

#: Where `Emulator.handle` keeps a response's delay (see `response_delay`).
_DELAY_KEY: Final = "mkwfs_emulator_delay"

FEATHERS_ERRORS: Final[Mapping[int, tuple[str, str]]] = {
    400: ("BadRequest", "bad-request"),
    401: ("NotAuthenticated", "not-authenticated"),
    402: ("PaymentError", "payment-error"),
    403: ("Forbidden", "forbidden"),
    404: ("NotFound", "not-found"),
    405: ("MethodNotAllowed", "method-not-allowed"),
    406: ("NotAcceptable", "not-acceptable"),
    408: ("Timeout", "timeout"),
    409: ("Conflict", "conflict"),
    410: ("Gone", "gone"),
    411: ("LengthRequired", "length-required"),
    422: ("Unprocessable", "unprocessable"),
    429: ("TooManyRequests", "too-many-requests"),
    500: ("GeneralError", "general-error"),
    501: ("NotImplemented", "not-implemented"),
    502: ("BadGateway", "bad-gateway"),
    503: ("Unavailable", "unavailable"),
}

#: Feathers' service method for each HTTP method, as named in its MethodNotAllowed message.
SERVICE_METHODS: Final[Mapping[tuple[str, bool], str]] = {
    ("GET", False): "find",
    ("GET", True): "get",
    ("POST", False): "create",
    ("POST", True): "create",
    ("PUT", False): "update",
    ("PUT", True): "update",
    ("PATCH", False): "patch",
    ("PATCH", True): "patch",
    ("DELETE", False): "remove",
    ("DELETE", True): "remove",
}


def bytes_response(
    status: int,
    content: bytes,
    content_type: str | None,
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    """A response with an in-memory body; always with Content-Length (keep-alive needs it)."""
    all_headers = {"Content-Length": str(len(content))}
    if content_type is not None:
        all_headers["Content-Type"] = content_type
    all_headers.update(headers or {})
    return httpx.Response(status, headers=all_headers, content=content)


def json_response(
    status: int, payload: object, headers: Mapping[str, str] | None = None
) -> httpx.Response:
    """JSON in UTF-8; a lone surrogate U+DC80..U+DCFF in a string (a name given to
    `Emulator.add_download`) goes out as the byte 0x80..0xFF, invalid UTF-8 as a broken
    server would send it."""
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    content = text.encode("utf-8", "surrogateescape")
    return bytes_response(status, content, "application/json; charset=utf-8", headers)


def error_response(
    status: int,
    message: str,
    *,
    data: JSON | None = None,
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    """A Feathers error: ``{"name", "message", "code", "className"}`` (+ ``data`` if given).
    Statuses Feathers has no class for are GeneralErrors that keep their code."""
    name, class_name = FEATHERS_ERRORS.get(status, FEATHERS_ERRORS[500])
    body: JSON = {"name": name, "message": message, "code": status, "className": class_name}
    if data is not None:
        body["data"] = data
    return json_response(status, body, headers)


def phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def cut_json(response: httpx.Response) -> httpx.Response:
    """``response`` with its (in-memory, JSON) body cut in half: malformed, yet whole as far
    as HTTP can tell."""
    content = response.content[: len(response.content) // 2]
    headers = httpx.Headers(response.headers)
    headers["Content-Length"] = str(len(content))
    return httpx.Response(response.status_code, headers=headers, content=content)


def is_json_success(response: httpx.Response) -> bool:
    content_type = response.headers.get("Content-Type", "")
    return response.is_success and content_type.startswith("application/json")


def content_disposition(filename: str) -> str:
    """``attachment; filename="..."`` as Express' content-disposition writes it: the basename,
    an ASCII fallback with ``?`` for what ASCII cannot say, and ``filename*`` if it differs."""
    basename = filename.rsplit("/", 1)[-1]
    fallback = "".join(c if " " <= c <= "~" else "?" for c in basename)
    quoted = fallback.replace("\\", "\\\\").replace('"', '\\"')
    header = f'attachment; filename="{quoted}"'
    if fallback != basename:
        header += f"; filename*=UTF-8''{quote(basename, safe='', errors='surrogateescape')}"
    return header


UNSATISFIABLE: Final = "unsatisfiable"


def parse_range(header: str, size: int) -> tuple[int, int] | Literal["unsatisfiable"] | None:
    """One ``bytes=a-b`` / ``a-`` / ``-n`` range as the inclusive ``(first, last)`` it selects
    of a ``size``-byte body, clamped as Express' range-parser does. None for what Express
    ignores (malformed, several ranges), ``"unsatisfiable"`` for what it answers with 416."""
    unit, _, spec = header.partition("=")
    first, dash, last = spec.strip().partition("-")
    if unit.strip().lower() != "bytes" or not dash or "," in spec:
        return None
    if not (first.isdigit() or not first) or not (last.isdigit() or not last):
        return None
    if not first:
        if not last:
            return None
        start, end = max(size - int(last), 0), size - 1
        if int(last) == 0:
            return UNSATISFIABLE
    else:
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
    if start > end or start >= size:
        return UNSATISFIABLE
    return start, end


def iso(moment: dt.datetime) -> str:
    """Feathers/Sequelize's timestamp format: ``2026-04-02T10:14:31.000Z``."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{moment.microsecond // 1000:03d}Z"
    )


def with_delay(response: httpx.Response, delay: float) -> httpx.Response:
    """``response``, to be sent after ``delay`` seconds (see `response_delay`)."""
    response.extensions[_DELAY_KEY] = delay
    return response


def response_delay(response: httpx.Response) -> float:
    """Seconds a transport waits before sending ``response``'s status line, as
    `Emulator.handle` decided (latency and jitter); 0 for any other response."""
    delay = response.extensions.get(_DELAY_KEY, 0.0)
    return float(delay)


def weak_etag(content: bytes) -> str:
    """The ETag Express gives a body (the ``etag`` package, weak): its length in hex and
    27 characters of the base64 of its SHA-1."""
    digest = base64.b64encode(hashlib.sha1(content).digest()).decode("ascii")[:27]
    return f'W/"{len(content):x}-{digest}"'


def with_etag(request: httpx.Request, response: httpx.Response) -> httpx.Response:
    """``response`` (in memory) with its weak ETag; or, when the request's If-None-Match
    matches it, 304 Not Modified with the ETag and no body, as Express' ``fresh`` decides
    (``*`` matches, weak and strong forms compare equal, ``Cache-Control: no-cache`` is
    never fresh)."""
    etag = weak_etag(response.content)
    wanted = request.headers.get("if-none-match")
    no_cache = "no-cache" in request.headers.get("cache-control", "").lower()
    if wanted is not None and not no_cache:
        tags = {tag.strip() for tag in wanted.split(",")}
        if "*" in tags or etag in tags or etag.removeprefix("W/") in tags:
            return httpx.Response(304, headers={"ETag": etag})
    headers = httpx.Headers(response.headers)
    headers["ETag"] = etag
    return httpx.Response(response.status_code, headers=headers, content=response.content)
