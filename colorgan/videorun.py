"""`colorgan colorize` with video inputs: each video file given as an INPUT is colorized by
video.colorize_video into `--out/<its name>` (same container), one after another, beside the
images the folder pipeline colorizes. A video already in `--out` is skipped unless
`--overwrite` (an interrupted one resumes from its parts: video.py)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from colorgan.device import resolve_device
from colorgan.errors import ColorganError
from colorgan.hints import load_hints
from colorgan.jobs import Failure
from colorgan.pipeline import FolderRun
from colorgan.runtime import load_for_folder
from colorgan.video import VideoOptions, colorize_video, is_video

FRAMES_FOR_RUNTIME = 10**6  # a video counts as many pictures when the runtime is chosen


def split_inputs(inputs: Sequence[Path]) -> tuple[list[Path], list[Path]]:
    """(images and folders, video files) among colorize's INPUTs."""
    videos = [p for p in inputs if p.is_file() and is_video(p)]
    return [p for p in inputs if p not in videos], videos


def run_videos(
    run: FolderRun, videos: Sequence[Path], independent: bool, report: Callable[[Failure], None]
) -> tuple[int, int, int]:
    """Colorize `videos` as `run` asks: (written, skipped as done, failed)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ColorganError(
            "videos are not split between torchrun's ranks yet; colorize them without torchrun"
        )
    request = run.request
    hints_dir = run.hints if run.hints is not None and run.hints.is_dir() else None
    if run.hints is not None and hints_dir is None:
        request = request.with_points(load_hints(run.hints))  # the same points in every frame
    options = VideoOptions(
        independent_frames=independent,
        size=run.output.size,
        request=request,
        hints_dir=hints_dir,
        quiet=run.quiet,
    )
    colorizer = load_for_folder(
        run.model, resolve_device(run.device), FRAMES_FOR_RUNTIME, run.quiet
    )
    written = skipped = failed = 0
    seen: set[Path] = set()
    for video in videos:
        dst = run.out / video.name
        if dst in seen:
            report(Failure(video, f"another input already writes {dst}; rename one"))
            failed += 1
            continue
        seen.add(dst)
        if dst.exists() and not run.output.overwrite:
            skipped += 1
            continue
        try:
            done = colorize_video(colorizer, video, dst, options)
        except ColorganError as err:
            report(Failure(video, str(err)))
            failed += 1
            continue
        written += 1
        if not run.quiet:
            print(f"{video} -> {dst}: {done.frames} frames, {done.frames_per_second:.1f} frames/s, "
                  f"{done.cuts} scene cut(s)")  # fmt: skip
    return written, skipped, failed
