"""What local reference colors (model.reference_match) cost at inference, side by side in one run.

1. `forward`: the recipe's generator with a reference (random weights of configs/cpu-small.yaml
   with model.reference=true) on one --size picture with R = 0, 1, 4 and 16 exemplar slots of
   --size px: the matching's own time is the difference from R = 0 (each reference runs the
   encoder once, then the picture's stride-8 positions are compared with every reference's).
2. `colorize`: `Colorizer.colorize` of one --size picture with a reference of 1, 4 and 16 images
   (more than 3 are a bank: each picture uses the 3 closest; the bank is described once, before
   timing) against none.
3. `--memory` (instead of 1 and 2): the forward's peak memory with R = 0, 1, 4 and 16, each R in
   a fresh interpreter (a forked child's peak RSS starts at its parent's): the model and inputs
   built, the peak resident set reset (Linux's /proc/self/clear_refs), one forward, then the
   peak (VmHWM) less the resident size before it. The matching's own memory is the difference
   from R = 0.

Pairs run in turns (the order swapped each turn) and the figures are medians.

    python benchmarks/match_cost.py --size 512 --json match.json
    python benchmarks/match_cost.py --size 512 --memory --json match-memory.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
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


MIB = 2**20


def status_bytes(field: str) -> int:
    """A VmRSS/VmHWM line of /proc/self/status, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")


def peak_of(size: int, count: int) -> dict[str, float]:
    """In this process: the forward's peak resident memory above what was resident before it
    (the model and inputs), MiB."""
    model = generator()
    given = inputs(size, count)
    Path("/proc/self/clear_refs").write_text("5")  # the peak RSS starts again from now
    before = status_bytes("VmRSS")
    with torch.inference_mode():
        model(**given)
    return {"resident_before": before / MIB, "forward_peak": (status_bytes("VmHWM") - before) / MIB}


def memory(size: int) -> dict[str, dict[str, float]]:
    """`peak_of` for each count, each in a fresh interpreter."""
    found = {}
    for count in COUNTS:
        command = [sys.executable, __file__, "--size", str(size), "--peak-of", str(count)]
        line = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        found[f"R={count}"] = json.loads(line.splitlines()[-1])
        print(f"R={count}: {found[f'R={count}']}", flush=True)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--memory", action="store_true", help="peak memory instead of time")
    parser.add_argument("--peak-of", type=int, help=argparse.SUPPRESS)  # memory's child
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.peak_of is not None:
        print(json.dumps(peak_of(args.size, args.peak_of)))
        return
    if args.memory:
        found = {"machine": harness.machine(torch.device("cpu")), "size": args.size}
        found |= {"forward_mib": memory(args.size)}
        print(json.dumps(found, indent=1))
        harness.write_json(args.json, found)
        return
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
