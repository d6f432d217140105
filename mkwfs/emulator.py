"""A MetaKraftwerk API emulator for tests, demos and benchmarks.

It plays the Feathers.js server of ``/work/shared/api``: local login with real HS256 JWTs,
builds, downloads (whose bodies are real, deterministic ZIP files), projects and patterns,
Feathers error bodies, and every undocumented behaviour a client must cope with, chosen by
`EmulatorConfig` (HEAD or 405, Range honoured or ignored, chunked bodies, pagination, slow or
dropped bodies) or injected per request with `Emulator.fail_next`.

`Emulator.handle` is the whole API, a function from an ``httpx.Request`` to an
``httpx.Response``. A download body is not bytes but a `FileBody` stream that describes it
(file, offset, length, throttle, drop point): `Emulator.mock_transport` reads it in process,
and the HTTP server of `serve_in_thread` sends it with ``sendfile``. No status, header or body
is decided anywhere else.

Ids and names are fixed (see the module constants); ``config.seed`` drives the bodies' bytes.
Bodies are generated on first use into ``data_dir`` and reused across runs and processes.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import io
import json
import logging
import math
import os
import random
import secrets
import signal
import socket
import socketserver
import sys
import threading
import time
import zipfile
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any, Final, Literal
from urllib.parse import quote

import httpx
import trio

__all__ = [
    "AWKWARD_BUILD",
    "BIG_BUILD",
    "BIG_ZIP",
    "BUILDING_BUILD",
    "CANCELED_BUILD",
    "DEMO_BUILD",
    "ENDPOINTS",
    "FAILED_BUILD",
    "FORBIDDEN_BUILD",
    "LARGE_BUILD",
    "MEDIUM_FILE",
    "MEDIUM_FILE_SIZE",
    "Emulator",
    "EmulatorConfig",
    "FileBody",
    "main",
    "serve_in_thread",
]

_log = logging.getLogger(__name__)

JSON = dict[str, Any]
FailureBody = Literal["json", "html", "empty"]

DEMO_BUILD: Final = 5139  # FINISHED, 4 typical result ZIPs (few KB .. ~1 MB)
LARGE_BUILD: Final = 5140  # FINISHED, 1000 small ZIPs
BIG_BUILD: Final = 5141  # FINISHED, BIG_ZIP + MEDIUM_FILE
AWKWARD_BUILD: Final = 5142  # FINISHED, awkward names
BUILDING_BUILD: Final = 5143  # BUILDING, build_end null, 2 files
FAILED_BUILD: Final = 5144  # FAILED, 1 file
CANCELED_BUILD: Final = 5145  # CANCELED, no files
FORBIDDEN_BUILD: Final = 5146  # FINISHED, listing works, every download GET/HEAD -> 403

BIG_ZIP: Final = 5446  # download id of the big ZIP (config.big_file_size) in BIG_BUILD
MEDIUM_FILE: Final = 5447  # download id of the ~32 MiB ZIP in BIG_BUILD
MEDIUM_FILE_SIZE: Final = 32 * 2**20

#: Every endpoint key of `Emulator.requests` and `Emulator.fail_next`.
ENDPOINTS: Final = frozenset(
    {
        "POST /authentication",
        "GET /api/v1/builds",
        "GET /api/v1/builds/:id",
        "GET /api/v1/downloads",
        "GET /api/v1/downloads/:id",
        "HEAD /api/v1/downloads/:id",
        "GET /api/v1/projects",
        "GET /api/v1/projects/:id",
        "GET /api/v1/patterns",
        "GET /api/v1/patterns/:id",
    }
)

#: Bumped whenever the body generator's code changes, so stale files in a data_dir are not
#: reused (changes of a download's `_BodySpec` are noticed without it).
_BODY_FORMAT: Final = 2
#: Largest piece of a download body read or sent at once.
_SEGMENT: Final = 2**20
_CUSTOMER_ID: Final = 1
_ZIP_DATE: Final = (2026, 4, 2, 10, 14, 30)


@dataclass(frozen=True)
class EmulatorConfig:
    """How the emulated server behaves. ``seed``, ``big_file_size`` and ``data_dir`` are read
    when an `Emulator` is created; everything else on every request, so a test may swap the
    config of a running emulator with ``dataclasses.replace``."""

    seed: int = 5139
    #: Size of BIG_ZIP; the ZIP is this plus a few KB of small members and headers.
    big_file_size: int = 256 * 2**20
    #: Where generated bodies live; default $XDG_CACHE_HOME/mkwfs-emulator/<seed>-<size>.
    data_dir: Path | None = None
    email: str = "demo@metakraftwerk.example"
    password: str = "demo-password"
    token_lifetime: float = 86400.0
    #: None: lists are bare arrays; N: Feathers pages {"total","limit","skip","data"}.
    page_size: int | None = None
    #: False: HEAD -> 405 MethodNotAllowed (Feathers 5).
    head: bool = True
    #: True: Range -> 206 with Content-Range; False: Range ignored, 200 and the whole body.
    ranges: bool = True
    #: False: download bodies are sent chunked, without Content-Length.
    content_length: bool = True
    #: Bytes per second for download bodies; None: full speed.
    throttle: int | None = None
    #: Close the connection after this many body bytes of each download GET.
    drop_after: int | None = None


_DEFAULT_CONFIG: Final = EmulatorConfig()


# --- Feathers responses -------------------------------------------------------------------

_FEATHERS_ERRORS: Final[Mapping[int, tuple[str, str]]] = {
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
_SERVICE_METHODS: Final[Mapping[tuple[str, bool], str]] = {
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


def _bytes_response(
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


def _json_response(
    status: int, payload: object, headers: Mapping[str, str] | None = None
) -> httpx.Response:
    content = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    return _bytes_response(status, content, "application/json; charset=utf-8", headers)


def _error_response(
    status: int,
    message: str,
    *,
    data: JSON | None = None,
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    """A Feathers error: ``{"name", "message", "code", "className"}`` (+ ``data`` if given).
    Statuses Feathers has no class for are GeneralErrors that keep their code."""
    name, class_name = _FEATHERS_ERRORS.get(status, _FEATHERS_ERRORS[500])
    body: JSON = {"name": name, "message": message, "code": status, "className": class_name}
    if data is not None:
        body["data"] = data
    return _json_response(status, body, headers)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _injected_response(status: int, kind: FailureBody) -> httpx.Response:
    """What a failing server or the proxy in front of it answers (see `Emulator.fail_next`)."""
    headers = {"Retry-After": "1"} if status == 429 else {}
    if kind == "json":
        return _error_response(status, _phrase(status), headers=headers)
    if kind == "html":
        title = f"{status} {_phrase(status)}"
        page = (
            f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
            f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
            "</body>\r\n</html>\r\n"
        )
        return _bytes_response(status, page.encode(), "text/html", headers)
    return _bytes_response(status, b"", None, headers)


def _content_disposition(filename: str) -> str:
    """``attachment; filename="..."`` as Express' content-disposition writes it: the basename,
    an ASCII fallback with ``?`` for what ASCII cannot say, and ``filename*`` if it differs."""
    basename = filename.rsplit("/", 1)[-1]
    fallback = "".join(c if " " <= c <= "~" else "?" for c in basename)
    quoted = fallback.replace("\\", "\\\\").replace('"', '\\"')
    header = f'attachment; filename="{quoted}"'
    if fallback != basename:
        header += f"; filename*=UTF-8''{quote(basename, safe='')}"
    return header


_UNSATISFIABLE: Final = "unsatisfiable"


def _parse_range(header: str, size: int) -> tuple[int, int] | Literal["unsatisfiable"] | None:
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
            return _UNSATISFIABLE
    else:
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
    if start > end or start >= size:
        return _UNSATISFIABLE
    return start, end


# --- tokens -------------------------------------------------------------------------------


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _iso(moment: dt.datetime) -> str:
    """Feathers/Sequelize's timestamp format: ``2026-04-02T10:14:31.000Z``."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{moment.microsecond // 1000:03d}Z"
    )


