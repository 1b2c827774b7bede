"""Image files and every file colorgan writes: finding image files, decoding them (EXIF
orientation, any mode, 16-bit, a pixel limit) with one-line reasons, encoding them, and the one
atomic writer that checkpoints, ONNX files, model outputs, prepared images and figures all use.

Two decoders, for two needs: `load_rgb` gives training and `prepare` plain 8-bit RGB (alpha
flattened onto white, JPEG draft mode); `load_picture` gives colorize and serve a `Picture` that
keeps alpha and the full depth of 16-bit gray.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import stat
import struct
import tempfile
import threading
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from colorgan.errors import ColorganError, DataError, UnreadableImage

log = logging.getLogger("colorgan")

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
# What Pillow raises on a file it cannot decode (truncated, corrupt, a bomb, not an image).
DECODE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    struct.error,
    zlib.error,
    Image.DecompressionBombError,
)
DEFAULT_MAX_PIXELS = 100_000_000  # refused before decoding: a decompression-bomb guard
FORMATS = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}  # colorize's output formats
_DEEP_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


def _warn_unreadable_folder(folder: Path, err: OSError) -> None:
    log.warning("skipping unreadable folder %s: %s", folder, err.strerror or type(err).__name__)


def find_images(
    root: Path, on_error: Callable[[Path, OSError], None] = _warn_unreadable_folder
) -> list[Path]:
    """Image files under `root`, recursively, sorted; other and hidden files are ignored. A
    sub-folder that cannot be listed goes to `on_error` (by default a warning naming it)."""
    if not root.is_dir():
        what = "not a folder" if root.exists() else "no such folder"
        raise DataError(f"{root}: {what}; give a folder of color images")
    found = []

    def unreadable(err: OSError) -> None:
        if Path(err.filename) == root:  # the folder given itself, not a skipped sub-folder
            reason = err.strerror or type(err).__name__
            raise DataError(f"{root}: cannot list this folder ({reason})")
        on_error(Path(err.filename), err)

    for folder, _, names in os.walk(root, onerror=unreadable):
        for name in names:
            path = Path(folder, name)
            wanted = path.suffix.lower() in IMAGE_SUFFIXES and not name.startswith(".")
            if wanted and path.is_file():
                found.append(path)
    return sorted(found)


def decode_reason(err: BaseException) -> str:
    """Why a file could not be decoded, in a few words (one line)."""
    if isinstance(err, FileNotFoundError):
        return "no such file"
    if isinstance(err, PermissionError):
        return "permission denied"
    if isinstance(err, IsADirectoryError):
        return "is a folder"
    if isinstance(err, UnidentifiedImageError):
        return "not an image file (or a format Pillow cannot read)"
    if isinstance(err, Image.DecompressionBombError):
        return "refused: over Pillow's pixel limit, could be a decompression bomb"
    lines = str(err).strip().splitlines()
    detail = lines[0] if lines else type(err).__name__
    return f"cannot decode ({detail})"


def _deep_gray(image: Image.Image, dtype: type = np.float32) -> np.ndarray:
    """A 16-bit, 32-bit or float gray image -> (H, W) in [0, 1] of `dtype`, scaled, never
    clipped at 8 bits."""
    values: np.ndarray = np.asarray(image, dtype=dtype)
    top = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
    if image.mode == "F" and values.max() <= 1.0:
        top = 1.0
    return np.clip(values / top, 0.0, 1.0)


def _palette_expanded(image: Image.Image) -> Image.Image:
    if image.mode == "P":
        return image.convert("RGBA" if "transparency" in image.info else "RGB")
    return image


def pil_to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB: palette and alpha flattened onto white, CMYK converted,
    16- and 32-bit grayscale scaled (never clipped)."""
    if image.mode in _DEEP_MODES:
        gray = (_deep_gray(image, np.float64) * 255.0 + 0.5).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    image = _palette_expanded(image)
    if image.mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB") if image.mode != "RGB" else image


def load_rgb(path: Path, min_side: int = 0) -> Image.Image:
    """Decode `path` as upright 8-bit RGB. JPEGs decode at a reduced scale (draft mode) when
    that still leaves the short side >= `min_side`. Raises one of DECODE_ERRORS if unreadable."""
    with Image.open(path) as opened:
        if min_side and opened.format == "JPEG":
            opened.draft("RGB", (min_side, min_side))
        upright = ImageOps.exif_transpose(opened)
        upright.load()
        return pil_to_rgb(upright)


