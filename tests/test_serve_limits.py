"""`colorgan serve` against bad options, bad requests and slow or stalled clients: every error is
JSON, a stalled connection is closed in time, and stalled ones never lock out everyone else.

The connection tests run uvicorn in a thread on a free loopback port, with timeouts of about a
second, and talk to it over plain sockets."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from starlette.testclient import TestClient

from colorgan.batch import Batch
from colorgan.cli import main
from colorgan.colorize import Colorizer
from colorgan.connections import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    ConnectionLimits,
    connection_cap,
    connections_from_options,
    listen,
    server,
)
from colorgan.errors import ColorganError
from colorgan.serve import Limits, create_app, limits_from_options
from tests.conftest import make_tiny_checkpoint
from tests.test_serve import gray, png_bytes


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("limits") / "tiny.pt")


@pytest.fixture(scope="module")
def colorizer(checkpoint: Path) -> Colorizer:
    return Colorizer.from_checkpoint(checkpoint, device="cpu", batch_size=1)


# --- options


@pytest.mark.parametrize("mb", [float("nan"), float("inf"), float("-inf"), 0.0, -1.0, 1e9])
def test_a_bad_max_upload_mb_is_one_line(mb: float) -> None:
    with pytest.raises(ColorganError, match="--max-upload-mb must be a number of MiB") as caught:
        limits_from_options(mb, 1000)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("pixels", [0, -5, 10**12])
def test_a_bad_max_pixels_is_one_line(pixels: int) -> None:
    with pytest.raises(ColorganError, match="--max-pixels must be from 1 to"):
        limits_from_options(25.0, pixels)


def test_good_limits_are_kept() -> None:
    assert limits_from_options(0.5, 1000) == Limits(max_upload_bytes=2**19, max_pixels=1000)


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_cli_serve_refuses_a_non_finite_max_upload_mb(
    checkpoint: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    code = main(["serve", str(checkpoint), "--max-upload-mb", value, "--port", "0"])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 1 and "--max-upload-mb must be a number of MiB" in err[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((float("nan"), 30.0, 64), "--header-timeout must be a number of seconds"),
        ((10.0, float("inf"), 64), "--body-timeout must be a number of seconds"),
        ((0.0, 30.0, 64), "--header-timeout must be a number of seconds"),
        ((10.0, 30.0, 0), "--max-connections must be from 1"),
    ],
)
def test_bad_connection_options_are_one_line(args: tuple[float, float, int], message: str) -> None:
    with pytest.raises(ColorganError, match=message):
        connections_from_options(*args)
    assert connections_from_options(1.5, 2.5, 3) == ConnectionLimits(1.5, 2.5, 3)


def test_the_defaults() -> None:
    assert (DEFAULT_HEADER_TIMEOUT, DEFAULT_BODY_TIMEOUT, DEFAULT_MAX_CONNECTIONS) == (10, 30, 64)
    assert ConnectionLimits() == ConnectionLimits(10.0, 30.0, 64)


def test_the_cap_leaves_file_descriptors_free(monkeypatch: pytest.MonkeyPatch) -> None:
    import resource

    monkeypatch.setattr(resource, "getrlimit", lambda _: (100, 4096))
    assert connection_cap(64) == 36  # 64 of the 100 stay for everything else
    monkeypatch.setattr(resource, "getrlimit", lambda _: (4096, 4096))
    assert connection_cap(64) == 64


# --- JSON errors, through the ASGI app


def test_unknown_routes_and_methods_are_json(colorizer: Colorizer) -> None:
    client = TestClient(create_app(colorizer))
    missing = client.get("/nope")
    assert missing.status_code == 404
    assert missing.json() == {"error": "Not Found: GET /nope"}
    for method, path in (("GET", "/api/colorize"), ("POST", "/api/info"), ("PUT", "/")):
        response = client.request(method, path)
        assert response.status_code == 405
        assert response.headers["content-type"] == "application/json"
        assert response.json()["error"] == f"Method Not Allowed: {method} {path}"
    assert client.get("/api/colorize").headers["allow"] == "POST"


def test_an_unexpected_exception_is_a_json_500(colorizer: Colorizer) -> None:
    def broken(batch: Batch) -> torch.Tensor:
        raise RuntimeError("a bug")

    app = create_app(Colorizer(broken, 32, 8, torch.device("cpu"), batch_size=1))
    client = TestClient(app, raise_server_exceptions=False)
    response = client.post("/api/colorize", content=png_bytes(gray(0)))
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": "internal error (RuntimeError)"}


@pytest.mark.parametrize("size", ["²", "٣٢", "3²", " 32", "+32", "32.0"])
def test_a_size_that_is_not_ascii_digits_is_a_400(colorizer: Colorizer, size: str) -> None:
    client = TestClient(create_app(colorizer))
    response = client.post("/api/colorize", params={"size": size}, content=png_bytes(gray(0)))
    assert response.status_code == 400
    assert "size must be a whole number" in response.json()["error"]


# --- a live server and raw sockets


@contextmanager
def live(app: Any, connections: ConnectionLimits) -> Iterator[tuple[str, int]]:
    """uvicorn serving `app` in a thread on a free loopback port; yields (host, port)."""
    sock = listen("127.0.0.1", 0)
    http_server = server(app, sock, connections)
    thread = threading.Thread(target=http_server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not http_server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)
        yield sock.getsockname()[:2]
    finally:
        http_server.should_exit = True
        thread.join(timeout=5)
        if thread.is_alive():
            http_server.force_exit = True
            thread.join(timeout=5)
        sock.close()


def stalled(address: tuple[str, int], sent: bytes, stack: ExitStack) -> socket.socket:
    """A client that sends `sent` and then nothing."""
    client = stack.enter_context(socket.create_connection(address, timeout=10))
    if sent:
        client.sendall(sent)
    return client


def answer(client: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when it closed."""
    chunks = []
    while chunk := client.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks), time.monotonic()


