"""`colorgan colorize` with comic chapters: each `.cbz`/`.zip` given as an INPUT becomes
`--out/<name>.cbz`, written atomically (a temporary renamed onto it), its members in the same
order under the same names: gray pages colorized and written in their own format (a png page
stays png, a jpg page jpg), pages already in color copied as they are unless --recolor, every
other member (ComicInfo.xml, ...) copied byte for byte. A page that cannot be decoded is named on
stderr and copied as it is while the others are colored (exit status 1). A chapter already in
`--out` is skipped unless --overwrite. `--reference` and `--hints` work as for a folder: a
`--hints DIR` holds `<member>.json` for a page named `<member>.<ext>` in the archive."""

from __future__ import annotations

import io
import os
import shutil
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import torch
from PIL import Image
from tqdm import tqdm

from colorgan.colorize import Colorizer, join
from colorgan.data import is_grayscale
from colorgan.device import resolve_device
from colorgan.errors import ColorganError, DoesNotFit, UnreadableImage
from colorgan.files import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    Picture,
    atomic_write,
    load_picture,
    opaque_for,
    to_image,
    write_error,
)
from colorgan.hints import HintError, load_hints
from colorgan.jobs import Failure
from colorgan.pipeline import FolderRun
from colorgan.request import NOTHING, Request
from colorgan.runtime import load_for_folder

CHAPTER_SUFFIXES = frozenset({".cbz", ".zip"})
GRAY_CHROMA = 4.0  # mean YCbCr chroma below which a page is gray (training's data.gray_threshold)
_QUALITY = {"JPEG": 95, "WEBP": 95}  # colorize's own quality for lossy outputs


