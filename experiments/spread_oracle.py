"""How far HintSpread's candidates can take a model, whatever it learns: with evaluate's test
points, the CIEDE2000 and PSNR of

- `model`: the checkpoint's output with the points (a no-hint checkpoint: its own ab, unmoved);
- `start rule`: the checkpoint's ab before the spread, spread by a fresh HintSpread (the fixed
  start rule, its MLP zero);
- `oracle`: at every pixel the candidate nearest the truth in ab (the generator's own ab, or
  any candidate with a point in reach): the best any per-pixel choice among them can do;
- `oracle, points only`: the same without the generator's own ab where a point is in reach.

    python experiments/spread_oracle.py CHECKPOINT DATA_DIR [--counts 0,10] [--limit 400]

A no-hint checkpoint gives what its colors plus the spread would give, without training.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from colorgan.batch import to_batch
from colorgan.checkpoint import load_generator
from colorgan.color import float_to_uint8, l_ab_to_rgb, uint8_to_float
from colorgan.data import ColorImages, scan_images
from colorgan.evaluate import Crops, _point_maps, colorize_crops, parse_counts
from colorgan.hints import HintSpread, spread_candidates
from colorgan.metrics import image_metrics

ROWS = ("model", "start rule", "oracle", "oracle, points only")


def colorize_with_own(
    generator: torch.nn.Module, rgb: torch.Tensor, maps: torch.Tensor | None
) -> tuple[Crops, torch.Tensor]:
    """evaluate's colorized crops (with `maps`, None for a no-hint generator) and, from the
    same forward, the generator's ab before its HintSpread (a no-hint generator: its ab)."""
    spread = getattr(generator, "spread", None)
    if spread is None or maps is None:
        crops = colorize_crops(generator, rgb, torch.device("cpu"))
        return crops, crops.ab_fake
    seen: list[torch.Tensor] = []
    handle = spread.register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
    try:
        crops = colorize_crops(generator, rgb, torch.device("cpu"), maps)
    finally:
        handle.remove()
    return crops, seen[0].float()


def oracle(
    own: torch.Tensor, truth: torch.Tensor, maps: torch.Tensor, l: torch.Tensor, keep_own: bool
) -> torch.Tensor:
    """Per pixel the candidate nearest `truth` in ab L1 (see the module's docstring)."""
    colors, cover, _ = spread_candidates(maps, l)  # (B, K, 2, H, W), (B, K, 1, H, W)
    error = (colors - truth[:, None]).abs().sum(dim=2)  # (B, K, H, W)
    error = torch.where(cover.squeeze(2) > 0, error, float("inf"))
    own_error = (own - truth).abs().sum(dim=1, keepdim=True)
    reach = cover.squeeze(2).amax(dim=1, keepdim=True) > 0
    if not keep_own:  # where a point is in reach, only the points
        own_error = torch.where(reach, float("inf"), own_error)
    choices = torch.cat([own[:, None], colors], dim=1)
    best = torch.cat([own_error, error], dim=1).argmin(dim=1)  # (B, H, W)
    index = best[:, None, None].expand(-1, 1, 2, -1, -1)
    return choices.gather(1, index).squeeze(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("--counts", type=parse_counts, default=[0, 10])
    parser.add_argument("--limit", type=int, default=400)
    args = parser.parse_args()
    generator, config = load_generator(args.checkpoint)
    generator.eval()
    size = config.data.image_size
    paths = scan_images(args.data, config.data.gray_threshold, limit=args.limit, quiet=True).usable
    cpu = torch.device("cpu")
    spread = HintSpread().eval()
    takes_points = getattr(generator, "spread", None) is not None
    sums = {(c, r): torch.zeros(2, dtype=torch.float64) for c in args.counts for r in ROWS}
    for start in range(0, len(paths), 32):
        chunk = paths[start : start + 32]
        rgb = ColorImages(chunk, size, train=False).crops(len(chunk))
        real = uint8_to_float(rgb)
        truth = to_batch(rgb, cpu).ab_real
        for count in args.counts:
            maps = _point_maps(rgb, [p.name for p in chunk], count)
            given = maps if takes_points else None
            crops, own = colorize_with_own(generator, rgb, given)
            l = crops.l
            with torch.no_grad():
                outputs = {
                    "model": crops.ab_fake,
                    "start rule": spread(own, l, maps),
                    "oracle": oracle(own, truth, maps, l, keep_own=True),
                    "oracle, points only": oracle(own, truth, maps, l, keep_own=False),
                }
            for row, ab in outputs.items():
                fake = uint8_to_float(float_to_uint8(l_ab_to_rgb(l, ab.float())))
                values = image_metrics(fake, real, ("delta_e", "psnr"))
                sums[count, row] += torch.stack([values["delta_e"].sum(), values["psnr"].sum()])
    print(f"{args.checkpoint} on {args.data} ({len(paths)} images, {size} px)")
    print(f"{'points':>6}  {'':<20}{'ΔE00':>7}{'PSNR':>8}")
    for count in args.counts:
        for row in ROWS:
            delta_e, psnr = (sums[count, row] / len(paths)).tolist()
            print(f"{count:>6}  {row:<20}{delta_e:>7.2f}{psnr:>8.2f}")


if __name__ == "__main__":
    main()
