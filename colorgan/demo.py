"""The embedded demo: procedural cartoon scenes, a few minutes of training, a report.

The scenes are made so that color follows from shape, texture and position, not from lightness:
every kind of thing has a fixed hue and saturation but a random lightness, size and place (blue
sky at the top, a yellow sun disk, white clouds, hatched green hills, tan houses with red roofs
and brown doors, trees with brown trunks and green crowns; black outlines as in a cartoon).
"""

from __future__ import annotations

import colorsys
import json
import logging
import math
import os
import shutil
import statistics
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from colorgan.batch import to_batch
from colorgan.checkpoint import load_generator
from colorgan.color import uint8_to_float
from colorgan.config import Config, load_config
from colorgan.data import ColorImages, scan_images, split_paths
from colorgan.device import resolve_device
from colorgan.errors import DemoError
from colorgan.evaluate import Scoring, colorize_crops, evaluate_images
from colorgan.figures import image_grid
from colorgan.files import find_images
from colorgan.generator import ColorModel
from colorgan.scores import format_table
from colorgan.state import build_state
from colorgan.train import train, train_step

log = logging.getLogger("colorgan")

# A small, fast recipe: pix2pix's L1 + GAN loss with a light (16-channel) PatchGAN, no VGG (no
# download), 64 px, depth 6. Measured on 1 CPU thread: ~0.13 s a step, ΔE00 ~2.8 in 3 minutes.
DEMO_SETTINGS = (
    "data.image_size=64",
    "model.encoder=unet",
    "model.base_channels=16",
    "model.depth=6",
    "model.disc_channels=16",
    "loss.perceptual_weight=0",
    "optim.lr=5e-4",
    "train.batch_size=16",
    "train.num_workers=0",
    "train.keep_checkpoints=1",
    "train.val_images=64",
)
SCENE_SIZE = 128  # pixels of the written PNGs; training resizes them to data.image_size
N_TRAIN, N_VAL = 800, 64
SEED = 2024
_EVAL_RESERVE_S = 8.0  # kept back from the budget for the final evaluation and figures
_OUTLINE = (0, 0, 0)


MAX_MINUTES = 7 * 24 * 60.0


def _hls(hue: float, lightness: float, saturation: float) -> tuple[int, int, int]:
    """An 8-bit RGB color from hue in degrees, lightness and saturation in [0, 1]."""
    r, g, b = colorsys.hls_to_rgb(hue / 360.0, min(max(lightness, 0.0), 1.0), saturation)
    return round(r * 255), round(g * 255), round(b * 255)


def _sky(draw: ImageDraw.ImageDraw, rng: np.random.Generator, s: int) -> None:
    """Blue sky, darker at the top; a yellow sun; zero to two white clouds."""
    lightness = rng.uniform(0.55, 0.8)
    for row in range(s):
        draw.line([(0, row), (s, row)], fill=_hls(210, lightness - 0.15 * (1 - row / s), 0.75))
    r = rng.uniform(0.07, 0.14) * s
    x, y = rng.uniform(r, s - r), rng.uniform(r, 0.35 * s)
    sun = _hls(50, rng.uniform(0.5, 0.65), 0.95)
    draw.ellipse((x - r, y - r, x + r, y + r), fill=sun, outline=_OUTLINE, width=2)
    for _ in range(int(rng.integers(0, 3))):
        x, y, w = rng.uniform(0, s), rng.uniform(0.05, 0.35) * s, rng.uniform(0.12, 0.25) * s
        white = _hls(0, rng.uniform(0.88, 0.98), 0.0)
        for dx in (-w / 2, 0.0, w / 2):
            rx = w * (0.35 if dx else 0.5)
            box = (x + dx - rx, y - 0.7 * rx, x + dx + rx, y + 0.7 * rx)
            draw.ellipse(box, fill=white, outline=_OUTLINE, width=1)


