"""`colorgan prepare`: resize a folder of training images once (short side N, same tree), so
that training decodes and resizes less per image.

Each image is decoded as training decodes it (JPEG draft mode, EXIF orientation applied, any
mode made 8-bit RGB with alpha flattened onto white) and resized with the loader's own resize, so
training on the prepared folder at data.image_size=N sees the same crops (up to the output
format's compression). Images whose short side is already N or less are never upscaled: they are
kept at their own size (copied byte for byte when their format is kept).
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from colorgan.data import resize_short_side
from colorgan.errors import PrepareError
from colorgan.files import (
    DECODE_ERRORS,
    atomic_write,
    decode_reason,
    find_images,
    load_rgb,
    save_image,
)

OUTPUT_FORMATS = ("keep", "jpg", "png")
MANIFEST = ".colorgan-prepare.json"  # the settings that made DST (hidden: not an image)
# the outputs prepare wrote in DST (or was about to): its own to replace; any other file at an
# output's path is left as it is, as colorize leaves files it did not write
LEDGER = ".colorgan-prepare-files.json"
# Formats written by --format keep; a GIF becomes PNG (GIF holds 256 colors only).
_KEPT = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".png": "PNG",
    ".webp": "WEBP",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
}


@dataclass(frozen=True)
class Settings:
    """What each output is made with; saved in DST/MANIFEST."""

    size: int  # short side in pixels
    fmt: str = "keep"  # keep | jpg | png
    quality: int = 95  # JPEG and WEBP quality


@dataclass(frozen=True)
class Job:
    """One image to prepare."""

    source: Path
    target: Path


@dataclass
class Summary:
    """What a run did."""

    resized: int = 0
    kept: int = 0  # short side already <= N: written at their own size
    up_to_date: int = 0  # outputs newer than their inputs, made with the same settings
    failed: list[tuple[Path, str]] = field(default_factory=list)  # foreign outputs too

    @property
    def total(self) -> int:
        """Images looked at."""
        return self.resized + self.kept + self.up_to_date + len(self.failed)


def check_settings(settings: Settings, workers: int) -> None:
    """Raise PrepareError for a size, format, quality or worker count that cannot work."""
    if settings.size < 1:
        raise PrepareError(f"--size must be a positive number of pixels, got {settings.size}")
    if settings.fmt not in OUTPUT_FORMATS:
        raise PrepareError(f"unknown format {settings.fmt!r}: use {', '.join(OUTPUT_FORMATS)}")
    if not 1 <= settings.quality <= 100:
        raise PrepareError(f"--quality must be in 1..100, got {settings.quality}")
    if workers < 1:
        raise PrepareError(f"--workers must be at least 1, got {workers}")


def check_folders(src: Path, dst: Path) -> None:
    """Refuse a missing SRC and folders that overlap (outputs could overwrite inputs)."""
    if not src.is_dir():
        what = "not a folder" if src.exists() else "no such folder"
        raise PrepareError(f"{src}: {what}; give a folder of images")
    source, target = src.resolve(), dst.resolve()
    if target == source or source in target.parents:
        raise PrepareError(f"{dst} is inside {src}; choose an output folder outside SRC")
    if target in source.parents:
        raise PrepareError(f"{src} is inside {dst}; choose an output folder outside SRC")


def output_suffix(source: Path, fmt: str) -> str:
    """The output file's suffix for `source` under --format `fmt`."""
    if fmt == "keep":
        return source.suffix if source.suffix.lower() in _KEPT else ".png"
    return f".{fmt}"


def plan(src: Path, dst: Path, fmt: str) -> list[Job]:
    """A job per image under `src`, its output at the same relative path under `dst`. Names
    that would clash (a.png and a.jpg as a.jpg) keep their old suffix in the name (a_png.jpg)."""
    sources = find_images(src)
    if not sources:
        raise PrepareError(f"{src}: no image files found")
    targets = [dst / p.relative_to(src).with_suffix(output_suffix(p, fmt)) for p in sources]
    counts = Counter(str(t).lower() for t in targets)  # case-insensitive file systems too
    jobs = []
    for source, target in zip(sources, targets, strict=True):
        if counts[str(target).lower()] > 1:
            target = target.with_name(f"{source.stem}_{source.suffix[1:].lower()}{target.suffix}")
        jobs.append(Job(source, target))
    return jobs


def is_up_to_date(job: Job) -> bool:
    """True if the output exists and is no older than its input."""
    try:
        return job.target.stat().st_mtime >= job.source.stat().st_mtime
    except OSError:
        return False


def _write(image: Image.Image, job: Job, settings: Settings) -> None:
    """Save `image` for `job` atomically (a hidden temporary file, then a rename)."""
    kind = _KEPT.get(job.target.suffix.lower(), "PNG")
    options: dict[str, int] = {}
    if kind == "JPEG":  # 4:4:4: chroma at full resolution, as colors are what is learned
        options = {"quality": settings.quality, "subsampling": 0}
    elif kind == "WEBP":
        options = {"quality": settings.quality}
    save_image(image, job.target, kind, **options)


