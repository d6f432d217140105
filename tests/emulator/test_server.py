"""Over real HTTP on 127.0.0.1 (`mkwfs.emulator.server`, `loop`, `wire`): bodies, keep-alive,
refused heads, servers that stop and start, cut and stalled bodies, and the command line."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from mkwfs.emulator import (
    BIG_ZIP,
    LARGE_BUILD,
    Emulator,
    EmulatorConfig,
    EmulatorServer,
    serve_in_thread,
)
from tests.emulator.common import (
    DEMO_ZIP,
    SMALL_ZIP,
    jwt_part,
)

# --- real HTTP ----------------------------------------------------------------------------


def test_real_http(emulator: Emulator, config: EmulatorConfig) -> None:
    with serve_in_thread(emulator) as url, httpx.Client(base_url=url, timeout=5) as http:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
        login = http.post("/authentication", json={"strategy": "local", "email": config.email,
                                                   "password": config.password})  # fmt: skip
        assert login.status_code == 201
        http.headers["Authorization"] = f"Bearer {login.json()['accessToken']}"
        assert len(http.get("/api/v1/downloads", params={"build_id": LARGE_BUILD}).json()) == 1000
        head = http.head(f"/api/v1/downloads/{BIG_ZIP}")
        size = emulator.body_path(BIG_ZIP).stat().st_size
        assert int(head.headers["Content-Length"]) == size
        with http.stream("GET", f"/api/v1/downloads/{BIG_ZIP}") as response:
            digest = hashlib.sha256()
            for chunk in response.iter_bytes():
                digest.update(chunk)
        assert digest.hexdigest() == emulator.body_sha256(BIG_ZIP)
        ranged = http.get(f"/api/v1/downloads/{BIG_ZIP}", headers={"Range": "bytes=-5"})
        assert ranged.status_code == 206
        assert ranged.content == emulator.body_path(BIG_ZIP).read_bytes()[-5:]
        emulator.fail_next("GET /api/v1/builds", 502, body="empty")
        assert http.get("/api/v1/builds").status_code == 502
        assert http.get("/api/v1/builds/1").status_code == 404
        assert http.get("/api/v1/builds").status_code == 200
    assert emulator.bytes_sent == size + 5
    assert emulator.downloads[BIG_ZIP]["downloaded"] == 2


def test_real_http_chunked(emulator: Emulator) -> None:
    emulator.config = dataclasses.replace(emulator.config, content_length=False)
    headers = {"Authorization": f"Bearer {emulator.issue_token()}"}
    with serve_in_thread(emulator) as url, httpx.Client(base_url=url, headers=headers,
                                                        timeout=5) as http:  # fmt: skip
        for _ in range(2):  # the same connection must survive a chunked body
            response = http.get(f"/api/v1/downloads/{BIG_ZIP}")
            assert "Content-Length" not in response.headers
            assert hashlib.sha256(response.content).hexdigest() == emulator.body_sha256(BIG_ZIP)


@pytest.mark.parametrize("content_length", [True, False])
def test_real_http_drop_after(emulator: Emulator, content_length: bool) -> None:
    emulator.config = dataclasses.replace(emulator.config, drop_after=100_000,
                                          content_length=content_length)  # fmt: skip
    headers = {"Authorization": f"Bearer {emulator.issue_token()}"}
    with serve_in_thread(emulator) as url, httpx.Client(base_url=url, headers=headers,
                                                        timeout=5) as http:  # fmt: skip
        received = 0
        with pytest.raises(httpx.RemoteProtocolError), \
                http.stream("GET", f"/api/v1/downloads/{BIG_ZIP}") as response:  # fmt: skip
            for chunk in response.iter_raw():
                received += len(chunk)
        assert received == 100_000
        assert http.get("/api/v1/builds").status_code == 200  # a new connection works
    assert emulator.bytes_sent == 100_000


def test_stopping_the_server_cuts_keep_alive_connections(emulator: Emulator) -> None:
    headers = {"Authorization": f"Bearer {emulator.issue_token()}"}
    with httpx.Client(headers=headers, timeout=5) as http:
        with serve_in_thread(emulator) as url:
            assert http.get(f"{url}/api/v1/projects").status_code == 200
        with pytest.raises(httpx.TransportError):
            http.get(f"{url}/api/v1/projects")


def test_command_line(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "mkwfs.emulator", "--port", "0", "--big-file-size", "1024",
               "--page-size", "5", "--no-head", "--latency", "0.01", "--jitter", "0.01",
               "--reset-after", "100", "--token-lifetime", "60"]  # fmt: skip
    environment = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=environment) as process:
        try:
            assert process.stdout is not None
            lines = dict(process.stdout.readline().strip().split("=", 1) for _ in range(4))
            headers = {"Authorization": f"Bearer {lines['MKWFS_TOKEN']}"}
            with httpx.Client(base_url=lines["MKWFS_API_URL"], headers=headers, timeout=5) as http:
                assert http.get("/api/v1/builds").json()["limit"] == 5
                assert http.head(f"/api/v1/downloads/{DEMO_ZIP}").status_code == 405
                with pytest.raises(httpx.ReadError):
                    http.get(f"/api/v1/downloads/{DEMO_ZIP}")
            assert jwt_part(lines["MKWFS_TOKEN"], 1)["exp"] - time.time() <= 61
            assert lines["MKWFS_EMAIL"] == "demo@metakraftwerk.example"
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=5) == 0
        finally:
            if process.poll() is None:
                process.kill()


# --- faults: connections ------------------------------------------------------------------


def test_down_in_process_is_connect_error(client: httpx.Client, emulator: Emulator) -> None:
    emulator.config = dataclasses.replace(emulator.config, down=True)
    with pytest.raises(httpx.ConnectError):
        client.get("/api/v1/builds")
    assert emulator.requests == {}
    emulator.config = dataclasses.replace(emulator.config, down=False)
    assert client.get("/api/v1/builds").status_code == 200


def test_server_stops_and_starts_on_the_same_port(emulator: Emulator) -> None:
    headers = {"Authorization": f"Bearer {emulator.issue_token()}"}
    with EmulatorServer(emulator) as server, httpx.Client(
        base_url=server.url, headers=headers, timeout=2
    ) as http:  # fmt: skip
        url = server.url
        assert http.get("/api/v1/projects").status_code == 200  # a keep-alive connection
        server.stop()
        server.stop()
        assert not server.listening
        with pytest.raises(httpx.ConnectError):
            http.get("/api/v1/projects")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=2)
        server.start()
        assert server.url == url
        assert http.get("/api/v1/projects").status_code == 200
    with pytest.raises(httpx.ConnectError), httpx.Client(timeout=2) as http:
        http.get(f"{url}/api/v1/projects")


def exchange_raw(url: str, request: bytes) -> bytes:
    """Send ``request`` as is on a new connection; what comes back until the server closes
    the connection or stays silent for half a second."""
    with connect(url) as connection:
        connection.sendall(request)
        return read_until_quiet(connection)


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=5)


def read_until_quiet(connection: socket.socket) -> bytes:
    """What comes until the server closes the connection or stays silent for 0.5 s."""
    connection.settimeout(0.5)
    received = b""
    with contextlib.suppress(TimeoutError):
        while chunk := connection.recv(65536):
            received += chunk
    return received


@pytest.mark.parametrize(
    ("request_bytes", "status_line"),
    [
        (b"GET /api/v1/projects\r\n\r\n", b"HTTP/1.1 400"),
        (b"GET /api/v1/projects HTTP/2.0\r\n\r\n", b"HTTP/1.1 400"),
        (b"GET /api/v1/projects HTTP/1.1\r\nno colon here\r\n\r\n", b"HTTP/1.1 400"),
        (b"GET /api/v1/projects HTTP/1.1\r\nX: " + b"x" * 70000 + b"\r\n\r\n", b"HTTP/1.1 431"),
        (b"GET /api/v1/projects HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"\r\n", b"HTTP/1.1 431"),
        # Lines without an end are refused without waiting for it.
        (b"GET /" + b"x" * 70000, b"HTTP/1.1 414"),
        (b"GET / HTTP/1.1\r\nX: " + b"x" * 70000, b"HTTP/1.1 431"),
    ],
)
def test_a_malformed_request_head_is_refused(
    emulator: Emulator, request_bytes: bytes, status_line: bytes
) -> None:
    with serve_in_thread(emulator) as url:
        answer = exchange_raw(url, request_bytes)
    assert answer.startswith(status_line)
    assert emulator.requests == {}


def test_requests_on_one_connection_follow_keep_alive_and_close(emulator: Emulator) -> None:
    token = emulator.issue_token()
    head = f"HEAD /api/v1/projects HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
    with serve_in_thread(emulator) as url:
        kept = exchange_raw(url, (head + "\r\n").encode() * 2)
        closed = exchange_raw(url, (head + "Connection: close\r\n\r\n").encode() * 2)
        old = exchange_raw(url, (head.replace("HTTP/1.1", "HTTP/1.0") + "\r\n").encode() * 2)
    assert kept.count(b"HTTP/1.1 200") == 2  # pipelined on one connection, both answered
    assert closed.count(b"HTTP/1.1 200") == 1  # the server closed after the first
    assert old.count(b"HTTP/1.1 200") == 1
    assert emulator.requests["HEAD /api/v1/projects"] == 4


def test_a_request_after_a_body_on_one_connection_is_answered_after_it(
    emulator: Emulator,
) -> None:
    """A body is sent by a thread of its own; the request that came right behind it on the
    same connection waits for it, then is answered."""
    token = emulator.issue_token()
    auth = f"Host: x\r\nAuthorization: Bearer {token}\r\n\r\n"
    body = emulator.body_path(SMALL_ZIP).read_bytes()
    request = f"GET /api/v1/downloads/{SMALL_ZIP} HTTP/1.1\r\n{auth}"
    request += f"HEAD /api/v1/downloads/{SMALL_ZIP} HTTP/1.1\r\n{auth}"
    with serve_in_thread(emulator) as url:
        emulator.body_path(SMALL_ZIP)
        answer = exchange_raw(url, request.encode())
    first, _, rest = answer.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200")
    assert rest.startswith(body)
    assert rest[len(body) :].startswith(b"HTTP/1.1 200")
    assert emulator.requests["GET /api/v1/downloads/:id"] == 1
    assert emulator.requests["HEAD /api/v1/downloads/:id"] == 1


def test_a_request_in_pieces_and_one_that_expects_100_continue(
    emulator: Emulator, config: EmulatorConfig
) -> None:
    login = json.dumps({"strategy": "local", "email": config.email, "password": config.password})
    head = (
        "POST /authentication HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Expect: 100-continue\r\nContent-Length: {len(login)}\r\n\r\n"
    )
    with serve_in_thread(emulator) as url, connect(url) as connection:
        for byte in head.encode():  # the head a byte at a time
            connection.sendall(bytes([byte]))
        assert connection.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        connection.sendall(login.encode())
        answer = read_until_quiet(connection)
    assert answer.startswith(b"HTTP/1.1 201")
    assert b'"accessToken"' in answer


def test_an_answer_bigger_than_the_socket_takes_arrives_whole(emulator: Emulator) -> None:
    token = emulator.issue_token()
    request = (
        f"GET /api/v1/downloads?build_id={LARGE_BUILD}&$limit=1000 HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    with serve_in_thread(emulator) as url, connect(url) as connection:
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        connection.sendall(request.encode())
        time.sleep(0.3)  # the server's send buffer fills: the rest waits for the reader
        answer = read_until_quiet(connection)
    head, _, body = answer.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: (\d+)", head)[1])  # type: ignore[index]
    assert len(body) == length > 200_000
    assert len(json.loads(body)) == 1000  # unpaginated: a plain list


def test_config_down_stops_every_server(emulator: Emulator) -> None:
    """``down`` acts on servers made with serve_in_thread too, and comes back on its own."""
    headers = {"Authorization": f"Bearer {emulator.issue_token()}"}
    with serve_in_thread(emulator) as url, httpx.Client(base_url=url, headers=headers,
                                                        timeout=2) as http:  # fmt: skip
        assert http.get("/api/v1/projects").status_code == 200
        emulator.config = dataclasses.replace(emulator.config, down=True)
        with pytest.raises(httpx.ConnectError):
            http.get("/api/v1/projects")
        emulator.config = dataclasses.replace(emulator.config, down=False)
        assert http.get("/api/v1/projects").status_code == 200


def test_a_server_started_while_down_listens_when_up(emulator: Emulator) -> None:
    emulator.config = dataclasses.replace(emulator.config, down=True)
    with EmulatorServer(emulator) as server, httpx.Client(timeout=2) as http:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", server.url)
        assert not server.listening
        with pytest.raises(httpx.ConnectError):
            http.get(f"{server.url}/api/v1/projects")
        emulator.config = dataclasses.replace(emulator.config, down=False)
        assert http.get(f"{server.url}/api/v1/projects").status_code == 401


def read_until_error(http: httpx.Client, path: str) -> tuple[int, int, Exception | None]:
    """(Content-Length or -1, body bytes received, the error that ended the body or None)."""
    received = 0
    with http.stream("GET", path) as response:
        try:
            for chunk in response.iter_raw():
                received += len(chunk)
        except httpx.TransportError as exc:
            return int(response.headers.get("Content-Length", -1)), received, exc
    return int(response.headers.get("Content-Length", -1)), received, None


@pytest.mark.parametrize(
    ("fault", "error"),
    [("drop_after", httpx.RemoteProtocolError), ("reset_after", httpx.ReadError)],
)
@pytest.mark.parametrize("content_length", [True, False])
def test_real_http_cut_bodies(emulator: Emulator, fault: str, error: type[Exception],
                              content_length: bool) -> None:  # fmt: skip
    """A clean close gives a short body (RemoteProtocolError); a reset gives ReadError."""
    cut: dict[str, Any] = {fault: 100_000}
    emulator.config = dataclasses.replace(emulator.config, content_length=content_length, **cut)
    headers = {"Authorization": f"Bearer {emulator.issue_token()}"}
    with serve_in_thread(emulator) as url, httpx.Client(base_url=url, headers=headers,
                                                        timeout=5) as http:  # fmt: skip
        for _ in range(2):
            length, received, exc = read_until_error(http, f"/api/v1/downloads/{BIG_ZIP}")
            assert type(exc) is error
            assert received == 100_000
            assert length == (emulator.body_path(BIG_ZIP).stat().st_size if content_length
                              else -1)  # fmt: skip
        assert http.get("/api/v1/builds").status_code == 200  # a new connection works


def test_in_process_reset(client: httpx.Client, emulator: Emulator) -> None:
    emulator.config = dataclasses.replace(emulator.config, reset_after=1000, drop_after=2000)
    _, received, exc = read_until_error(client, f"/api/v1/downloads/{DEMO_ZIP}")
    assert (type(exc), received) == (httpx.ReadError, 1000)
    emulator.config = dataclasses.replace(emulator.config, reset_after=1000, drop_after=1000)
    _, received, exc = read_until_error(client, f"/api/v1/downloads/{DEMO_ZIP}")
    assert (type(exc), received) == (httpx.RemoteProtocolError, 1000)  # a tie closes cleanly


def test_real_http_stall_until_the_read_timeout(emulator: Emulator) -> None:
    emulator.config = dataclasses.replace(emulator.config, stall_after=10_000)
    headers = {"Authorization": f"Bearer {emulator.issue_token()}"}
    timeout = httpx.Timeout(5, read=0.3)
    with serve_in_thread(emulator) as url, httpx.Client(base_url=url, headers=headers,
                                                        timeout=timeout) as http:  # fmt: skip
        started = time.monotonic()
        _, received, exc = read_until_error(http, f"/api/v1/downloads/{DEMO_ZIP}")
        assert (type(exc), received) == (httpx.ReadTimeout, 10_000)
        assert 0.3 <= time.monotonic() - started < 2
        emulator.release_stalls()
        assert http.get("/api/v1/builds").status_code == 200


def test_real_http_stall_released_or_over(emulator: Emulator) -> None:
    """A stall ends when released or after stall_seconds; the whole body then follows."""
    emulator.config = dataclasses.replace(emulator.config, stall_after=0)
    headers = {"Authorization": f"Bearer {emulator.issue_token()}"}
    expected = emulator.body_sha256(DEMO_ZIP)
    with serve_in_thread(emulator) as url, httpx.Client(base_url=url, headers=headers,
                                                        timeout=5) as http:  # fmt: skip
        started = time.monotonic()
        releaser = threading.Timer(0.2, emulator.release_stalls)
        releaser.start()
        response = http.get(f"/api/v1/downloads/{DEMO_ZIP}")
        releaser.join()
        assert 0.2 <= time.monotonic() - started < 2
        assert hashlib.sha256(response.content).hexdigest() == expected
        emulator.config = dataclasses.replace(emulator.config, stall_after=1000,
                                              stall_seconds=0.2)  # fmt: skip
        started = time.monotonic()
        response = http.get(f"/api/v1/downloads/{DEMO_ZIP}")
        assert 0.2 <= time.monotonic() - started < 2
        assert hashlib.sha256(response.content).hexdigest() == expected


def test_stopping_the_server_ends_a_stall(emulator: Emulator) -> None:
    emulator.config = dataclasses.replace(emulator.config, stall_after=1000)
    headers = {"Authorization": f"Bearer {emulator.issue_token()}"}
    with httpx.Client(headers=headers, timeout=5) as http:
        with EmulatorServer(emulator) as server:
            stopper = threading.Timer(0.2, server.stop)
            stopper.start()
            started = time.monotonic()
            path = f"{server.url}/api/v1/downloads/{DEMO_ZIP}"
            _, received, exc = read_until_error(http, path)
            stopper.join()
        assert isinstance(exc, httpx.TransportError)
        assert received == 1000
        assert time.monotonic() - started < 2


def test_in_process_stall(client: httpx.Client, emulator: Emulator) -> None:
    """The mock transport stalls too, and honours the client's read timeout."""
    path = f"/api/v1/downloads/{DEMO_ZIP}"
    emulator.config = dataclasses.replace(emulator.config, stall_after=1000, stall_seconds=0.1)
    started = time.monotonic()
    assert client.get(path).content == emulator.body_path(DEMO_ZIP).read_bytes()
    assert 0.1 <= time.monotonic() - started < 1
    emulator.config = dataclasses.replace(emulator.config, stall_seconds=None)
    client.timeout = httpx.Timeout(5, read=0.2)
    started = time.monotonic()
    _, received, exc = read_until_error(client, path)
    assert (type(exc), received) == (httpx.ReadTimeout, 1000)
    assert 0.2 <= time.monotonic() - started < 1
    releaser = threading.Timer(0.1, emulator.release_stalls)
    releaser.start()
    client.timeout = httpx.Timeout(5)
    assert client.get(path).content == emulator.body_path(DEMO_ZIP).read_bytes()
    releaser.join()


async def test_in_process_stall_on_trios_clock(
    emulator: Emulator, autojump_clock: trio.testing.MockClock
) -> None:
    emulator.config = dataclasses.replace(emulator.config, stall_after=1000, stall_seconds=3600)
    headers = {"Authorization": f"Bearer {emulator.issue_token()}"}
    path = f"/api/v1/downloads/{DEMO_ZIP}"
    async with httpx.AsyncClient(transport=emulator.mock_transport(), base_url="http://e",
                                 headers=headers, timeout=None) as http:  # fmt: skip
        started = trio.current_time()
        assert (await http.get(path)).content == emulator.body_path(DEMO_ZIP).read_bytes()
        assert trio.current_time() - started == pytest.approx(3600, abs=0.1)
        started = trio.current_time()
        with pytest.raises(httpx.ReadTimeout):
            await http.get(path, timeout=60)
        assert trio.current_time() - started == pytest.approx(60, abs=0.1)
