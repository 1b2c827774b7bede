"""evaluate's `--reference` protocols: which reference each evaluated crop is colorized with.

- `self`: the crop's own colors (the upper bound: the truth, aligned);
- `sibling`: the next image (sorted) of the crop's own folder, center-cropped as evaluate crops
  its images: "another picture of the same character", a protocol any user can rerun on their
  folders (an image alone in its folder gets none; the count is reported);
- FILE: one image for every crop;
- DIR: a bank, each crop using the BANK_TOP images closest to it (bank.py).

Each gives, for a batch of crops, the generator inputs of its references: the summary
(B, REFERENCE_CHANNELS) and the exemplar (B, R, 4, S, S) (matching.py).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from colorgan import bank
from colorgan.data import ColorImages, scan_images
from colorgan.errors import EvaluateError
from colorgan.files import DECODE_ERRORS, decode_reason, load_rgb
from colorgan.matching import exemplar_slot, stack_exemplars
from colorgan.pairs import exemplar_of
from colorgan.reference import REFERENCE_CHANNELS, from_rgb, reduce_image

SELF = "self"
SIBLING = "sibling"
Inputs = dict[str, torch.Tensor]  # "reference": (B, 257), "exemplar": (B, R, 4, S, S)


def _inputs(summaries: Sequence[torch.Tensor], slots: Sequence[torch.Tensor | None]) -> Inputs:
    """Per-crop summaries (1, 257) and exemplars ((1, R, 4, S, S) or None: no reference)."""
    given = [{} if s is None else {"exemplar": s} for s in slots]
    inputs = {"reference": torch.cat(list(summaries))}
    if any(given):
        inputs["exemplar"] = stack_exemplars(given)
    return inputs


@dataclass
class Protocol:
    """A --reference protocol: `inputs(paths, rgb)` for a batch of crops (uint8 (B, 3, S, S))
    and their files; `missing` counts the crops it had no reference for."""

    name: str
    pick: Callable[[Path, torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]
    missing: int = 0
    seen: set[Path] = field(default_factory=set)

    def inputs(self, paths: Sequence[Path], rgb: torch.Tensor) -> Inputs:
        picked = [self.pick(path, crop) for path, crop in zip(paths, rgb, strict=True)]
        for path, (_, slot) in zip(paths, picked, strict=True):
            if slot is None and path not in self.seen:
                self.missing += 1
            self.seen.add(path)
        return _inputs([p[0] for p in picked], [p[1] for p in picked])


def _self(path: Path, crop: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    return from_rgb(crop[None]), exemplar_of(crop)[None, None]


def _image(path: Path) -> torch.Tensor:
    """A reference file as uint8 RGB (3, h, w), reduced; EvaluateError naming it."""
    try:
        return reduce_image(load_rgb(path))[0]
    except DECODE_ERRORS as err:
        raise EvaluateError(
            f"--reference {path}: cannot read the image ({decode_reason(err)})"
        ) from None


def file_protocol(path: Path) -> Protocol:
    """--reference FILE: one image for every crop."""
    rgb = _image(path)
    summary = from_rgb(rgb[None])
    return Protocol(
        str(path), lambda _, crop: (summary, exemplar_slot(rgb, crop.shape[-1])[None, None])
    )


def bank_protocol(folder: Path, gray_threshold: float) -> Protocol:
    """--reference DIR: each crop with the BANK_TOP images of the folder closest to it."""
    paths = scan_images(folder, gray_threshold, quiet=True).usable
    if not paths:
        raise EvaluateError(f"--reference {folder}: no color images in the folder")
    images = [_image(p) for p in paths]
    summaries = [from_rgb(i[None]) for i in images]
    descriptors = torch.stack([bank.describe(i) for i in images])

    def pick(_: Path, crop: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        chosen = bank.closest(bank.describe(crop), descriptors)
        slots = [exemplar_slot(images[i], crop.shape[-1]) for i in chosen]
        summary = torch.cat([summaries[i] for i in chosen]).mean(0, keepdim=True)
        return summary, torch.stack(slots)[None]

    return Protocol(str(folder), pick)


def sibling_protocol(paths: Sequence[Path], size: int) -> Protocol:
    """--reference sibling: each image's next (sorted, wrapping) in its own folder."""
    folders: dict[Path, list[Path]] = defaultdict(list)
    for path in sorted(paths):
        folders[path.parent].append(path)
    crops = ColorImages(list(paths), size, train=False)

    def pick(path: Path, crop: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        mates = folders[path.parent]
        if len(mates) < 2:
            return torch.zeros(1, REFERENCE_CHANNELS), None
        other = mates[(mates.index(path) + 1) % len(mates)]
        rgb = crops.load(crops.paths.index(other), 0)
        assert isinstance(rgb, torch.Tensor)
        return _self(other, rgb)

    return Protocol(SIBLING, pick)


def protocol(reference: str | Path, paths: Sequence[Path], size: int, threshold: float) -> Protocol:
    """The Protocol --reference names: self, sibling, a folder (a bank) or an image file."""
    if str(reference) == SELF:
        return Protocol(SELF, _self)
    if str(reference) == SIBLING:
        return sibling_protocol(paths, size)
    path = Path(reference)
    if path.is_dir():
        return bank_protocol(path, threshold)
    return file_protocol(path)
