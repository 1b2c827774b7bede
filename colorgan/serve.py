"""`colorgan serve`: a web page to colorize dropped images, and an HTTP endpoint for scripts.

A small Starlette app on uvicorn. One Colorizer serves every request; inference runs in a
worker thread under a lock, so the event loop keeps answering and concurrent requests never
share tensors. Uploads are refused over a byte limit (while reading) and a pixel limit (from the
header, before decoding), with a 4xx status and a JSON {"error": reason} the page shows; every
other error (an unknown route or method, a malformed request, a bug: 500) is JSON too.

POST /api/colorize?size=N takes the image (the body, or a multipart file) with optional
multipart fields `hints` (a hints file's JSON), `caution` (0 to 1; also `?caution=C`; absent:
the model's default) and `reference` (an image file whose colors a model.reference model uses;
repeated for several, up to MAX_REFERENCES, of which each picture uses the bank.BANK_TOP
closest; decoded as the image is, each under the pixel limit, all of them together under the
byte limit); POST /api/uncertainty takes the same and answers the grayscale map of where a
model.uncertainty model is guessing, and POST /api/match the map of where the picture matches
its references (model.reference_match, in PyTorch). POST /api/palette takes one `reference`
file and answers the colors the model is given, as JSON. POST /api/suggest?n=N takes what
/api/colorize takes and answers the N places where one more point would help most, as JSON.
GET /api/info says what the model supports.

Connections are guarded by connections.py (header and body timeouts, a connection cap).
"""

from __future__ import annotations

import io
import json
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from colorgan.batch import Prediction
from colorgan.color import float_to_uint8
from colorgan.colorize import PNG_LEVEL, Colorizer, join, suggestions, uncertainty_image
from colorgan.connections import INSTALL_HINT, ConnectionLimits, listen, server, url_of
from colorgan.errors import (
    ColorganError,
    DoesNotFit,
    MissingDependency,
    UnreadableImage,
    UploadRefused,
)
from colorgan.files import Picture, load_picture, to_image
from colorgan.hints import MAX_HINT_FILE_BYTES, Hint, HintError, hints_from_text, hints_to_text
from colorgan.reference import palette
from colorgan.request import Capabilities, Reference, parse_caution, reduced
from colorgan.request import Request as ColorRequest
from colorgan.suggest import MAX_SUGGESTIONS
from colorgan.uploads import (
    MAX_REFERENCES,
    MULTIPART_SLACK,
    NO_FILE,
    REFERENCE_FIELD,
    Form,
    read_body,
    read_multipart,
)

DEFAULT_PORT = 8000
DEFAULT_MAX_UPLOAD_MB = 25.0
DEFAULT_MAX_PIXELS = 40_000_000  # about 7300x5500; more is refused before decoding
DEFAULT_SUGGESTIONS = 5  # /api/suggest without ?n=
MAX_WORKING_SIZE = 2048  # the largest ?size= accepted: the model's cost grows with its square
MAX_UPLOAD_MB = 4096.0  # the largest --max-upload-mb accepted: the body is held in memory
MAX_PIXELS = 1_000_000_000  # the largest --max-pixels accepted


@dataclass(frozen=True)
class Limits:
    """What one request may ask for."""

    max_upload_bytes: int = int(DEFAULT_MAX_UPLOAD_MB * 1024 * 1024)
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_size: int = MAX_WORKING_SIZE


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
    # too large: 413, as docs/deploying.md says
    if len(digits) > 9 or int(digits) > limits.max_size:
        raise UploadRefused(413, refusal)
    return int(digits)


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
    references: tuple[bytes, ...] = ()  # reference image files (model.reference)


def _decode(data: bytes, max_pixels: int, field: str = "") -> Picture:
    """An uploaded image file -> Picture (files.load_picture: EXIF orientation, the pixel limit
    before decoding), a refusal an UploadRefused (413 over the limit), its reason after
    `field: ` when the file is a named field's."""
    try:
        return load_picture(io.BytesIO(data), max_pixels)
    except UnreadableImage as err:
        status = 413 if "over the limit" in str(err) else 400
        raise UploadRefused(status, f"{field}: {err}" if field else str(err)) from None