# --- download bodies ----------------------------------------------------------------------


class FileBody(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A download body: ``length`` bytes of the file ``path`` from ``offset``.

    Only the first ``limit`` bytes are ever produced (``limit < length`` when the emulator
    drops the connection mid-body), paced at ``throttle`` bytes per second when set. Read
    in process it raises ``httpx.RemoteProtocolError`` after a drop, as httpx does on a real
    connection; the HTTP server sends `segments` with ``sendfile`` instead. The async side
    runs under trio. ``on_sent`` is told every byte count that goes out.
    """

    def __init__(
        self,
        path: Path,
        offset: int,
        length: int,
        *,
        limit: int,
        throttle: int | None,
        on_sent: Callable[[int], None],
        request: httpx.Request,
    ) -> None:
        self.path = path
        self.offset = offset
        self.length = length
        self.limit = min(limit, length)
        self.throttle = throttle
        self.on_sent = on_sent
        self._request = request

    @property
    def dropped(self) -> bool:
        """True when the connection is closed before the whole body was sent."""
        return self.limit < self.length

    def segments(self) -> Iterator[tuple[int, int, float]]:
        """``(file offset, byte count, seconds after the start it may go out)`` covering the
        first ``limit`` bytes; small segments when throttled so the pace is smooth."""
        step = _SEGMENT if self.throttle is None else max(1, min(_SEGMENT, self.throttle // 10))
        done = 0
        while done < self.limit:
            count = min(step, self.limit - done)
            yield self.offset + done, count, 0.0 if self.throttle is None else done / self.throttle
            done += count

    def _drop_error(self) -> httpx.RemoteProtocolError:
        return httpx.RemoteProtocolError(
            "peer closed connection without sending complete message body: "
            f"received {self.limit} bytes, expected {self.length}",
            request=self._request,
        )

    def __iter__(self) -> Iterator[bytes]:
        fd = os.open(self.path, os.O_RDONLY)
        try:
            started = time.monotonic()
            for offset, count, due in self.segments():
                time.sleep(max(0.0, started + due - time.monotonic()))
                data = os.pread(fd, count, offset)
                self.on_sent(len(data))
                yield data
        finally:
            os.close(fd)
        if self.dropped:
            raise self._drop_error()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        fd = await trio.to_thread.run_sync(os.open, self.path, os.O_RDONLY)
        try:
            started = trio.current_time()
            for offset, count, due in self.segments():
                await trio.sleep_until(started + due)
                data = await trio.to_thread.run_sync(os.pread, fd, count, offset)
                self.on_sent(len(data))
                yield data
        finally:
            os.close(fd)
        if self.dropped:
            raise self._drop_error()


BodyKind = Literal["iics", "powercenter", "ddl", "synapse", "bulk"]


@dataclass(frozen=True)
class _BodySpec:
    """What one download's ZIP holds; the bytes also depend on the seed."""

    kind: BodyKind
    project: str
    pattern: str
    #: Number of generated tables (each gives .sql/.xml/.json members).
    tables: int
    #: bulk only: incompressible payload bytes in total, and in how many stored members.
    payload: int = 0
    parts: int = 0


@dataclass(frozen=True)
class _Table:
    name: str
    columns: tuple[tuple[str, str], ...]


_TABLE_KINDS: Final = ("HUB", "SAT", "LNK", "STG", "DIM", "FCT")
_ENTITIES: Final = (
    "CUSTOMER", "ORDER", "PRODUCT", "INVOICE", "SUPPLIER", "EMPLOYEE", "CONTRACT", "ACCOUNT",
    "PAYMENT", "SHIPMENT", "STORE", "REGION", "CAMPAIGN", "TICKET", "ASSET", "PARTNER",
)  # fmt: skip
_COLUMN_WORDS: Final = (
    "ID", "CODE", "NAME", "STATUS", "AMOUNT", "QUANTITY", "PRICE", "VALID_FROM", "VALID_TO",
    "CREATED", "CHANGED", "CURRENCY", "COUNTRY", "CITY", "STREET", "EMAIL", "PHONE", "TYPE",
)  # fmt: skip
_COLUMN_TYPES: Final = (
    "VARCHAR2(100)", "VARCHAR2(255)", "NUMBER(18)", "NUMBER(12,2)", "DATE", "TIMESTAMP(6)",
    "CHAR(32)",
)  # fmt: skip


def _tables(rng: random.Random, count: int) -> list[_Table]:
    tables = []
    for index in range(count):
        name = f"{rng.choice(_TABLE_KINDS)}_{rng.choice(_ENTITIES)}_{index:03d}"
        columns = [("HK_" + name.split("_")[1], "CHAR(32)"), ("LOAD_DTS", "TIMESTAMP(6)")]
        columns += [
            (f"{rng.choice(_COLUMN_WORDS)}_{column:02d}", rng.choice(_COLUMN_TYPES))
            for column in range(rng.randint(4, 24))
        ]
        tables.append(_Table(name, tuple(columns)))
    return tables


def _guid(rng: random.Random) -> str:
    value = f"{rng.getrandbits(128):032x}"
    return f"{value[:8]}-{value[8:12]}-{value[12:16]}-{value[16:20]}-{value[20:]}"


def _ddl(table: _Table, pattern: str) -> str:
    columns = ",\n".join(
        f"    {name} {kind}{' NOT NULL' if i < 2 else ''}"
        for i, (name, kind) in enumerate(table.columns)
    )
    return (
        f"-- Generated by MetaKraftwerk, pattern {pattern}\n"
        f"CREATE TABLE DWH.{table.name} (\n{columns},\n"
        f"    CONSTRAINT PK_{table.name} PRIMARY KEY ({table.columns[0][0]}, LOAD_DTS)\n);\n\n"
        f"COMMENT ON TABLE DWH.{table.name} IS 'Generated from pattern {pattern}';\n"
    )


def _mapping_xml(table: _Table, pattern: str, rng: random.Random) -> str:
    fields = "\n".join(
        f'      <TRANSFORMFIELD NAME="{name}" DATATYPE="{kind}" PORTTYPE="INPUT/OUTPUT" '
        f'EXPRESSION="LTRIM(RTRIM({name}))" GUID="{_guid(rng)}" '
        f'CHECKSUM="{rng.getrandbits(64):016x}"/>'
        for name, kind in table.columns
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<!DOCTYPE POWERMART SYSTEM "powrmart.dtd">\n'
        '<POWERMART CREATION_DATE="04/02/2026 10:14:30" REPOSITORY_VERSION="187.96">\n'
        '<REPOSITORY NAME="REP_DWH" VERSION="187" CODEPAGE="UTF-8" DATABASETYPE="Oracle">\n'
        f'<FOLDER NAME="{pattern}" OWNER="metakraftwerk" SHARED="NOTSHARED">\n'
        f'  <MAPPING NAME="m_{table.name}" ISVALID="YES" GUID="{_guid(rng)}">\n'
        f'    <TRANSFORMATION NAME="EXP_{table.name}" TYPE="Expression">\n{fields}\n'
        "    </TRANSFORMATION>\n  </MAPPING>\n</FOLDER>\n</REPOSITORY>\n</POWERMART>\n"
    )


def _pipeline_json(table: _Table, pattern: str, rng: random.Random) -> str:
    pipeline = {
        "name": f"pl_load_{table.name.lower()}",
        "properties": {
            "activities": [
                {
                    "name": f"Copy {table.name}",
                    "type": "Copy",
                    "typeProperties": {"sink": {"type": "SqlDWSink", "table": table.name}},
                    "columns": [name for name, _ in table.columns],
                }
            ],
            "annotations": [pattern],
            "etag": _guid(rng),
        },
    }
    return json.dumps(pipeline, indent=2)


class _ZipWriter:
    """Adds members with fixed metadata, so that equal inputs give equal archive bytes."""

    def __init__(self, archive: zipfile.ZipFile) -> None:
        self.archive = archive

    def _info(self, name: str, compress: int) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
        info.compress_type = compress
        info.create_system = 3  # Unix, whatever the host is
        info.external_attr = 0o644 << 16
        return info

    def add(self, name: str, data: str | bytes, compress: int = zipfile.ZIP_DEFLATED) -> None:
        self.archive.writestr(self._info(name, compress), data)

    def add_random(self, name: str, size: int, rng: random.Random) -> None:
        """A stored member of ``size`` incompressible bytes, written in big blocks."""
        info = self._info(name, zipfile.ZIP_STORED)
        info.file_size = size  # lets zipfile choose ZIP64 up front for huge members
        with self.archive.open(info, "w") as member:
            for start in range(0, size, 8 * _SEGMENT):
                member.write(rng.randbytes(min(8 * _SEGMENT, size - start)))


def _write_zip(target: IO[bytes], spec: _BodySpec, rng: random.Random) -> None:
    """Write the ZIP that ``spec`` describes, drawing every choice from ``rng``."""
    with zipfile.ZipFile(target, "w") as archive:
        writer = _ZipWriter(archive)
        tables = _tables(rng, spec.tables)
        if spec.kind == "iics":
            rows = ["objectName,objectType,path,id"]
            for table in tables:
                folder = f"Explore/{spec.project}/{spec.pattern}"
                inner = io.BytesIO()
                with zipfile.ZipFile(inner, "w") as nested:
                    nested_writer = _ZipWriter(nested)
                    nested_writer.add(f"m_{table.name}.xml", _mapping_xml(table, spec.pattern, rng))
                    nested_writer.add(f"{table.name}.sql", _ddl(table, spec.pattern))
                writer.add(f"{folder}/m_{table.name}.DTEMPLATE.zip", inner.getvalue(),
                           zipfile.ZIP_STORED)  # fmt: skip
                rows.append(f"m_{table.name},DTEMPLATE,{folder},{_guid(rng)}")
            writer.add(f"ContentsofExportPackage_{spec.pattern}.csv", "\n".join(rows) + "\n")
            metadata = {"name": spec.pattern, "project": spec.project, "objects": len(tables)}
            writer.add("exportMetadata.v2.json", json.dumps(metadata, indent=2))
        for table in tables if spec.kind != "iics" else ():
            writer.add(f"ddl/{table.name}.sql", _ddl(table, spec.pattern))
            if spec.kind in ("powercenter", "bulk"):
                writer.add(f"{spec.pattern}/m_{table.name}.xml",
                           _mapping_xml(table, spec.pattern, rng))  # fmt: skip
            if spec.kind == "synapse":
                writer.add(f"pipeline/pl_load_{table.name.lower()}.json",
                           _pipeline_json(table, spec.pattern, rng))  # fmt: skip
        for part in range(spec.parts):
            share = spec.payload // spec.parts + (part < spec.payload % spec.parts)
            writer.add_random(f"payload/part-{part:02d}.bin", share, rng)


# --- the dataset --------------------------------------------------------------------------

_PROJECTS: Final = (
    (402, "DEMO_PROJECT"),
    (403, "DWH_CORE"),
    (404, "ODD_NAMES"),
    (405, "RESTRICTED"),
    (406, "ARCHIVE"),
)
#: id, name, type, description, release group
_PATTERNS: Final = (
    (808, "CORE_DV_HLS", "IICS", "Data Vault hubs, links and satellites", 3),
    (809, "CORE_DV_SAT", "IICS", "Data Vault satellites", 3),
    (810, "STAGE_PC", "PowerCenter", "Staging mappings", 4),
    (811, "DWH_DDL", "DDL", "Target table DDL", 3),
    (812, "SYNAPSE_LOAD", "Synapse", "Synapse pipelines", 5),
)
_KIND_OF_TYPE: Final[Mapping[str, BodyKind]] = {
    "IICS": "iics",
    "PowerCenter": "powercenter",
    "DDL": "ddl",
    "Synapse": "synapse",
}
#: release id -> (release group, release name), for the ``releases`` filter.
_RELEASES: Final[Mapping[int, tuple[str, str]]] = {
    31: ("DWH_GROUP", "R1"),
    32: ("DWH_GROUP", "R2"),
    41: ("STAGE_GROUP", "R1"),
}
_BOT_USER: Final = (2, "build-bot@metakraftwerk.example")

#: AWKWARD_BUILD: (download id, pattern id, display name, file_name stem)
_AWKWARD: Final[tuple[tuple[int, int, str | None, str], ...]] = (
    (5448, 808, "CORE_DV.zip", "CORE_DV_HLS_dup"),
    (5449, 809, "CORE_DV.zip", "CORE_DV_SAT_dup"),
    (5450, 811, "DDL/Oracle.zip", "DWH_DDL_slash"),
    (5451, 810, "Übergabe Größe März.zip", "STAGE_PC_umlaut"),
    (5452, 811, None, "DWH_DDL_null_name"),
    (5453, 811, "", "DWH_DDL_empty_name"),
    (5454, 812, ".hidden_result.zip", "SYNAPSE_LOAD_dot"),
    (5455, 811, "LONG_NAME_" + "ä" * 143 + ".zip", "DWH_DDL_long"),  # 300 bytes in UTF-8
    (5456, 811, "NUL\x00BYTE.zip", "DWH_DDL_nul"),
)


@dataclass
class _Dataset:
    projects: list[JSON]
    patterns: list[JSON]
    builds: list[JSON]
    downloads: dict[int, JSON]
    bodies: dict[int, _BodySpec]


def _make_dataset(big_file_size: int) -> _Dataset:
    """The fixed builds, downloads, projects and patterns; bodies are only described here."""
    projects = [
        {"id": ident, "name": name, "deleted": False, "disabled": ident == 406}
        for ident, name in _PROJECTS
    ]
    patterns = [
        {"id": ident, "name": name, "description": description, "type": kind, "vers_no": "1",
         "status": "FINISHED", "active": True, "deleted": False, "disabled": False,
         "release_group_id": group}
        for ident, name, kind, description, group in _PATTERNS
    ]  # fmt: skip
    pattern_of = {p[0]: p for p in _PATTERNS}
    project_names = dict(_PROJECTS)
    data = _Dataset(projects, patterns, [], {}, {})

    def build(
        ident: int,
        project_id: int,
        status: str,
        start: dt.datetime,
        seconds: int,
        pattern_ids: Sequence[int],
        *,
        user_id: int = 1,
        progress: int = 100,
        message: str = "Build finished successfully",
        releases: Sequence[int] = (31,),
    ) -> JSON:
        end = None if status == "BUILDING" else start + dt.timedelta(seconds=seconds)
        updated = end or start + dt.timedelta(seconds=seconds)
        record: JSON = {
            "id": ident, "customer_id": _CUSTOMER_ID, "user_id": user_id,
            "project_id": project_id, "progress": progress, "status": status,
            "message": message, "build_start": _iso(start),
            "build_end": None if end is None else _iso(end),
            "created_at": _iso(start - dt.timedelta(seconds=2)), "updated_at": _iso(updated),
            "history_commited": int(status == "FINISHED"), "active": 1,
            "deliveries_calculated": int(status == "FINISHED"), "commit_ind": 0, "deleted": 0,
            "version": ident - 5100, "mts": int(updated.timestamp() * 1000),
            "instances": 3 * len(pattern_ids), "name": f"{project_names[project_id]} #{ident}",
            "description": f"Build of {', '.join(pattern_of[p][1] for p in pattern_ids)}",
            "patterns": list(pattern_ids), "releases": list(releases), "downloads": [],
        }  # fmt: skip
        data.builds.append(record)
        return record

    def download(
        record: JSON,
        ident: int,
        pattern_id: int,
        tables: int,
        *,
        stem: str | None = None,
        name: str | Literal[False] | None = False,
        payload: int = 0,
        parts: int = 0,
    ) -> None:
        """Add a download to ``record``; ``name=False`` means the usual ``<stem>.zip``."""
        _, pattern, kind, _, _ = pattern_of[pattern_id]
        moment = dt.datetime.fromisoformat(record["build_end"] or record["build_start"])
        stamp = f"{moment:%Y}-{moment.month}-{moment.day}_{moment:%H_%M}"
        stem = stem or f"{pattern}_{stamp}"
        body_kind: BodyKind = "bulk" if parts else _KIND_OF_TYPE[kind]
        entry: JSON = {
            "id": ident, "customer_id": _CUSTOMER_ID, "pattern_id": pattern_id,
            "name": f"{stem}.zip" if name is False else name,
            "file_name": f"/files/results/{record['id']}_{pattern_id}_{kind.lower()}_{stem}.zip",
            "type": kind, "build_id": record["id"], "project_id": record["project_id"],
            "version": 1, "upload_id": 1359 + record["id"] - DEMO_BUILD, "file_id": None,
            "downloaded": 0, "instance_id": None,
        }  # fmt: skip
        record["downloads"].append(entry)
        data.downloads[ident] = entry
        data.bodies[ident] = _BodySpec(
            body_kind, project_names[record["project_id"]], pattern, tables, payload, parts
        )

    day = dt.datetime(2026, 4, 2, 10, 12, 5, tzinfo=dt.UTC)
    demo = build(DEMO_BUILD, 402, "FINISHED", day, 146, (808, 810, 811, 812))
    download(demo, 5442, 808, 60)
    download(demo, 5443, 810, 540)
    download(demo, 5444, 811, 6)
    download(demo, 5445, 812, 40)

    large = build(LARGE_BUILD, 403, "FINISHED", day + dt.timedelta(hours=2), 1260, (811,),
                  user_id=_BOT_USER[0], releases=(31, 32))  # fmt: skip
    for index in range(1000):
        download(large, 6000 + index, 811, 4 + index % 5, stem=f"DWH_DDL_T{index:04d}")

    big = build(BIG_BUILD, 402, "FINISHED", day + dt.timedelta(hours=4), 611, (812, 810))
    download(big, BIG_ZIP, 812, 3, stem="SYNAPSE_LOAD_FULL_EXPORT",
             payload=big_file_size, parts=8)  # fmt: skip
    download(big, MEDIUM_FILE, 810, 3, stem="STAGE_PC_HISTORY",
             payload=MEDIUM_FILE_SIZE, parts=4)  # fmt: skip

    awkward = build(AWKWARD_BUILD, 404, "FINISHED", day + dt.timedelta(days=1), 95,
                    (808, 809, 810, 811, 812), releases=(41,))  # fmt: skip
    for ident, pattern_id, name, stem in _AWKWARD:
        download(awkward, ident, pattern_id, 2, stem=stem, name=name)

    building = build(BUILDING_BUILD, 402, "BUILDING", day + dt.timedelta(days=2), 40,
                     (808, 811, 810), progress=45,
                     message="Generating pattern STAGE_PC (3/3)")  # fmt: skip
    download(building, 5457, 808, 4)
    download(building, 5458, 811, 4)

    failed = build(FAILED_BUILD, 403, "FAILED", day + dt.timedelta(days=2, hours=1), 33,
                   (811, 810), progress=70, user_id=_BOT_USER[0],
                   message="Build failed: pattern STAGE_PC: missing source definition")  # fmt: skip
    download(failed, 5459, 811, 3)

    build(CANCELED_BUILD, 402, "CANCELED", day + dt.timedelta(days=2, hours=2), 12, (808,),
          progress=10, message="Build canceled by user")  # fmt: skip

    forbidden = build(FORBIDDEN_BUILD, 405, "FINISHED", day + dt.timedelta(days=3), 80,
                      (811, 812), releases=(32,))  # fmt: skip
    download(forbidden, 5460, 811, 3)
    download(forbidden, 5461, 812, 3)
    return data


# --- the API ------------------------------------------------------------------------------


class _BadQuery(ValueError):
    """A query parameter the server cannot use: answered with 400 BadRequest."""


def _int_param(params: httpx.QueryParams, name: str) -> int | None:
    value = params.get(name)
    if value is None:
        return None
    if not value.isdigit():
        raise _BadQuery(f"Invalid value for query parameter '{name}': {value!r}")
    return int(value)


@dataclass(frozen=True)
class _Route:
    #: Endpoint key for `Emulator.requests` and `Emulator.fail_next`.
    key: str
    #: "authentication", "builds", "downloads", "projects" or "patterns"; None: no such page.
    resource: str | None
    #: The ``:id`` path segment, if any.
    ident: str | None


_RESOURCES: Final = ("builds", "downloads", "projects", "patterns")


def _route(method: str, path: str) -> _Route:
    parts = [part for part in path.split("/") if part]
    if parts == ["authentication"]:
        return _Route(f"{method} /authentication", "authentication", None)
    if len(parts) in (3, 4) and parts[:2] == ["api", "v1"] and parts[2] in _RESOURCES:
        ident = parts[3] if len(parts) == 4 else None
        template = f"/api/v1/{parts[2]}" + ("" if ident is None else "/:id")
        return _Route(f"{method} {template}", parts[2], ident)
    return _Route(f"{method} {path}", None, None)


def _default_data_dir(seed: int, big_file_size: int) -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "mkwfs-emulator" / f"{seed}-{big_file_size}"


class Emulator:
    """The MetaKraftwerk API in process; thread-safe, for `serve_in_thread`'s server threads.

    ``builds``, ``downloads``, ``projects`` and ``patterns`` are the server's data (a build's
    ``downloads`` are the same objects as in ``downloads``). ``requests`` counts every request
    by endpoint key (see `ENDPOINTS`; other paths count as ``"<METHOD> <path>"``), including
    failed and injected ones; ``bytes_sent`` counts download body bytes that went out.
    """

    def __init__(self, config: EmulatorConfig = _DEFAULT_CONFIG) -> None:
        self.config = config
        dataset = _make_dataset(config.big_file_size)
        self.builds: list[JSON] = dataset.builds
        self.downloads: dict[int, JSON] = dataset.downloads
        self.projects: list[JSON] = dataset.projects
        self.patterns: list[JSON] = dataset.patterns
        self.requests: Counter[str] = Counter()
        self.bytes_sent = 0
        self._bodies = dataset.bodies
        self._seed = config.seed
        self._data_dir = config.data_dir or _default_data_dir(config.seed, config.big_file_size)
        self._secret = secrets.token_bytes(32)
        #: Guards requests, bytes_sent, downloaded counts, _failures and _body_locks.
        self._lock = threading.Lock()
        self._failures: dict[str, deque[tuple[int, FailureBody]]] = {}
        self._body_locks: dict[int, threading.Lock] = {}
        self._sizes: dict[int, int] = {}

    # -- test controls --

    def issue_token(self, lifetime: float | None = None) -> str:
        """A JWT as the server issues at login, valid for ``lifetime`` seconds (default
        ``config.token_lifetime``; negative gives an already expired token)."""
        now = int(time.time())
        seconds = self.config.token_lifetime if lifetime is None else lifetime
        header = {"alg": "HS256", "typ": "access"}
        claims = {"iat": now, "exp": now + math.ceil(seconds), "sub": "1"}
        signing_input = ".".join(
            _b64encode(json.dumps(part, separators=(",", ":")).encode())
            for part in (header, claims)
        )
        return f"{signing_input}.{_b64encode(self._sign(signing_input))}"

    def fail_next(
        self, endpoint: str, status: int, count: int = 1, body: FailureBody = "json"
    ) -> None:
        """Answer the next ``count`` requests of ``endpoint`` (a key of `ENDPOINTS`) with
        ``status`` and a Feathers JSON error, an nginx-style HTML page or an empty body;
        429s carry ``Retry-After: 1``. Calls queue up behind each other."""
        if endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint key {endpoint!r}; one of {sorted(ENDPOINTS)}")
        if body not in ("json", "html", "empty"):
            raise ValueError(f"unknown failure body {body!r}")
        with self._lock:
            self._failures.setdefault(endpoint, deque()).extend([(status, body)] * count)

    def reset_counters(self) -> None:
        """Zero ``requests``, ``bytes_sent`` and every download's ``downloaded``."""
        with self._lock:
            self.requests.clear()
            self.bytes_sent = 0
            for entry in self.downloads.values():
                entry["downloaded"] = 0

    def downloads_of(self, build_id: int) -> list[JSON]:
        """The download objects ``GET /api/v1/downloads?build_id=`` returns, as copies."""
        with self._lock:
            return [dict(d) for d in self.downloads.values() if d["build_id"] == build_id]

    def body_path(self, download_id: int) -> Path:
        """The file holding the download's body, generated on first use (KeyError for an
        unknown id). Generation happens once however many threads ask at the same time,
        writes a temporary file and renames it, and is skipped when the file exists."""
        spec = self._bodies[download_id]
        # The name changes with anything that changes the bytes, so a stale file is never used.
        version = hashlib.sha256(f"{_BODY_FORMAT} {spec!r}".encode()).hexdigest()[:12]
        path = self._data_dir / f"{download_id}-seed{self._seed}-{version}.zip"
        with self._lock:
            body_lock = self._body_locks.setdefault(download_id, threading.Lock())
        with body_lock:
            if download_id not in self._sizes:
                if not path.exists():
                    self._generate(path, spec, random.Random(self._seed + download_id))
                self._sizes[download_id] = path.stat().st_size
        return path

    def body_sha256(self, download_id: int) -> str:
        with self.body_path(download_id).open("rb") as file:
            return hashlib.file_digest(file, "sha256").hexdigest()

    def mock_transport(self) -> httpx.MockTransport:
        """An httpx transport answering with `handle`, without a network. Requests run on
        the caller's thread (including a body's generation on first use); download bodies
        are read through trio threads by an ``AsyncClient``."""
        return httpx.MockTransport(self.handle)

    # -- the API --

    def handle(self, request: httpx.Request) -> httpx.Response:
        """Answer one request as the server would. A download body is a `FileBody`."""
        method = request.method.upper()
        route = _route(method, request.url.path)
        with self._lock:
            self.requests[route.key] += 1
            pending = self._failures.get(route.key)
            injected = pending.popleft() if pending else None
        if injected is not None:
            return _injected_response(*injected)
        response = self._dispatch(method, route, request)
        if method == "HEAD":
            return httpx.Response(response.status_code, headers=response.headers)
        return response

    def _dispatch(self, method: str, route: _Route, request: httpx.Request) -> httpx.Response:
        if route.resource is None:
            return _error_response(404, "Page not found", data={"url": request.url.path})
        if route.resource == "authentication":
            allowed = {"POST"}
        else:
            allowed = {"GET", "HEAD"} if self.config.head else {"GET"}
        if method not in allowed:
            service_method = _SERVICE_METHODS.get((method, route.ident is not None))
            return _error_response(
                405,
                f"Method `{service_method or method.lower()}` is not supported by this endpoint.",
            )
        if route.resource == "authentication":
            return self._login(request)
        rejection = self._authenticate(request)
        if rejection is not None:
            return rejection
        if route.resource == "downloads" and route.ident is not None:
            return self._download(request, route.ident)
        if route.ident is not None:
            return self._get(route.resource, route.ident)
        try:
            items = self._find(route.resource, request.url.params)
            return self._page(items, request.url.params)
        except _BadQuery as exc:
            return _error_response(400, str(exc))

    def _login(self, request: httpx.Request) -> httpx.Response:
        try:
            body = json.loads(request.content or b"{}")
        except ValueError:
            return _error_response(400, "Unexpected token in JSON body")
        if not isinstance(body, dict):
            body = {}
        strategy = body.get("strategy")
        if not strategy:
            return _error_response(401, "Invalid authentication information (no `strategy` set)")
        if strategy != "local":
            return _error_response(
                401, "Invalid authentication information (strategy not allowed in authStrategies)"
            )
        email, password = body.get("email"), body.get("password")
        for field_name, value in (("email", email), ("password", password)):
            if not isinstance(value, str) or not value:
                return _error_response(400, f"'{field_name}' is required")
        config = self.config
        if not (
            hmac.compare_digest(str(email).encode(), config.email.encode())
            & hmac.compare_digest(str(password).encode(), config.password.encode())
        ):
            return _error_response(401, "Invalid login")
        token = self.issue_token()
        return _json_response(
            201,
            {
                "accessToken": token,
                "authentication": {"strategy": "local", "accessToken": token},
                "user": {"id": 1, "email": config.email},
            },
        )

    def _sign(self, signing_input: str) -> bytes:
        return hmac.new(self._secret, signing_input.encode(), hashlib.sha256).digest()

    def _authenticate(self, request: httpx.Request) -> httpx.Response | None:
        """None for a valid ``Authorization: Bearer <JWT>``, else the 401 to answer with,
        worded as Feathers/jsonwebtoken words it."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() not in ("bearer", "jwt") or not token:
            return _error_response(401, "Not authenticated")
        parts = token.split(".")
        try:
            header, claims = (json.loads(_b64decode(part)) for part in parts[:2])
            signature = _b64decode(parts[2])
        except (ValueError, IndexError):
            return _error_response(401, "jwt malformed")
        if not isinstance(header, dict) or not isinstance(claims, dict) or len(parts) != 3:
            return _error_response(401, "jwt malformed")
        if header.get("alg") != "HS256":
            return _error_response(401, "invalid algorithm")
        if not hmac.compare_digest(signature, self._sign(f"{parts[0]}.{parts[1]}")):
            return _error_response(401, "invalid signature")
        expires = claims.get("exp")
        if not isinstance(expires, int | float):
            return _error_response(401, "invalid exp value")
        if time.time() >= expires:
            expired_at = _iso(dt.datetime.fromtimestamp(expires, dt.UTC))
            data = {"name": "TokenExpiredError", "message": "jwt expired", "expiredAt": expired_at}
            return _error_response(401, "jwt expired", data=data)
        return None

    def _records(self, resource: str) -> Sequence[JSON]:
        if resource == "downloads":
            return list(self.downloads.values())
        return {"builds": self.builds, "projects": self.projects, "patterns": self.patterns}[
            resource
        ]

    def _record(self, resource: str, ident: str) -> JSON | None:
        if not ident.isdigit():
            return None
        if resource == "downloads":
            return self.downloads.get(int(ident))
        return next((r for r in self._records(resource) if r["id"] == int(ident)), None)

    def _get(self, resource: str, ident: str) -> httpx.Response:
        record = self._record(resource, ident)
        if record is None:
            return _error_response(404, f"No record found for id '{ident}'")
        return _json_response(200, record)

    def _ids_named(self, records: Sequence[JSON], name: str) -> set[int]:
        return {r["id"] for r in records if r["name"] == name}

    def _find(self, resource: str, params: httpx.QueryParams) -> list[JSON]:
        """The records of ``resource`` that match the documented filters in ``params``."""
        checks: list[Callable[[JSON], bool]] = []

        def equal(field_name: str, wanted: int | None) -> None:
            if wanted is not None:
                checks.append(lambda r: r[field_name] == wanted)

        def member_of(field_name: str, wanted: set[int]) -> None:
            checks.append(lambda r: r[field_name] in wanted)

        if "name" in params and resource in ("projects", "patterns"):
            checks.append(lambda r: r["name"] == params["name"])
        if resource == "builds":
            equal("project_id", _int_param(params, "project_id"))
            equal("user_id", _int_param(params, "user_id"))
            pattern_id = _int_param(params, "pattern_id")
            if pattern_id is not None:
                checks.append(lambda r: pattern_id in r["patterns"])
            if "project" in params:
                member_of("project_id", self._ids_named(self.projects, params["project"]))
            if "user" in params:
                users = {1: self.config.email, _BOT_USER[0]: _BOT_USER[1]}
                member_of("user_id", {i for i, email in users.items() if email == params["user"]})
            if "pattern" in params:
                named = self._ids_named(self.patterns, params["pattern"])
                checks.append(lambda r: not named.isdisjoint(r["patterns"]))
            if "releases" in params:
                checks.append(self._releases_check(params["releases"]))
        if resource == "downloads":
            equal("build_id", _int_param(params, "build_id"))
            equal("pattern_id", _int_param(params, "pattern_id"))
            if "pattern" in params:
                member_of("pattern_id", self._ids_named(self.patterns, params["pattern"]))
        return [r for r in self._records(resource) if all(check(r) for check in checks)]

    @staticmethod
    def _releases_check(text: str) -> Callable[[JSON], bool]:
        """``releases={"GROUP": "NAME", ...}``: builds that contain every named release."""
        try:
            wanted = json.loads(text)
        except ValueError:
            wanted = None
        if not isinstance(wanted, dict):
            raise _BadQuery(f"Invalid value for query parameter 'releases': {text!r}")
        ids = [
            {i for i, release in _RELEASES.items() if release == (group, name)}
            for group, name in wanted.items()
        ]
        return lambda r: all(not match.isdisjoint(r["releases"]) for match in ids)

    def _page(self, items: list[JSON], params: httpx.QueryParams) -> httpx.Response:
        """Feathers' ``$skip``/``$limit``: a bare array, or a page when paginating (with
        ``$limit`` capped at ``page_size``)."""
        skip = _int_param(params, "$skip") or 0
        limit = _int_param(params, "$limit")
        page_size = self.config.page_size
        if page_size is None:
            return _json_response(200, items[skip:] if limit is None else items[skip:][:limit])
        limit = page_size if limit is None else min(limit, page_size)
        page = {"total": len(items), "limit": limit, "skip": skip, "data": items[skip:][:limit]}
        return _json_response(200, page)

    def _download(self, request: httpx.Request, ident: str) -> httpx.Response:
        """GET or HEAD of a body: 403 in FORBIDDEN_BUILD, Range per ``config.ranges``,
        Content-Length or chunked per ``config.content_length``; a GET counts as a download."""
        entry = self._record("downloads", ident)
        if entry is None:
            return _error_response(404, f"No record found for id '{ident}'")
        if entry["build_id"] == FORBIDDEN_BUILD:
            return _error_response(403, "You don't have permissions to download build results!")
        config = self.config
        download_id = entry["id"]
        path = self.body_path(download_id)
        size = self._sizes[download_id]
        status, offset, length = 200, 0, size
        filename = entry["name"] or entry["file_name"] or f"{download_id}.zip"
        headers = {
            "Content-Type": "application/zip",
            "Content-Disposition": _content_disposition(filename),
        }
        if config.ranges:
            headers["Accept-Ranges"] = "bytes"
            wanted = _parse_range(request.headers.get("range", ""), size)
            if wanted == _UNSATISFIABLE:
                return _error_response(
                    416, "Range Not Satisfiable", headers={"Content-Range": f"bytes */{size}"}
                )
            if isinstance(wanted, tuple):
                status, offset, length = 206, wanted[0], wanted[1] - wanted[0] + 1
                headers["Content-Range"] = f"bytes {wanted[0]}-{wanted[1]}/{size}"
        if config.content_length:
            headers["Content-Length"] = str(length)
        else:
            headers["Transfer-Encoding"] = "chunked"
        if request.method.upper() != "GET":
            return httpx.Response(status, headers=headers)
        with self._lock:
            entry["downloaded"] += 1
        body = FileBody(
            path,
            offset,
            length,
            limit=length if config.drop_after is None else config.drop_after,
            throttle=config.throttle,
            on_sent=self._count_sent,
            request=request,
        )
        return httpx.Response(status, headers=headers, stream=body)

    def _count_sent(self, count: int) -> None:
        with self._lock:
            self.bytes_sent += count

    def _generate(self, path: Path, spec: _BodySpec, rng: random.Random) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.part")
        try:
            with partial.open("wb") as file:
                _write_zip(file, spec, rng)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)


# --- the HTTP server ----------------------------------------------------------------------


class _HTTPServer(ThreadingHTTPServer):
    """Serves an `Emulator` and remembers its connections, so that stopping it really
    disconnects keep-alive clients."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], emulator: Emulator) -> None:
        self.emulator = emulator
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _RequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (getfqdn), which can take seconds.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away is normal; anything else is logged, not printed."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            _log.exception("emulator: connection from %s failed", client_address)

    def track(self, connection: socket.socket, is_open: bool) -> None:
        with self._connections_lock:
            if is_open:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                connection.shutdown(socket.SHUT_RDWR)


