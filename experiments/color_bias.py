"""How much each model paints its training set's color prior: mean Lab a* (green- / red+) and
b* (blue- / yellow+), mean chroma, and the share of pixels in the pink-red hue band, for the
outputs and for the originals of a validation folder.

    python experiments/color_bias.py DATA_DIR CHECKPOINT [CHECKPOINT ...]

Images are center-cropped at each checkpoint's training size, as `colorgan evaluate` does.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from colorgan.checkpoint import load_generator
from colorgan.color import rgb_to_l_ab, uint8_to_float
from colorgan.data import ColorImages, scan_images
from colorgan.evaluate import colorize_crops

PINK_RED = (-30.0, 30.0)  # hue band in degrees around a*+ (reds, pinks, magenta-reds)


def stats(rgb: torch.Tensor) -> dict[str, float]:
    """rgb (N, 3, H, W) in [0, 1] -> mean a*, b*, chroma, and the % of colored pixels (chroma
    over 10) that are pink-red."""
    _, ab = rgb_to_l_ab(rgb)
    a, b = ab[:, 0] * 110.0, ab[:, 1] * 110.0  # back to Lab units
    chroma = torch.hypot(a, b)
    hue = torch.rad2deg(torch.atan2(b, a))
    colored = chroma > 10.0
    pink = colored & (hue > PINK_RED[0]) & (hue < PINK_RED[1])
    return {
        "a": a.mean().item(),
        "b": b.mean().item(),
        "chroma": chroma.mean().item(),
        "pink_red_%": 100.0 * pink.sum().item() / max(colored.sum().item(), 1),
    }


def main(argv: list[str]) -> None:
    data, checkpoints = Path(argv[0]), [Path(p) for p in argv[1:]]
    paths = scan_images(data, gray_threshold=0.0, quiet=True).usable
    print("| model | mean a* | mean b* | mean chroma | pink-red % of colored pixels |")
    print("|---|---:|---:|---:|---:|")
    reference = None
    for checkpoint in checkpoints:
        generator, config = load_generator(checkpoint)
        size = config.data.image_size
        fakes, reals = [], []
        loader = DataLoader(ColorImages(paths, size, train=False), batch_size=32)
        for rgb in loader:
            fake = colorize_crops(generator, rgb, torch.device("cpu")).fake
            fakes.append(fake)
            reals.append(uint8_to_float(rgb))
        reference = reference or stats(torch.cat(reals))
        _row(checkpoint.parent.parent.name, stats(torch.cat(fakes)))
    if reference is not None:
        _row("*originals*", reference)


def _row(name: str, s: dict[str, float]) -> None:
    print(f"| {name} | {s['a']:.1f} | {s['b']:.1f} | {s['chroma']:.1f} | {s['pink_red_%']:.0f} |")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1:])
