"""What local reference colors (model.reference_match) cost at inference, side by side in one run.

1. `forward`: the recipe's generator with a reference (random weights of configs/cpu-small.yaml
   with model.reference=true) on one --size picture with R = 0, 1, 4 and 16 exemplar slots of
   --size px: the matching's own time is the difference from R = 0 (each reference runs the
   encoder once, then the picture's stride-8 positions are compared with every reference's).
2. `colorize`: `Colorizer.colorize` of one --size picture with a reference of 1, 4 and 16 images
   (more than 3 are a bank: each picture uses the 3 closest; the bank is described once, before
   timing) against none.
Memory is not measured here: a forked child's ru_maxrss starts at its parent's, so peak RSS
per R needs a process that never held the others (left for later).

Pairs run in turns (the order swapped each turn) and the figures are medians.

    python benchmarks/match_cost.py --size 512 --json match.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import harness  # puts this repository's colorgan first on the path
import numpy as np
import torch
from PIL import Image
from points_cost import in_turns

from colorgan import Colorizer
from colorgan.checkpoint import save_checkpoint
from colorgan.config import load_config, to_dict
from colorgan.models import build_generator

COUNTS = (0, 1, 4, 16)
CONFIG = harness.REPO / "configs" / "cpu-small.yaml"


def generator() -> torch.nn.Module:
    config = load_config(CONFIG, ["model.reference=true"])
    torch.manual_seed(0)
    return build_generator(config.model).eval()


def inputs(size: int, count: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(count)
    l = torch.rand(1, 1, size, size, generator=gen) * 2 - 1
    given: dict[str, torch.Tensor] = {"l": l}
    if count:
        exemplar = torch.rand(1, count, 4, size, size, generator=gen) * 2 - 1
        exemplar[:, :, 3] = 1.0
        given["exemplar"] = exemplar
    return given


def median_ms(calls: dict[str, Any], runs: int) -> dict[str, float]:
    """points_cost.in_turns (one warm-up, then turns with the order swapped), in ms."""
    return {name: seconds * 1000 for name, seconds in in_turns(calls, 1, runs).items()}


def picture(seed: int, size: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    model = generator()
    forward = {}
    for count in COUNTS:
        given = inputs(args.size, count)
        forward[f"R={count}"] = lambda given=given: model(**given)
    with torch.inference_mode():
        forward_ms = median_ms(forward, args.runs)
    folder = Path(tempfile.mkdtemp())
    config = load_config(CONFIG, ["model.reference=true"])
    save_checkpoint({"config": to_dict(config), "generator": model.state_dict()}, folder / "m.pt")
    colorizer = Colorizer.from_checkpoint(folder / "m.pt", "cpu")
    image = picture(0, args.size).convert("L")
    references = [picture(seed, args.size) for seed in range(1, 17)]
    calls = {"none": lambda: colorizer.colorize(image, size=args.size)}
    for count in COUNTS[1:]:
        request = references[:count]
        calls[f"{count} images"] = lambda r=request: colorizer.colorize(
            image, reference=r, size=args.size
        )
    colorize_ms = median_ms(calls, args.runs)
    result = {
        "machine": harness.machine(torch.device("cpu")),
        "size": args.size,
        "forward_ms": forward_ms,
        "colorize_ms": colorize_ms,
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
