"""Score a model.reference checkpoint with the references a user would give it.

Every image of each set is colorized four ways: with no reference; with its own colors (self,
the upper bound); with another image of the same character as its reference (same: the real
use, e.g. the hero on another page); and with an image of a different character (other: the
wrong reference). A file name starts with its character (`calli_...`); references come from the
same set and are drawn with a fixed seed, the same for every model. A model without
model.reference is scored with no reference only (the baseline); a set whose names hold no
characters (photos/val) with no reference and self only.

    python experiments/reference_pairs.py CKPT ../shared/data/anime/unseen \
        ../shared/data/anime/val --json runs/reference/anime-ref-s0/pairs.json
"""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from colorgan.data import scan_images
from colorgan.device import resolve_device
from colorgan.evaluate import Scoring, evaluate_images
from colorgan.files import load_rgb
from colorgan.modeldir import load_model, resolve_model
from colorgan.protocols import SELF, Protocol, protocol
from colorgan.reference import from_image

MODES = ("none", "self", "same", "other")


def character(path: Path) -> str:
    return path.name.split("_", 1)[0]


def pairs(paths: Sequence[Path], seed: int = 0) -> dict[str, dict[Path, Path]]:
    """For each image, a same-character and a different-character reference from `paths`."""
    by_character: dict[str, list[Path]] = defaultdict(list)
    for path in paths:
        by_character[character(path)].append(path)
    rng = random.Random(seed)
    same, other = {}, {}
    for path in paths:
        mine = character(path)
        candidates = [p for p in by_character[mine] if p != path]
        same[path] = rng.choice(candidates)
        others = sorted(c for c in by_character if c != mine)
        other[path] = rng.choice(by_character[rng.choice(others)])
    return {"same": same, "other": other}


def mapped(mapping: dict[Path, Path]) -> Protocol:
    """A Protocol from a mapping image -> reference file (each file's summary made once)."""
    cache: dict[Path, torch.Tensor] = {}

    def pick(path: Path, crop: torch.Tensor) -> tuple[torch.Tensor, None]:
        ref = mapping[path]
        if ref not in cache:
            cache[ref] = from_image(load_rgb(ref))
        return cache[ref], None  # the summary alone, as this experiment measured it

    return Protocol("mapped", pick)


def score_set(checkpoint: str, data: Path, device: torch.device) -> dict[str, Any]:
    generator, config = load_model(resolve_model(checkpoint))
    paths = scan_images(data, config.data.gray_threshold, quiet=True).usable
    size = config.data.image_size
    modes: dict[str, Protocol | None] = {"none": None}
    if config.model.reference:
        modes["self"] = protocol(SELF, paths, size, config.data.gray_threshold)
        if len({character(p) for p in paths}) > 1:  # photos have no characters: self only
            drawn = pairs(paths)
            modes |= {"same": mapped(drawn["same"]), "other": mapped(drawn["other"])}
    out: dict[str, Any] = {}
    for mode, reference in modes.items():
        result = evaluate_images(
            generator, paths, Scoring(size, device, quiet=True, reference=reference)
        )
        out["gray"] = result.pop("baseline_gray")
        out[mode] = result
        gray = out["gray"]["delta_e"]
        print(
            f"{data.name:<8} {mode:<6} ΔE00 {result['delta_e']:6.2f}  PSNR {result['psnr']:6.2f}"
            f"  colorfulness {result['colorfulness']:5.1f}  (gray ΔE00 {gray:.2f})"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("data", type=Path, nargs="+")
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    results = {str(data): score_set(args.checkpoint, data, device) for data in args.data}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
