"""`colorgan serve`: a web page to colorize dropped images, and an HTTP endpoint for scripts.

A small Starlette app on uvicorn. One Colorizer serves every request; inference runs in a
worker thread under a lock, so the event loop keeps answering and concurrent requests never
share tensors. Uploads are refused over a byte limit (while reading) and a pixel limit (from the
header, before decoding), with a 4xx status and a JSON {"error": reason} the page shows; every
other error (an unknown route or method, a malformed request, a bug: 500) is JSON too.

POST /api/colorize?size=N takes the image (the body, or a multipart file) with optional
multipart fields `hints` (a hints file's JSON), `caution` (0 to 1; also `?caution=C`; absent:
the model's default) and `reference` (an image file whose colors a model.reference model uses;
decoded as the image is, under the same limits); POST /api/uncertainty takes the same and
answers the grayscale map of where a model.uncertainty model is guessing. POST /api/palette
takes a `reference` file and answers the colors the model is given, as JSON. GET /api/info says
what the model supports.

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
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from colorgan.batch import Prediction
from colorgan.color import float_to_uint8
from colorgan.colorize import PNG_LEVEL, Colorizer, join, parse_caution, uncertainty_image
from colorgan.errors import (
    ColorganError,
    DoesNotFit,
    MissingDependency,
    UnreadableImage,
    UploadRefused,
)
from colorgan.files import Picture, load_picture, to_image
from colorgan.hints import MAX_HINT_FILE_BYTES, Hint, HintError, hints_from_text
from colorgan.reference import NO_REFERENCE_INPUT, palette

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
    refusal = f"size must be a whole number from 1 to {limits.max_size}"
    digits = raw.lstrip("0") if raw.isascii() and raw.isdigit() else ""
    if not digits:  # not a number, or 0
        raise UploadRefused(400, refusal)
    if len(digits) > 9 or int(digits) > limits.max_size:  # too large: 413, as the README says
        raise UploadRefused(413, refusal)
    return int(digits)


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


_TEXT_FIELDS = ("hints", "caution")  # the multipart fields that come with the image
REFERENCE_FIELD = "reference"  # the multipart file field of a reference image (model.reference)
NO_FILE = "no file in the multipart upload: send it as a form file field"


@dataclass(frozen=True)
class _Form:
    """A multipart/form-data body's parts: the image (its first other file), the reference's
    bytes and the text fields (_TEXT_FIELDS) that are there."""

    image: bytes | None
    reference: bytes | None
    fields: dict[str, str]


async def _multipart(headers: Any, body: bytes, limit: int) -> _Form:
    """A multipart/form-data body's image, reference and text fields."""
    from starlette.datastructures import UploadFile
    from starlette.formparsers import MultiPartException, MultiPartParser

    async def once() -> AsyncGenerator[bytes, None]:
        yield body

    parser = MultiPartParser(headers, once(), max_files=3, max_fields=8, max_part_size=limit)
    try:
        form = await parser.parse()
    except MultiPartException as err:
        raise UploadRefused(400, f"bad multipart upload ({err.message})") from None
    try:
        fields = {}
        for name in _TEXT_FIELDS:
            value = form.get(name)
            if isinstance(value, UploadFile):
                value = (await value.read()).decode("utf-8", errors="replace")
            if value is not None:
                fields[name] = value
        reference = form.get(REFERENCE_FIELD)
        if isinstance(reference, str):
            raise UploadRefused(400, "reference: send the reference image as a form file field")
        images = [
            value
            for name, value in form.multi_items()
            if isinstance(value, UploadFile) and name not in (*_TEXT_FIELDS, REFERENCE_FIELD)
        ]
        return _Form(
            await images[0].read() if images else None,
            None if reference is None else await reference.read(),
            fields,
        )
    finally:
        await form.close()


def parse_hints(text: str | None) -> list[Hint] | None:
    """The `hints` form field (the JSON of a hints file) -> points; 400 if it is not that."""
    if text is None or not text.strip():
        return None
    if len(text) > MAX_HINT_FILE_BYTES:  # too large: 413, as for the image
        raise UploadRefused(413, f"hints over the limit of {MAX_HINT_FILE_BYTES:,} bytes")
    try:
        return hints_from_text(text, "hints")
    except HintError as err:
        raise UploadRefused(400, str(err)) from None


def parse_caution_field(field: str | None, query: str | None) -> float | None:
    """The `caution` form field or ?caution= (not both) -> a number from 0 to 1, or None (the
    model's default); 400 otherwise."""
    if field is not None and query is not None:
        raise UploadRefused(400, "caution given twice: send it as a form field or in the query")
    text = field if field is not None else query
    if text is None or not text.strip():
        return None
    try:
        return parse_caution(text)
    except ColorganError as err:
        raise UploadRefused(400, str(err)) from None


@dataclass(frozen=True)
class Upload:
    """One request's image file and what came with it, checked."""

    data: bytes
    hints: list[Hint] | None = None
    caution: float | None = None  # None: the model's default
    reference: bytes | None = None  # a reference image file (model.reference)