class _RequestHandler(BaseHTTPRequestHandler):
    """Turns each HTTP request into `Emulator.handle` and writes its response back."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "MetaKraftwerk-emulator"
    sys_version = ""
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests and benchmarks keep their output for themselves."""

    def do_GET(self) -> None:
        length = self.headers.get("Content-Length") or "0"
        if not length.isdigit():
            self.send_error(400, "Bad Content-Length")
            return
        request = httpx.Request(
            self.command,
            f"http://{self.server.server_name}:{self.server.server_port}{self.path}",
            headers=list(self.headers.items()),
            content=self.rfile.read(int(length)),
        )
        try:
            response = self.server.emulator.handle(request)
        except Exception:
            _log.exception("emulator failed on %s %s", self.command, self.path)
            response = _error_response(500, "Internal emulator error")
        self.send_response(response.status_code)
        for name, value in response.headers.multi_items():
            self.send_header(name, value)
        self.end_headers()
        if self.command == "HEAD":
            return
        try:
            if isinstance(response.stream, FileBody):
                chunked = response.headers.get("Transfer-Encoding", "").lower() == "chunked"
                self._send_file(response.stream, chunked)
            else:
                self.wfile.write(response.read())
        except ConnectionError:  # the client went away mid-body
            self.close_connection = True

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    def _send_file(self, body: FileBody, chunked: bool) -> None:
        """Send ``body`` with sendfile, paced and chunk-framed as asked; after a drop, close
        the connection so the client sees a short body."""
        with body.path.open("rb") as file:
            started = time.monotonic()
            for offset, count, due in body.segments():
                time.sleep(max(0.0, started + due - time.monotonic()))
                if chunked:
                    self.wfile.write(b"%X\r\n" % count)
                body.on_sent(self.connection.sendfile(file, offset, count))
                if chunked:
                    self.wfile.write(b"\r\n")
        if body.dropped:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        elif chunked:
            self.wfile.write(b"0\r\n\r\n")