def reference_image(colorizer: Colorizer, data: bytes, max_pixels: int) -> Image.Image:
    """A `reference` field's file -> an upright PIL image, decoded as the image is and kept
    as the model uses it (request.reduced: small, however large the file); 400 for a model
    without model.reference (before decoding), or a file that is not an image (413 over the
    pixel limit)."""
    try:
        colorizer.capabilities.need("reference", REFERENCE_FIELD)
    except ColorganError as err:
        raise UploadRefused(400, str(err)) from None
    if not data:
        raise UploadRefused(400, "reference: empty file: send an image file")
    picture = _decode(data, max_pixels, REFERENCE_FIELD)
    rgb = picture.rgb  # deep gray is float in [0, 1]: a reference's colors are 8-bit
    return reduced(
        to_image(rgb if rgb.dtype == torch.uint8 else float_to_uint8(rgb), picture.alpha)
    )


def request_of(colorizer: Colorizer, upload: Upload, max_pixels: int) -> ColorRequest:
    """What the upload asks (its Request: the references decoded), checked against the model;
    every refusal an UploadRefused (400)."""
    reference = None
    if upload.references:
        given = [reference_image(colorizer, data, max_pixels) for data in upload.references]
        reference = Reference(tuple(given))
    request = ColorRequest(tuple(upload.hints or ()), reference, upload.caution)
    try:
        colorizer.capabilities.check(request, {"hints": "hints"})
    except ColorganError as err:
        raise UploadRefused(400, str(err)) from None
    return request


def _predict(
    colorizer: Colorizer, upload: Upload, size: int, max_pixels: int
) -> tuple[Picture, torch.Tensor, Prediction, ColorRequest]:
    """Decode the upload (files.py) and run the model: (the picture, its full-resolution l,
    the Prediction, the upload's Request), every refusal an UploadRefused."""
    if not upload.data:
        raise UploadRefused(400, "empty upload: send an image file as the request body")
    picture = _decode(upload.data, max_pixels)
    request = request_of(colorizer, upload, max_pixels)
    try:
        [(l, prediction)] = colorizer.predict_pictures([picture], size, [request])
    except HintError as err:  # a point outside the image
        raise UploadRefused(400, str(err)) from None
    except DoesNotFit as err:  # the working size needs more memory than is free
        raise UploadRefused(413, str(err)) from None
    return picture, l, prediction, request


def palette_json(colorizer: Colorizer, data: bytes, max_pixels: int) -> dict[str, Any]:
    """POST /api/palette: a reference file's colors as the model is given them (reference.py's
    palette): {"palette": [{"color": "#rrggbb", "share": 0.31}, ...]}, commonest first."""
    colors = palette(reference_image(colorizer, data, max_pixels))
    return {"palette": [{"color": color, "share": round(share, 4)} for color, share in colors]}


def _png(image: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=PNG_LEVEL)
    return out.getvalue()


def colorize_bytes(colorizer: Colorizer, upload: Upload, size: int, max_pixels: int) -> bytes:
    """An upload (image file bytes, and color points, the caution, reference image files) ->
    the colorized PNG (alpha kept), through files.py's decoding."""
    picture, l, prediction, _ = _predict(colorizer, upload, size, max_pixels)
    return _png(to_image(join(l, prediction.ab), picture.alpha))


def uncertainty_bytes(colorizer: Colorizer, upload: Upload, size: int, max_pixels: int) -> bytes:
    """An upload -> the PNG of the model's uncertainty map at the image's size (grayscale:
    black where it is sure, white where it is guessing; the caution changes only colors)."""
    try:
        colorizer.capabilities.need("uncertainty", "the uncertainty map")
    except ColorganError as err:
        raise UploadRefused(400, str(err)) from None
    _, l, prediction, _ = _predict(colorizer, upload, size, max_pixels)
    assert prediction.uncertainty is not None
    return _png(uncertainty_image(prediction.uncertainty, (l.shape[2], l.shape[3])))


