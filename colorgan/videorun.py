"""`colorgan colorize` with video inputs: each video file given as an INPUT is colorized into
`--out/<its name>` (same container), one after another, beside the images the folder pipeline
colorizes. A video already in `--out` is skipped unless `--overwrite` (an interrupted one
resumes from its parts: video.py).

Under torchrun each video is split between the ranks at key frames (VideoJob.segment, from the
packets' key-frame flags: nothing decoded): each rank seeks to its key frame and colors one
contiguous segment into the video's parts folder, a new shot at its start, and rank 0 joins the
parts in order with the audio. Every rank ends with the same counts (one exit status); rank 0
alone prints the summary and the failures."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from colorgan import ddp
from colorgan.errors import ColorganError
from colorgan.hints import load_hints
from colorgan.jobs import Failure
from colorgan.pipeline import FolderRun
from colorgan.runtime import load_for_folder
from colorgan.video import (
    SegmentReport,
    VideoJob,
    VideoOptions,
    is_video,
)

FRAMES_FOR_RUNTIME = 10**6  # a video counts as many pictures when the runtime is chosen


def split_inputs(inputs: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """(images and folders, video files) among colorize's INPUTs."""
    videos = [p for p in inputs if p.is_file() and is_video(p)]
    return [p for p in inputs if p not in videos], videos


def _options(run: FolderRun, independent: bool) -> VideoOptions:
    """The VideoOptions of `run`: --hints FILE gives every frame its points, DIR each frame its
    own file."""
    request = run.request
    hints_dir = run.hints if run.hints is not None and run.hints.is_dir() else None
    if run.hints is not None and hints_dir is None:
        request = request.with_points(load_hints(run.hints))  # the same points in every frame
    return VideoOptions(
        independent_frames=independent,
        size=run.output.size,
        request=request,
        hints_dir=hints_dir,
        quiet=run.quiet,
    )


def run_videos(
    run: FolderRun, videos: Sequence[Path], independent: bool, report: Callable[[Failure], None]
) -> tuple[int, int, int]:
    """Colorize `videos` as `run` asks, alone or split between torchrun's ranks: (written,
    skipped as done, failed), the same on every rank."""
    info, device = ddp.init(run.device)
    options = _options(run, independent)
    if not info.is_main:
        ddp.barrier(info)  # rank 0 exports the model to ONNX (cached) first, if it is to be
    colorizer = load_for_folder(
        run.model, device, FRAMES_FOR_RUNTIME, run.quiet or not info.is_main
    )
    if info.is_main:
        ddp.barrier(info)
    written = skipped = failed = 0
    seen: set[Path] = set()
    for video in videos:
        dst = run.out / video.name
        if dst in seen:
            failed += 1
            if info.is_main:
                report(Failure(video, f"another input already writes {dst}; rename one"))
            continue
        seen.add(dst)
        if dst.exists() and not run.output.overwrite:
            skipped += 1
            continue
        plan = functools.partial(VideoJob.plan, colorizer, video, dst, options)
        reports, seconds, error = _colorize(plan, info)
        if error is not None:
            failed += 1
            if info.is_main:  # the reason without the name the report puts first
                report(Failure(video, error.removeprefix(f"{video}: ")))
            continue
        written += 1
        if info.is_main and not run.quiet:
            print(_summary(video, dst, reports, seconds), flush=True)
    return written, skipped, failed


def _colorize(
    plan: Callable[[], VideoJob], info: ddp.Dist
) -> tuple[list[SegmentReport], float, str | None]:
    """Color one video (`plan` checks and probes it), each rank its segment, and join it on
    rank 0: every rank's report, the seconds, and the first rank's error, the same on every
    rank."""
    started = time.perf_counter()
    job, error = _attempt(plan)
    if job is not None and info.is_main:
        error = _attempt(job.open)[1]
    error = _first(ddp.gather_objects(error, info))  # rank 0's folder is ready (or failed)
    if job is None or error is not None:
        return [], 0.0, error
    segment, error = _attempt(lambda: job.segment(info.rank, info.world_size))
    show = info.is_main and not job.options.quiet
    done = None
    if segment is not None:
        done, error = _attempt(lambda: job.color(segment, show))
    every = ddp.gather_objects((done, error), info)
    error = _first([e for _, e in every])
    reports = [r for r, _ in every if r is not None]
    if error is None and info.is_main:
        error = _attempt(lambda: job.join(sum(r.frames for r in reports)))[1]
    error = _first(ddp.gather_objects(error, info))
    return reports, time.perf_counter() - started, error


def _attempt(work: Callable[[], object]) -> tuple:
    """(work's value, None), or (None, the one-line reason) of a ColorganError."""
    try:
        return work(), None
    except ColorganError as err:
        return None, str(err)


def _first(errors: Sequence[str | None]) -> str | None:
    return next((e for e in errors if e is not None), None)


def _summary(video: Path, dst: Path, reports: list[SegmentReport], seconds: float) -> str:
    """One line for a colored video: frames, frames/s (colored this run), cuts; the ranks'
    shares under torchrun."""
    frames = sum(r.frames for r in reports)
    speed = sum(r.colored for r in reports) / max(seconds, 1e-9)
    ranks = f" (ranks: {' + '.join(str(r.frames) for r in reports)})" if len(reports) > 1 else ""
    cuts = sum(r.cuts for r in reports)
    return f"{video} -> {dst}: {frames} frames{ranks}, {speed:.1f} frames/s, {cuts} scene cut(s)"
