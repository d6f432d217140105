"""What a download answer's headers say: sizes, ranges, the filename, ``Retry-After``.

Pure functions over header values (no I/O, no httpx): each takes the headers by lower-case
name (a dict of them, or an ``httpx.Headers``) and raises ``ValueError`` with a message for a
header that is there but unreadable; the API client adds the request to it and raises a
``ProtocolError``.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import math
import re
import time
import urllib.parse
from collections.abc import Callable, Mapping

from mkwfs.remote.models import ContentInfo

__all__ = [
    "MAX_BODY_SIZE",
    "content_info",
    "content_length",
    "content_range",
    "disposition_filename",
    "is_identity",
    "plain_head_info",
    "readable_length",
    "retry_after",
]

#: The largest body size believed (256 TiB): a bigger ``Content-Length`` or
#: ``Content-Range`` total is a broken header (and would not fit ``st_size``).
MAX_BODY_SIZE = 1 << 48

_CONTENT_RANGE = re.compile(r"bytes\s+([0-9]+)-([0-9]+)/([0-9]+|\*)", re.IGNORECASE)
_DIGITS = re.compile(r"[0-9]+")


def is_identity(headers: Mapping[str, str]) -> bool:
    """Whether a body is sent as is (no ``Content-Encoding`` but ``identity``)."""
    return headers.get("content-encoding", "identity").strip().lower() in ("", "identity")


def content_range(value: str) -> tuple[int, int, int | None]:
    """``(first, last, total)`` of a 206's ``Content-Range``; ``total`` None for ``*``.
    ``ValueError`` for one that cannot be read or cannot be true."""
    match = _CONTENT_RANGE.fullmatch(value.strip())
    if match is None or int(match[2]) < int(match[1]) or int(match[2]) >= MAX_BODY_SIZE:
        raise ValueError(f"206 with an unreadable Content-Range {value!r}")
    total = None if match[3] == "*" else int(match[3])
    if total is not None and not int(match[2]) < total <= MAX_BODY_SIZE:
        raise ValueError(f"206 with an impossible Content-Range {value!r}")
    return int(match[1]), int(match[2]), total


def readable_length(value: str) -> int | None:
    """A ``Content-Length`` value as a size; None unless it is digits, at most
    ``MAX_BODY_SIZE``."""
    value = value.strip()
    if _DIGITS.fullmatch(value) is None or int(value) > MAX_BODY_SIZE:
        return None
    return int(value)


def content_length(headers: Mapping[str, str]) -> int | None:
    """``Content-Length`` of a body sent as is; None when absent or content-encoded,
    ``ValueError`` when unreadable."""
    value = headers.get("content-length")
    if value is None or not is_identity(headers):
        return None
    length = readable_length(value)
    if length is None:
        raise ValueError(f"unreadable Content-Length {value!r}")
    return length


def content_info(status: int, headers: Mapping[str, str], *, asked_range: bool) -> ContentInfo:
    """What a download answer's headers say about the whole file. A 200 to a ``Range``
    request means the server ignores ranges, whatever its ``Accept-Ranges`` claims."""
    filename = disposition_filename(headers.get("content-disposition", ""))
    if status == 206:
        return ContentInfo(content_range(headers.get("content-range", ""))[2], True, filename)
    accepts = not asked_range and headers.get("accept-ranges", "").lower() == "bytes"
    return ContentInfo(content_length(headers), accepts, filename)


def plain_head_info(status: int, headers: Mapping[str, str]) -> ContentInfo | None:
    """What a plain answer of a batch ``HEAD`` says: a 200 with a readable size of a body
    sent as is. None for anything else, which `ApiClient.probe_download` then handles
    (and explains: `content_info` names what is wrong)."""
    length = readable_length(headers.get("content-length", ""))
    if status != 200 or not is_identity(headers) or length is None:
        return None
    accepts = headers.get("accept-ranges", "").lower() == "bytes"
    return ContentInfo(
        length, accepts, disposition_filename(headers.get("content-disposition", ""))
    )


_DISPOSITION_PARAM = re.compile(r';\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')
#: What servers send nearly always: one quoted filename, nothing to unescape.
_PLAIN_DISPOSITION = re.compile(r'\s*attachment\s*;\s*filename\s*=\s*"([^"\\]+)"\s*;?\s*', re.I)


def disposition_filename(value: str) -> str | None:
    """The filename of a ``Content-Disposition``: ``filename*=UTF-8''...`` (RFC 5987)
    before ``filename="..."``. Informational only, never trusted as a path."""
    if (simple := _PLAIN_DISPOSITION.fullmatch(value)) is not None:
        return simple[1]  # a directory's worth of probes: a fifth of the time
    params = {name.lower(): raw.strip() for name, raw in _DISPOSITION_PARAM.findall(value)}
    extended = params.get("filename*")
    if extended and extended.count("'") >= 2:
        charset, _language, encoded = extended.split("'", 2)
        try:
            return urllib.parse.unquote(encoded, encoding=charset or "utf-8", errors="replace")
        except LookupError:
            pass
    plain = params.get("filename")
    if plain is None:
        return None
    if len(plain) >= 2 and plain[0] == plain[-1] == '"':
        plain = re.sub(r"\\(.)", r"\1", plain[1:-1])
    return plain or None


def retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """``Retry-After`` in seconds from ``now()``: delta seconds or an HTTP date; None if
    absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        seconds = when.timestamp() - now()
    return max(0.0, seconds) if math.isfinite(seconds) else None
