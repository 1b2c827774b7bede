"""What a model's color points cost, with and without them, side by side in one run.

1. `train`: full training steps (D and G) of a config that takes points (default
   configs/cpu-small.yaml: 128 px, batch 16) on crops whose points are drawn by the data's own
   simulated user (`ColorImages` with data.hint_p and data.hint_max_patch), beside the same
   config with model.hints=false on the same crops. Crops from --data (a folder of color
   images), else random colors.
2. `colorize`: `Colorizer.colorize` of one --size picture (default 512) at working size
   --size with 10 points against none (random weights of the config, torch), the same with the
   spread skipped (what the points cost besides it), and the spread alone on that picture's
   hint map.
3. `click`: the web page's answer to a click: serve's `colorize_bytes` (decode, model, PNG) of
   that picture at working size --click-size (256) through onnxruntime, with 10 points
   against none (needs the onnx extra).

Each pair runs in turns (the order swapped each turn), so a load that comes and goes falls on
both alike; the figures are medians.

    python benchmarks/points_cost.py --data ../shared/data/anime/train --json points.json
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import harness  # puts this repository's colorgan first on the path
import numpy as np
import torch
from PIL import Image

from colorgan import Colorizer, Hint
from colorgan.batch import to_batch
from colorgan.checkpoint import save_checkpoint
from colorgan.config import Config, load_config, to_dict
from colorgan.data import ColorImages, scan_images
from colorgan.hints import HintSpread, render
from colorgan.models import build_generator
from colorgan.state import build_state
from colorgan.train import train_step

POINTS = 10  # the user's points in `colorize` and `click`


def in_turns(calls: dict[str, Callable[[], Any]], warmup: int, runs: int) -> dict[str, float]:
    """Median seconds of each call, run in turns (order swapped each turn) after `warmup`."""
    for _ in range(warmup):
        for call in calls.values():
            call()
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for turn in range(runs):
        for name in names if turn % 2 == 0 else names[::-1]:
            seconds[name].append(harness.timed(calls[name], torch.device("cpu")))
    return {name: statistics.median(times) for name, times in seconds.items()}


def training_crops(config: Config, data: Path | None) -> dict[str, torch.Tensor]:
    """One training batch as the loader gives it: uint8 crops ("rgb") and their points."""
    d, size, count = config.data, config.data.image_size, config.train.batch_size
    if data is None:
        gen = torch.Generator().manual_seed(0)
        rgb = torch.randint(0, 256, (count, 3, size, size), generator=gen, dtype=torch.uint8)
        array = rgb.permute(0, 2, 3, 1).numpy()
        folder = Path(tempfile.mkdtemp())
        for i, image in enumerate(array):
            Image.fromarray(image).save(folder / f"{i}.png")
        data = folder
    paths = scan_images(data, d.gray_threshold, limit=count, quiet=True).usable
    images = ColorImages(paths, size, train=True, hints=(d.hint_p, d.hint_max_patch))
    items = [images[(i, i)] for i in range(count)]
    assert all(isinstance(item, dict) for item in items)
    return {key: torch.stack([item[key] for item in items]) for key in ("rgb", "hints")}  # type: ignore[index]


def train_steps(config: Config, data: Path | None, steps: int) -> dict[str, Any]:
    """Seconds per training step with the data's points, and of the config without them."""
    crops = training_crops(config, data)
    device = torch.device("cpu")
    with_points = build_state(config, device, steps_per_epoch=1000)
    plain = dataclasses.replace(config, model=dataclasses.replace(config.model, hints=False))
    without = build_state(plain, device, steps_per_epoch=1000)
    batch = to_batch(crops, device)
    bare = to_batch(crops["rgb"], device)
    seconds = in_turns(
        {
            "with points": lambda: train_step(with_points, batch),
            "without points": lambda: train_step(without, bare),
        },
        warmup=1,
        runs=steps,
    )
    drawn = crops["hints"][:, 2].flatten(1).gt(0).any(1).float().mean()
    return {"seconds_per_step": seconds, "share_of_crops_with_points": float(drawn)}


def picture(data: Path | None, size: int) -> Image.Image:
    """A `size` x `size` color picture: the first image of `data` (center crop), or a smooth
    random one."""
    if data is not None:
        path = scan_images(data, 0.0, limit=1, quiet=True).usable[0]
        image = Image.open(path).convert("RGB")
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        return image.crop((left, top, left + side, top + side)).resize((size, size))
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC)


def user_points(image: Image.Image, count: int) -> list[Hint]:
    """`count` points where Zhang et al.'s simulated user puts them (normal around the center,
    σ = side / 4), each with the picture's own color there."""
    rng = np.random.default_rng(1)
    array = np.asarray(image)
    height, width = array.shape[:2]
    places = rng.normal([height / 2, width / 2], [height / 4, width / 4], (count, 2))
    places = np.clip(places, 0, [height - 1, width - 1]).astype(int)
    return [Hint(float(x), float(y), tuple(int(c) for c in array[y, x])) for y, x in places]  # type: ignore[arg-type]