@dataclass(frozen=True)
class Picture:
    """An upright image ready to colorize: its color values and its alpha, if any."""

    rgb: torch.Tensor  # (3, H, W) uint8 in [0, 255], or float32 in [0, 1] for deeper sources
    alpha: Image.Image | None  # mode "L", the same size, or None


def to_picture(image: Image.Image) -> Picture:
    """Any PIL mode -> Picture: EXIF orientation applied, alpha split off, deep gray scaled."""
    image = _palette_expanded(ImageOps.exif_transpose(image))
    alpha = None
    if image.mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        alpha = rgba.getchannel("A")
        image = rgba.convert("RGB")
    if image.mode in _DEEP_MODES:
        return Picture(torch.from_numpy(_deep_gray(image)).expand(3, -1, -1), alpha)
    rgb = np.array(image.convert("RGB") if image.mode != "RGB" else image, dtype=np.uint8)
    return Picture(torch.from_numpy(rgb).permute(2, 0, 1), alpha)


def to_image(rgb: torch.Tensor, alpha: Image.Image | None) -> Image.Image:
    """(3, H, W) uint8 -> PIL RGB, or RGBA with `alpha` put back."""
    image = Image.fromarray(rgb.permute(1, 2, 0).contiguous().cpu().numpy())
    if alpha is not None:
        image.putalpha(alpha)
    return image


def read_bounded(path: Path, limit: int) -> bytes:
    """The bytes of the regular file `path`, at most `limit` + 1 of them (more than `limit`:
    the caller's "too large"). OSError for what cannot be read, and for anything but a regular
    file: a FIFO would block, a device such as /dev/zero never end."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    with open(path, "rb") as file:
        return file.read(limit + 1)


_PILLOW_LIMIT = threading.Lock()  # Image.MAX_IMAGE_PIXELS is global: one open at a time


def _open_within(path: Path | BinaryIO, max_pixels: int) -> Image.Image:
    """Image.open with Pillow's own decompression-bomb limit raised to `max_pixels` when that
    is higher (--max-pixels above its ~179 M is honoured; the caller checks the size itself)."""
    with _PILLOW_LIMIT:
        default = Image.MAX_IMAGE_PIXELS
        if default is not None and max_pixels > default:
            Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            return Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = default


def load_picture(path: Path | BinaryIO, max_pixels: int = DEFAULT_MAX_PIXELS) -> Picture:
    """Decode an image file (or open binary file object); more than `max_pixels` pixels are
    refused before decoding. Raises UnreadableImage with a one-line reason."""
    try:
        mode = os.stat(path).st_mode if isinstance(path, (str, os.PathLike)) else stat.S_IFREG
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):  # a folder: Pillow says so below
            raise UnreadableImage("not a regular file (a FIFO or device is never read)")
        with warnings.catch_warnings():  # Pillow's plugin warnings would break the one-line
            warnings.simplefilter("ignore")  # report; the size limit below replaces its bomb one
            with _open_within(path, max_pixels) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise UnreadableImage(
                        f"{width}x{height} is {width * height:,} pixels, over the limit of "
                        f"{max_pixels:,} (--max-pixels); refused before decoding"
                    )
                image.load()
                return to_picture(image)
    except DECODE_ERRORS as err:
        raise UnreadableImage(decode_reason(err)) from None


def atomic_write(path: Path, write: Callable[[Path], object], durable: bool = False) -> None:
    """Call `write(tmp)` on a hidden temporary file beside `path`, then rename it onto `path`:
    a crash leaves the old file or the new one, whole, never half of one. `durable` also
    fsyncs before the rename (checkpoints, models). The file gets the usual 0666 & ~umask."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=temporary_prefix(path.name), suffix=".tmp", dir=path.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        if durable:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o666 & ~umask)  # mkstemp's 0600 would hide outputs from other users
        os.replace(tmp, path)
    except OSError as err:
        err.filename = str(path)  # the file meant, not its hidden temporary
        raise
    finally:
        tmp.unlink(missing_ok=True)


