"""Milliseconds per AdamW step over colorgan's generator and discriminator parameters, per
implementation: for-loop (torch's CPU default), foreach (its CUDA default) and fused.

The three compute the same update; only the kernels differ. On a CPU the optimizer step is
about a sixth of a 128 px training step (see docs/journal/performance.md), so this isolates the
part of training that an implementation choice can speed up without touching the math.

    python benchmarks/optimizer_step.py --depth 7 --runs 10 --json optimizer.json
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import harness
import torch

from colorgan.discriminator import Discriminator
from colorgan.generator import Generator

VARIANTS: dict[str, dict[str, bool]] = {
    "for-loop": {"foreach": False},
    "foreach": {"foreach": True},
    "fused": {"fused": True},
}


def step_ms(
    options: dict[str, bool], depth: int, device: torch.device, warmup: int, runs: int
) -> float:
    """Median ms of one AdamW step (lr 2e-4, betas (0.5, 0.999), wd 0.01) with `options`."""
    torch.manual_seed(0)
    params = [
        *Generator(base_channels=64, depth=depth).to(device).parameters(),
        *Discriminator().to(device).parameters(),
    ]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    opt = torch.optim.AdamW(params, lr=2e-4, betas=(0.5, 0.999), weight_decay=0.01, **options)
    return harness.median_seconds(opt.step, device, warmup, runs) * 1e3


def main() -> None:
    """Time each implementation; print; write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--depth", type=int, default=7, help="U-Net depth (7: 128 px recipe)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    device = harness.pick_device(args.device)
    results: dict[str, Any] = {
        name: step_ms(options, args.depth, device, args.warmup, args.runs)
        for name, options in VARIANTS.items()
    }
    meta = harness.machine(device) | {"depth": args.depth, "unit": "ms per step"}
    print(f"\nAdamW step, G (width 64, depth {args.depth}) + D: {harness.describe(meta)}")
    rows = [[name, ms, results["for-loop"] / ms] for name, ms in results.items()]
    print(harness.table(["implementation", "ms/step", "x for-loop"], rows))
    harness.write_json(args.json, results | {"meta": meta})


if __name__ == "__main__":
    main()
