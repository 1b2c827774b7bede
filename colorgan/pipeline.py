"""Colorizing many files at the speed of the model.

Decoding (file -> upright picture -> its L at full resolution and at the working size) runs in
DataLoader worker processes; the main process groups the pictures by working shape into full
batches for the model; the full-resolution color math and the encoding run in as many other
processes (one torch thread each), each output written (atomically) as it finishes. What is in
flight is bounded (the loader's prefetch, one batch per working shape, a batch and a few
outputs being written), never the folder. With --workers 0 everything runs in this process,
one step after another: the sequential path (there is no other folder runner). Each job is
colorized for its Request; a re-run skips the outputs that are complete for the same model,
settings and request (jobs.run_key); under torchrun each rank takes its own share of the files.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import signal
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
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
from colorgan.colorize import Colorizer, join, lightness, resize_l, working_shape
from colorgan.device import check_fits, free_memory
from colorgan.errors import ColorganError, DoesNotFit, Interrupted, UnreadableImage
from colorgan.files import Picture, load_picture, stale_temporary_of
from colorgan.hints import Hint, HintError
from colorgan.jobs import (
    Failure,
    Job,
    Output,
    is_complete,
    model_identity,
    plan_jobs,
    refusal,
    requests_for_jobs,
    run_key,
    save_results,
)
from colorgan.request import NOTHING, Capabilities, Request
from colorgan.runtime import ModelChoice, load_for_folder
from colorgan.suggest import suggest
from colorgan.tiles import model_shape

log = logging.getLogger("colorgan")
OUTPUT = Output()  # png at the training size, DEFAULT_WORKERS, nothing replaced


def shard(jobs: Sequence[Job], rank: int, world_size: int) -> list[Job]:
    """Rank `rank`'s share of `jobs` (every world_size-th, from its rank): the shares of all
    ranks are disjoint and cover every job."""
    return list(jobs[rank::world_size])


@dataclass
class Decoded:
    """One input as the decoding workers give it: the picture, its L at the working size and
    what its request gives the model there; or why it could not be read."""

    index: int
    picture: Picture | None = None
    l_small: torch.Tensor | None = None  # (1, 1, h, w) in [-1, 1]
    # what its Request gives the model at that size (Request.inputs): a hint map, a summary
    inputs: dict[str, torch.Tensor] = field(default_factory=dict)
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
        tile = model_shape(shape)  # a strip runs in tiles (tiles.py)
        check_fits(
            tile[0] * tile[1] * self.bytes_per_pixel,
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
        requests: dict[Path, Request],
    ) -> None:
        self.jobs, self.shapes = list(jobs), shapes
        self.max_pixels, self.requests = max_pixels, requests

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, index: int) -> Decoded:
        job = self.jobs[index]
        try:
            picture = load_picture(job.source, self.max_pixels)
            height, width = picture.rgb.shape[1:]
            request = self.requests[job.source]
            request.check_inside((height, width))
            shape = self.shapes.shape(picture)
        except (UnreadableImage, HintError, DoesNotFit) as err:
            return Decoded(index, error=str(err))
        l_small = resize_l(lightness(picture.rgb, torch.device("cpu")), shape)
        given = request.for_picture(picture.rgb).inputs((height, width), shape)
        return Decoded(index, picture, l_small, given)


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


def _finish(
    job: Job, picture: Picture, prediction: Prediction, fmt: str, key: str, suggested: list[Hint]
) -> None:
    """Full-resolution colors (the picture's own L + the model's ab) and the outputs."""
    rgb = join(lightness(picture.rgb, torch.device("cpu")), prediction.ab)
    save_results(job, picture, rgb, fmt, key, prediction.uncertainty, suggested)


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
        self, job: Job, item: Decoded, prediction: Prediction, fmt: str, key: str, suggest: int
    ) -> None:
        uncertainty = prediction.uncertainty  # CPU copies: the encoding process gets their memory
        cpu = Prediction(prediction.ab.cpu(), None if uncertainty is None else uncertainty.cpu())
        suggested = _suggested(item, cpu, suggest) if job.suggest is not None else []
        assert item.picture is not None
        work = self.pool.submit(_finish, job, item.picture, cpu, fmt, key, suggested)
        self.pending.append((job, work))
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
    output: Output = OUTPUT,
    requests: Mapping[Path, Request] | None = None,
    model_id: str = "",
    on_failure: Callable[[Failure], None] | None = None,
    progress: bool = False,
) -> Summary:
    """Colorize `jobs` through the pipeline (see the module's docstring), each with its Request
    (`requests`, by source; none given: the plain one). Outputs complete for the same model
    (`model_id`), size, format and request are skipped; failures go to `on_failure` and into
    the summary; the rest go on."""
    summary, requests = Summary(), requests or {}

    def fail(path: Path, reason: str) -> None:
        summary.failures.append(Failure(path, reason))
        if on_failure is not None:
            on_failure(summary.failures[-1])

    output.check(colorizer, jobs)
    asked = {job.source: requests.get(job.source, NOTHING) for job in jobs}
    keys = {}
    for source, request in asked.items():
        colorizer.capabilities.check(request)
        caution = colorizer.capabilities.resolve_caution(request, "--caution")
        keys[source] = run_key(model_id, output.size, output.fmt, request, caution, output.suggest)
    clean_temporaries(jobs)
    todo = _plan(jobs, keys, output.overwrite, summary, fail)
    workers = min(output.workers, len(jobs))  # 2 files need no 128 processes
    bar = tqdm(total=len(todo), desc="colorizing", unit="img", disable=None if progress else True)
    writer = _Writer(workers, colorizer.batch_size, fail, lambda: _advance(bar))
    decode = _DecodeFiles(todo, _Shapes(colorizer, output.size), output.max_pixels, asked)
    try:
        for group in _decoded_groups(decode, colorizer, workers, fail, bar):
            l_small = torch.cat([item.l_small for item in group]).to(colorizer.device)  # type: ignore[misc]
            group_requests = [asked[todo[item.index].source] for item in group]
            given = [item.inputs for item in group]
            predicted = colorizer.predict_batch(l_small, group_requests, given)
            for item, prediction in zip(group, predicted, strict=True):
                job = todo[item.index]
                writer.submit(job, item, prediction, output.fmt, keys[job.source], output.suggest)
    finally:
        writer.close()
        bar.close()
    summary.written = writer.written
    return summary


def _suggested(item: Decoded, prediction: Prediction, n: int) -> list[Hint]:
    """The `n` points suggested for a decoded picture from the model's output (suggest.py),
    after the points it was given."""
    assert item.picture is not None and item.l_small is not None
    image_hw = (item.picture.rgb.shape[1], item.picture.rgb.shape[2])
    hint_map = item.inputs.get("hints")
    return suggest(item.l_small, prediction.ab, prediction.uncertainty, hint_map, n, image_hw)


def _advance(bar: tqdm) -> None:
    bar.update()


def _decoded_groups(
    dataset: _DecodeFiles, colorizer: Colorizer, workers: int,
    fail: Callable[[Path, str], None], bar: tqdm,
) -> Iterator[list[Decoded]]:  # fmt: skip
    """The decoded pictures, in groups of one working shape, as large as the batch size (and
    memory) allow; unreadable ones go to `fail`."""
    todo = dataset.jobs
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

    model: ModelChoice
    inputs: list[Path]
    out: Path
    output: Output = OUTPUT
    request: Request = NOTHING  # what every picture is asked with (a reference, a caution)
    hints: Path | None = None  # --hints FILE|DIR: the points of every image, or each its own
    side_by_side: bool = False
    uncertainty_map: bool = False  # also write <name>.uncertainty.png
    device: str = "auto"
    quiet: bool = False

    def plan(self) -> tuple[list[Job], dict[Path, Request], list[Failure]]:
        """The jobs, each one's Request, and the inputs that failed already (missing files, a
        bad hints file of one image)."""
        output = self.output
        jobs, failures = plan_jobs(
            self.inputs, self.out, output.fmt, self.side_by_side, self.uncertainty_map,
            output.suggest > 0,
        )  # fmt: skip
        requests, unusable = requests_for_jobs(jobs, self.request, self.hints)
        refused = {failure.path for failure in unusable}  # a bad file fails its image alone
        return [job for job in jobs if job.source not in refused], requests, failures + unusable

    def check(self, capabilities: Capabilities) -> None:
        """Refuse what the model cannot take, naming the option, before any file is read; then
        read the reference once (a file that cannot be read: one line naming it; a bank's
        images described here too, not in each decoding worker)."""
        if self.hints is not None:
            capabilities.need("hints", f"--hints {self.hints}")
        options = {"reference": f"--reference {self.request.reference}", "uncertainty": "--caution"}
        capabilities.check(self.request, options)
        if self.request.reference is not None:
            self.request.reference.read()


def run_colorize(run: FolderRun, report: Callable[[Failure], None]) -> tuple[int, int, int]:
    """`colorgan colorize`, alone or under torchrun (each rank its share of the files, on its
    own GPU): (written, skipped as complete, failed) over all ranks; rank 0 prints the
    summary."""
    info, device = ddp.init(run.device)
    try:
        with _signals_interrupt():
            jobs, requests, failures = run.plan()
            quiet = run.quiet or not info.is_main
            colorizer = load_for_folder(run.model, device, len(jobs), quiet)
            run.check(colorizer.capabilities)  # usage errors come first
            run.output.check(colorizer, jobs)
            if info.is_main:
                if colorizer.revision is not None and not run.quiet:
                    print(f"model {colorizer.source}")  # the commit: the run can be repeated
                for failure in failures:
                    report(failure)
            mine = shard(jobs, info.rank, info.world_size)
            progress = info.is_main and not run.quiet and len(mine) > 1
            model_id = _model_id(run.model.model, colorizer)
            summary = colorize_folder(
                colorizer, mine, run.output, requests, model_id, report, progress
            )
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