@contextlib.contextmanager
def serve_in_thread(emulator: Emulator, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``emulator`` over real HTTP/1.1 (keep-alive) from daemon threads; yield the base
    URL ``http://HOST:PORT``. On exit the server stops and open connections are cut."""
    server = _HTTPServer((host, port), emulator)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
        name=f"mkwfs-emulator-{server.server_port}",
    )  # fmt: skip
    thread.start()
    try:
        yield f"http://{server.server_name}:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        server.close_connections()
        thread.join()


# --- python -m mkwfs.emulator -------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Serve an emulator until SIGINT or SIGTERM; print its URL, credentials and a token."""
    parser = argparse.ArgumentParser(
        prog="python -m mkwfs.emulator", description="Serve the MetaKraftwerk API emulator."
    )
    defaults = EmulatorConfig()
    parser.add_argument("--port", type=int, default=0, help="TCP port (0: any free port)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--big-file-size", type=int, default=defaults.big_file_size,
                        metavar="BYTES")  # fmt: skip
    parser.add_argument("--no-head", action="store_true", help="answer HEAD with 405")
    parser.add_argument("--no-ranges", action="store_true", help="ignore Range headers")
    parser.add_argument("--no-content-length", action="store_true",
                        help="send download bodies chunked")  # fmt: skip
    parser.add_argument("--page-size", type=int, metavar="N", help="paginate lists")
    parser.add_argument("--throttle", type=int, metavar="BPS", help="bytes per second")
    args = parser.parse_args(argv)
    config = EmulatorConfig(
        seed=args.seed,
        big_file_size=args.big_file_size,
        page_size=args.page_size,
        head=not args.no_head,
        ranges=not args.no_ranges,
        content_length=not args.no_content_length,
        throttle=args.throttle,
    )
    emulator = Emulator(config)
    stop_signals = {signal.SIGINT, signal.SIGTERM}
    # Blocked before the server threads start, so they inherit the mask and sigwait sees them.
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    with serve_in_thread(emulator, args.host, args.port) as url:
        print(f"MKWFS_API_URL={url}")
        print(f"MKWFS_EMAIL={config.email}")
        print(f"MKWFS_PASSWORD={config.password}")
        print(f"MKWFS_TOKEN={emulator.issue_token()}", flush=True)
        signal.sigwait(stop_signals)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
