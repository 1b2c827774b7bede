"""How much a model.hints checkpoint uses its color points: with evaluate's 10 test points per
image, the ab error (L1, sum over a and b) at the points without and with the points given, and
how far the output moves at the points and away from them. A model that ignores its points
moves nothing; one that follows them drops the error at the points towards 0 and moves the
pixels around them too.

    python experiments/hint_use.py CHECKPOINT DATA_DIR [--count 10] [--limit 160]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from colorgan.batch import to_batch
from colorgan.checkpoint import load_generator
from colorgan.data import ColorImages, scan_images
from colorgan.evaluate import _point_maps, colorize_crops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("--count", type=int, default=10)
    parser.add_argument("--limit", type=int, default=160)
    args = parser.parse_args()
    generator, config = load_generator(args.checkpoint)
    size = config.data.image_size
    paths = scan_images(args.data, config.data.gray_threshold, limit=args.limit, quiet=True).usable
    cpu = torch.device("cpu")
    sums = torch.zeros(5)  # L1 at points without / with, |Δab| at / away, points
    for start in range(0, len(paths), 32):
        chunk = paths[start : start + 32]
        rgb = ColorImages(chunk, size, train=False).crops(len(chunk))
        maps = _point_maps(rgb, [p.name for p in chunk], args.count)
        truth = to_batch(rgb, cpu).ab_real
        without = colorize_crops(generator, rgb, cpu).ab_fake
        given = colorize_crops(generator, rgb, cpu, maps).ab_fake
        at = maps[:, 2] > 0
        moved = (given - without).abs().sum(dim=1)
        sums += torch.tensor([
            float((without - truth).abs().sum(dim=1)[at].sum()),
            float((given - truth).abs().sum(dim=1)[at].sum()),
            float(moved[at].sum()),
            float(moved[~at].mean()) * len(chunk),
            float(at.sum()),
        ])  # fmt: skip
    n_points, n_images = float(sums[4]), len(paths)
    print(f"{n_images} images, {args.count} points each ({n_points:.0f} hinted pixels)")
    print(
        f"ab L1 at the points: {sums[0] / n_points:.4f} without them, {sums[1] / n_points:.4f} with"
    )
    print(f"|Δab| from the points: {sums[2] / n_points:.4f} at them, {sums[3] / n_images:.4f} away")


if __name__ == "__main__":
    main()
