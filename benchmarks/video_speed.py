"""End-to-end speed of colorizing a video: `video.colorize_video`'s whole run (decode, reference
preparation, model, color join, encode, the parts joined into the output) in frames per second,
with a profile of where the time goes, for each runtime (onnx, torch) and mode (independent
frames; steady, for a model that takes references).

The clip: a camera pan over a generated scene (colorgan.demo), made gray and encoded as H.264
at --width x --height (854 x 480 by default), 24 frames/s, with an AAC sine as its sound. Each
run is warmed up on a short clip first. The profile wraps the video path's functions and gives
each moment to the innermost one running (an exclusive profile, so the stages add up):

- `decode`: the source's frames decoded and converted to RGB (videofile.frames, rgb_of);
- `reference`: each frame's request (scene cut thumbnail, points, the references: the previous
  and key frames), the previous frame reduced, the inputs built at the working size
  (Request.inputs: the exemplar), the full-resolution L resized;
- `model`: the network (PyTorch, or the onnxruntime session);
- `join`: the full-resolution L and the predicted ab upsampled onto it, fitted into sRGB;
- `encode`: colored frames converted to YUV and encoded, the parts' state saved, the parts and
  audio joined into the output;
- `other`: the rest (tensor and PIL conversions between the stages, the progress counter).

The stages are wall time; `cpu ms` is the CPU time per frame of all the process's threads, what
a frame costs however busy the machine is (alone on 2 cores a frame takes between half of it
and all of it). Other work on a shared machine slows every stage: compare within one run.

    python benchmarks/video_speed.py --model runs/cpu-small-match/checkpoints/best.pt \\
        --model runs/cpu-small/checkpoints/best.pt --frames 48 --json video_speed.json

The models are exported to ONNX into a temporary folder (or give --onnx-dir to keep them).
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import av
import harness  # puts this repository's colorgan first on the path
import numpy as np
import torch

import colorgan.colorize
import colorgan.video
import colorgan.videoparts
from colorgan import Colorizer
from colorgan.color import rgb_to_gray_rgb
from colorgan.demo import draw_scene
from colorgan.errors import ColorganError
from colorgan.export import export_onnx
from colorgan.video import Coloring, VideoOptions, colorize_video
from colorgan.videoparts import Parts

STAGES = ("decode", "reference", "model", "join", "encode", "other")
HEADER = ["model", "runtime", "mode", "size", "frames/s", "cpu ms", *(f"{s} ms" for s in STAGES)]
RATE = 24
PAN = 3  # pixels per frame


class Profile:
    """An exclusive profile: each moment is given to the innermost stage running."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.stack = ["other"]
        self.mark = time.perf_counter()

    def _switch(self, push: str | None) -> None:
        now = time.perf_counter()
        self.seconds[self.stack[-1]] += now - self.mark
        self.mark = now
        if push is None:
            self.stack.pop()
        else:
            self.stack.append(push)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self._switch(name)
        try:
            yield
        finally:
            self._switch(None)

    def wrap(self, function: Callable[..., Any], name: str) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.stage(name):
                return function(*args, **kwargs)

        return timed

    def frames(self, real: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
        """videofile.frames, each frame's decoding timed as `decode`."""

        def timed(path: Path, *args: Any) -> Iterator[Any]:
            source = real(path, *args)
            try:
                while True:
                    with self.stage("decode"):
                        frame = next(source, None)
                    if frame is None:
                        return
                    yield frame
            finally:
                source.close()  # type: ignore[attr-defined]

        return timed


@contextlib.contextmanager
def profiled(profile: Profile, colorizer: Colorizer) -> Iterator[None]:
    """The video path's functions wrapped by `profile` while inside."""
    targets = [
        (colorgan.video, "rgb_of", "decode"),
        (colorgan.videoparts, "write_video", "encode"),
        (colorgan.video, "join", "join"),
        (colorgan.colorize, "lightness", "join"),
        (Coloring, "color", "other"),
        (Coloring, "_request", "reference"),
        (Coloring, "_keep", "reference"),
        (Colorizer, "predict_pictures", "reference"),
        (Parts, "save", "encode"),
        (Parts, "join", "encode"),
    ]
    with contextlib.ExitStack() as stack:
        for owner, name, stage in targets:
            timed = profile.wrap(getattr(owner, name), stage)
            stack.enter_context(mock.patch.object(owner, name, timed))
        frames = profile.frames(colorgan.video.frames)
        stack.enter_context(mock.patch.object(colorgan.video, "frames", frames))
        model = profile.wrap(colorizer.predict, "model")
        stack.enter_context(mock.patch.object(colorizer, "predict", model))
        yield


def write_clip(path: Path, frames: int, width: int, height: int) -> Path:
    """A gray pan over a generated scene, H.264 (crf 18) at RATE frames/s, with an AAC sine."""
    scene = np.asarray(draw_scene(np.random.default_rng(0), width + PAN * frames))
    rgb = torch.from_numpy(scene.copy()).permute(2, 0, 1)[None].float() / 255.0
    gray = (rgb_to_gray_rgb(rgb)[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    with av.open(str(path), "w") as output:
        stream = output.add_stream("libx264", rate=RATE, options={"crf": "18"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        sound = output.add_stream("aac", rate=16000, layout="mono")
        for t in range(frames):
            window = np.ascontiguousarray(gray[:height, t * PAN : t * PAN + width])
            frame = av.VideoFrame.from_ndarray(window, format="rgb24")
            frame.pts = t
            output.mux(stream.encode(frame))
        output.mux(stream.encode())
        wave = (0.2 * np.sin(np.arange(16000 * frames // RATE) / 3)).astype(np.float32)
        for start in range(0, len(wave), 1024):
            chunk = av.AudioFrame.from_ndarray(wave[None, start : start + 1024], "flt", "mono")
            chunk.sample_rate, chunk.pts = 16000, start
            output.mux(sound.encode(chunk))
        output.mux(sound.encode())
    return path


def measure(
    colorizer: Colorizer, clips: tuple[Path, Path], folder: Path, independent: bool,
    size: int | None,
) -> dict[str, Any]:  # fmt: skip
    """colorize_video's frames/s on the clip (after a warm-up clip) and its profile."""
    warm, clip = clips
    options = VideoOptions(independent_frames=independent, size=size, quiet=True)
    colorize_video(colorizer, warm, folder / "colored" / "warm.mp4", options)
    profile = Profile()
    with profiled(profile, colorizer):
        started, cpu = time.perf_counter(), time.process_time()
        report = colorize_video(colorizer, clip, folder / "colored" / "clip.mp4", options)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    profile._switch("other")  # the last moments, to the bottom stage
    per_frame = {k: 1000 * v / report.frames for k, v in profile.seconds.items()}
    # CPU time (all of this process's threads) is what the run costs whatever else runs: alone
    # on 2 cores its wall time is between half of it (both busy) and all of it (one busy)
    return {"frames": report.frames, "seconds": seconds, "cpu_seconds": cpu,
            "frames_per_second": report.frames / seconds, "ms_per_frame": per_frame,
            "cpu_ms_per_frame": 1000 * cpu / report.frames}  # fmt: skip


@contextlib.contextmanager
def onnx_threads(threads: int | None) -> Iterator[None]:
    """onnxruntime sessions made inside use `threads` intra-op threads (None: its default)."""
    import onnxruntime

    class Options(onnxruntime.SessionOptions):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            if threads is not None:
                self.intra_op_num_threads = threads

    with mock.patch.object(onnxruntime, "SessionOptions", Options):
        yield


def colorizers(
    model: Path, runtimes: list[str], onnx_dir: Path, threads: int | None
) -> Iterator[tuple[str, Colorizer]]:
    """The model in each runtime (exported to ONNX once)."""
    for runtime in runtimes:
        if runtime == "torch":
            yield runtime, Colorizer.from_checkpoint(model, "cpu")
            continue
        path = onnx_dir / f"{model.parent.parent.name}-{model.stem}.onnx"
        if not path.is_file():
            try:
                export_onnx(model, path)
            except ColorganError as err:  # the export's own check; its file is still there
                if not path.is_file():
                    raise
                print(f"warning: {err}; measured anyway", flush=True)
        with onnx_threads(threads):
            colorizer = Colorizer.from_onnx(path, "cpu")
        yield runtime, colorizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, action="append", required=True,
                        help="a checkpoint (.pt); repeat for several")  # fmt: skip
    parser.add_argument("--runtimes", default="onnx,torch")
    parser.add_argument("--modes", default="independent,steady")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--width", type=int, default=854)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--size", type=int, action="append",
                        help="working size (repeat; default: each model's own)")  # fmt: skip
    parser.add_argument("--onnx-dir", type=Path)
    parser.add_argument("--threads", type=int, help="torch's and onnxruntime's (default: cores)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    meta = harness.machine(torch.device("cpu"))
    print(harness.describe(meta))
    rows, results = [], []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        onnx_dir = args.onnx_dir or folder
        onnx_dir.mkdir(parents=True, exist_ok=True)
        clips = (write_clip(folder / "warm.mp4", 6, args.width, args.height),
                 write_clip(folder / "clip.mp4", args.frames, args.width, args.height))  # fmt: skip
        for model in args.model:
            for runtime, colorizer in colorizers(
                model, args.runtimes.split(","), onnx_dir, args.threads
            ):
                steady = colorizer.capabilities.reference
                modes = [m for m in args.modes.split(",") if m == "independent" or steady]
                for mode in modes:
                    for size in args.size or [None]:
                        found = measure(colorizer, clips, folder, mode == "independent", size)
                        where = {"model": str(model), "runtime": runtime, "mode": mode,
                                 "size": size or colorizer.image_size}  # fmt: skip
                        results.append(where | found)
                        ms = [found["ms_per_frame"][s] for s in STAGES]
                        name = model.parent.parent.name
                        fps = found["frames_per_second"]
                        cpu = found["cpu_ms_per_frame"]
                        rows.append([name, runtime, mode, where["size"], fps, cpu, *ms])
                        print(harness.table(HEADER, rows[-1:]), flush=True)
    print()
    print(harness.table(HEADER, rows))
    harness.write_json(args.json, {"machine": meta, "clip": [args.width, args.height, args.frames],
                                   "results": results})  # fmt: skip


if __name__ == "__main__":
    main()