def match_bytes(colorizer: Colorizer, upload: Upload, size: int, max_pixels: int) -> bytes:
    """An upload with its references -> the PNG of where the picture matches them
    (Colorizer.match_map: grayscale, white where alike, black where nothing is)."""
    try:
        colorizer.match_network()  # refused before anything is decoded
    except ColorganError as err:
        raise UploadRefused(400, str(err)) from None
    if not upload.references:
        raise UploadRefused(
            400, f"no reference: send one or more as form file fields `{REFERENCE_FIELD}`"
        )
    picture = _decode(upload.data, max_pixels)
    request = request_of(colorizer, upload, max_pixels)
    try:
        return _png(colorizer.match_map(picture, request, size))
    except DoesNotFit as err:
        raise UploadRefused(413, str(err)) from None


def suggest_json(
    colorizer: Colorizer, upload: Upload, size: int, max_pixels: int, n: int
) -> dict[str, Any]:
    """POST /api/suggest?n=N: {"points": [{"x", "y", "color"}, ...]}, the N places where one
    more point would help most (suggest.py), after the upload's own points; a hints file's
    entries, so the page (or a script) can send them back as `hints` once colored."""
    _, l, prediction, request = _predict(colorizer, upload, size, max_pixels)
    points = suggestions(l, prediction, request, n)
    return {"points": json.loads(hints_to_text(points))}


def _count(raw: str | None) -> int:
    """The ?n= query parameter of /api/suggest (default DEFAULT_SUGGESTIONS), checked."""
    if raw is None or raw == "":
        return DEFAULT_SUGGESTIONS
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 4 and int(raw) <= MAX_SUGGESTIONS):
        raise UploadRefused(400, f"n must be a whole number from 0 to {MAX_SUGGESTIONS}")
    return int(raw)


def _check_length(data: bytes | None, limits: Limits, what: str = "upload") -> None:
    """413 for `what` (the upload, a form field's file) over the upload limit."""
    if data is not None and len(data) > limits.max_upload_bytes:
        raise UploadRefused(413, f"{what} over the limit of {limits.max_upload_bytes:,} bytes")


def _is_multipart(request: Any) -> bool:
    return bool(request.headers.get("content-type", "").startswith("multipart/form-data"))


async def _form(request: Any, limits: Limits, files: int) -> Form:
    """The request's body: a multipart form's parts, or the raw body as the image; up to
    `files` files of the upload limit each in a multipart body."""
    multipart = _is_multipart(request)
    limit = limits.max_upload_bytes * (files if multipart else 1) + MULTIPART_SLACK
    body = await read_body(request.stream(), request.headers.get("content-length"), limit)
    if not multipart:
        return Form(body, (), {})
    return await read_multipart(request.headers, body, limits.max_upload_bytes)


async def _upload(request: Any, limits: Limits) -> Upload:
    """The uploaded image's bytes (a raw body or a multipart file), its points, caution and
    reference, checked."""
    form = await _form(request, limits, files=2)  # the image, and the references together
    if form.image is None:
        raise UploadRefused(400, NO_FILE)
    hints = parse_hints(form.fields.get("hints"))
    caution = parse_caution_field(form.fields.get("caution"), request.query_params.get("caution"))
    _check_length(form.image, limits)
    references = form.references
    what = f"{len(references)} files together" if len(references) > 1 else "file"
    _check_length(b"".join(references), limits, f"{REFERENCE_FIELD}: {what}")
    return Upload(form.image, hints, caution, references)