def _hills(image: Image.Image, rng: np.random.Generator) -> float:
    """Green hills hatched with darker diagonal lines; returns the horizon's mean height."""
    s = image.width
    horizon = rng.uniform(0.5, 0.68) * s
    phase, amplitude, waves = (
        rng.uniform(0, 2 * math.pi),
        rng.uniform(0.01, 0.05) * s,
        rng.uniform(1, 3),
    )
    xs = np.linspace(0, s, 33)
    ridge = [
        (float(x), float(horizon + amplitude * math.sin(phase + waves * 2 * math.pi * x / s)))
        for x in xs
    ]
    lightness = rng.uniform(0.32, 0.52)
    hatched = Image.new("RGB", image.size, _hls(110, lightness, 0.55))
    hatch = ImageDraw.Draw(hatched)
    step = int(rng.integers(5, 9))
    for k in range(-s, s, step):
        hatch.line([(k, s), (k + s, 0)], fill=_hls(110, lightness - 0.14, 0.55), width=1)
    mask = Image.new("L", image.size, 0)
    ImageDraw.Draw(mask).polygon([*ridge, (s, s), (0, s)], fill=255)
    image.paste(hatched, (0, 0), mask)
    ImageDraw.Draw(image).line(ridge, fill=_OUTLINE, width=2)
    return horizon


def _house(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, x: float, base: float, s: float
) -> None:
    """A tan house with a red roof and a brown door standing at (x, base); `s` sets its size."""
    w, h = rng.uniform(0.18, 0.26) * s, rng.uniform(0.12, 0.18) * s
    left, top = x - w / 2, base - h
    wall = _hls(35, rng.uniform(0.62, 0.8), 0.45)
    draw.rectangle((left, top, left + w, base), fill=wall, outline=_OUTLINE, width=1)
    peak = top - rng.uniform(0.08, 0.13) * s
    roof = [(left - 0.1 * w, top), (left + 1.1 * w, top), (x, peak)]
    draw.polygon(roof, fill=_hls(0, rng.uniform(0.35, 0.52), 0.75), outline=_OUTLINE)
    door = (x - 0.11 * w, base - 0.55 * h, x + 0.11 * w, base)
    draw.rectangle(door, fill=_hls(25, rng.uniform(0.18, 0.3), 0.6), outline=_OUTLINE)


def _tree(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, x: float, base: float, s: float
) -> None:
    """A tree with a brown trunk and a round green crown standing at (x, base); `s`: size."""
    w, h = rng.uniform(0.03, 0.05) * s, rng.uniform(0.08, 0.14) * s
    trunk = _hls(25, rng.uniform(0.25, 0.38), 0.55)
    draw.rectangle((x - w / 2, base - h, x + w / 2, base), fill=trunk, outline=_OUTLINE, width=1)
    r = rng.uniform(0.07, 0.11) * s
    y = base - h - 0.7 * r
    crown = _hls(130, rng.uniform(0.28, 0.42), 0.6)
    draw.ellipse((x - r, y - r, x + r, y + r), fill=crown, outline=_OUTLINE, width=1)


def draw_scene(rng: np.random.Generator, size: int = SCENE_SIZE) -> Image.Image:
    """One cartoon landscape, `size` x `size` RGB: sky, sun, clouds, hills, houses, trees."""
    image = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(image)
    _sky(draw, rng, size)
    horizon = _hills(image, rng)
    things = ["house"] * int(rng.integers(0, 3)) + ["tree"] * int(rng.integers(1, 4))
    rng.shuffle(things)
    bases = sorted(rng.uniform(horizon + 0.05 * size, 0.97 * size, len(things)))
    for kind, base in zip(things, bases, strict=True):  # back to front
        x = rng.uniform(0.05, 0.95) * size
        scale = (0.6 + 0.8 * (base - horizon) / (size - horizon)) * size  # nearer is larger
        (_house if kind == "house" else _tree)(draw, rng, x, base, scale)
    return image


