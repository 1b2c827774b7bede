"""`colorgan serve`: a web page to colorize dropped images, and an HTTP endpoint for scripts.

A small Starlette app on uvicorn. One Colorizer serves every request; inference runs in a
worker thread under a lock, so the event loop keeps answering and concurrent requests never
share tensors. Uploads are refused over a byte limit (while reading) and a pixel limit (from the
header, before decoding), with a 4xx status and a JSON {"error": reason} the page shows; every
other error (an unknown route or method, a malformed request, a bug: 500) is JSON too.

Connections are guarded in uvicorn's h11 protocol (`_protocol_class`): a request's headers must
arrive within `header_timeout` seconds and its body within `body_timeout` more, else 408 and the
connection is closed; at most `max_connections` are open (fewer under a low file limit): a new
one closes the one that has waited longest for a request's headers (a stalled or idle client),
or, when every one is busy with a request, is answered 503.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import socket
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from importlib import resources
from pathlib import Path
from typing import Any

from colorgan.colorize import Colorizer
from colorgan.errors import (
    ColorganError,
    DoesNotFit,
    MissingDependency,
    UnreadableImage,
    UploadRefused,
)
from colorgan.files import load_picture, to_image
from colorgan.hints import Hint, HintError, hints_from_text

DEFAULT_PORT = 8000
DEFAULT_MAX_UPLOAD_MB = 25.0
DEFAULT_MAX_PIXELS = 40_000_000  # about 7300x5500; more is refused before decoding
MAX_WORKING_SIZE = 2048  # the largest ?size= accepted: the model's cost grows with its square
_MULTIPART_SLACK = 64 * 1024  # bytes of multipart headers allowed beyond the image itself
MAX_UPLOAD_MB = 4096.0  # the largest --max-upload-mb accepted: the body is held in memory
MAX_PIXELS = 1_000_000_000  # the largest --max-pixels accepted
DEFAULT_HEADER_TIMEOUT = 10.0  # seconds for a request's headers, from connecting or the last answer
DEFAULT_BODY_TIMEOUT = 30.0  # seconds for a request's body, from the end of its headers
DEFAULT_MAX_CONNECTIONS = 64  # open connections at once
_SPARE_FILES = 64  # file descriptors kept free of connections (model, selector, logs...)
INSTALL_HINT = "pip install 'colorgan[serve]'"


@dataclass(frozen=True)
class Limits:
    """What one request may ask for."""

    max_upload_bytes: int = int(DEFAULT_MAX_UPLOAD_MB * 1024 * 1024)
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_size: int = MAX_WORKING_SIZE


@dataclass(frozen=True)
class ConnectionLimits:
    """How long a client may take to send a request, and how many may be connected at once."""

    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS


def limits_from_options(max_upload_mb: float, max_pixels: int) -> Limits:
    """Limits from `--max-upload-mb` and `--max-pixels`, checked (NaN and infinity refused)."""
    if not (math.isfinite(max_upload_mb) and 0 < max_upload_mb <= MAX_UPLOAD_MB):
        raise ColorganError(
            f"--max-upload-mb must be a number of MiB above 0 and at most {MAX_UPLOAD_MB:g}, "
            f"got {max_upload_mb:g}"
        )
    if not 1 <= max_pixels <= MAX_PIXELS:
        raise ColorganError(f"--max-pixels must be from 1 to {MAX_PIXELS:,}, got {max_pixels:,}")
    return Limits(max(1, int(max_upload_mb * 2**20)), max_pixels)


def connections_from_options(
    header_timeout: float, body_timeout: float, max_connections: int
) -> ConnectionLimits:
    """ConnectionLimits from `--header-timeout`, `--body-timeout` and `--max-connections`."""
    for name, value in (("--header-timeout", header_timeout), ("--body-timeout", body_timeout)):
        if not (math.isfinite(value) and 0 < value <= 3600):
            raise ColorganError(
                f"{name} must be a number of seconds above 0 and at most 3600, got {value:g}"
            )
    if not 1 <= max_connections <= 100_000:
        raise ColorganError(f"--max-connections must be from 1 to 100000, got {max_connections}")
    return ConnectionLimits(header_timeout, body_timeout, max_connections)


def page() -> str:
    """The single HTML page (vanilla JS, no build step)."""
    return resources.files("colorgan").joinpath("serve.html").read_text(encoding="utf-8")


def _working_size(raw: str | None, colorizer: Colorizer, limits: Limits) -> int:
    """The ?size= query parameter, checked; the model's training size when absent."""
    if raw is None or raw == "":
        return colorizer.image_size
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= limits.max_size:
        raise UploadRefused(400, f"size must be a whole number from 1 to {limits.max_size}")
    return int(raw)


