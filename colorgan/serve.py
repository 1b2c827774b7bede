"""`colorgan serve`: a web page to colorize dropped images, and an HTTP endpoint for scripts.

A small Starlette app on uvicorn. One Colorizer serves every request; inference runs in a
worker thread under a lock, so the event loop keeps answering and concurrent requests never
share tensors. Uploads are refused over a byte limit (while reading) and a pixel limit (from the
header, before decoding), with a 4xx status and a JSON {"error": reason} the page shows.
"""

from __future__ import annotations

import io
import socket
import threading
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from colorgan.colorize import Colorizer
from colorgan.errors import ColorganError, MissingDependency, UnreadableImage, UploadRefused
from colorgan.files import load_picture, to_image
from colorgan.hints import Hint, HintError, hints_from_text

DEFAULT_PORT = 8000
DEFAULT_MAX_UPLOAD_MB = 25.0
DEFAULT_MAX_PIXELS = 40_000_000  # about 7300x5500; more is refused before decoding
MAX_WORKING_SIZE = 2048  # the largest ?size= accepted: the model's cost grows with its square
_MULTIPART_SLACK = 64 * 1024  # bytes of multipart headers allowed beyond the image itself
INSTALL_HINT = "pip install 'colorgan[serve]'"


@dataclass(frozen=True)
class Limits:
    """What one request may ask for."""

    max_upload_bytes: int = int(DEFAULT_MAX_UPLOAD_MB * 1024 * 1024)
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_size: int = MAX_WORKING_SIZE


def limits_from_options(max_upload_mb: float, max_pixels: int) -> Limits:
    """Limits from `--max-upload-mb` and `--max-pixels`, checked."""
    if max_upload_mb <= 0 or max_pixels < 1:
        raise ColorganError("--max-upload-mb and --max-pixels must be positive")
    return Limits(int(max_upload_mb * 2**20), max_pixels)


def page() -> str:
    """The single HTML page (vanilla JS, no build step)."""
    return resources.files("colorgan").joinpath("serve.html").read_text(encoding="utf-8")


def _working_size(raw: str | None, colorizer: Colorizer, limits: Limits) -> int:
    """The ?size= query parameter, checked; the model's training size when absent."""
    if raw is None or raw == "":
        return colorizer.image_size
    if not raw.isdigit() or not 1 <= int(raw) <= limits.max_size:
        raise UploadRefused(400, f"size must be a whole number from 1 to {limits.max_size}")
    return int(raw)


async def _read_body(stream: AsyncIterator[bytes], declared: str | None, limit: int) -> bytes:
    """The request body, refused (413) as soon as it grows past `limit` bytes."""
    too_big = UploadRefused(413, f"upload over the limit of {limit / 2**20:.1f} MB")
    if declared is not None and declared.isdigit() and int(declared) > limit:
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
    out = io.BytesIO()
    to_image(rgb, picture.alpha).save(out, format="PNG")
    return out.getvalue()


def create_app(colorizer: Colorizer, limits: Limits | None = None) -> Any:
    """The Starlette app: GET / (the page), GET /api/info, POST /api/colorize?size=N."""
    try:
        from starlette.applications import Starlette
        from starlette.concurrency import run_in_threadpool
        from starlette.requests import Request
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
            limit = limits.max_upload_bytes + _MULTIPART_SLACK
            body = await _read_body(request.stream(), request.headers.get("content-length"), limit)
            hints_text = None
            if request.headers.get("content-type", "").startswith("multipart/form-data"):
                form = await _multipart_file(request.headers, body, limits.max_upload_bytes)
                body, hints_text = form
            hints = parse_hints(hints_text)
            if len(body) > limits.max_upload_bytes:
                raise UploadRefused(
                    413, f"upload over the limit of {limits.max_upload_bytes:,} bytes"
                )
            png = await run_in_threadpool(colorize_locked, body, size, hints)
        except UploadRefused as err:
            return JSONResponse({"error": str(err)}, status_code=err.status)
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    routes = [
        Route("/", index),
        Route("/api/info", info),
        Route("/api/colorize", colorize, methods=["POST"]),
    ]
    return Starlette(routes=routes)


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


def server(app: Any, sock: socket.socket) -> Any:
    """A uvicorn Server for `app` on the already-bound `sock` (call .run(sockets=[sock]))."""
    try:
        import uvicorn
    except ImportError:
        raise MissingDependency(
            f"colorgan serve needs starlette and uvicorn: {INSTALL_HINT}"
        ) from None
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    return uvicorn.Server(config)


def serve(
    model: str | Path,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    device: str = "auto",
    limits: Limits | None = None,
) -> None:
    """Load MODEL (.pt or .onnx), print the URL and serve until interrupted."""
    if not 0 <= port <= 65535:
        raise ColorganError(f"--port must be from 0 to 65535, got {port}")
    app = create_app(Colorizer.from_checkpoint(model, device, batch_size=1), limits)
    sock = listen(host, port)
    with sock:
        http = server(app, sock)
        print(f"colorgan: serving {model} at {url_of(sock)} (Ctrl-C stops)", flush=True)
        http.run(sockets=[sock])