def status_and_json(raw: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), raw
    return int(head.split()[1]), json.loads(body)


def get_info(address: tuple[str, int], timeout: float = 5) -> tuple[int, dict[str, Any], float]:
    """GET /api/info as a well-behaved client: status, JSON body, seconds it took."""
    started = time.monotonic()
    conn = http.client.HTTPConnection(*address, timeout=timeout)
    try:
        conn.request("GET", "/api/info")
        response = conn.getresponse()
        assert response.getheader("content-type") == "application/json"
        return response.status, json.loads(response.read()), time.monotonic() - started
    finally:
        conn.close()


PARTIAL_HEADERS = b"GET /api/info HTTP/1.1\r\nHost: x\r\nX-Slow: "
PARTIAL_BODY = (
    b"POST /api/colorize HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
    b"Content-Length: 1000\r\n\r\n" + b"\x89PNG" * 10
)


def test_stalled_headers_and_bodies_are_closed_in_time(colorizer: Colorizer) -> None:
    limits = ConnectionLimits(header_timeout=0.6, body_timeout=0.9, max_connections=16)
    with live(create_app(colorizer), limits) as address, ExitStack() as stack:
        started = time.monotonic()
        headers = stalled(address, PARTIAL_HEADERS, stack)
        body = stalled(address, PARTIAL_BODY, stack)
        silent = stalled(address, b"", stack)
        raw, closed = answer(headers)
        assert status_and_json(raw) == (
            408,
            {"error": "the request's headers did not arrive within 0.6 s"},
        )
        assert 0.5 < closed - started < 3
        raw, closed = answer(body)
        assert status_and_json(raw) == (
            408,
            {"error": "the request's body did not arrive within 0.9 s"},
        )
        assert 0.8 < closed - started < 3
        raw, closed = answer(silent)  # sent nothing: closed without an answer
        assert raw == b"" and 0.5 < closed - started < 3
        assert get_info(address)[0] == 200  # and the server goes on