async def _read_body(stream: AsyncIterator[bytes], declared: str | None, limit: int) -> bytes:
    """The request body, refused (413) as soon as it grows past `limit` bytes."""
    too_big = UploadRefused(413, f"upload over the limit of {limit / 2**20:.1f} MB")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks, total = [], 0
    async for chunk in stream:
        total += len(chunk)
        if total > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


async def _multipart_file(headers: Any, body: bytes, limit: int) -> tuple[bytes, str | None]:
    """The first file of a multipart/form-data body, and its `hints` field (JSON), if any."""
    from starlette.datastructures import UploadFile
    from starlette.formparsers import MultiPartException, MultiPartParser

    async def once() -> AsyncGenerator[bytes, None]:
        yield body

    parser = MultiPartParser(headers, once(), max_files=2, max_fields=8, max_part_size=limit)
    try:
        form = await parser.parse()
    except MultiPartException as err:
        raise UploadRefused(400, f"bad multipart upload ({err.message})") from None
    hints = form.get("hints")
    if isinstance(hints, UploadFile):
        hints = (await hints.read()).decode("utf-8", errors="replace")
    for name, value in form.multi_items():
        if isinstance(value, UploadFile) and name != "hints":
            data = await value.read()
            await value.close()
            return data, hints
    raise UploadRefused(400, "no file in the multipart upload: send it as a form file field")


def parse_hints(text: str | None) -> list[Hint] | None:
    """The `hints` form field (the JSON of a hints file) -> points; 400 if it is not that."""
    if text is None or not text.strip():
        return None
    try:
        return hints_from_text(text, "hints")
    except HintError as err:
        raise UploadRefused(400, str(err)) from None


def colorize_bytes(
    colorizer: Colorizer,
    data: bytes,
    size: int,
    max_pixels: int,
    hints: list[Hint] | None = None,
) -> bytes:
    """Image file bytes (and color points) -> the colorized PNG (alpha kept), through
    files.py's decoding."""
    if not data:
        raise UploadRefused(400, "empty upload: send an image file as the request body")
    try:
        picture = load_picture(io.BytesIO(data), max_pixels)
    except UnreadableImage as err:
        status = 413 if "over the limit" in str(err) else 400
        raise UploadRefused(status, str(err)) from None
    try:
        rgb = colorizer.colorize_pictures([picture], size, [hints] if hints else None)[0]
    except HintError as err:  # a point outside the image, or a model without hints
        raise UploadRefused(400, str(err)) from None
    except DoesNotFit as err:  # the working size needs more memory than is free
        raise UploadRefused(413, str(err)) from None
    out = io.BytesIO()
    to_image(rgb, picture.alpha).save(out, format="PNG")
    return out.getvalue()


async def _upload(request: Any, limits: Limits) -> tuple[bytes, list[Hint] | None]:
    """The uploaded image's bytes (a raw body or a multipart file) and its points, checked."""
    limit = limits.max_upload_bytes + _MULTIPART_SLACK
    body = await _read_body(request.stream(), request.headers.get("content-length"), limit)
    hints_text = None
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        body, hints_text = await _multipart_file(request.headers, body, limits.max_upload_bytes)
    hints = parse_hints(hints_text)
    if len(body) > limits.max_upload_bytes:
        raise UploadRefused(413, f"upload over the limit of {limits.max_upload_bytes:,} bytes")
    return body, hints


def _json_error(status: int, reason: str, headers: Mapping[str, str] | None = None) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse({"error": reason}, status_code=status, headers=headers)


