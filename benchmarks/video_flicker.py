"""Flicker of colorized video: steady colors (video.py) against frames colored alone, on clips
whose every frame's truth is known.

Clips: each still color picture (--inputs, or generated scenes of colorgan.demo) under a known
camera motion (`pan`, `zoom`, `rotate`: every frame an affine warp of the still), and generated
scenes with a disc moving over them (`disc`: a still camera). The clip's gray (Lab L kept) is
encoded as an .mp4, colorized by `video.colorize_video` in each mode, decoded and measured:

- `delta_e`: mean CIEDE2000 against the true frames (colorgan.metrics), lower is better;
- `flicker`: mean |Δab| (Lab units) between consecutive output frames after undoing the known
  motion (frame t+1 warped back onto frame t; pixels that left the frame, and the disc's, are
  left out); `truth_flicker` is the same of the true frames (what resampling alone gives);
- `cdc`: the color distribution consistency of TCVC and the NTIRE 2023 video colorization
  challenge: the Jensen-Shannon divergence (nats) of frames' 256-bin R, G and B histograms at
  frame distances 1, 2 and 4, averaged; `ab_jsd`: the same of consecutive frames' ab histograms
  (8-unit bins);
- `frames_per_second`: colorize_video's whole run (decode, model, encode, join).

Modes: `independent` (each frame alone), `steady` (the previous frame and the shot's keyframe as
references), the same with the true frame 0 as the user's reference (`+ref0`: steady then takes
the user's alone, as video.py does by default) and `steady+ref0+frames` (the user's reference
and the frames, `frames_with_user_reference`). Without --model a random-weight recipe model
(configs/cpu-small.yaml with model.reference=true) runs, so the script runs anywhere; its
figures measure the machinery, not colors.

    python benchmarks/video_flicker.py --model runs/x/checkpoints/best.pt \\
        --inputs ../shared/data/anime/unseen --count 3 --frames 24 --json flicker.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import harness  # puts this repository's colorgan first on the path
import numpy as np
import torch
import torch.nn.functional as F
from kornia.color import rgb_to_lab
from PIL import Image, ImageDraw

from colorgan import Colorizer, Request
from colorgan.checkpoint import save_checkpoint
from colorgan.color import rgb_to_gray_rgb
from colorgan.config import load_config, to_dict
from colorgan.demo import draw_scene
from colorgan.files import find_images, load_rgb
from colorgan.metrics import delta_e2000
from colorgan.models import build_generator
from colorgan.video import VideoOptions, colorize_video

CONFIG = harness.REPO / "configs" / "cpu-small.yaml"
MARGIN = 1.5  # the still is this many times the frame: the motion never leaves it
PAN = 1.5  # pixels per frame (of the frame)
ZOOM = 0.008  # scale change per frame
ROTATE = 0.4  # degrees per frame
RATE = 24
# each mode's VideoOptions, and whether the true frame 0 is the user's reference
MODES: dict[str, tuple[dict[str, bool], bool]] = {
    "independent": ({"independent_frames": True}, False),
    "steady": ({}, False),
    "independent+ref0": ({"independent_frames": True}, True),
    "steady+ref0": ({}, True),  # the user's reference alone, a bank's chosen once per shot
    "steady+ref0+frames": ({"frames_with_user_reference": True}, True),
}


@dataclass
class Clip:
    """A clip whose truth is known: its true frames (T, 3, H, W) in [0, 1], each consecutive
    pair's warp back (T - 1, 2, 3) and where the pair may be compared (T - 1, H, W)."""

    name: str
    truth: torch.Tensor
    back: torch.Tensor
    valid: torch.Tensor


def random_model(path: Path, size: int) -> Path:
    """The recipe's generator with a reference (model.reference and its match), seeded random
    weights, trained at `size`."""
    config = load_config(CONFIG, ["model.reference=true", f"data.image_size={size}"])
    torch.manual_seed(0)
    generator = build_generator(config.model)
    save_checkpoint({"config": to_dict(config), "generator": generator.state_dict()}, path)
    return path


def stills(inputs: Path | None, count: int, side: int) -> list[tuple[str, torch.Tensor]]:
    """`count` color stills (1, 3, h, w) in [0, 1], their short side MARGIN * `side`: the first
    pictures of --inputs, or generated scenes."""
    want = math.ceil(MARGIN * side)
    if inputs is None:
        rng = np.random.default_rng(0)
        images = [(f"scene{i}", draw_scene(rng, want)) for i in range(count)]
    else:
        images = [(p.stem, load_rgb(p, want)) for p in find_images(inputs)[:count]]
    found = []
    for name, image in images:
        scale = want / min(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)))
        array = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None]
        found.append((name, array.float() / 255.0))
    return found


def motion(kind: str, t: int) -> torch.Tensor:
    """Frame t's camera (3, 3): centered frame pixels -> centered still pixels."""
    if kind == "pan":
        return torch.tensor([[1.0, 0.0, PAN * t], [0.0, 1.0, 0.3 * PAN * t], [0.0, 0.0, 1.0]])
    if kind == "zoom":
        scale = 1.0 / (1.0 + ZOOM * t)
        return torch.diag(torch.tensor([scale, scale, 1.0]))
    angle = math.radians(ROTATE * t)
    cos, sin = math.cos(angle), math.sin(angle)
    return torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])