def split_chapters(inputs: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """(the other inputs, the .cbz/.zip files) among colorize's INPUTs."""
    chapters = [p for p in inputs if p.suffix.lower() in CHAPTER_SUFFIXES and p.is_file()]
    return [p for p in inputs if p not in chapters], chapters


@dataclass(frozen=True)
class ChapterOptions:
    """How `colorize_chapter` colors a chapter: the working size, what every page is asked
    with, each page's points from a folder, color pages recolored or kept, the pixel limit."""

    size: int | None = None
    request: Request = NOTHING
    hints_dir: Path | None = None  # <member>.json per page
    recolor: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS
    progress: bool = False


@dataclass
class ChapterDone:
    """What `colorize_chapter` did: pages colored, pages in color left alone, and the pages it
    could not color (member name, why), copied as they are."""

    colored: int = 0
    kept_color: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


def is_page(info: zipfile.ZipInfo) -> bool:
    """Whether a member is an image page (by its name's suffix); macOS's resource forks
    (`__MACOSX/`, `._name`), which zip tools there add, are not."""
    path = PurePosixPath(info.filename)
    if info.is_dir() or path.name.startswith("._") or "__MACOSX" in path.parts:
        return False
    return path.suffix.lower() in IMAGE_SUFFIXES


def page_count(chapter: Path) -> int:
    """How many pages a chapter holds (0 where it cannot be read: it fails later, named)."""
    try:
        with zipfile.ZipFile(chapter) as archive:
            return sum(is_page(info) for info in archive.infolist())
    except (OSError, zipfile.BadZipFile):
        return 0


def is_color_page(picture: Picture) -> bool:
    """Whether a decoded page already has colors (deep gray never has)."""
    if picture.rgb.dtype != torch.uint8:
        return False
    return not is_grayscale(to_image(picture.rgb, None), GRAY_CHROMA)


def colorize_chapter(
    colorizer: Colorizer, src: Path, dst: Path, options: ChapterOptions
) -> ChapterDone:
    """Colorize the chapter `src` into `dst` (see the module's docstring). ColorganError for an
    archive that cannot be read; OSError where `dst` cannot be written."""
    done = ChapterDone()
    try:
        archive = zipfile.ZipFile(src)
    except (OSError, zipfile.BadZipFile) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else err
        raise ColorganError(f"cannot read the chapter ({reason})") from None
    with archive:
        members = archive.infolist()
        locked = [info.filename for info in members if info.flag_bits & 0x1]
        if locked:  # zipfile would stop at the first with a RuntimeError
            raise ColorganError(f"cannot read the chapter ({locked[0]} is encrypted)")
        pages = sum(is_page(info) for info in members)
        disable = None if options.progress else True
        with tqdm(total=pages, desc=src.name, unit="page", disable=disable) as bar:
            write = _Writer(colorizer, archive, options, done, bar)
            try:
                atomic_write(dst, lambda tmp: write(tmp, members))
            except (zipfile.BadZipFile, NotImplementedError, EOFError) as err:
                raise ColorganError(f"cannot read the chapter ({err})") from None
    return done


class _Writer:
    """Writes a chapter's members in order, the gray pages colorized a batch at a time: only a
    batch of pages (and the members between them) is held in memory."""

    def __init__(
        self,
        colorizer: Colorizer,
        archive: zipfile.ZipFile,
        options: ChapterOptions,
        done: ChapterDone,
        bar: tqdm,
    ) -> None:
        self.colorizer, self.archive, self.options = colorizer, archive, options
        self.done, self.bar = done, bar

    def __call__(self, tmp: Path, members: Sequence[zipfile.ZipInfo]) -> None:
        with zipfile.ZipFile(tmp, "w") as out:
            waiting: list[tuple[zipfile.ZipInfo, bytes | None, Picture | None]] = []
            for info in members:
                if not is_page(info):
                    waiting.append((info, None, None))
                    continue
                data = self.archive.read(info)
                waiting.append((info, data, self._to_color(info.filename, data)))
                # pages kept as they are count too: their bytes wait in memory as well
                if sum(held is not None for _, held, _ in waiting) >= self.colorizer.batch_size:
                    self._flush(out, waiting)
                    waiting = []
            self._flush(out, waiting)

    def _to_color(self, name: str, data: bytes) -> Picture | None:
        """The page decoded, if it is to be colorized; None to copy it (color, or unreadable)."""
        try:
            picture = load_picture(io.BytesIO(data), self.options.max_pixels)
        except UnreadableImage as err:
            self._fail(name, str(err))
            return None
        if not self.options.recolor and is_color_page(picture):
            self.done.kept_color += 1
            self.bar.update()
            return None
        return picture

    def _fail(self, name: str, reason: str) -> None:
        self.done.failed.append((name, reason))
        self.bar.update()

    def _flush(
        self,
        out: zipfile.ZipFile,
        waiting: Sequence[tuple[zipfile.ZipInfo, bytes | None, Picture | None]],
    ) -> None:
        """Colorize the waiting pages that need it, then write every waiting member in order."""
        colored = self._colorize([(info.filename, p) for info, _, p in waiting if p is not None])
        for info, data, picture in waiting:
            if data is None:  # not a page: streamed, byte for byte
                with self.archive.open(info) as source, out.open(info, "w") as target:
                    shutil.copyfileobj(source, target)
            else:
                out.writestr(info, colored.get(info.filename, data) if picture else data)

    def _colorize(self, pages: Sequence[tuple[str, Picture]]) -> dict[str, bytes]:
        """The pages (member name, picture) colorized and encoded in their own formats; a page
        that fails (bad points, too large) is left out, named in the report."""
        requests, ready = [], []
        for name, picture in pages:
            try:
                request = self._request(name).for_picture(picture.rgb)
                request.check_inside((picture.rgb.shape[1], picture.rgb.shape[2]))
            except HintError as err:
                self._fail(name, str(err))
                continue
            requests.append(request)
            ready.append((name, picture))
        if not ready:
            return {}
        try:
            predicted = self.colorizer.predict_pictures(
                [p for _, p in ready], self.options.size, requests
            )
        except DoesNotFit as err:
            for name, _ in ready:
                self._fail(name, str(err))
            return {}
        encoded = {}
        for (name, picture), (l, prediction) in zip(ready, predicted, strict=True):
            rgb = join(l, prediction.ab)  # (3, H, W) uint8 on the CPU
            encoded[name] = encode_page(to_image(rgb, picture.alpha), name)
            self.done.colored += 1
            self.bar.update()
        return encoded

    def _request(self, name: str) -> Request:
        """What page `name` is asked with: the run's request, with its own points from
        `--hints DIR/<member>.json` when there is one."""
        request, folder = self.options.request, self.options.hints_dir
        if folder is None:
            return request
        points = folder / PurePosixPath(name).with_suffix(".json")
        return request.with_points(load_hints(points)) if points.is_file() else request


def encode_page(image: Image.Image, name: str) -> bytes:
    """A colorized page encoded in the format its member name says (png, jpg, webp, ...); a
    format without alpha gets it flattened onto white."""
    kind = Image.registered_extensions().get(PurePosixPath(name).suffix.lower(), "PNG")
    image = opaque_for(image, kind)
    buffer = io.BytesIO()
    quality = {"quality": _QUALITY[kind]} if kind in _QUALITY else {}
    image.save(buffer, format=kind, **quality)
    return buffer.getvalue()


def run_chapters(
    run: FolderRun, chapters: Sequence[Path], recolor: bool, report: Callable[[Failure], None]
) -> tuple[int, int, int]:
    """Colorize `chapters` as `run` asks: (written, skipped as done, failed inputs and pages)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ColorganError(
            "chapters are not split between torchrun's ranks yet; colorize them without torchrun"
        )
    pages = sum(page_count(chapter) for chapter in chapters)  # for the runtime's choice
    colorizer = load_for_folder(run.model, resolve_device(run.device), pages, run.quiet)
    run.check(colorizer.capabilities)  # usage errors first; the reference read once
    run.output.check(colorizer, [])
    options = _options(run, recolor)
    written = skipped = failed = 0
    seen: set[Path] = set()
    for chapter in chapters:
        dst = run.out / f"{chapter.stem}.cbz"
        if dst in seen:
            report(Failure(chapter, f"another input already writes {dst}; rename one"))
            failed += 1
            continue
        seen.add(dst)
        if dst.exists() and not run.output.overwrite:
            skipped += 1
            continue
        try:
            done = colorize_chapter(colorizer, chapter, dst, options)
        except ColorganError as err:
            report(Failure(chapter, str(err)))
            failed += 1
            continue
        except OSError as err:
            report(Failure(chapter, write_error(err)))
            failed += 1
            continue
        for name, reason in done.failed:
            report(Failure(chapter, f"page {name}: {reason}; copied as it is"))
        failed += len(done.failed)
        written += 1
        if not run.quiet:
            print(f"{chapter} -> {dst}: {describe(done)}")
    return written, skipped, failed


def _options(run: FolderRun, recolor: bool) -> ChapterOptions:
    """The chapter options of a colorize run: `--hints FILE` the same points on every page,
    `--hints DIR` each page its own."""
    request, hints_dir = run.request, None
    if run.hints is not None and run.hints.is_dir():
        hints_dir = run.hints
    elif run.hints is not None:
        request = request.with_points(load_hints(run.hints))
    return ChapterOptions(
        run.output.size, request, hints_dir, recolor, run.output.max_pixels, not run.quiet
    )


def describe(done: ChapterDone) -> str:
    """The summary of one chapter, on one line."""
    text = f"{done.colored} page(s) colored"
    if done.kept_color:
        text += f", {done.kept_color} page(s) already in color, left as they are; --recolor "
        text += "colors them"
    if done.failed:
        text += f", {len(done.failed)} page(s) could not be colored, copied as they are"
    return text