def write_scenes(folder: Path, count: int, seed: int, size: int = SCENE_SIZE) -> Path:
    """Write `count` seeded scenes as folder/scene_NNNN.png (replacing earlier ones)."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("scene_*.png"):
        old.unlink()
    rng = np.random.default_rng(seed)
    for i in range(count):
        draw_scene(rng, size).save(folder / f"scene_{i:04d}.png")
    return folder


def measure_step_seconds(config: Config, paths: Sequence[Path], steps: int = 3) -> float:
    """Seconds one training step of `config` takes on its device, on the first batch of
    `paths` (median of `steps` steps after a warm-up step)."""
    device = resolve_device(config.train.device)
    state = build_state(config, device, steps_per_epoch=1)
    crops = ColorImages(paths[: config.train.batch_size], config.data.image_size, train=True)
    batch = to_batch(crops.crops(len(crops)), device)
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        train_step(state, batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def fit_budget(
    config: Config, n_train: int, n_val: int, seconds: float, step_seconds: float
) -> Config:
    """`config` with train.epochs chosen so that training takes about `seconds`, and
    train.max_minutes set to `seconds` as a safety net; at least one epoch."""
    t = config.train
    val_batches = math.ceil(min(n_val, t.val_images) / t.batch_size)
    # Loading adds ~5% to a step; validation (forward only), samples, curves and checkpoints
    # add a roughly fixed cost per epoch (measured: under a second at 64 px).
    steps = 1.05 * max(1, n_train // t.batch_size) + 0.5 * val_batches
    epochs = max(1, int(seconds // (steps * step_seconds + 1.0)))
    return replace(config, train=replace(t, epochs=epochs, max_minutes=max(seconds, 1.0) / 60.0))


def _folder_data(config: Config, data: Path) -> list[Path]:
    """The usable color images of a real folder (at most data.max_images of them)."""
    usable = scan_images(data, config.data.gray_threshold, limit=config.data.max_images).usable
    if len(usable) <= config.train.batch_size:
        raise DemoError(
            f"{data}: only {len(usable)} usable color image(s); the demo needs more than "
            f"train.batch_size={config.train.batch_size}"
        )
    return usable


def fit_folder(
    config: Config, usable: list[Path], budget_images: float
) -> tuple[Config, list[Path], list[Path]]:
    """The config (data.max_images lowered so that one epoch fits the budget) and the train and
    held-out images that train() will use."""
    d = config.data
    keep = len(usable)
    if budget_images < keep * (1 - d.val_fraction):
        keep = max(config.train.batch_size + 1, int(budget_images / (1 - d.val_fraction)))
        config = replace(config, data=replace(d, max_images=keep))
        print(f"using the first {keep} of {len(usable)} images to fit the time budget", flush=True)
    # The same seeded split train() makes, so the evaluation sees only held-out images.
    train_paths, val_paths = split_paths(usable[:keep], d.val_fraction, config.train.seed)
    return config, train_paths, val_paths


def _fit_time(
    config: Config,
    train_paths: list[Path],
    eval_paths: list[Path],
    data: Path | None,
    deadline: float,
) -> tuple[Config, list[Path], list[Path]]:
    """Measure a step, then fit the epochs (and for a folder, the images) so that training ends
    about _EVAL_RESERVE_S before `deadline` (a time.perf_counter() value)."""
    step_seconds = measure_step_seconds(config, train_paths)
    seconds = deadline - time.perf_counter() - _EVAL_RESERVE_S
    if data is not None:
        budget_images = seconds / step_seconds * config.train.batch_size
        config, train_paths, eval_paths = fit_folder(config, train_paths, budget_images)
    config = fit_budget(config, len(train_paths), len(eval_paths), seconds, step_seconds)
    print(
        f"{step_seconds:.2f} s per step of {config.train.batch_size} images: training "
        f"{config.train.epochs} epoch(s) of {len(train_paths)} in about {max(seconds, 0):.0f} s",
        flush=True,
    )
    return config, train_paths, eval_paths


def _fresh_run_dir(run_dir: Path) -> None:
    """Make room for a new run, replacing an earlier demo run but nothing else."""
    if not run_dir.exists() or not any(run_dir.iterdir()):
        return
    if not (run_dir / "config.yaml").is_file():
        raise DemoError(f"{run_dir} exists and is not a colorgan run; choose another --out")
    print(f"replacing the earlier run in {run_dir}", flush=True)
    shutil.rmtree(run_dir)


def save_comparison(
    generator: ColorModel, paths: Sequence[Path], size: int, device: torch.device, path: Path
) -> None:
    """Write a gray | model | truth grid of the first eight of `paths`, enlarged to >= 128 px."""
    images = ColorImages(paths[:8], size, train=False)
    rgb = images.crops(len(images))  # (B, 3, S, S) uint8
    crops = colorize_crops(generator, rgb, device)
    scale = max(1, 128 // size)
    columns = [
        torch.nn.functional.interpolate(c, scale_factor=scale, mode="nearest")
        for c in (crops.gray, crops.fake, uint8_to_float(rgb))
    ]
    image_grid(columns, ["gray", "model", "truth"]).save(path)


def _report(
    generator: ColorModel, config: Config, eval_paths: list[Path], out: Path, quiet: bool
) -> dict[str, Any]:
    """Evaluate on the held-out images; write comparison.png and metrics.json into `out`."""
    device = resolve_device(config.train.device)
    size = config.data.image_size
    scoring = Scoring(size, device, config.train.batch_size, quiet)
    result = evaluate_images(generator, eval_paths, scoring)
    save_comparison(generator, eval_paths, size, device, out / "comparison.png")
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if not quiet:
        print(format_table(result), flush=True)
    return result


def run_demo(
    out: Path,
    minutes: float = 3.0,
    data: Path | None = None,
    assignments: Sequence[str] = (),
    n_train: int = N_TRAIN,
    n_val: int = N_VAL,
    quiet: bool = False,
) -> dict[str, Any]:
    """Train a small colorizer in about `minutes` on procedural scenes (or on `data`), evaluate
    it on held-out images and write OUT/comparison.png, OUT/metrics.json and OUT/run."""
    start = time.perf_counter()
    if not 0 < minutes <= MAX_MINUTES:
        raise DemoError(f"--minutes must be from 0 to {MAX_MINUTES:g} (a week), got {minutes}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DemoError(f"--out {out}: cannot make the folder ({err.strerror or err})") from None
    config = load_config(None, [*DEMO_SETTINGS, *assignments])
    threads = torch.get_num_threads()
    if resolve_device(config.train.device).type == "cpu":
        torch.set_num_threads(_idle_cpu_threads(threads))
        print(f"training on {torch.get_num_threads()} CPU thread(s)", flush=True)
    # A fresh U-Net's first steps on CPU make denormal floats, which run several times slower.
    torch.set_flush_denormal(True)
    try:
        return _demo(out, start + minutes * 60.0, config, data, assignments, n_train, n_val, quiet)
    finally:
        torch.set_num_threads(threads)


def _idle_cpu_threads(threads: int) -> int:
    """How many of `threads` CPU threads to train with: those the 1-minute load average leaves
    idle, at least one. On busy cores torch's threads wait on each other, and a small model
    then trains several times slower on two threads than on one."""
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):  # not on every platform
        return threads
    return max(1, min(threads, math.floor(threads - busy + 0.5)))


def _demo(
    out: Path,
    deadline: float,
    config: Config,
    data: Path | None,
    assignments: Sequence[str],
    n_train: int,
    n_val: int,
    quiet: bool,
) -> dict[str, Any]:
    """run_demo's work once the threads are set; training ends about _EVAL_RESERVE_S before
    `deadline` (a time.perf_counter() value)."""
    run_dir = out / "run"
    _fresh_run_dir(run_dir)
    if data is None:
        print(f"writing {n_train} + {n_val} procedural scenes to {out / 'data'}", flush=True)
        train_dir, val_dir = out / "data" / "train", out / "data" / "val"
        train_paths = find_images(write_scenes(train_dir, n_train, SEED))
        eval_paths = find_images(write_scenes(val_dir, n_val, SEED + 1))
    else:
        train_paths, eval_paths, val_dir = _folder_data(config, data), [], None
    if any(a.strip().startswith("train.epochs=") for a in assignments):  # no budget to fit
        if data is not None:
            config, train_paths, eval_paths = fit_folder(config, train_paths, math.inf)
    else:
        config, train_paths, eval_paths = _fit_time(config, train_paths, eval_paths, data, deadline)
    train(config, data or train_dir, run_dir, val_data=val_dir, quiet=quiet)
    generator, _ = load_generator(run_dir / "checkpoints" / "last.pt")
    return _report(generator, config, eval_paths, out, quiet)
