"""Folder jobs: which files a `colorgan colorize` run reads and writes, what each is asked
(its Request), and when an output may be replaced or skipped (its re-run key).

A job is one input file and its output paths. Outputs clash-free (a.png and a.jpg in one folder
get their own names), never over an input, and never over a file colorize did not write (unless
--overwrite). Each output is tagged with a key of everything it depends on besides its input
file (model, size, format, the request), so a re-run skips what is complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from colorgan.colorize import PNG_LEVEL, Colorizer, gray_image, uncertainty_image
from colorgan.errors import ColorganError, DataError
from colorgan.files import (
    DEFAULT_MAX_PIXELS,
    FORMATS,
    Picture,
    atomic_write,
    find_images,
    mark_options,
    output_key,
    save_image,
    to_image,
    written_by_colorgan,
)
from colorgan.hints import Hint, HintError, hints_to_text, load_hints
from colorgan.request import Request
from colorgan.suggest import MAX_SUGGESTIONS

log = logging.getLogger("colorgan")

_OPTIONS: dict[str, dict[str, object]] = {
    "png": {"compress_level": PNG_LEVEL}, "jpg": {"quality": 95}, "webp": {"quality": 95},
}  # fmt: skip
DEFAULT_WORKERS = min(4, os.cpu_count() or 1)  # decoding processes (and as many encoding ones)
MAX_WORKERS = 64  # and never more than there are files
UNCERTAINTY_SUFFIX = ".uncertainty.png"  # <name>.uncertainty.png: the map beside <name>.<format>
SUGGEST_SUFFIX = ".suggest.json"  # <name>.suggest.json: suggested points, as a hints file


@dataclass(frozen=True)
class Output:
    """How a folder run makes its outputs."""

    fmt: str = "png"
    size: int | None = None  # working size (None: the model's training size)
    max_pixels: int = DEFAULT_MAX_PIXELS  # larger inputs are refused before decoding
    workers: int = DEFAULT_WORKERS  # decoding processes, and as many encoding ones
    overwrite: bool = False  # replace outputs colorize did not write
    suggest: int = 0  # points suggested in <name>.suggest.json (0: no such file)

    def check(self, colorizer: Colorizer, jobs: Sequence[Job]) -> None:
        """ColorganError for a bad option (before any work)."""
        if not 0 <= self.suggest <= MAX_SUGGESTIONS:
            raise ColorganError(
                f"--suggest must be from 0 to {MAX_SUGGESTIONS} points, got {self.suggest}"
            )
        if self.max_pixels < 1:
            raise ColorganError(f"--max-pixels must be positive, got {self.max_pixels}")
        if self.size is not None and self.size < 1:
            raise ColorganError(f"--size must be a positive number of pixels, got {self.size}")
        if not 0 <= self.workers <= MAX_WORKERS:
            raise ColorganError(f"--workers must be from 0 to {MAX_WORKERS}, got {self.workers}")
        if any(job.uncertainty is not None for job in jobs):
            colorizer.capabilities.need("uncertainty", "--uncertainty-map")
        if self.size is not None:
            colorizer.check_shape((self.size, self.size))  # the least any image needs


@dataclass(frozen=True)
class Job:
    """One input file and where its results go."""

    source: Path
    target: Path  # <out>/<relative folder>/<stem>.<format>
    side_by_side: Path | None  # <out>/<relative folder>/<stem>_side_by_side.<format>
    relative: Path = Path()  # the source's path inside its input folder (its name for a file)
    uncertainty: Path | None = None  # <out>/<relative folder>/<stem>.uncertainty.png: the map
    suggest: Path | None = None  # <out>/<relative folder>/<stem>.suggest.json: suggested points

    @property
    def outputs(self) -> tuple[Path, ...]:
        """Every file the job writes."""
        paths = (self.target, self.side_by_side, self.uncertainty, self.suggest)
        return tuple(p for p in paths if p)


@dataclass(frozen=True)
class Failure:
    """An input that could not be colorized, and why (one line)."""

    path: Path
    reason: str


def find_inputs(inputs: Sequence[Path], out: Path) -> tuple[list[tuple[Path, Path]], list[Failure]]:
    """(file, folder relative to `out`) for each input file and each image file under an input
    folder (recursively; an `out` inside that folder is skipped), each file once; and the
    inputs that do not exist or hold no images."""
    found: list[tuple[Path, Path]] = []
    failures: list[Failure] = []
    seen: set[Path] = set()
    for given in inputs:
        if given.is_dir():
            if given.resolve() == out.resolve():  # a second run would colorize the first's
                raise ColorganError(
                    f"--out {out} is the input folder {given}: its outputs would be inputs of "
                    "the next run; give another --out (a sub-folder works)"
                )
            # an output folder inside the input folder holds earlier results, not inputs
            skipped = out.resolve() if given.resolve() in out.resolve().parents else None

            def unlisted(folder: Path, err: OSError) -> None:
                failures.append(Failure(folder, f"cannot list folder ({err.strerror or err})"))

            try:
                listed = find_images(given, on_error=unlisted)
            except (OSError, DataError) as err:
                failures.append(Failure(given, f"cannot list folder ({err})"))
                continue
            files = [p for p in listed if skipped not in p.resolve().parents]
            if not files:
                failures.append(Failure(given, "no image files in this folder"))
            pairs = [(p, p.parent.relative_to(given)) for p in files]
        elif given.is_file():
            pairs = [(given, Path())]
        else:
            failures.append(Failure(given, "no such file or folder"))
            continue
        for path, relative in pairs:
            if path.resolve() not in seen:
                seen.add(path.resolve())
                found.append((path, relative))
    return found, failures


def _key(path: Path) -> str:
    return os.path.normpath(path).casefold()  # clashes on case-insensitive disks count too


def name_outputs(
    sources: Sequence[tuple[Path, Path]],
    out: Path,
    fmt: str,
    side_by_side: bool,
    uncertainty_map: bool = False,
    suggest: bool = False,
) -> list[Job]:
    """Output paths for (file, relative folder) pairs (with `uncertainty_map`, also
    <name>.uncertainty.png; with `suggest`, <name>.suggest.json). Files whose outputs would
    clash (a.png and a.jpg in one folder) get their own suffix in the name (a_png.png,
    a_jpg.png); a clash still left gets _2, _3, ... Raises if an output would overwrite an
    input."""
    bases = [out / relative / path.stem for path, relative in sources]
    counts = Counter(_key(base) for base in bases)
    taken: set[str] = set()
    jobs = []
    for (path, relative), base in zip(sources, bases, strict=True):
        if counts[_key(base)] > 1 and path.suffix:
            base = base.with_name(f"{base.name}_{path.suffix[1:].lower()}")
        name, number = base.name, 1
        while True:
            target = base.with_name(f"{name}.{fmt}")
            pair = base.with_name(f"{name}_side_by_side.{fmt}") if side_by_side else None
            guess = base.with_name(name + UNCERTAINTY_SUFFIX) if uncertainty_map else None
            where = base.with_name(name + SUGGEST_SUFFIX) if suggest else None
            keys = {_key(p) for p in (target, pair, guess, where) if p is not None}
            if not keys & taken:
                break
            number += 1
            name = f"{base.name}_{number}"
        taken |= keys
        jobs.append(Job(path, target, pair, relative / path.name, guess, where))
    inputs = {path.resolve(): path for path, _ in sources}
    for job in jobs:
        for written in job.outputs:
            if written.resolve() in inputs:
                raise ColorganError(
                    f"{written} would overwrite the input {inputs[written.resolve()]}; "
                    f"choose another --out folder or --format"
                )
    return jobs


def plan_jobs(
    inputs: Sequence[Path],
    out: Path,
    fmt: str = "png",
    side_by_side: bool = False,
    uncertainty_map: bool = False,
    suggest: bool = False,
) -> tuple[list[Job], list[Failure]]:
    """The jobs for files and folders given on the command line, and the inputs that failed."""
    if fmt not in FORMATS:
        raise ColorganError(f"unknown format {fmt!r}: use {', '.join(FORMATS)}")
    if out.exists() and not out.is_dir():
        raise ColorganError(f"{out}: exists and is not a folder; give an output folder")
    sources, failures = find_inputs(inputs, out)
    return name_outputs(sources, out, fmt, side_by_side, uncertainty_map, suggest), failures


def side_by_side_image(gray: Image.Image, color: Image.Image) -> Image.Image:
    """gray | color, side by side."""
    both = Image.new(color.mode, (gray.width + color.width, max(gray.height, color.height)))
    both.paste(gray, (0, 0))
    both.paste(color, (gray.width, 0))
    return both


def save_results(
    job: Job,
    picture: Picture,
    rgb: torch.Tensor,
    fmt: str,
    key: str = "",
    uncertainty: torch.Tensor | None = None,
    suggested: Sequence[Hint] = (),
) -> None:
    """Write the colorized image (and gray | color, the uncertainty map and the suggested
    points, if asked) for one job, the images tagged as colorgan's with `key` (so a re-run
    knows it may replace them, or skip them when the key matches). `uncertainty`: the model's
    (1, 1, h, w), for the map."""
    kind = FORMATS[fmt]
    options = _OPTIONS[fmt] | mark_options(kind, key)
    color = to_image(rgb, picture.alpha)  # rgb: (3, H, W) uint8
    save_image(color, job.target, kind, **options)
    if job.side_by_side is not None:
        pair = side_by_side_image(gray_image(picture), color)
        save_image(pair, job.side_by_side, kind, **options)
    if job.uncertainty is not None:
        assert uncertainty is not None, "the model gives no uncertainty"
        guess = uncertainty_image(uncertainty, (rgb.shape[1], rgb.shape[2]))
        save_image(guess, job.uncertainty, "PNG", **_OPTIONS["png"], **mark_options("PNG", key))
    if job.suggest is not None:  # after the image, whose key says how many were asked
        text = hints_to_text(suggested)
        atomic_write(job.suggest, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def foreign_output(job: Job) -> Path | None:
    """An output path of `job` that holds a file colorize did not write (None if none):
    colorize never replaces such a file unless told to overwrite."""
    for path in job.outputs:
        ours = _is_points_file if path == job.suggest else written_by_colorgan
        if path.exists() and not ours(path):
            return path
    return None


def _is_points_file(path: Path) -> bool:
    """Whether `path` is a hints file (a JSON list of points): what --suggest writes. A JSON
    file holds no tag, so one there that is not a list of points is someone else's."""
    try:
        load_hints(path)
    except HintError:
        return False
    return True