def colorize_calls(config: Config, image: Image.Image, size: int, folder: Path) -> dict[str, Any]:
    """Colorizer.colorize of `image` with POINTS points and without; the spread alone."""
    torch.manual_seed(0)
    generator = build_generator(config.model)
    path = folder / "model.pt"
    save_checkpoint({"config": to_dict(config), "generator": generator.state_dict()}, path)
    colorizer = Colorizer.from_checkpoint(path, "cpu")
    gray = image.convert("L")
    points = user_points(image, POINTS)
    calls = {
        f"{POINTS} points": lambda: colorizer.colorize(gray, size, hints=points),
        "no points": lambda: colorizer.colorize(gray, size),
        f"{POINTS} points, spread skipped": lambda: _without_spread(
            lambda: colorizer.colorize(gray, size, hints=points)
        ),  # what the points cost besides the spread: rendering, pasting
    }
    seconds = in_turns(calls, warmup=2, runs=10)
    spread = generator.spread
    if spread is not None:
        hint_map = render(points, (gray.height, gray.width), (size, size))[None]
        ab, l = torch.rand(1, 2, size, size) - 0.5, torch.rand(1, 1, size, size) * 2 - 1
        spread.eval()
        with torch.inference_mode():
            alone = in_turns({"spread": lambda: spread(ab, l, hint_map)}, warmup=2, runs=10)
        seconds |= alone
    return {"seconds": seconds, "path": path}


def _without_spread(call: Callable[[], Any]) -> Any:
    """`call` with HintSpread passing the generator's ab through (a diagnosis, not a mode)."""
    forward = HintSpread.forward
    HintSpread.forward = lambda self, ab, l, hint_map: ab  # type: ignore[method-assign]
    try:
        return call()
    finally:
        HintSpread.forward = forward  # type: ignore[method-assign]


def click_calls(checkpoint: Path, image: Image.Image, size: int, folder: Path) -> dict[str, float]:
    """serve's colorize_bytes at working size `size` through onnxruntime, with and without
    POINTS points."""
    from colorgan.export import export_onnx
    from colorgan.serve import Upload, colorize_bytes

    onnx_path = folder / "model.onnx"
    export_onnx(checkpoint, onnx_path)
    colorizer = Colorizer.from_onnx(onnx_path, "cpu")
    buffer = io.BytesIO()
    image.convert("L").save(buffer, format="PNG")
    data = buffer.getvalue()
    points = user_points(image, POINTS)
    pixels = image.width * image.height
    return in_turns(
        {
            f"{POINTS} points": lambda: colorize_bytes(
                colorizer, Upload(data, points), size, pixels
            ),
            "no points": lambda: colorize_bytes(colorizer, Upload(data), size, pixels),
        },
        warmup=2,
        runs=10,
    )


def main() -> None:
    """Measure, print a table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=Path("configs/cpu-small.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    parser.add_argument("--data", type=Path, help="a folder of color images (crops, picture)")
    parser.add_argument("--steps", type=int, default=6, help="timed training steps of each")
    parser.add_argument("--size", type=int, default=512, help="colorize's picture and size")
    parser.add_argument("--click-size", type=int, default=256)
    parser.add_argument("--skip", nargs="*", default=[], choices=["train", "colorize", "click"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    config = load_config(args.config, ["train.device=cpu", *args.overrides])
    if not config.model.hints:
        parser.error(f"{args.config} does not take points (model.hints=false)")
    results: dict[str, Any] = {"meta": harness.machine(torch.device("cpu"))}
    rows: list[list[Any]] = []

    def add(what: str, seconds: dict[str, float], with_key: str, without_key: str) -> None:
        ratio = seconds[with_key] / seconds[without_key]
        rows.append([what, seconds[with_key] * 1000, seconds[without_key] * 1000, ratio])

    if "train" not in args.skip:
        trained = train_steps(config, args.data, args.steps)
        results["train"] = trained
        add("training step", trained["seconds_per_step"], "with points", "without points")
    image = picture(args.data, args.size)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if "colorize" not in args.skip or "click" not in args.skip:
            colorized = colorize_calls(config, image, args.size, folder)
            results["colorize"] = colorized["seconds"]
            add(f"colorize {args.size} px", colorized["seconds"], f"{POINTS} points", "no points")
            skipped = colorized["seconds"][f"{POINTS} points, spread skipped"] * 1000
            rows.append(["  10 points, the spread skipped", skipped, "", ""])
            if "spread" in colorized["seconds"]:
                rows.append(["  the spread alone", colorized["seconds"]["spread"] * 1000, "", ""])
        if "click" not in args.skip:
            clicked = click_calls(colorized["path"], image, args.click_size, folder)
            results["click"] = clicked
            add(f"click, onnx, {args.click_size} px", clicked, f"{POINTS} points", "no points")
    print(harness.describe(results["meta"]))
    print(harness.table(["ms (median)", "with points", "without", "ratio"], rows))
    harness.write_json(args.json, results)


if __name__ == "__main__":
    main()