def test_stalled_clients_at_the_cap_do_not_lock_out_a_new_one(colorizer: Colorizer) -> None:
    """The cap's worth of stalled clients (and more): a new client is answered at once, the
    longest-waiting stalled one making room for it (408), long before any timeout."""
    cap = 4
    limits = ConnectionLimits(header_timeout=20, body_timeout=20, max_connections=cap)
    with live(create_app(colorizer), limits) as address, ExitStack() as stack:
        clients = []
        for _ in range(cap + 2):
            clients.append(stalled(address, PARTIAL_HEADERS, stack))
            time.sleep(0.1)  # read before the next one connects: no reset for unread data
        for _ in range(3):
            status, info, took = get_info(address)
            assert status == 200 and info["image_size"] == 32 and took < 2
        for client in clients[:3]:  # the oldest made room, in turn
            client.settimeout(2)
            raw, _ = answer(client)
            status, error = status_and_json(raw)
            assert status == 408 and "before other clients needed its place" in error["error"]


def test_over_the_cap_with_every_connection_busy_is_a_fast_503(colorizer: Colorizer) -> None:
    """Connections that sent their headers are not closed to make room: a new client gets a JSON
    503 at once, and a 200 as soon as their bodies time out."""
    limits = ConnectionLimits(header_timeout=5, body_timeout=2.0, max_connections=2)
    with live(create_app(colorizer), limits) as address, ExitStack() as stack:
        started = time.monotonic()
        busy = [stalled(address, PARTIAL_BODY, stack) for _ in range(2)]
        time.sleep(0.2)
        status, error, took = get_info(address)
        assert status == 503 and took < 1.5  # long before the 2 s body timeout
        assert error == {"error": "too many open connections; try again shortly"}
        for client in busy:
            assert status_and_json(answer(client)[0])[0] == 408
        assert time.monotonic() - started < 5
        assert get_info(address)[0] == 200


def test_slow_work_and_kept_alive_clients_are_not_timed_out(colorizer: Colorizer) -> None:
    """The clock stops while the app works (a 1.5 s colorization, past both timeouts), and starts
    again for each request on a kept-alive connection."""

    def slow(batch: Batch) -> torch.Tensor:
        time.sleep(1.5)
        return colorizer.predict(batch)

    app = create_app(Colorizer(slow, 32, 8, torch.device("cpu"), batch_size=1))
    limits = ConnectionLimits(header_timeout=0.5, body_timeout=0.5, max_connections=4)
    with live(app, limits) as address:
        conn = http.client.HTTPConnection(*address, timeout=10)
        try:
            conn.request("POST", "/api/colorize", body=png_bytes(gray(1)))
            response = conn.getresponse()
            assert response.status == 200 and response.read()[:4] == b"\x89PNG"
            for _ in range(6):  # 1.2 s on one connection, more than the header timeout
                time.sleep(0.2)
                conn.request("GET", "/api/info")
                response = conn.getresponse()
                assert response.status == 200 and json.loads(response.read())["image_size"] == 32
        finally:
            conn.close()


def test_errors_from_the_server_itself_are_json(colorizer: Colorizer) -> None:
    """A malformed request, an unknown route and an exception all get a JSON body."""

    def broken(batch: Batch) -> torch.Tensor:
        raise RuntimeError("a bug")

    app = create_app(Colorizer(broken, 32, 8, torch.device("cpu"), batch_size=1))
    with live(app, ConnectionLimits(1, 1, 4)) as address, ExitStack() as stack:
        raw, _ = answer(stalled(address, b"NOT HTTP AT ALL\r\n\r\n", stack))
        status, error = status_and_json(raw)
        assert status == 400 and error["error"].startswith("malformed HTTP request")
        raw, _ = answer(
            stalled(address, b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", stack)
        )
        assert status_and_json(raw) == (404, {"error": "Not Found: GET /nope"})
        post = b"POST /api/colorize HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
        image = png_bytes(gray(0))
        raw, _ = answer(stalled(address, post % len(image) + image, stack))
        assert status_and_json(raw) == (500, {"error": "internal error (RuntimeError)"})