def requests_for_jobs(
    jobs: Sequence[Job], request: Request, hints: Path | None
) -> tuple[dict[Path, Request], list[Failure]]:
    """Each job's Request: `request` with the job's color points from `--hints`: a JSON file
    for every input (a bad one is a HintError naming it and the entry), or a folder with one
    JSON per image at the same relative path (a/b.png -> a/b.json; images without one get none;
    a bad one fails its image alone, returned as a Failure; files that match no image are named
    in a warning)."""
    if hints is None:
        return {job.source: request for job in jobs}, []
    if not hints.exists():
        raise HintError(f"--hints {hints}: no such file or folder")
    if not hints.is_dir():  # a file: read bounded, regular files only
        given = request.with_points(load_hints(hints))
        return {job.source: given for job in jobs}, []
    found, failures, used = {}, [], set()
    for job in jobs:
        path = hints / job.relative.with_suffix(".json")
        found[job.source] = request
        if path.is_file():
            used.add(path)
            try:
                found[job.source] = request.with_points(load_hints(path))
            except HintError as err:
                del found[job.source]
                failures.append(Failure(job.source, str(err)))
    unmatched = sorted(set(hints.rglob("*.json")) - used)
    if unmatched:
        log.warning(
            "--hints %s: %d file(s) match no input image (e.g. %s); they were not used",
            hints, len(unmatched), unmatched[0],
        )  # fmt: skip
    return found, failures


