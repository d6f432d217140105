"""The control socket: one daemon per mount point, requests answered, failures contained."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from mkwfs.fuse import control
from mkwfs.remote.errors import MkwfsError


async def echo(request: dict[str, Any], send: control.SendProgress) -> dict[str, Any]:
    if request.get("command") == "fail":
        raise MkwfsError("it failed")
    return {"got": request}


async def test_requests_are_answered_and_a_second_daemon_is_refused(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(control.serve_control, tmp_path, echo)
            with pytest.raises(control.AlreadyServed, match="already served by another mkwfs"):
                await control.serve_control(tmp_path, echo)

            answer = await trio.to_thread.run_sync(
                lambda: control.request(tmp_path, {"command": "status"})
            )
            assert answer == {"got": {"command": "status"}}
            assert await trio.to_thread.run_sync(control.is_served, tmp_path)
            with pytest.raises(control.ControlError, match="it failed"):
                await trio.to_thread.run_sync(
                    lambda: control.request(tmp_path, {"command": "fail"})
                )
            # The server survives a failed request and a client that sends nothing.
            assert await trio.to_thread.run_sync(control.is_served, tmp_path)
            nursery.cancel_scope.cancel()
    assert not control.is_served(tmp_path)
    with pytest.raises(control.ControlError, match="no mkwfs daemon serves"):
        control.request(tmp_path, {"command": "status"})


def test_each_mount_point_has_its_own_address(tmp_path: Path) -> None:
    assert control.address(tmp_path / "a") != control.address(tmp_path / "b")
    assert control.address(tmp_path / "a").startswith(b"\0mkwfs-control/")