def _decode(data: bytes, max_pixels: int, field: str = "") -> Picture:
    """An uploaded image file -> Picture (files.load_picture: EXIF orientation, the pixel limit
    before decoding), a refusal an UploadRefused (413 over the limit), its reason after
    `field: ` when the file is a named field's."""
    try:
        return load_picture(io.BytesIO(data), max_pixels)
    except UnreadableImage as err:
        status = 413 if "over the limit" in str(err) else 400
        raise UploadRefused(status, f"{field}: {err}" if field else str(err)) from None


NO_REFERENCE_MODEL = (
    f"this model was {NO_REFERENCE_INPUT}; drop the reference field, or serve a model trained "
    "with --set model.reference=true"
)


def reference_image(colorizer: Colorizer, data: bytes, max_pixels: int) -> Image.Image:
    """The `reference` field's file -> an upright PIL image (alpha kept), decoded as the image
    is; 400 for a model without model.reference (before decoding), or a file that is not an
    image (413 over the pixel limit)."""
    if not colorizer.reference:
        raise UploadRefused(400, NO_REFERENCE_MODEL)
    if not data:
        raise UploadRefused(400, "reference: empty file: send an image file")
    picture = _decode(data, max_pixels, REFERENCE_FIELD)
    rgb = picture.rgb  # deep gray is float in [0, 1]: a reference's colors are 8-bit
    return to_image(rgb if rgb.dtype == torch.uint8 else float_to_uint8(rgb), picture.alpha)


def _predict(
    colorizer: Colorizer, upload: Upload, size: int, max_pixels: int
) -> tuple[Picture, torch.Tensor, Prediction]:
    """Decode the upload (files.py) and run the model: (the picture, its full-resolution l,
    the Prediction), every refusal an UploadRefused."""
    if not upload.data:
        raise UploadRefused(400, "empty upload: send an image file as the request body")
    picture = _decode(upload.data, max_pixels)
    summary = None
    if upload.reference is not None:
        summary = colorizer.summarize(reference_image(colorizer, upload.reference, max_pixels))
    hints = [upload.hints] if upload.hints else None
    try:
        caution = colorizer.resolve_caution(upload.caution)
        [(l, prediction)] = colorizer.predict_pictures([picture], size, hints, caution, summary)
    except HintError as err:  # a point outside the image, or a model without hints
        raise UploadRefused(400, str(err)) from None
    except DoesNotFit as err:  # the working size needs more memory than is free
        raise UploadRefused(413, str(err)) from None
    except ColorganError as err:  # a caution for a model without uncertainty
        raise UploadRefused(400, str(err)) from None
    return picture, l, prediction


def palette_json(colorizer: Colorizer, data: bytes, max_pixels: int) -> dict[str, Any]:
    """POST /api/palette: a reference file's colors as the model is given them (reference.py's
    palette): {"palette": [{"color": "#rrggbb", "share": 0.31}, ...]}, commonest first."""
    colors = palette(reference_image(colorizer, data, max_pixels))
    return {"palette": [{"color": color, "share": round(share, 4)} for color, share in colors]}


def _png(image: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=PNG_LEVEL)
    return out.getvalue()


def colorize_bytes(
    colorizer: Colorizer,
    data: bytes,
    size: int,
    max_pixels: int,
    hints: list[Hint] | None = None,
    caution: float | None = None,
    reference: bytes | None = None,
) -> bytes:
    """Image file bytes (and color points, the caution, a reference image file) -> the
    colorized PNG (alpha kept), through files.py's decoding."""
    upload = Upload(data, hints, caution, reference)
    picture, l, prediction = _predict(colorizer, upload, size, max_pixels)
    return _png(to_image(join(l, prediction.ab), picture.alpha))


def uncertainty_bytes(
    colorizer: Colorizer,
    data: bytes,
    size: int,
    max_pixels: int,
    hints: list[Hint] | None = None,
    reference: bytes | None = None,
) -> bytes:
    """Image file bytes (and color points, a reference image file) -> the PNG of the model's
    uncertainty map at the image's size (grayscale: black where it is sure, white where it is
    guessing)."""
    if not colorizer.uncertainty:
        raise UploadRefused(
            400,
            "this model does not predict how sure it is (model.uncertainty=false); the map "
            "needs one trained with --set model.uncertainty=true",
        )
    _, l, prediction = _predict(
        colorizer, Upload(data, hints, reference=reference), size, max_pixels
    )
    assert prediction.uncertainty is not None
    return _png(uncertainty_image(prediction.uncertainty, (l.shape[2], l.shape[3])))


def _check_length(data: bytes | None, limits: Limits, field: str = "") -> None:
    """413 for a file over the upload limit (`field`: the form field it came in)."""
    if data is not None and len(data) > limits.max_upload_bytes:
        what = f"{field}: file" if field else "upload"
        raise UploadRefused(413, f"{what} over the limit of {limits.max_upload_bytes:,} bytes")