def prepare_one(job: Job, settings: Settings) -> tuple[str, str]:
    """Decode, resize and write one image: ("resized" | "kept" | "failed", reason)."""
    try:
        with Image.open(job.source) as opened:
            small = min(opened.size) <= settings.size  # as stored (draft mode may shrink it)
        image = load_rgb(job.source, min_side=settings.size)  # also checks the file decodes
        job.target.parent.mkdir(parents=True, exist_ok=True)
        if small and job.source.suffix.lower() == job.target.suffix.lower():
            # no generation loss; the loader does the rest
            atomic_write(job.target, lambda tmp: shutil.copy2(job.source, tmp))
        elif min(image.size) > settings.size:
            _write(resize_short_side(image, settings.size), job, settings)
        else:
            _write(image, job, settings)
        return "kept" if small else "resized", ""
    except DECODE_ERRORS as err:
        return "failed", decode_reason(err)


def _prepare_many(
    jobs: Sequence[Job], settings: Settings, workers: int
) -> Iterator[tuple[str, str]]:
    """Run `jobs`, in worker processes when `workers` > 1; yields each outcome in job order."""
    if workers == 1 or len(jobs) < 2:
        for job in jobs:
            yield prepare_one(job, settings)
        return
    chunk = max(1, min(16, len(jobs) // (4 * workers)))
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
        yield from pool.map(prepare_one, jobs, [settings] * len(jobs), chunksize=chunk)


def claim(jobs: Sequence[Job], dst: Path) -> tuple[list[Job], list[tuple[Path, str]]]:
    """(the jobs whose output path is free or prepare's own, (source, why) for the others).
    The free ones are written into DST/LEDGER first, so an interrupted run still owns them.
    A DST prepared before the ledger existed (a manifest, no ledger) owns what it holds."""
    try:
        owned = set(json.loads((dst / LEDGER).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        owned = set()
    legacy = not (dst / LEDGER).exists() and (dst / MANIFEST).exists()
    mine, foreign = [], []
    for job in jobs:
        name = job.target.relative_to(dst).as_posix()
        if legacy or name in owned or not (job.target.exists() or job.target.is_symlink()):
            owned.add(name)
            mine.append(job)
        else:
            why = f"{job.target} exists and colorgan did not write it: skipped (move it away)"
            foreign.append((job.source, why))
    text = json.dumps(sorted(owned)) + "\n"
    atomic_write(dst / LEDGER, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return mine, foreign


def _read_manifest(dst: Path) -> dict[str, object] | None:
    """The settings a previous run left in DST, if any."""
    try:
        loaded = json.loads((dst / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


def prepare(
    src: Path,
    dst: Path,
    settings: Settings,
    workers: int | None = None,
    progress: bool = True,
    on_failure: Callable[[Path, str], None] | None = None,
) -> Summary:
    """Write every image under `src` to `dst` with its short side at most `settings.size`;
    outputs newer than their inputs and made with the same settings are kept as they are."""
    workers = workers if workers is not None else os.cpu_count() or 1
    check_settings(settings, workers)
    check_folders(src, dst)
    jobs = plan(src, dst, settings.fmt)
    wanted = {"colorgan_prepare": 1, **asdict(settings)}
    summary = Summary()
    try:
        dst.mkdir(parents=True, exist_ok=True)
        jobs, summary.failed = claim(jobs, dst)
        same_settings = _read_manifest(dst) == wanted
        if not same_settings:  # an interrupted run must not leave these outputs looking current
            (dst / MANIFEST).unlink(missing_ok=True)
    except OSError as err:
        raise PrepareError(f"cannot write to {dst}: {err.strerror or err}") from None
    for source, reason in summary.failed:
        if on_failure is not None:
            on_failure(source, reason)
    if same_settings:
        stale = [job for job in jobs if not is_up_to_date(job)]
        summary.up_to_date = len(jobs) - len(stale)
        jobs = stale
    bar = tqdm(
        total=len(jobs) + summary.up_to_date,
        initial=summary.up_to_date,
        desc=f"preparing {dst.name or dst}",
        unit="img",
        disable=True if not progress else None,
        dynamic_ncols=True,
    )
    for job, (status, reason) in zip(jobs, _prepare_many(jobs, settings, workers), strict=True):
        if status == "failed":
            summary.failed.append((job.source, reason))
            if on_failure is not None:
                on_failure(job.source, reason)
        elif status == "resized":
            summary.resized += 1
        else:
            summary.kept += 1
        bar.update()
    bar.close()
    try:
        (dst / MANIFEST).write_text(json.dumps(wanted) + "\n", encoding="utf-8")
    except OSError as err:
        raise PrepareError(f"cannot write to {dst}: {err.strerror or err}") from None
    return summary


def describe(summary: Summary, dst: Path, size: int) -> str:
    """The one-line report of a run."""
    return (
        f"prepared {summary.total - len(summary.failed)} of {summary.total} image(s) into {dst}: "
        f"{summary.resized} resized to short side {size}, {summary.kept} kept at their own "
        f"size (short side <= {size}), {summary.up_to_date} already up to date, "
        f"{len(summary.failed)} failed"
    )