def theta(
    matrix: torch.Tensor, frame_hw: tuple[int, int], source_hw: tuple[int, int]
) -> torch.Tensor:
    """A centered-pixel map (3, 3) as affine_grid's (2, 3) in normalised coordinates."""
    to_frame = torch.diag(torch.tensor([frame_hw[1] / 2, frame_hw[0] / 2, 1.0]))
    from_source = torch.diag(torch.tensor([2 / source_hw[1], 2 / source_hw[0], 1.0]))
    return (from_source @ matrix @ to_frame)[:2]


def warp(image: torch.Tensor, matrices: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """`image` (1 or T, 3, h, w) sampled through each (T, 2, 3) into (T, 3, H, W), bilinear."""
    grid = F.affine_grid(matrices, [len(matrices), 3, *hw], align_corners=False)
    return F.grid_sample(image.expand(len(matrices), -1, -1, -1), grid, align_corners=False,
                         padding_mode="border")  # fmt: skip


def camera_clip(name: str, still: torch.Tensor, kind: str, frames: int, side: int) -> Clip:
    """`still` seen by a camera moving as `kind` says, frames `side` x 4/3 `side`."""
    hw, source = (side, side * 4 // 3), (still.shape[2], still.shape[3])
    cameras = [motion(kind, t) for t in range(frames)]
    truth = warp(still, torch.stack([theta(c, hw, source) for c in cameras]), hw)
    # frame t+1 seen from frame t: its pixel for t's p is at camera[t+1]^-1 camera[t] p
    backs = [torch.linalg.inv(b) @ a for a, b in itertools.pairwise(cameras)]
    back = torch.stack([theta(m, hw, hw) for m in backs])
    grid = F.affine_grid(back, [len(back), 3, *hw], align_corners=False)
    valid = (grid.abs() < 1.0 - 2.0 / min(hw)).all(-1)  # (T - 1, H, W): still inside t+1
    return Clip(f"{name}/{kind}", truth.clamp(0, 1), back, valid)


def disc_clip(seed: int, frames: int, side: int) -> Clip:
    """A generated scene with a colored disc moving across it; the camera still."""
    rng = np.random.default_rng(100 + seed)
    background = draw_scene(rng, side * 4 // 3).crop((0, 0, side * 4 // 3, side))
    color = tuple(int(v) for v in rng.integers(0, 256, 3))
    radius, masks, truth = side // 8, [], []
    for t in range(frames):
        image = background.copy()
        x, y = radius + t * (side // frames + 1), side // 2 + int(10 * math.sin(t / 3))
        ImageDraw.Draw(image).ellipse((x - radius, y - radius, x + radius, y + radius), color)
        mask = Image.new("L", image.size)
        ImageDraw.Draw(mask).ellipse((x - radius - 2, y - radius - 2, x + radius + 2,
                                      y + radius + 2), 255)  # fmt: skip
        masks.append(torch.from_numpy(np.asarray(mask) > 0))
        truth.append(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255)
    valid = torch.stack([~(a | b) for a, b in itertools.pairwise(masks)])
    back = torch.eye(3)[:2].expand(frames - 1, 2, 3)
    return Clip(f"scene{seed}/disc", torch.stack(truth), back, valid)


def write_gray(path: Path, truth: torch.Tensor) -> Path:
    """The clip's gray (Lab L kept) as an H.264 .mp4 at RATE frames/s, nearly lossless."""
    gray = (rgb_to_gray_rgb(truth) * 255).round().clamp(0, 255).to(torch.uint8)
    with av.open(str(path), "w") as output:
        stream = output.add_stream("libx264", rate=RATE, options={"crf": "8"})
        stream.width, stream.height, stream.pix_fmt = truth.shape[3], truth.shape[2], "yuv420p"
        for t, frame in enumerate(gray.permute(0, 2, 3, 1).numpy()):
            video = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            video.pts = t
            output.mux(stream.encode(video))
        output.mux(stream.encode())
    return path


def read_frames(path: Path) -> torch.Tensor:
    """A video's frames (T, 3, H, W) in [0, 1]."""
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255.0


def flicker(frames: torch.Tensor, clip: Clip) -> float:
    """Mean |Δab| (Lab units) of consecutive frames (T, 3, H, W) after undoing the motion."""
    grid = F.affine_grid(clip.back, [len(clip.back), 3, *frames.shape[2:]], align_corners=False)
    later = F.grid_sample(frames[1:], grid, align_corners=False, padding_mode="border")
    ab_now, ab_later = rgb_to_lab(frames[:-1])[:, 1:], rgb_to_lab(later.clamp(0, 1))[:, 1:]
    change = (ab_now - ab_later).norm(dim=1)  # (T - 1, H, W)
    return float(change[clip.valid].mean())


def _jsd(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence (nats) of distributions along the last dimension."""
    m = (p + q) / 2

    def kl(a: torch.Tensor) -> torch.Tensor:
        return torch.where(a > 0, a * (a / m.clamp_min(1e-12)).log(), torch.zeros_like(a)).sum(-1)

    return (kl(p) + kl(q)) / 2


def cdc(frames: torch.Tensor, dilations: tuple[int, ...] = (1, 2, 4)) -> float:
    """TCVC's / NTIRE 2023's CDC of frames (T, 3, H, W) in [0, 1]: per channel 256-bin
    histograms, JSD of frames `d` apart, mean over pairs and channels, then over `d`."""
    levels = (frames * 255).round().long().clamp(0, 255).flatten(2)  # (T, 3, HW)
    hist = torch.zeros(*levels.shape[:2], 256).scatter_add_(
        2, levels, torch.ones_like(levels, dtype=torch.float)
    )
    hist /= levels.shape[2]
    found = [float(_jsd(hist[:-d], hist[d:]).mean()) for d in dilations if d < len(frames)]
    return statistics.mean(found)


def ab_jsd(frames: torch.Tensor, step: float = 8.0) -> float:
    """Mean JSD (nats) of consecutive frames' ab histograms (bins of `step` Lab units)."""
    ab = rgb_to_lab(frames)[:, 1:].flatten(2)  # (T, 2, HW)
    side = int(256 / step)
    cells = ((ab + 128) / step).long().clamp(0, side - 1)
    index = cells[:, 0] * side + cells[:, 1]  # (T, HW)
    hist = torch.zeros(len(frames), side * side).scatter_add_(
        1, index, torch.ones_like(index, dtype=torch.float)
    )
    hist /= index.shape[1]
    return float(_jsd(hist[:-1], hist[1:]).mean())


def measure(
    colorizer: Colorizer, clip: Clip, folder: Path, mode: str, size: int | None
) -> dict[str, Any]:
    """Colorize the clip's gray in `mode` and measure it against the truth."""
    src = folder / "gray.mp4"
    if not src.exists():
        write_gray(src, clip.truth)
    settings, ref0 = MODES[mode]
    request = Request()
    if ref0:
        first = (clip.truth[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        request = Request.of(reference=[Image.fromarray(first)])
    options = VideoOptions(size=size, request=request, quiet=True, **settings)
    out = folder / f"{mode}.mp4"
    report = colorize_video(colorizer, src, out, options)
    frames = read_frames(out)
    assert len(frames) == len(clip.truth), (len(frames), len(clip.truth))
    return {
        "delta_e": float(delta_e2000(frames, clip.truth).mean()),
        "flicker": flicker(frames, clip),
        "cdc": cdc(frames),
        "ab_jsd": ab_jsd(frames),
        "frames_per_second": report.frames_per_second,
        "cuts": report.cuts,
    }


def clips(args: argparse.Namespace) -> list[Clip]:
    """The camera clips of each still and the disc scenes."""
    found = []
    for name, still in stills(args.inputs, args.count, args.side):
        for kind in ("pan", "zoom", "rotate"):
            found.append(camera_clip(name, still, kind, args.frames, args.side))
    found += [disc_clip(seed, args.frames, args.side) for seed in range(args.discs)]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="MODEL (default: a random recipe model)")
    parser.add_argument("--inputs", type=Path, help="a folder of still color pictures")
    parser.add_argument("--count", type=int, default=2, help="stills used")
    parser.add_argument("--discs", type=int, default=1, help="moving-disc scenes")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--side", type=int, default=192, help="the frames' short side")
    parser.add_argument("--size", type=int, help="working size (default: the model's)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or random_model(Path(tmp) / "random.pt", args.size or 128)
        colorizer = Colorizer.from_checkpoint(model, args.device)
        rows = []
        for number, clip in enumerate(clips(args)):
            folder = Path(tmp) / f"clip{number}"
            folder.mkdir()
            truth_flicker = flicker(clip.truth, clip)
            for mode in MODES:
                row = {"clip": clip.name, "mode": mode, "truth_flicker": truth_flicker}
                row |= measure(colorizer, clip, folder, mode, args.size)
                rows.append(row)
                print(json.dumps({k: round(v, 4) if isinstance(v, float) else v
                                  for k, v in row.items()}))  # fmt: skip
    summary = summarize(rows)
    for mode, values in summary.items():
        print(mode.ljust(18), "  ".join(f"{k} {v:.4f}" for k, v in values.items()))
    if args.json:
        result = {"model": str(args.model or "random"), "args": {k: str(v) for k, v in
                  vars(args).items()}, "machine": harness.machine(colorizer.device),
                  "summary": summary, "rows": rows}  # fmt: skip
        args.json.write_text(json.dumps(result, indent=1))


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Each mode's mean of every figure over the clips."""
    keys = ("delta_e", "flicker", "truth_flicker", "cdc", "ab_jsd", "frames_per_second")
    return {
        mode: {k: statistics.mean(r[k] for r in rows if r["mode"] == mode) for k in keys}
        for mode in MODES
    }


if __name__ == "__main__":
    main()
