"""Sending: one log line per request, without secrets."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from mkwfs.emulator import Emulator
from tests.remote.support import PASSWORD, login_credentials, open_api, read_all

# -- logging ----------------------------------------------------------------------------------


async def test_logs_requests_without_secrets(
    emulator: Emulator, demo_file: tuple[int, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="mkwfs.api")
    download_id = demo_file[0]
    credentials = replace(login_credentials(), token=emulator.issue_token(lifetime=-1))
    async with open_api(emulator.mock_transport(), credentials) as api:
        await read_all(api, download_id, 0, 100)
    lines = [record.getMessage() for record in caplog.records if record.name == "mkwfs.api"]
    assert any(line.startswith("POST /authentication -> 201") for line in lines)
    assert any(
        line.startswith(f"GET /api/v1/downloads/{download_id} -> 206, 100 bytes") for line in lines
    )
    secrets = (PASSWORD, credentials.token or PASSWORD)
    assert not [line for line in lines if any(secret in line for secret in secrets)]