async def _reference_upload(request: Any, limits: Limits) -> bytes:
    """POST /api/palette's reference: the one multipart `reference` file, or the raw body."""
    form = await _form(request, limits, files=1)
    given = form.references if _is_multipart(request) else (form.image or b"",)
    if not given:
        raise UploadRefused(
            400, "no reference in the multipart upload: send it as the form file field `reference`"
        )
    if len(given) > 1:
        raise UploadRefused(
            400, f"{REFERENCE_FIELD}: one image here, got {len(given)}: send each alone"
        )
    _check_length(given[0], limits, f"{REFERENCE_FIELD}: file")
    return given[0]


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
    """GET /api/info: the model's working size and what it supports (color points, caution,
    references; whether it draws the match map), and the limits."""
    try:
        match_map = bool(colorizer.match_network())
    except ColorganError:  # trained without the match, or an ONNX graph
        match_map = False
    return {
        "image_size": colorizer.image_size,
        "multiple": colorizer.multiple,
        "max_size": limits.max_size,
        "max_upload_bytes": limits.max_upload_bytes,
        "max_pixels": limits.max_pixels,
        "max_references": MAX_REFERENCES,
        "match_map": match_map,
    } | _takes(colorizer.capabilities)


def _takes(capabilities: Capabilities) -> dict[str, Any]:
    """What /api/info says the model takes: hints, reference, uncertainty, match (the
    references matched place by place; true/false) and its default caution (null without
    uncertainty)."""
    takes = capabilities.metadata()
    return takes | {"caution": takes["caution"] if capabilities.uncertainty else None}


Work = Callable[[Upload, int, Mapping[str, str]], "bytes | dict[str, Any]"]


def _png_route(work: Work, colorizer: Colorizer, limits: Limits) -> Any:
    """A POST endpoint: the upload, ?size= (checked) and the other query parameters through
    `work` (in a worker thread) -> the PNG it makes (or its JSON); refusals as JSON."""
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import JSONResponse, Response

    async def answer(request: Request) -> Response:
        try:
            size = _working_size(request.query_params.get("size"), colorizer, limits)
            upload = await _upload(request, limits)
            made = await run_in_threadpool(work, upload, size, request.query_params)
        except UploadRefused as err:
            return _json_error(err.status, str(err))
        except ClientDisconnect:  # gone, or closed for a stalled body (and answered 408)
            return _json_error(400, "the client closed the connection")  # goes nowhere
        headers = {"Cache-Control": "no-store"}
        if isinstance(made, dict):
            return JSONResponse(made, headers=headers)
        return Response(made, media_type="image/png", headers=headers)

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
    /api/uncertainty?size=N, /api/match?size=N, /api/suggest?size=N&n=N and /api/palette."""
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

    def locked(make: Callable[[Colorizer, Upload, int, int], bytes]) -> Any:

        def work(upload: Upload, size: int, query: Mapping[str, str]) -> bytes:
            with lock:
                return make(colorizer, upload, size, limits.max_pixels)

        return _png_route(work, colorizer, limits)

    def suggest_locked(upload: Upload, size: int, query: Mapping[str, str]) -> dict[str, Any]:
        count = _count(query.get("n"))
        with lock:
            return suggest_json(colorizer, upload, size, limits.max_pixels, count)

    async def index(request: Request) -> Response:
        return HTMLResponse(html)

    async def info(request: Request) -> Response:
        return JSONResponse(model_info(colorizer, limits))

    routes = [
        Route("/", index),
        Route("/api/info", info),
        Route("/api/colorize", locked(colorize_bytes), methods=["POST"]),
        Route("/api/uncertainty", locked(uncertainty_bytes), methods=["POST"]),
        Route("/api/match", locked(match_bytes), methods=["POST"]),
        Route("/api/palette", _palette_route(colorizer, limits), methods=["POST"]),
        Route("/api/suggest", _png_route(suggest_locked, colorizer, limits), methods=["POST"]),
    ]
    return Starlette(routes=routes, exception_handlers=_error_handlers())


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
