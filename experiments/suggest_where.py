"""Where the suggested points went, and what a better placement could win: for each picture,
how well the model's uncertainty ranks its real ab error (Spearman, per picture), and the
ΔE00 after 1, 2, 5 and 10 points placed one after another (evaluate's simulated user: the
truth's patch at each place) by suggest.py weighing each pixel by

- `uncertainty`: the model's predicted error (what `suggest_points` does),
- `uniform`: every pixel the same (what it does without `model.uncertainty`),
- `truth`: the real |ab error| (an oracle: the best this placement rule could do),

beside `random` (evaluate's test points). Also where the points landed: the share of the
picture's real error within their reach, and the real error at the points against the
picture's mean.

    python experiments/suggest_where.py CHECKPOINT DATA_DIR [--limit 400] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from colorgan.batch import to_batch
from colorgan.checkpoint import load_generator
from colorgan.color import uint8_to_float
from colorgan.data import ColorImages, scan_images
from colorgan.evaluate import _point_maps, colorize_crops
from colorgan.hints import EVAL_PATCH, HINT_CHANNELS, patch_side, place_patch
from colorgan.metrics import delta_e2000_pixels
from colorgan.suggest import REACH, _bands, suggest

COUNTS = (0, 1, 2, 5, 10)
WEIGHTS = ("uncertainty", "uniform", "truth")


def _rank(x: torch.Tensor) -> torch.Tensor:
    return x.flatten().argsort().argsort().float()


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra, rb = _rank(a), _rank(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()).clamp_min(1e-12))


def _error(crops: object, truth: torch.Tensor) -> torch.Tensor:
    return (crops.ab_fake - truth).abs().sum(1, keepdim=True)  # type: ignore[attr-defined]


def placed_maps(generator, rgb, weight: str, most: int, cpu) -> tuple[list, list]:
    """Hint maps after 0..most points chosen with `weight`, and each point's (row, col, share
    of the picture's error in reach, its error / the mean error) when placed."""
    truth = to_batch(rgb, cpu).ab_real
    side = patch_side(EVAL_PATCH, truth.shape[-1])
    maps = [torch.zeros(truth.shape[0], HINT_CHANNELS, *truth.shape[2:])]
    where = []
    for _ in range(most):
        crops = colorize_crops(generator, rgb, cpu, maps[-1])
        error = _error(crops, truth)
        placed = maps[-1].clone()
        for i, crop_map in enumerate(placed):
            l, ab_fake = crops.l[i : i + 1], crops.ab_fake[i : i + 1]
            w = {
                "uncertainty": None if crops.uncertainty is None else crops.uncertainty[i : i + 1],
                "uniform": None,
                "truth": error[i : i + 1],
            }[weight]
            hw = (truth.shape[2], truth.shape[3])
            for point in suggest(l, ab_fake, w, crop_map[None], 1, hw):
                row, col = int(point.y), int(point.x)
                half = max(1, round(hw[0] * REACH))
                bands = _bands(l)
                rows = slice(max(0, row - half), row + half + 1)
                box = (rows, slice(max(0, col - half), col + half + 1))
                inside = (bands[0, 0][box] == bands[0, 0, row, col]).float()
                e = error[i, 0]
                share = float((e[box] * inside).sum() / e.sum().clamp_min(1e-12))
                where.append((share, float(e[row, col] / e.mean().clamp_min(1e-12))))
                top = min(max(0, row - side // 2), hw[0] - side)
                left = min(max(0, col - side // 2), hw[1] - side)
                place_patch(crop_map, truth[i], top, left, side)
        maps.append(placed)
    return maps, where


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("--limit", type=int, default=400)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    generator, config = load_generator(args.checkpoint)
    size = config.data.image_size
    paths = scan_images(args.data, config.data.gray_threshold, limit=args.limit, quiet=True).usable
    cpu = torch.device("cpu")
    de = {w: [0.0] * len(COUNTS) for w in (*WEIGHTS, "random")}
    where: dict[str, list] = {w: [] for w in WEIGHTS}
    rho = []
    for start in range(0, len(paths), 32):
        chunk = paths[start : start + 32]
        rgb = ColorImages(chunk, size, train=False).crops(len(chunk))
        real = uint8_to_float(rgb)
        truth = to_batch(rgb, cpu).ab_real
        auto = colorize_crops(generator, rgb, cpu)
        if auto.uncertainty is not None:
            err = _error(auto, truth)
            rho += [spearman(auto.uncertainty[i], err[i]) for i in range(len(chunk))]
        for weight in (*WEIGHTS, "random"):
            if weight == "random":
                maps = [_point_maps(rgb, [p.name for p in chunk], c) for c in COUNTS]
            else:
                every, went = placed_maps(generator, rgb, weight, max(COUNTS), cpu)
                maps = [every[c] for c in COUNTS]
                where[weight] += went
            for k, m in enumerate(maps):
                fake = colorize_crops(generator, rgb, cpu, m).fake
                de[weight][k] += float(delta_e2000_pixels(fake, real).mean((1, 2)).sum())
        print(f"{start + len(chunk)}/{len(paths)}", flush=True)
    n = len(paths)
    result = {
        "checkpoint": str(args.checkpoint),
        "data": str(args.data),
        "images": n,
        "size": size,
        "spearman_uncertainty_error": sum(rho) / len(rho) if rho else None,
        "delta_e2000": {
            w: {str(c): v / n for c, v in zip(COUNTS, vals, strict=True)} for w, vals in de.items()
        },
        "where": {
            w: {
                "error_share_in_reach": sum(s for s, _ in v) / len(v),
                "error_at_point_over_mean": sum(r for _, r in v) / len(v),
            }
            for w, v in where.items()
        },
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
