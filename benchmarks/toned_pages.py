"""What the lightness of a toned page costs when it is colorized (tones.page_lightness, with the
learned ink map of colorgan/inknet.py run in tiles).

A generated page (benchmarks/tall_strips.py's panels made into a manga page by tones.make_page:
ink lines, solid black, screentones) at a page's size (1200x1800) and a webtoon strip's
(800x12000) is colorized by `Colorizer.colorize`; its time and peak memory are set beside those
of `page_lightness` alone on the same page (one run each, after one untimed colorize).

    python benchmarks/toned_pages.py --model runs/cpu-small/checkpoints/last.pt --json FILE
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import harness
import torch
from PIL import Image
from tall_strips import measured, tall_picture

from colorgan.color import uint8_to_l
from colorgan.colorize import Colorizer
from colorgan.files import to_picture
from colorgan.tones import is_toned, make_page, page_lightness

SHAPES = ((1200, 1800), (800, 12000))


def toned_page(width: int, height: int) -> tuple[Image.Image, torch.Tensor]:
    """The page as the file a user gives, and its l (1, 1, H, W)."""
    page = make_page(to_picture(tall_picture(width, height)).rgb, torch.Generator().manual_seed(0))
    return Image.fromarray(page.gray[0].numpy()), uint8_to_l(page.gray.expand(3, -1, -1)[None])


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    device = harness.pick_device(args.device)
    colorizer = Colorizer.from_checkpoint(args.model, device=str(device))
    results: dict[str, Any] = {"meta": harness.machine(device), "model": str(args.model)}
    for width, height in SHAPES:
        page, l = toned_page(width, height)
        assert is_toned(l), "the generated page should read as toned"
        colorizer.colorize(page)  # warm-up
        _, seconds, peak = measured(lambda page=page: colorizer.colorize(page))
        _, light_seconds, light_peak = measured(lambda l=l: page_lightness(l))
        row = {
            "colorize_seconds": round(seconds, 2),
            "colorize_peak_mib": round(peak),
            "page_lightness_seconds": round(light_seconds, 2),
            "page_lightness_peak_mib": round(light_peak),
            "share_of_colorize": round(light_seconds / seconds, 3),
        }
        results[f"{width}x{height}"] = row
        print(f"{width}x{height}: {row}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = run(args)
    print(harness.describe(results["meta"]))
    harness.write_json(args.json, results)


if __name__ == "__main__":
    main()
