"""Routes and queries: which endpoint a request is for (`route`, the keys of `ENDPOINTS`),
and the answers of the list and get endpoints: Feathers' filters, ``$skip``/``$limit`` and
pagination."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import httpx

from mkwfs.emulator.config import JSON, EmulatorConfig
from mkwfs.emulator.dataset import BOT_USER, RELEASES, RESOURCES, Records
from mkwfs.emulator.responses import error_response, json_response
from mkwfs.emulator.stats import PathKind

#: `Emulator.fail_next`'s key for every request, whatever its endpoint.
ANY_ENDPOINT: Final = "*"
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

#: A request for a download's body (or its head).
DOWNLOAD_TARGET: Final = re.compile(r"/api/v1/downloads/(\d+)(?:[?#]|$)")


class BadQuery(ValueError):
    """A query parameter the server cannot use: answered with 400 BadRequest."""


def int_param(params: httpx.QueryParams, name: str) -> int | None:
    value = params.get(name)
    if value is None:
        return None
    if not value.isdigit():
        raise BadQuery(f"Invalid value for query parameter '{name}': {value!r}")
    return int(value)


@dataclass(frozen=True)
class Route:
    #: Endpoint key for `Emulator.requests` and `Emulator.fail_next`.
    key: str
    #: "authentication", "builds", "downloads", "projects" or "patterns"; None: no such page.
    resource: str | None
    #: The ``:id`` path segment, if any.
    ident: str | None

    @property
    def kind(self) -> PathKind:
        if self.resource is None:
            return "other"
        if self.resource == "authentication":
            return "auth"
        if self.ident is None:
            return "list"
        return "body" if self.resource == "downloads" else "record"


def route(method: str, path: str) -> Route:
    parts = [part for part in path.split("/") if part]
    if parts == ["authentication"]:
        return Route(f"{method} /authentication", "authentication", None)
    if len(parts) in (3, 4) and parts[:2] == ["api", "v1"] and parts[2] in RESOURCES:
        ident = parts[3] if len(parts) == 4 else None
        template = f"/api/v1/{parts[2]}" + ("" if ident is None else "/:id")
        return Route(f"{method} {template}", parts[2], ident)
    return Route(f"{method} {path}", None, None)


class Queries:
    """The answers of the list (``find``) and get endpoints over `Records`, as a Feathers
    service with the documented filters answers them. ``config`` gives the current
    `EmulatorConfig`."""

    def __init__(self, records: Records, config: Callable[[], EmulatorConfig]) -> None:
        self._records = records
        self._config = config

    def get(self, resource: str, ident: str) -> httpx.Response:
        record = self._records.record(resource, ident)
        if record is None:
            return error_response(404, f"No record found for id '{ident}'")
        return json_response(200, self._shown(resource, [record])[0])

    def find(self, resource: str, params: httpx.QueryParams) -> httpx.Response:
        """The list of ``resource`` that ``params`` asks for; 400 for a filter the server
        cannot use, 404 for the downloads of a missing build when
        ``config.missing_build_list`` says so."""
        try:
            missing = self._missing_build(resource, params)
            if missing is not None:
                return error_response(404, f"No record found for id '{missing}'")
            return self._page(self._shown(resource, self._matching(resource, params)), params)
        except BadQuery as exc:
            return error_response(400, str(exc))

    def _shown(self, resource: str, records: list[JSON]) -> list[JSON]:
        """The records as the answer shows them: builds without ``downloads`` unless
        ``config.embed_downloads``."""
        if resource != "builds" or self._config().embed_downloads:
            return records
        return [{k: v for k, v in r.items() if k != "downloads"} for r in records]

    def _ids_named(self, resource: str, name: str) -> set[int]:
        return {r["id"] for r in self._records.snapshot(resource) if r["name"] == name}

    def _matching(self, resource: str, params: httpx.QueryParams) -> list[JSON]:
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
            checks += self._build_checks(params)
        if resource == "downloads":
            equal("build_id", int_param(params, "build_id"))
            equal("pattern_id", int_param(params, "pattern_id"))
            if "pattern" in params:
                member_of("pattern_id", self._ids_named("patterns", params["pattern"]))
        return [r for r in self._records.snapshot(resource) if all(check(r) for check in checks)]

    def _build_checks(self, params: httpx.QueryParams) -> list[Callable[[JSON], bool]]:
        checks: list[Callable[[JSON], bool]] = []
        for field_name in ("project_id", "user_id"):
            wanted = int_param(params, field_name)
            if wanted is not None:
                checks.append(_equals(field_name, wanted))
        pattern_id = int_param(params, "pattern_id")
        if pattern_id is not None:
            checks.append(lambda r: pattern_id in r["patterns"])
        if "project" in params:
            projects = self._ids_named("projects", params["project"])
            checks.append(lambda r: r["project_id"] in projects)
        if "user" in params:
            users = {1: self._config().email, BOT_USER[0]: BOT_USER[1]}
            user_ids = {i for i, email in users.items() if email == params["user"]}
            checks.append(lambda r: r["user_id"] in user_ids)
        if "pattern" in params:
            named = self._ids_named("patterns", params["pattern"])
            checks.append(lambda r: not named.isdisjoint(r["patterns"]))
        if "releases" in params:
            checks.append(_releases_check(params["releases"]))
        return checks

    def _page(self, items: list[JSON], params: httpx.QueryParams) -> httpx.Response:
        """Feathers' ``$skip``/``$limit``: a bare array, or a page when paginating, of
        ``$limit`` records (default ``page_size``) capped at ``page_max`` (or ``page_size``),
        as Feathers' ``paginate: {default, max}``."""
        skip = int_param(params, "$skip") or 0
        limit = int_param(params, "$limit")
        page_size = self._config().page_size
        if page_size is None:
            return json_response(200, items[skip:] if limit is None else items[skip:][:limit])
        page_max = self._config().page_max
        limit = min(page_size if limit is None else limit, page_max or page_size)
        page = {"total": len(items), "limit": limit, "skip": skip, "data": items[skip:][:limit]}
        return json_response(200, page)

    def _missing_build(self, resource: str, params: httpx.QueryParams) -> int | None:
        """The ``build_id`` of a downloads list to answer with 404: one of no build, when
        ``config.missing_build_list`` says so."""
        if resource != "downloads" or self._config().missing_build_list != "404":
            return None
        build_id = int_param(params, "build_id")
        if build_id is None or self._records.record("builds", str(build_id)) is not None:
            return None
        return build_id


def _equals(field_name: str, wanted: int) -> Callable[[JSON], bool]:
    return lambda r: bool(r[field_name] == wanted)


def _releases_check(text: str) -> Callable[[JSON], bool]:
    """``releases={"GROUP": "NAME", ...}``: builds that contain every named release."""
    try:
        wanted = json.loads(text)
    except ValueError:
        wanted = None
    if not isinstance(wanted, dict):
        raise BadQuery(f"Invalid value for query parameter 'releases': {text!r}")
    ids = [
        {i for i, release in RELEASES.items() if release == (group, name)}
        for group, name in wanted.items()
    ]
    return lambda r: all(not match.isdisjoint(r["releases"]) for match in ids)
