"""Does spreading the points on the generator's grid of cells give the colors the full-resolution
spread gives? One checkpoint of a model.hints generator with an output stride over 1, scored
with evaluate's test points twice: its spread as built (on the grid of stride x stride cells)
and the same weights with the spread run at every pixel (stride 1, as before 2026-12-06).

    python experiments/spread_stride.py CHECKPOINT DATA_DIR [--counts 0,10] [--size 128]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from colorgan.data import scan_images
from colorgan.device import resolve_device
from colorgan.evaluate import hint_scores, parse_counts
from colorgan.modeldir import load_model, resolve_model

KEYS = ("delta_e", "psnr", "colorfulness", "kid_lite0", "hint_fidelity")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("data", type=Path)
    parser.add_argument("--counts", type=parse_counts, default=[0, 10])
    parser.add_argument("--size", type=int, help="working size (default: the training size)")
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    generator, config = load_model(resolve_model(args.checkpoint))
    spread = getattr(generator, "spread", None)
    if spread is None or spread.stride == 1:
        parser.error(f"{args.checkpoint}: not a model.hints generator with an output stride > 1")
    paths = scan_images(args.data, config.data.gray_threshold, limit=args.limit).usable
    size = args.size or config.data.image_size
    device = resolve_device("auto")
    results = {}
    for stride in (spread.stride, 1):
        spread.stride = stride
        scores = hint_scores(generator, paths, size, device, args.counts)
        results[f"stride {stride}"] = scores
        for count, metrics in scores.items():
            shown = "  ".join(f"{k} {metrics[k]:.4g}" for k in KEYS if metrics.get(k) is not None)
            print(f"spread at stride {stride}, {count:>3} points: {shown}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
