"""The Lite0 encoder's eager forward with each stride-1 depthwise conv padding itself (the
package's layout) beside the same weights behind an explicit `nn.ZeroPad2d` (the layout before
2026-12-04, which copied every expanded map once more). Same outputs (checked); the two run in
turns, the order swapped every round, and "paired" is the median of the per-round ratios.

    python benchmarks/lite0_padding.py --size 512 --repeats 25 --json padding.json
"""

from __future__ import annotations

import argparse
import copy
import functools
import statistics
from pathlib import Path

import harness
import torch
from torch import nn

from colorgan.lite0 import EfficientNetLite0, MBConv, load_lite0


def explicit_pads(encoder: EfficientNetLite0) -> EfficientNetLite0:
    """A copy of `encoder` whose stride-1 depthwise convs get their SAME pad from a ZeroPad2d."""
    old = copy.deepcopy(encoder)
    for block in old.modules():
        if isinstance(block, MBConv) and isinstance(block._pad, nn.Identity):
            block._pad = nn.ZeroPad2d(block._depthwise_conv.kernel_size[0] // 2)
            block._depthwise_conv.padding = (0, 0)
    return old


def main() -> None:
    """Time both layouts in turns, print and write the medians and the paired ratio."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    models = {"conv pads itself": load_lite0(head=False).eval()}
    models["explicit ZeroPad2d"] = explicit_pads(models["conv pads itself"])
    x = torch.randn(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        outputs = [model.features(x) for model in models.values()]
        if not all(torch.equal(a, b) for a, b in zip(*outputs, strict=True)):
            raise SystemExit("the two layouts disagree")
        for round_ in range(args.warmup + args.repeats):
            order = list(models) if round_ % 2 else list(reversed(models))
            for name in order:
                seconds = harness.timed(functools.partial(models[name].features, x), device)
                if round_ >= args.warmup:
                    times[name].append(seconds)
    old, new = times["explicit ZeroPad2d"], times["conv pads itself"]
    paired = statistics.median(a / b for a, b in zip(old, new, strict=True))
    result = {
        "size": args.size,
        "median_ms": {name: statistics.median(t) * 1e3 for name, t in times.items()},
        "explicit_over_self_paired": paired,
        "meta": harness.machine(device),
    }
    print(harness.describe(result["meta"]))
    rows = [[name, ms] for name, ms in result["median_ms"].items()]
    print(harness.table([f"Lite0 encoder {args.size}px", "median ms"], rows))
    print(f"explicit pad / conv pad, paired: {result['explicit_over_self_paired']:.3f}")
    harness.write_json(args.json, result)


if __name__ == "__main__":
    main()
