"""Issue #34's experiment: one model on a folder grouped one sub-folder per character, each image
colorized with

- `none`: no reference;
- `sibling`: the next image (sorted) of its own folder (evaluate --reference sibling);
- `three`: the next three images of its own folder;
- `other`: the image at the same place in the next character's folder (another character);
- `self`: its own colors (the upper bound),

scored as evaluate scores (ΔE00, PSNR, colorfulness, KID; the gray image's ΔE00 beside).
Every reference is its image's center crop, as evaluate crops.

    python experiments/reference_match.py CKPT GROUPED_DIR --json OUT [--modes none,sibling]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from colorgan.data import ColorImages, scan_images
from colorgan.evaluate import Scoring, evaluate_images
from colorgan.modeldir import load_model, resolve_model
from colorgan.pairs import exemplar_of
from colorgan.protocols import Protocol, _self
from colorgan.request import Capabilities

MODES = ("none", "sibling", "three", "other", "self")


def mapping(paths: Sequence[Path], mode: str) -> dict[Path, list[Path]]:
    """Each image's references for `mode` (see the module docstring)."""
    folders: dict[Path, list[Path]] = defaultdict(list)
    for path in sorted(paths):
        folders[path.parent].append(path)
    names = sorted(folders)
    out = {}
    for path in paths:
        mates = folders[path.parent]
        i = mates.index(path)
        if mode == "sibling":
            out[path] = [mates[(i + 1) % len(mates)]]
        elif mode == "three":
            out[path] = [mates[(i + k) % len(mates)] for k in (1, 2, 3)]
        else:  # other
            folder = folders[names[(names.index(path.parent) + 1) % len(names)]]
            out[path] = [folder[i % len(folder)]]
    return out


def mapped(paths: Sequence[Path], mode: str, size: int) -> Protocol:
    """A Protocol giving each crop the center crops of its `mode` references."""
    if mode == "self":
        return Protocol("self", _self)
    refs = mapping(paths, mode)
    crops = ColorImages(list(paths), size, train=False)
    index = {p: i for i, p in enumerate(crops.paths)}

    def pick(path: Path, crop: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rgbs = [crops.load(index[r], 0) for r in refs[path]]
        summaries = [_self(r, rgb)[0] for r, rgb in zip(refs[path], rgbs, strict=True)]
        slots = torch.stack([exemplar_of(rgb) for rgb in rgbs])  # type: ignore[arg-type]
        return torch.cat(summaries).mean(0, keepdim=True), slots[None]

    return Protocol(mode, pick)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("data", type=Path)
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--modes", default=",".join(MODES))
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    generator, config = load_model(resolve_model(args.checkpoint))
    caution = Capabilities.of(config.model).caution
    paths = scan_images(args.data, config.data.gray_threshold, quiet=True).usable
    size = config.data.image_size
    out: dict[str, Any] = {"checkpoint": args.checkpoint, "data": str(args.data), "size": size}
    for mode in args.modes.split(","):
        protocol = None if mode == "none" else mapped(paths, mode, size)
        scoring = Scoring(size, torch.device("cpu"), 32, True, caution, protocol)
        result = evaluate_images(generator, paths, scoring, fid=True)
        out["gray"] = result.pop("baseline_gray")
        out[mode] = result
        print(
            f"{mode:<8} ΔE00 {result['delta_e']:6.2f}  PSNR {result['psnr']:6.2f}  colorfulness "
            f"{result['colorfulness']:5.1f}  KID {result['kid_lite0']:.4f}  "
            f"(gray ΔE00 {out['gray']['delta_e']:.2f})",
            flush=True,
        )
    args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