def _is_multipart(request: Any) -> bool:
    return bool(request.headers.get("content-type", "").startswith("multipart/form-data"))


async def _form(request: Any, limits: Limits, files: int) -> _Form:
    """The request's body: a multipart form's parts, or the raw body as the image; up to
    `files` files of the upload limit each in a multipart body."""
    multipart = _is_multipart(request)
    limit = limits.max_upload_bytes * (files if multipart else 1) + _MULTIPART_SLACK
    body = await _read_body(request.stream(), request.headers.get("content-length"), limit)
    if not multipart:
        return _Form(body, None, {})
    return await _multipart(request.headers, body, limits.max_upload_bytes)


async def _upload(request: Any, limits: Limits) -> Upload:
    """The uploaded image's bytes (a raw body or a multipart file), its points, caution and
    reference, checked."""
    form = await _form(request, limits, files=2)
    if form.image is None:
        raise UploadRefused(400, NO_FILE)
    hints = parse_hints(form.fields.get("hints"))
    caution = parse_caution_field(form.fields.get("caution"), request.query_params.get("caution"))
    _check_length(form.image, limits)
    _check_length(form.reference, limits, REFERENCE_FIELD)
    return Upload(form.image, hints, caution, form.reference)


async def _reference_upload(request: Any, limits: Limits) -> bytes:
    """POST /api/palette's reference: the multipart `reference` file, or the raw body."""
    form = await _form(request, limits, files=1)
    data = form.reference if _is_multipart(request) else form.image
    if data is None:
        raise UploadRefused(
            400, "no reference in the multipart upload: send it as the form file field `reference`"
        )
    _check_length(data, limits, REFERENCE_FIELD)
    return data


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


def model_info(colorizer: Colorizer, limits: Limits) -> dict[str, Any]:
    """GET /api/info: the model's working size and what it supports (color points, caution),
    and the limits."""
    return {
        "image_size": colorizer.image_size,
        "multiple": colorizer.multiple,
        "max_size": limits.max_size,
        "max_upload_bytes": limits.max_upload_bytes,
        "max_pixels": limits.max_pixels,
        "hints": colorizer.hints,
        "uncertainty": colorizer.uncertainty,
        "caution": colorizer.caution if colorizer.uncertainty else None,
        "reference": colorizer.reference,
    }


def _png_route(work: Callable[[Upload, int], bytes], colorizer: Colorizer, limits: Limits) -> Any:
    """A POST endpoint: the upload and ?size=, checked, through `work` (in a worker thread)
    -> the PNG it makes; refusals as JSON."""
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import Response

    async def answer(request: Request) -> Response:
        try:
            size = _working_size(request.query_params.get("size"), colorizer, limits)
            upload = await _upload(request, limits)
            png = await run_in_threadpool(work, upload, size)
        except UploadRefused as err:
            return _json_error(err.status, str(err))
        except ClientDisconnect:  # gone, or closed for a stalled body (and answered 408)
            return _json_error(400, "the client closed the connection")  # goes nowhere
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    return answer


def _palette_route(colorizer: Colorizer, limits: Limits) -> Any:
    """POST /api/palette: the `reference` file, checked, -> palette_json (in a worker thread);
    refusals as JSON."""
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import JSONResponse, Response

    async def answer(request: Request) -> Response:
        try:
            data = await _reference_upload(request, limits)
            colors = await run_in_threadpool(palette_json, colorizer, data, limits.max_pixels)
        except UploadRefused as err:
            return _json_error(err.status, str(err))
        except ClientDisconnect:
            return _json_error(400, "the client closed the connection")  # goes nowhere
        return JSONResponse(colors, headers={"Cache-Control": "no-store"})

    return answer


def create_app(colorizer: Colorizer, limits: Limits | None = None) -> Any:
    """The Starlette app: GET / (the page), GET /api/info, POST /api/colorize?size=N,
    POST /api/uncertainty?size=N and POST /api/palette."""
    try:
        from starlette.applications import Starlette
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

    def colorize_locked(upload: Upload, size: int) -> bytes:
        with lock:
            return colorize_bytes(
                colorizer,
                upload.data,
                size,
                limits.max_pixels,
                upload.hints,
                upload.caution,
                upload.reference,
            )

    def uncertainty_locked(upload: Upload, size: int) -> bytes:
        with lock:
            return uncertainty_bytes(
                colorizer, upload.data, size, limits.max_pixels, upload.hints, upload.reference
            )

    async def index(request: Request) -> Response:
        return HTMLResponse(html)

    async def info(request: Request) -> Response:
        return JSONResponse(model_info(colorizer, limits))

    routes = [
        Route("/", index),
        Route("/api/info", info),
        Route("/api/colorize", _png_route(colorize_locked, colorizer, limits), methods=["POST"]),
        Route(
            "/api/uncertainty", _png_route(uncertainty_locked, colorizer, limits), methods=["POST"]
        ),
        Route("/api/palette", _palette_route(colorizer, limits), methods=["POST"]),
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