def _error_handlers() -> dict[Any, Any]:
    """Starlette's own errors (404, 405) and unexpected exceptions (500) as JSON {"error": ...},
    like the app's refusals, instead of plain text."""
    from starlette.exceptions import HTTPException

    async def http_error(request: Any, exc: Exception) -> Any:
        assert isinstance(exc, HTTPException)
        where = f"{request.method} {request.url.path}"[:200]
        return _json_error(exc.status_code, f"{exc.detail}: {where}", exc.headers)

    async def server_error(request: Any, exc: Exception) -> Any:
        # uvicorn logs the traceback; a ColorganError's one line is meant for users
        reason = str(exc).strip().splitlines()[0][:200] if isinstance(exc, ColorganError) else ""
        return _json_error(500, f"internal error ({reason or type(exc).__name__})")

    return {HTTPException: http_error, Exception: server_error}


def create_app(colorizer: Colorizer, limits: Limits | None = None) -> Any:
    """The Starlette app: GET / (the page), GET /api/info, POST /api/colorize?size=N."""
    try:
        from starlette.applications import Starlette
        from starlette.concurrency import run_in_threadpool
        from starlette.requests import ClientDisconnect, Request
        from starlette.responses import HTMLResponse, JSONResponse, Response
        from starlette.routing import Route
    except ImportError:
        raise MissingDependency(
            f"colorgan serve needs starlette and uvicorn: {INSTALL_HINT}"
        ) from None
    limits = limits or Limits()
    lock = threading.Lock()  # one model: requests take turns, each with its own tensors
    html = page()

    def colorize_locked(data: bytes, size: int, hints: list[Hint] | None) -> bytes:
        with lock:
            return colorize_bytes(colorizer, data, size, limits.max_pixels, hints)

    async def index(request: Request) -> Response:
        return HTMLResponse(html)

    async def info(request: Request) -> Response:
        return JSONResponse(
            {
                "image_size": colorizer.image_size,
                "multiple": colorizer.multiple,
                "max_size": limits.max_size,
                "max_upload_bytes": limits.max_upload_bytes,
                "max_pixels": limits.max_pixels,
                "hints": colorizer.hints,
            }
        )

    async def colorize(request: Request) -> Response:
        try:
            size = _working_size(request.query_params.get("size"), colorizer, limits)
            body, hints = await _upload(request, limits)
            png = await run_in_threadpool(colorize_locked, body, size, hints)
        except UploadRefused as err:
            return _json_error(err.status, str(err))
        except ClientDisconnect:  # gone, or closed for a stalled body (and answered 408)
            return _json_error(400, "the client closed the connection")  # goes nowhere
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    routes = [
        Route("/", index),
        Route("/api/info", info),
        Route("/api/colorize", colorize, methods=["POST"]),
    ]
    return Starlette(routes=routes, exception_handlers=_error_handlers())


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as err:
        sock.close()
        raise ColorganError(f"cannot listen on {host}:{port} ({err.strerror or err})") from None
    return sock


def url_of(sock: socket.socket) -> str:
    """The http:// address a listening socket answers on."""
    host, port = sock.getsockname()[:2]
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}/"


def _raw_error(status: int, reason: str) -> bytes:
    """A whole JSON error response that closes the connection, for the protocol to write."""
    body = json.dumps({"error": reason}).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


