"""Colorizing many files at the speed of the model.

Decoding (file -> upright picture -> its L at full resolution and at the working size) runs in
DataLoader worker processes; the main process groups the pictures by working shape into full
batches for the model; the full-resolution color math and the encoding run in as many other
processes (one torch thread each), each output written (atomically) as it finishes. What is in
flight is bounded (the loader's prefetch, one batch per working shape, a batch and a few
outputs being written), never the folder. A re-run skips the
outputs that are complete for the same model and settings; under torchrun each rank takes its
own share of the files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import (
    BrokenExecutor,
    Executor,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
)
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from colorgan import ddp
from colorgan.batch import Prediction
from colorgan.colorize import (
    Colorizer,
    Failure,
    Job,
    check_reference,
    check_uncertainty_maps,
    hints_for_jobs,
    join,
    lightness,
    load_colorizer,
    plan_jobs,
    read_reference,
    refusal,
    resize_l,
    save_results,
    working_shape,
)
from colorgan.device import check_fits, free_memory
from colorgan.errors import (
    ColorganError,
    DoesNotFit,
    Interrupted,
    OnnxModelError,
    UnreadableImage,
)
from colorgan.files import (
    DEFAULT_MAX_PIXELS,
    Picture,
    load_picture,
    output_key,
    stale_temporary_of,
)
from colorgan.hints import Hint, HintError, check_inside, render
from colorgan.modeldir import resolve_model

log = logging.getLogger("colorgan")
DEFAULT_WORKERS = min(4, os.cpu_count() or 1)  # decoding processes (and as many encoding ones)
MAX_WORKERS = 64  # and never more than there are files
RUNTIMES = ("auto", "torch", "onnx")
# --runtime auto exports to ONNX (once, about a minute; cached) for a CPU run of this many
# images: onnxruntime ran the default model 3.3x faster than folded PyTorch on 2 CPU cores
# (docs/PERFORMANCE.md), so the export pays for itself within a few dozen images.
ONNX_MIN_IMAGES = 100


def shard(jobs: Sequence[Job], rank: int, world_size: int) -> list[Job]:
    """Rank `rank`'s share of `jobs` (every world_size-th, from its rank): the shares of all
    ranks are disjoint and cover every job."""
    return list(jobs[rank::world_size])


def run_key(
    model_id: str,
    size: int | None,
    fmt: str,
    hints: Sequence[Hint] | None,
    caution: float = 0.0,
    reference: str | None = None,
) -> str:
    """What an output depends on besides its input file: the model, the working size, the
    format, the image's points, the caution it was colorized with (the resolved value) and
    the reference (reference_key's digest of its summary; None: none), as a short hash
    (written into each output's tag)."""
    points = [[h.x, h.y, h.color, h.radius] for h in hints or []]
    parts: list[object] = [model_id, size, fmt, points]
    if caution:  # 0 (no fading) keeps the key of the runs from before caution existed
        parts.append(caution)
    if reference is not None:  # likewise no reference
        parts.append({"reference": reference})
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def reference_key(summary: torch.Tensor | None) -> str | None:
    """A reference summary's identity for run_key: the sha256 of its float32 bytes (the same
    colors give the same key, whatever the file is called); None for no reference."""
    if summary is None:
        return None
    data = summary.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
    return hashlib.sha256(data).hexdigest()


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
            if path.stat().st_mtime_ns < source_time or output_key(path) != key:
                return False
        except OSError:
            return False
    return True


@dataclass
class Decoded:
    """One input as the decoding workers give it: the picture, its L at the working size and
    its hint map; or why it could not be read."""

    index: int
    picture: Picture | None = None
    l_small: torch.Tensor | None = None  # (1, 1, h, w) in [-1, 1]
    hint_map: torch.Tensor | None = None  # (1, 3, h, w)
    error: str | None = None


class _Shapes:
    """What a decoding worker needs to size a picture (no model: it stays in the main
    process): the Colorizer's working-size rule, and the memory budget measured once."""

    def __init__(self, colorizer: Colorizer, size: int | None) -> None:
        self.size = colorizer.image_size if size is None else size
        self.multiple = colorizer.multiple
        self.bytes_per_pixel = colorizer.bytes_per_pixel
        self.device = colorizer.device
        self.free = free_memory(colorizer.device)

    def shape(self, picture: Picture) -> tuple[int, int]:
        """The working (h, w) of `picture`; DoesNotFit where one image there cannot fit."""
        height, width = picture.rgb.shape[1], picture.rgb.shape[2]
        shape = working_shape(height, width, self.size, self.multiple)
        check_fits(
            shape[0] * shape[1] * self.bytes_per_pixel,
            self.device,
            f"colorizing at a working size of {shape[0]}x{shape[1]}",
            "use a smaller --size",
            self.free,
        )
        return shape


class _DecodeFiles(Dataset[Decoded]):
    """The jobs' files, decoded and scaled to their working size (in worker processes)."""

    def __init__(
        self,
        jobs: Sequence[Job],
        shapes: _Shapes,
        max_pixels: int,
        hints: dict[Path, list[Hint]],
    ) -> None:
        self.jobs, self.shapes = list(jobs), shapes
        self.max_pixels, self.hints = max_pixels, hints

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, index: int) -> Decoded:
        job = self.jobs[index]
        try:
            picture = load_picture(job.source, self.max_pixels)
            height, width = picture.rgb.shape[1:]
            points = self.hints.get(job.source)
            if points:
                check_inside(points, (height, width))
            shape = self.shapes.shape(picture)
        except (UnreadableImage, HintError, DoesNotFit) as err:
            return Decoded(index, error=str(err))
        l_small = resize_l(lightness(picture.rgb, torch.device("cpu")), shape)
        hint_map = render(points, (height, width), shape)[None] if points else None
        return Decoded(index, picture, l_small, hint_map)


def _identity(item: Decoded) -> Decoded:
    return item


@dataclass
class _Batches:
    """Decoded pictures waiting for the model, grouped by working shape; a group goes to the
    model when it is full, or (the largest) when too many wait in all."""

    size: int
    limit: int
    groups: dict[tuple[int, int], list[Decoded]] = field(default_factory=dict)

    def add(self, item: Decoded) -> list[Decoded] | None:
        assert item.l_small is not None
        group = self.groups.setdefault(tuple(item.l_small.shape[-2:]), [])  # type: ignore[arg-type]
        group.append(item)
        if len(group) >= self.size:
            return self.groups.pop(tuple(item.l_small.shape[-2:]))  # type: ignore[arg-type]
        if sum(len(g) for g in self.groups.values()) > self.limit:
            largest = max(self.groups, key=lambda shape: len(self.groups[shape]))
            return self.groups.pop(largest)
        return None

    def rest(self) -> Iterator[list[Decoded]]:
        while self.groups:
            yield self.groups.pop(next(iter(self.groups)))


@dataclass
class Summary:
    """What a folder run did: written, skipped as already complete, failed."""

    written: int = 0
    skipped: int = 0
    failures: list[Failure] = field(default_factory=list)


def _finish(job: Job, picture: Picture, prediction: Prediction, fmt: str, key: str) -> None:
    """Full-resolution colors (the picture's own L + the model's ab) and the outputs."""
    rgb = join(lightness(picture.rgb, torch.device("cpu")), prediction.ab)
    save_results(job, picture, rgb, fmt, key, prediction.uncertainty)


def _finisher_started() -> None:
    """In each encoding process: one torch thread (the processes are the parallelism, and
    threads of their own would fight the model's for the cores), and Ctrl-C left to the main
    process, which waits for the outputs in progress (each whole) before it stops."""
    torch.set_num_threads(1)
    _no_ctrl_c()


def _no_ctrl_c(_worker: int = 0) -> None:
    """In a worker process: Ctrl-C (which a terminal sends to the whole process group) is left
    to the main process, which stops the workers in order, instead of a traceback from each."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _finishers(workers: int) -> Executor:
    """Where outputs are finished: `workers` processes (forked where the platform can, so they
    start in milliseconds), or one thread of this process for --workers 0."""
    if workers == 0:
        return ThreadPoolExecutor(1, thread_name_prefix="colorgan-write")
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    return ProcessPoolExecutor(workers, mp_context=context, initializer=_finisher_started)


class _Writer:
    """Finishes and writes outputs in encoding processes (see _finishers), at most `limit`
    pending at once."""

    def __init__(
        self, workers: int, batch: int, fail: Callable[[Path, str], None], done: Callable[[], None]
    ) -> None:
        self.pool = _finishers(workers)
        self.pending: list[tuple[Job, Future[None]]] = []
        # a whole batch and then some: the model goes on while the last batch is written
        self.limit, self.fail, self.done = batch + 2 * max(1, workers), fail, done
        self.written = 0

    def submit(
        self, job: Job, picture: Picture, prediction: Prediction, fmt: str, key: str
    ) -> None:
        uncertainty = prediction.uncertainty  # CPU copies: the encoding process gets their memory
        cpu = Prediction(prediction.ab.cpu(), None if uncertainty is None else uncertainty.cpu())
        self.pending.append((job, self.pool.submit(_finish, job, picture, cpu, fmt, key)))
        while len(self.pending) > self.limit:
            self._collect(*self.pending.pop(0))

    def _collect(self, job: Job, future: Future[None]) -> None:
        try:
            future.result()
            self.written += 1
        except BrokenExecutor:
            raise ColorganError(
                f"an encoding process stopped while writing {job.target} (out of memory?); "
                f"run the command again: complete outputs are skipped"
            ) from None
        except OSError as err:
            self.fail(job.source, f"cannot write {job.target} ({err.strerror or err})")
        self.done()

    def close(self) -> None:
        """Wait for every pending output (also on Ctrl-C: each is whole or not there)."""
        try:
            for job, future in self.pending:
                self._collect(job, future)
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)


def clean_temporaries(jobs: Sequence[Job]) -> int:
    """Delete the hidden temporaries a killed run left in the output folders; how many."""
    outputs = {path for job in jobs for path in job.outputs}
    removed = 0
    for folder in {path.parent for path in outputs}:
        for path in folder.glob(".*.tmp") if folder.is_dir() else ():
            name = stale_temporary_of(path)  # only those of this run's own outputs
            if name is not None and folder / name in outputs and path.is_file():
                path.unlink(missing_ok=True)
                removed += 1
    return removed


def _plan(
    jobs: Sequence[Job], keys: dict[Path, str], overwrite: bool, summary: Summary,
    fail: Callable[[Path, str], None],
) -> list[Job]:  # fmt: skip
    """The jobs still to do: complete outputs (same key) are skipped, and outputs colorize did
    not write are failures unless `overwrite`."""
    todo = []
    for job in jobs:
        if is_complete(job, keys[job.source]):
            summary.skipped += 1
        elif (reason := refusal(job, overwrite)) is not None:
            fail(job.source, reason)
        else:
            todo.append(job)
    return todo


def colorize_folder(
    colorizer: Colorizer,
    jobs: Sequence[Job],
    fmt: str = "png",
    size: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    workers: int = DEFAULT_WORKERS,
    hints: dict[Path, list[Hint]] | None = None,
    overwrite: bool = False,
    model_id: str = "",
    on_failure: Callable[[Failure], None] | None = None,
    progress: bool = False,
    caution: float | None = None,
    reference: torch.Tensor | None = None,
) -> Summary:
    """Colorize `jobs` through the pipeline (see the module's docstring): `workers` decoding
    processes (0: decode in this process) and as many encoding ones (0: one thread), with
    `caution` (see Colorizer.resolve_caution) and one `reference` summary (1, 257) for all
    (read_reference). Outputs complete for the same model (`model_id`), size, format, points,
    caution and reference are skipped; failures go to `on_failure` and into the summary; the
    rest go on."""
    summary, hints = Summary(), hints or {}

    def fail(path: Path, reason: str) -> None:
        summary.failures.append(Failure(path, reason))
        if on_failure is not None:
            on_failure(summary.failures[-1])

    caution = _check_options(colorizer, jobs, size, max_pixels, workers, caution)
    workers = min(workers, len(jobs))  # 2 files need no 128 processes
    check_reference(colorizer, reference)
    clean_temporaries(jobs)
    ref = reference_key(reference)
    keys = {
        job.source: run_key(model_id, size, fmt, hints.get(job.source), caution, ref)
        for job in jobs
    }
    todo = _plan(jobs, keys, overwrite, summary, fail)
    bar = tqdm(total=len(todo), desc="colorizing", unit="img", disable=None if progress else True)
    writer = _Writer(workers, colorizer.batch_size, fail, lambda: _advance(bar))
    try:
        for group in _decoded_groups(todo, colorizer, size, max_pixels, hints, workers, fail, bar):
            l_small = torch.cat([item.l_small for item in group])  # type: ignore[misc]
            maps = [item.hint_map for item in group]
            l_small = l_small.to(colorizer.device)
            predicted = colorizer.predict_maps(l_small, _on(maps, colorizer), caution, reference)
            for item, prediction in zip(group, predicted, strict=True):
                job = todo[item.index]
                assert item.picture is not None
                writer.submit(job, item.picture, prediction, fmt, keys[job.source])
    finally:
        writer.close()
        bar.close()
    summary.written = writer.written
    return summary


def _check_options(
    colorizer: Colorizer, jobs: Sequence[Job], size: int | None, max_pixels: int,
    workers: int, caution: float | None,
) -> float:  # fmt: skip
    """ColorganError for a bad option (before any work); the caution to colorize with."""
    if max_pixels < 1:
        raise ColorganError(f"--max-pixels must be positive, got {max_pixels}")
    if size is not None and size < 1:
        raise ColorganError(f"--size must be a positive number of pixels, got {size}")
    if not 0 <= workers <= MAX_WORKERS:
        raise ColorganError(f"--workers must be from 0 to {MAX_WORKERS}, got {workers}")
    resolved = colorizer.resolve_caution(caution, "--caution")
    check_uncertainty_maps(colorizer, jobs)
    if size is not None:
        colorizer.check_shape((size, size))  # the least any image needs at this size
    return resolved


def _advance(bar: tqdm) -> None:
    bar.update()


def _on(maps: list[torch.Tensor | None], colorizer: Colorizer) -> list[torch.Tensor | None]:
    return [m.to(colorizer.device) if m is not None else None for m in maps]


def _decoded_groups(
    todo: Sequence[Job], colorizer: Colorizer, size: int | None, max_pixels: int,
    hints: dict[Path, list[Hint]], workers: int, fail: Callable[[Path, str], None], bar: tqdm,
) -> Iterator[list[Decoded]]:  # fmt: skip
    """The decoded pictures, in groups of one working shape, as large as the batch size (and
    memory) allow; unreadable ones go to `fail`."""
    dataset = _DecodeFiles(todo, _Shapes(colorizer, size), max_pixels, hints)
    loader = DataLoader(
        dataset, batch_size=None, shuffle=False, num_workers=workers, collate_fn=_identity,  # type: ignore[arg-type]
        prefetch_factor=2 if workers else None, worker_init_fn=_no_ctrl_c,
    )  # fmt: skip
    batches = _Batches(colorizer.batch_size, 2 * colorizer.batch_size)
    for item in loader:
        if item.error is not None:
            fail(todo[item.index].source, item.error)
            bar.update()
        elif (group := batches.add(item)) is not None:
            yield from _fitting(group, colorizer)
    for group in batches.rest():
        yield from _fitting(group, colorizer)


def _fitting(group: list[Decoded], colorizer: Colorizer) -> Iterator[list[Decoded]]:
    """`group` in chunks that fit in memory at once (Colorizer's rule)."""
    assert group[0].l_small is not None
    step = colorizer.chunk(tuple(group[0].l_small.shape[-2:]))  # type: ignore[arg-type]
    for start in range(0, len(group), step):
        yield group[start : start + step]


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGTERM (and SIGINT) raise Interrupted in the main thread, so every output being
    written is finished (each atomic) and no temporary is left."""

    def handler(signum: int, frame: object) -> None:
        raise Interrupted(signum)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@dataclass
class FolderRun:
    """What `colorgan colorize` was asked (see cli.py), for run_colorize."""

    model: str
    inputs: list[Path]
    out: Path
    fmt: str = "png"
    side_by_side: bool = False
    size: int | None = None
    device: str = "auto"
    batch_size: int = 8
    max_pixels: int = DEFAULT_MAX_PIXELS
    hints: Path | None = None
    overwrite: bool = False
    workers: int = DEFAULT_WORKERS
    compile_model: bool = False
    quiet: bool = False
    runtime: str = "auto"
    caution: float | None = None  # None: the model's default (model.caution)
    uncertainty_map: bool = False  # also write <name>.uncertainty.png
    reference: Path | None = None  # --reference IMAGE: its colors for every input


def onnx_cache() -> Path:
    """Where --runtime onnx keeps its exports: $COLORGAN_CACHE/onnx, else ~/.cache/colorgan."""
    root = os.environ.get("COLORGAN_CACHE") or Path.home() / ".cache" / "colorgan"
    return Path(root) / "onnx"


def _onnx_path(model: str) -> Path:
    """The cached export of MODEL, named by the identity of the files it resolves to (for
    hf://, the snapshot of one commit)."""
    identity = model_identity(resolve_model(model).path)
    return onnx_cache() / f"{run_key(identity, None, 'onnx', None)}.onnx"


def _onnx_available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime"))


def _runtime(run: FolderRun, device: torch.device, count: int) -> str:
    """'torch' or 'onnx' for this run (--runtime auto: onnx on a CPU for a large folder, or
    when the model is exported already, and when the ONNX packages are installed)."""
    if run.runtime not in RUNTIMES:
        raise ColorganError(f"--runtime {run.runtime!r}: use {', '.join(RUNTIMES)}")
    if run.runtime != "auto" or Path(run.model).suffix.lower() == ".onnx":
        return "torch" if run.runtime == "auto" else run.runtime
    cached = _onnx_path(run.model).is_file()
    large = count >= ONNX_MIN_IMAGES
    fits = device.type == "cpu" and not run.compile_model and _onnx_available()
    return "onnx" if fits and (cached or large) else "torch"


ONNX_TIP = (
    "tip: pip install 'colorgan[onnx]' and a CPU folder run like this one goes through "
    "onnxruntime, about 1.5x as fast (--runtime auto)"
)


def _onnx_would_help(run: FolderRun, device: torch.device, count: int) -> bool:
    """Whether --runtime auto would have picked onnx here if the ONNX packages were there."""
    auto = run.runtime == "auto" and Path(run.model).suffix.lower() != ".onnx"
    large = device.type == "cpu" and not run.compile_model and count >= ONNX_MIN_IMAGES
    return auto and large and not _onnx_available()


def _load(run: FolderRun, device: torch.device, count: int, quiet: bool) -> Colorizer:
    """The Colorizer for the run: MODEL in PyTorch, or exported once to ONNX (cached by the
    model's identity) and run in onnxruntime."""
    if _runtime(run, device, count) == "torch" or Path(run.model).suffix.lower() == ".onnx":
        if not quiet and _onnx_would_help(run, device, count):
            print(ONNX_TIP, flush=True)
        return load_colorizer(run.model, str(device), run.batch_size, run.compile_model)
    from colorgan.export import export_onnx

    path = _onnx_path(run.model)
    if path.is_file():
        try:
            colorizer = Colorizer.from_onnx(path, str(device), run.batch_size)
        except OnnxModelError as err:  # a cached export that broke (a full disk, a crash)
            log.warning("%s; exporting it again", err)
            path.unlink(missing_ok=True)
    if not path.is_file():
        if not quiet:
            print(f"exporting the model to ONNX once (cached as {path})", flush=True)
        export_onnx(run.model, path)
        colorizer = Colorizer.from_onnx(path, str(device), run.batch_size)
    colorizer.source = run.model
    return colorizer


def run_colorize(run: FolderRun, report: Callable[[Failure], None]) -> tuple[int, int, int]:
    """`colorgan colorize`, alone or under torchrun (each rank its share of the files, on its
    own GPU): (written, skipped as complete, failed) over all ranks; rank 0 prints the
    summary."""
    info, device = ddp.init(run.device)
    try:
        with _signals_interrupt():
            jobs, failures = plan_jobs(
                run.inputs, run.out, run.fmt, run.side_by_side, run.uncertainty_map
            )
            hints, unusable = hints_for_jobs(jobs, run.hints)  # a bad file fails its image
            failures += unusable
            refused = {failure.path for failure in unusable}
            jobs = [job for job in jobs if job.source not in refused]
            colorizer = _load(run, device, len(jobs), run.quiet or not info.is_main)
            colorizer.resolve_caution(run.caution, "--caution")  # usage errors come first
            if run.hints is not None:
                colorizer.check_points(f"--hints {run.hints}")
            check_uncertainty_maps(colorizer, jobs)
            reference = read_reference(colorizer, run.reference, run.max_pixels)  # each rank
            if info.is_main:
                if colorizer.revision is not None and not run.quiet:
                    print(f"model {colorizer.source}")  # the commit: the run can be repeated
                for failure in failures:
                    report(failure)
            mine = shard(jobs, info.rank, info.world_size)
            summary = colorize_folder(
                colorizer, mine, run.fmt, run.size, run.max_pixels, run.workers, hints,
                run.overwrite, _model_id(run.model, colorizer), report,
                progress=info.is_main and not run.quiet and len(mine) > 1, caution=run.caution,
                reference=reference,
            )  # fmt: skip
        counts = [summary.written, summary.skipped, len(summary.failures)]
        every = ddp.gather_counts(counts, info, device)
    finally:
        ddp.shutdown(info)
    written, skipped, failed = (sum(rank[i] for rank in every) for i in range(3))
    if info.is_main and not run.quiet:
        _print_summary(every, len(jobs), skipped, run.out)
    return written, skipped, failed + len(failures)


def _model_id(model: str, colorizer: Colorizer) -> str:
    return colorizer.source if colorizer.revision else model_identity(model)


def _print_summary(every: list[list[int]], total: int, skipped: int, out: Path) -> None:
    written = sum(rank[0] for rank in every)
    ranks = f" (ranks: {' + '.join(str(rank[0]) for rank in every)})" if len(every) > 1 else ""
    done = f"; {skipped} already complete, skipped" if skipped else ""
    print(f"colorized {written} of {total} image(s) into {out}{ranks}{done}")
