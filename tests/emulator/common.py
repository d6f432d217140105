"""Constants and helpers shared by the emulator's tests."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

BIG_SIZE = 4 * 2**20
DEMO_ZIP = 5442  # CORE_DV_HLS (IICS) in DEMO_BUILD
SMALL_ZIP = 5444  # DWH_DDL (DDL), a few KB
FORBIDDEN_ZIP = 5460
DOWNLOAD_FIELDS = {
    "id", "customer_id", "pattern_id", "name", "file_name", "type", "build_id", "project_id",
    "version", "upload_id", "file_id", "downloaded", "instance_id",
}  # fmt: skip
BUILD_FIELDS = {
    "id", "customer_id", "user_id", "project_id", "progress", "status", "message",
    "build_start", "build_end", "created_at", "updated_at", "history_commited", "active",
    "deliveries_calculated", "commit_ind", "deleted", "version", "mts", "instances", "name",
    "description", "patterns", "releases", "downloads",
}  # fmt: skip
ISO_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def feathers_error(name: str, message: str, code: int, class_name: str) -> dict[str, Any]:
    return {"name": name, "message": message, "code": code, "className": class_name}


def jwt_part(token: str, index: int) -> Any:
    part = token.split(".")[index]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
