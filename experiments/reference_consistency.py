"""Consistency across a folder: one character's images colorized with and without one
same-character reference, and how much the hair color varies from image to image.

For each character of the set (a file name starts with it), the first image by name is the
reference for all the others, colorized through `Colorizer.colorize` (what `colorgan colorize
--reference` runs) at the model's working size. The hair is measured simply: the top third of
each face crop, where the hair mostly is. Per image its mean Lab ab; across the folder, the
spread of that mean (the root mean square distance from the folder's mean, in Lab units) and the
circular spread of its hue (degrees), for the outputs without a reference, with it, and for the
truth (real fan art varies too: that spread is the floor); and the mean distance of each
output's mean ab from its own truth's.

    python experiments/reference_consistency.py CKPT ../shared/data/anime/unseen --json FILE
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from colorgan.color import rgb_to_l_ab, uint8_to_float
from colorgan.colorize import Colorizer
from colorgan.files import find_images, load_rgb

LAB = 110.0  # network ab units -> Lab


def top_third_ab(image: Image.Image) -> torch.Tensor:
    """The mean Lab ab (2,) of the image's top third."""
    rgb = torch.frombuffer(bytearray(image.convert("RGB").tobytes()), dtype=torch.uint8)
    rgb = rgb.view(image.height, image.width, 3).permute(2, 0, 1)[None]
    ab = rgb_to_l_ab(uint8_to_float(rgb))[1][0] * LAB
    return ab[:, : image.height // 3].mean(dim=(1, 2))


def spread(means: torch.Tensor) -> dict[str, float]:
    """Spread of per-image mean ab (N, 2): RMS distance from their mean, and circular hue std."""
    rms = float((means - means.mean(dim=0)).square().sum(dim=1).mean().sqrt())
    hue = torch.atan2(means[:, 1], means[:, 0])
    resultant = float(torch.stack([hue.cos().mean(), hue.sin().mean()]).norm())
    hue_std = math.degrees(math.sqrt(-2.0 * math.log(max(resultant, 1e-12))))
    chroma = float(means.norm(dim=1).mean())
    return {"ab_spread": rms, "hue_spread_degrees": hue_std, "mean_chroma": chroma}


def character_scores(colorizer: Colorizer, paths: list[Path]) -> dict[str, Any]:
    reference_path, others = paths[0], paths[1:]
    reference = load_rgb(reference_path)
    truth, plain, referenced = [], [], []
    for path in others:
        image = load_rgb(path)
        gray = image.convert("L")
        truth.append(top_third_ab(image))
        plain.append(top_third_ab(colorizer.colorize(gray)))
        referenced.append(top_third_ab(colorizer.colorize(gray, reference=reference)))
    t, p, r = torch.stack(truth), torch.stack(plain), torch.stack(referenced)
    return {
        "reference": reference_path.name,
        "images": len(others),
        "truth": spread(t),
        "no_reference": spread(p) | {"distance_to_truth": float((p - t).norm(dim=1).mean())},
        "reference_given": spread(r) | {"distance_to_truth": float((r - t).norm(dim=1).mean())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("data", type=Path)
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    colorizer = Colorizer.from_checkpoint(args.checkpoint, device=args.device)
    by_character: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(find_images(args.data)):
        by_character[path.name.split("_", 1)[0]].append(path)
    results = {}
    for name, paths in sorted(by_character.items()):
        results[name] = scores = character_scores(colorizer, paths)
        rows = [("truth", scores["truth"]), ("none", scores["no_reference"]),
                ("reference", scores["reference_given"])]  # fmt: skip
        for label, row in rows:
            print(
                f"{name:<8} {label:<10} ab spread {row['ab_spread']:5.2f}  hue spread "
                f"{row['hue_spread_degrees']:5.1f}°  chroma {row['mean_chroma']:5.1f}  "
                f"to truth {row.get('distance_to_truth', 0.0):5.2f}"
            )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