async def _busy(scope: Any, receive: Any, send: Any) -> None:
    """The ASGI app a connection over the cap gets: 503, JSON, connection closed."""
    body = json.dumps({"error": "too many open connections; try again shortly"}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    headers += [(b"connection", b"close"), (b"retry-after", b"1")]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _Deadline:
    """One connection's clock: the request's headers must arrive within header_timeout (from
    connecting, or from the previous answer on a kept-alive connection), and its body within
    body_timeout of them. Nothing runs while the app works on a request."""

    def __init__(self, protocol: Any, limits: ConnectionLimits) -> None:
        self.protocol = protocol  # a uvicorn H11Protocol
        self.limits = limits
        self.phase: str | None = None  # "headers", "body" or None (nothing awaited from it)
        self.since = 0.0  # loop time the phase began
        self.timer: asyncio.TimerHandle | None = None

    def update(self) -> None:
        """Start the clock for what the connection now waits for (after every event)."""
        import h11

        state = self.protocol.conn.their_state
        phase = {h11.IDLE: "headers", h11.SEND_BODY: "body"}.get(state)
        if phase == self.phase:
            return
        self.cancel()
        self.phase = phase
        if phase is not None and not self.protocol.transport.is_closing():
            limit = self.limits.header_timeout if phase == "headers" else self.limits.body_timeout
            self.since = self.protocol.loop.time()
            self.timer = self.protocol.loop.call_later(limit, self.expire, f"within {limit:g} s")

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def expire(self, within: str) -> None:
        """Close the connection: with a 408 if a request was begun and not yet answered.
        `within` ends the reason: "within 10 s", or why it could wait no longer."""
        self.cancel()
        protocol = self.protocol
        if protocol.transport.is_closing():
            return
        begun = self.phase == "headers" and protocol.conn.trailing_data[0]
        if begun or (self.phase == "body" and not protocol.cycle.response_started):
            part = "headers" if self.phase == "headers" else "body"
            reason = f"the request's {part} did not arrive {within}"
            protocol.transport.write(_raw_error(408, reason))
        protocol.transport.close()


def _admit(protocol: Any, cap: int) -> None:
    """Over the cap, close the connection that has waited longest for a request's headers (a
    stalled client or an idle kept-alive one); if every one is busy, this one is answered 503."""
    others = [p for p in protocol.connections if p is not protocol and not p.transport.is_closing()]
    if len(others) < cap:
        return
    waiting = [p for p in others if getattr(p, "deadline", None) and p.deadline.phase == "headers"]
    if waiting:
        min(waiting, key=lambda p: p.deadline.since).deadline.expire(
            "before other clients needed its place"
        )
    else:
        protocol.app = _busy


def connection_cap(wanted: int) -> int:
    """`wanted`, lowered so that connections cannot use up the process's file descriptors (when
    accept() fails for want of one, everyone waits)."""
    try:
        import resource
    except ImportError:  # Windows
        return wanted
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - _SPARE_FILES))


def _protocol_class(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol with the deadlines, the connection cap and JSON for its own 400."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    cap = connection_cap(limits.max_connections)

    class GuardedH11Protocol(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.deadline = _Deadline(self, limits)
            _admit(self, cap)
            self.deadline.update()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self.deadline.update()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self.deadline.update()

        def connection_lost(self, exc: Exception | None) -> None:
            self.deadline.cancel()
            super().connection_lost(exc)

        def send_400_response(self, msg: str) -> None:
            self.transport.write(_raw_error(400, f"malformed HTTP request ({msg})"))
            self.transport.close()

    return GuardedH11Protocol


def server(app: Any, sock: socket.socket, connections: ConnectionLimits | None = None) -> Any:
    """A uvicorn Server for `app` on the already-bound `sock` (call .run(sockets=[sock])), its
    connections guarded by `connections` (the defaults when None)."""
    try:
        import uvicorn
    except ImportError:
        raise MissingDependency(
            f"colorgan serve needs starlette and uvicorn: {INSTALL_HINT}"
        ) from None
    host, port = sock.getsockname()[:2]
    protocol = _protocol_class(connections or ConnectionLimits())
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol,
        ws="none",  # no WebSocket routes: an upgrade request stays an HTTP request (guarded)
        log_level="warning",
        access_log=False,
    )
    return uvicorn.Server(config)


def serve(
    model: str | Path,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    device: str = "auto",
    limits: Limits | None = None,
    connections: ConnectionLimits | None = None,
) -> None:
    """Load MODEL (.pt, .onnx, a model folder or hf://owner/name[@revision]), print the URL
    and serve until interrupted."""
    if not 0 <= port <= 65535:
        raise ColorganError(f"--port must be from 0 to 65535, got {port}")
    colorizer = Colorizer.from_checkpoint(model, device, batch_size=1)
    app = create_app(colorizer, limits)
    sock = listen(host, port)
    with sock:
        http = server(app, sock, connections)
        print(f"colorgan: serving {colorizer.source} at {url_of(sock)} (Ctrl-C stops)", flush=True)
        http.run(sockets=[sock])