def check_writable(path: Path, what: str) -> None:
    """ColorganError now, before any work, unless a file can be written at `path` (its
    folder made if missing, a temporary file made there, as run.check_run_dir probes)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "is a folder", str(path))
        with tempfile.TemporaryFile(dir=path.parent):  # nameless: nothing left behind
            pass
    except OSError as err:
        raise ColorganError(f"{what} {path}: cannot write there ({err.strerror or err})") from None


def write_error(err: OSError, needed: int | None = None) -> str:
    """One line on why a file could not be written; on a full disk, the room needed (when
    known) and the room free."""
    where = err.filename or "a file"
    text = f"cannot write {where}: {err.strerror or type(err).__name__}"
    if err.errno in (errno.ENOSPC, errno.EDQUOT) and err.filename:
        folder = Path(err.filename).parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        free = shutil.disk_usage(folder).free
        wanted = f"about {needed / 2**20:.1f} MB needed, " if needed else ""
        text += f" ({wanted}{free / 2**20:.1f} MB free)"
    return text


MARK = "colorgan"  # the Software tag of the images colorize writes: its own, safe to replace
_SOFTWARE = 0x0131  # the EXIF Software tag


def mark_options(kind: str, key: str = "") -> dict[str, Any]:
    """Pillow save options that tag an image of format `kind` as written by colorgan, with
    `key` (what it was made from, see pipeline.run_key) when given."""
    tag = f"{MARK} {key}" if key else MARK
    if kind == "PNG":
        info = PngInfo()
        info.add_text("Software", tag)
        return {"pnginfo": info}
    exif = Image.Exif()
    exif[_SOFTWARE] = tag
    return {"exif": exif.tobytes()}


def output_key(path: Path) -> str | None:
    """The key in the tag of an image colorize wrote ("" if it has none), or None when `path`
    is not such an image. Reads the header only."""
    try:
        with Image.open(path) as image:
            tag = image.info.get("Software") if image.format == "PNG" else None
            tag = tag if tag is not None else image.getexif().get(_SOFTWARE)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    if not isinstance(tag, str) or tag.split(" ")[0] != MARK:
        return None
    return tag[len(MARK) :].strip()


def written_by_colorgan(path: Path) -> bool:
    """Whether `path` is an image colorize wrote (tagged by mark_options)."""
    return output_key(path) is not None


# every temporary colorgan makes is named ".NAME.colorgan-XXXXXXXX.tmp" (NAME: what it becomes;
# X: tempfile's random letters): only such names are ever cleaned up, never a user's own files
TEMPORARY_MARK = "colorgan-"
_TEMPORARY = re.compile(rf"\.(?P<name>.+)\.{re.escape(TEMPORARY_MARK)}[a-z0-9_]{{8}}\.tmp")


def temporary_prefix(name: str) -> str:
    """The prefix of colorgan's temporaries for a file or folder named `name` (tempfile adds
    the random part and the ".tmp" suffix)."""
    return f".{name}.{TEMPORARY_MARK}"


def stale_temporary_of(path: Path) -> str | None:
    """The name of what `path` would have become, if it is one of colorgan's temporaries (one a
    killed process left behind); None for any other file."""
    match = _TEMPORARY.fullmatch(path.name)
    return None if match is None else match["name"]


NO_ALPHA_KINDS = ("JPEG", "BMP")  # Pillow formats colorgan writes without alpha


def opaque_for(image: Image.Image, kind: str) -> Image.Image:
    """`image` ready for Pillow format `kind`: a transparent image flattened onto white for a
    format without alpha (NO_ALPHA_KINDS), else as it is."""
    if kind in NO_ALPHA_KINDS and image.mode == "RGBA":
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    return image


def save_image(image: Image.Image, path: Path, kind: str, **options: Any) -> None:
    """Encode `image` as Pillow format `kind` (PNG, JPEG, WEBP, ...) at `path`, atomically,
    flattened onto white where the format has no alpha (opaque_for). `options` go to Pillow
    (mark_options(kind) tags the file as colorgan's)."""
    image = opaque_for(image, kind)
    atomic_write(path, lambda tmp: image.save(tmp, format=kind, **options))
