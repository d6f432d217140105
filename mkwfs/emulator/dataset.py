"""The server's records: the fixed builds, downloads, projects and patterns (ids and names
are constants), and `Records`, which holds them for a running emulator and changes them
as tests ask (downloads that appear and vanish, builds that finish)."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from mkwfs.emulator.config import JSON
from mkwfs.emulator.responses import iso
from mkwfs.emulator.zips import BodyKind, BodySpec

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

_CUSTOMER_ID: Final = 1
#: The first id `Records.add_download` gives.
_ADDED_DOWNLOADS: Final = 7000
#: The first id of the builds ``EmulatorConfig.extra_builds`` adds, and of their downloads.
EXTRA_BUILDS: Final = 100_000
EXTRA_DOWNLOADS: Final = 1_000_000
#: The resources of the API, as they appear in its paths.
RESOURCES: Final = ("builds", "downloads", "projects", "patterns")

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
RELEASES: Final[Mapping[int, tuple[str, str]]] = {
    31: ("DWH_GROUP", "R1"),
    32: ("DWH_GROUP", "R2"),
    41: ("STAGE_GROUP", "R1"),
}
BOT_USER: Final = (2, "build-bot@metakraftwerk.example")

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


_PATTERN_OF: Final = {pattern[0]: pattern for pattern in _PATTERNS}
_PROJECT_NAMES: Final = dict(_PROJECTS)
#: A build's message when it ends with a status.
END_MESSAGES: Final[Mapping[str, str]] = {
    "FINISHED": "Build finished successfully",
    "FAILED": "Build failed",
    "CANCELED": "Build canceled by user",
}


def outcome_fields(status: str, end: dt.datetime | None, updated: dt.datetime) -> JSON:
    """The fields of a build record that follow from its status and times."""
    done = int(status == "FINISHED")
    return {
        "status": status, "build_end": None if end is None else iso(end),
        "updated_at": iso(updated), "history_commited": done, "deliveries_calculated": done,
        "mts": int(updated.timestamp() * 1000),
    }  # fmt: skip


@dataclass
class _Dataset:
    """The server's records; a build's ``downloads`` are the same objects as in
    ``downloads``, whose bodies ``bodies`` describes."""

    projects: list[JSON]
    patterns: list[JSON]
    builds: list[JSON] = field(default_factory=list)
    downloads: dict[int, JSON] = field(default_factory=dict)
    bodies: dict[int, BodySpec] = field(default_factory=dict)

    def add_build(
        self,
        ident: int,
        project_id: int,
        status: str,
        start: dt.datetime,
        seconds: int,
        pattern_ids: Sequence[int],
        *,
        user_id: int = 1,
        progress: int = 100,
        message: str = END_MESSAGES["FINISHED"],
        releases: Sequence[int] = (31,),
    ) -> JSON:
        end = None if status == "BUILDING" else start + dt.timedelta(seconds=seconds)
        record: JSON = {
            "id": ident, "customer_id": _CUSTOMER_ID, "user_id": user_id,
            "project_id": project_id, "progress": progress, "message": message,
            "build_start": iso(start), "created_at": iso(start - dt.timedelta(seconds=2)),
            **outcome_fields(status, end, end or start + dt.timedelta(seconds=seconds)),
            "active": 1, "commit_ind": 0, "deleted": 0, "version": ident - 5100,
            "instances": 3 * len(pattern_ids), "name": f"{_PROJECT_NAMES[project_id]} #{ident}",
            "description": f"Build of {', '.join(_PATTERN_OF[p][1] for p in pattern_ids)}",
            "patterns": list(pattern_ids), "releases": list(releases), "downloads": [],
        }  # fmt: skip
        self.builds.append(record)
        return record

    def add_download(
        self,
        record: JSON,
        ident: int,
        pattern_id: int,
        tables: int,
        *,
        stem: str | None = None,
        name: str | Literal[False] | None = False,
        payload: int = 0,
        parts: int = 0,
    ) -> JSON:
        """Add a download to the build ``record``; ``name=False`` means the usual
        ``<stem>.zip``. The build's ``downloads`` becomes a new list, so that a reader that
        holds the old one is not disturbed."""
        _, pattern, kind, _, _ = _PATTERN_OF[pattern_id]
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
        record["downloads"] = [*record["downloads"], entry]
        self.downloads[ident] = entry
        self.bodies[ident] = BodySpec(
            body_kind, _PROJECT_NAMES[record["project_id"]], pattern, tables, payload, parts
        )
        return entry


def make_dataset(big_file_size: int, extra_builds: int = 0, per_build: int = 10) -> _Dataset:
    """The fixed builds, downloads, projects and patterns, then ``extra_builds`` more of
    ``per_build`` downloads each; bodies are only described here."""
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
    data = _Dataset(projects, patterns)
    build, download = data.add_build, data.add_download

    day = dt.datetime(2026, 4, 2, 10, 12, 5, tzinfo=dt.UTC)
    demo = build(DEMO_BUILD, 402, "FINISHED", day, 146, (808, 810, 811, 812))
    download(demo, 5442, 808, 60)
    download(demo, 5443, 810, 540)
    download(demo, 5444, 811, 6)
    download(demo, 5445, 812, 40)

    large = build(LARGE_BUILD, 403, "FINISHED", day + dt.timedelta(hours=2), 1260, (811,),
                  user_id=BOT_USER[0], releases=(31, 32))  # fmt: skip
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
                   (811, 810), progress=70, user_id=BOT_USER[0],
                   message="Build failed: pattern STAGE_PC: missing source definition")  # fmt: skip
    download(failed, 5459, 811, 3)

    build(CANCELED_BUILD, 402, "CANCELED", day + dt.timedelta(days=2, hours=2), 12, (808,),
          progress=10, message=END_MESSAGES["CANCELED"])  # fmt: skip

    forbidden = build(FORBIDDEN_BUILD, 405, "FINISHED", day + dt.timedelta(days=3), 80,
                      (811, 812), releases=(32,))  # fmt: skip
    download(forbidden, 5460, 811, 3)
    download(forbidden, 5461, 812, 3)
    _add_extra_builds(data, day + dt.timedelta(days=4), extra_builds, per_build)
    return data


def _add_extra_builds(data: _Dataset, start: dt.datetime, count: int, per_build: int) -> None:
    """``count`` FINISHED builds, ids from ``EXTRA_BUILDS``, a minute apart, with
    ``per_build`` small downloads each (ids from ``EXTRA_DOWNLOADS``)."""
    projects, patterns = [p[0] for p in _PROJECTS[:3]], [p[0] for p in _PATTERNS]
    for index in range(count):
        ident = EXTRA_BUILDS + index
        chosen = [patterns[(index + k) % len(patterns)] for k in range(min(per_build, 3) or 1)]
        begun = start + dt.timedelta(minutes=index)
        project = projects[index % len(projects)]
        record = data.add_build(ident, project, "FINISHED", begun, 60 + index % 600, chosen)
        for number in range(per_build):
            data.add_download(record, EXTRA_DOWNLOADS + index * per_build + number,
                              chosen[number % len(chosen)], 2 + number % 3,
                              stem=f"RESULT_{ident}_{number:03d}")  # fmt: skip


class Records:
    """The records of a running emulator, changed under one lock (`Emulator`'s methods of
    the same names say what each change does). ``builds``, ``downloads``, ``projects`` and
    ``patterns`` keep their identity for the emulator's life; a build's ``downloads`` are
    the same objects as in ``downloads``, whose bodies ``bodies`` describes."""

    def __init__(self, big_file_size: int, extra_builds: int = 0, per_build: int = 10) -> None:
        self._made = (big_file_size, extra_builds, per_build)
        data = make_dataset(*self._made)
        self.builds: list[JSON] = data.builds
        self.downloads: dict[int, JSON] = data.downloads
        self.projects: list[JSON] = data.projects
        self.patterns: list[JSON] = data.patterns
        self._data = data
        #: Guards the records, _removed and _next_download_id.
        self._lock = threading.Lock()
        #: Builds taken away by remove_build, for restore_build.
        self._removed: dict[int, JSON] = {}
        self._next_download_id = _ADDED_DOWNLOADS

    def snapshot(self, resource: str) -> list[JSON]:
        """The records of ``resource`` (one of `RESOURCES`), as a new list."""
        with self._lock:
            if resource == "downloads":
                return list(self.downloads.values())
            return list(
                {"builds": self.builds, "projects": self.projects, "patterns": self.patterns}[
                    resource
                ]
            )

    def record(self, resource: str, ident: str) -> JSON | None:
        """The record of ``resource`` whose id is the path segment ``ident``, if any."""
        if not ident.isdigit():
            return None
        if resource == "downloads":
            with self._lock:
                return self.downloads.get(int(ident))
        return next((r for r in self.snapshot(resource) if r["id"] == int(ident)), None)

    def body_spec(self, download_id: int) -> BodySpec | None:
        with self._lock:
            return self._data.bodies.get(download_id)

    def count_download(self, entry: JSON) -> None:
        """One more ``downloaded`` for the download ``entry``."""
        with self._lock:
            entry["downloaded"] += 1

    def zero_downloaded(self) -> None:
        with self._lock:
            for entry in self.downloads.values():
                entry["downloaded"] = 0

    def downloads_of(self, build_id: int) -> list[JSON]:
        with self._lock:
            return [dict(d) for d in self.downloads.values() if d["build_id"] == build_id]

    def add_download(
        self, build_id: int, name: str | None, size: int, pattern_id: int | None
    ) -> int:
        with self._lock:
            record = self._build(build_id)
            pattern = record["patterns"][0] if pattern_id is None else pattern_id
            ident = self._next_download_id
            self._next_download_id += 1
            self._data.add_download(
                record, ident, pattern, 3, stem=f"ADDED_{ident}", name=name,
                payload=size, parts=1 if size else 0,
            )  # fmt: skip
        return ident

    def remove_download(self, download_id: int) -> None:
        with self._lock:
            entry = self.downloads.pop(download_id)
            record = self._build(entry["build_id"])
            record["downloads"] = [d for d in record["downloads"] if d is not entry]

    def remove_build(self, build_id: int) -> None:
        with self._lock:
            record = self._build(build_id)
            self.builds[:] = [b for b in self.builds if b is not record]
            for entry in record["downloads"]:
                del self.downloads[entry["id"]]
            self._removed[build_id] = record

    def restore_build(self, build_id: int) -> None:
        with self._lock:
            record = self._removed.pop(build_id)
            position = sum(1 for b in self.builds if b["id"] < build_id)
            self.builds.insert(position, record)
            self.downloads.update((entry["id"], entry) for entry in record["downloads"])

    def finish_build(self, build_id: int, status: str) -> None:
        if status not in END_MESSAGES:
            raise ValueError(f"a build ends {sorted(END_MESSAGES)}, not {status!r}")
        with self._lock:
            record = self._build(build_id)
            start = dt.datetime.fromisoformat(record["build_start"])
            end = max(dt.datetime.now(dt.UTC), start + dt.timedelta(seconds=1))
            record.update(outcome_fields(status, end, end), message=END_MESSAGES[status])
            if status == "FINISHED":
                record["progress"] = 100

    def reset(self) -> None:
        """Builds and downloads as they were made (ids given stay given)."""
        fresh = make_dataset(*self._made)
        with self._lock:
            self.builds[:] = fresh.builds
            self.downloads.clear()
            self.downloads.update(fresh.downloads)
            self._data.bodies.clear()
            self._data.bodies.update(fresh.bodies)
            self._removed.clear()

    def _build(self, build_id: int) -> JSON:
        """The build record with id ``build_id`` (KeyError if none). Call with the lock held."""
        for record in self.builds:
            if record["id"] == build_id:
                return record
        raise KeyError(build_id)