def refusal(job: Job, overwrite: bool) -> str | None:
    """Why `job` must not be written (an output path holds a file colorize did not write),
    or None; always None with `overwrite`."""
    foreign = None if overwrite else foreign_output(job)
    if foreign is None:
        return None
    return f"{foreign} exists and colorgan did not write it: skipped (--overwrite replaces it)"


def run_key(
    model_id: str, size: int | None, fmt: str, request: Request, caution: float, suggest: int = 0
) -> str:
    """What an output depends on besides its input file: the model, the working size, the
    format, the request (Request.key, with the `caution` it was colorized with) and how many
    points are suggested, as a short hash (written into each output's tag)."""
    parts: list[object] = [model_id, size, fmt, *request.key(caution)]
    if suggest:  # none keeps the keys of the runs from before suggestions existed
        parts.append({"suggest": suggest})
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def model_identity(path: str | Path) -> str:
    """A model file's (or folder's) identity for run_key: its resolved path, size and time."""
    resolved = Path(path).resolve()
    try:
        stat = resolved.stat()
        return f"{resolved}:{stat.st_size}:{stat.st_mtime_ns}"
    except OSError:
        return str(path)  # e.g. hf://owner/name@revision: the name is the identity


def is_complete(job: Job, key: str) -> bool:
    """Whether every output of `job` was written by colorize with the same `key`, after its
    input was last changed (outputs are atomic: one that exists is whole)."""
    try:
        source_time = job.source.stat().st_mtime_ns
    except OSError:
        return False
    for path in job.outputs:
        try:
            if path.stat().st_mtime_ns < source_time:
                return False
            if path != job.suggest and output_key(path) != key:  # the image's key covers it
                return False
        except OSError:
            return False
    return True
