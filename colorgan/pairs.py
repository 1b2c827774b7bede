"""Training's reference images for `model.reference_match` (`data.reference_source`).

A sample's reference is either the same picture under a strong geometric change (`self`: a
rotation, zoom, shift and flip, and a smooth random warp, so the model cannot copy colors by
position and must find where they correspond), or another picture of the same sub-folder
(`sibling`: a character, a chapter; a random crop of it), or either at even odds (`both`; a
picture alone in its folder gets `self`). With probability data.reference_drop there is none,
so the model still colors alone.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from colorgan.color import rgb_to_l_ab, uint8_to_float
from colorgan.matching import EXEMPLAR_CHANNELS

SOURCES = ("self", "sibling", "both")
ROTATION = math.radians(30)  # self: the largest rotation, each way
ZOOM = (0.7, 1.4)  # self: the scale range
SHIFT = 0.2  # self: the largest shift, a fraction of the side
WARP_CELLS = 4  # self: the smooth warp's control grid (cells a side)
WARP = 0.06  # self: the warp's displacement (standard deviation, a fraction of the side)


def siblings(paths: Sequence[Path]) -> list[list[int]]:
    """For each path, the indices of the other paths in its folder."""
    folders: dict[Path, list[int]] = defaultdict(list)
    for index, path in enumerate(paths):
        folders[path.parent].append(index)
    return [[j for j in folders[path.parent] if j != i] for i, path in enumerate(paths)]


def _uniform(low: float, high: float, gen: torch.Generator) -> float:
    return low + (high - low) * float(torch.rand((), generator=gen))


def _grid(size: int, gen: torch.Generator) -> torch.Tensor:
    """A sampling grid (1, size, size, 2): a random similarity transform and a smooth warp."""
    angle = _uniform(-ROTATION, ROTATION, gen)
    scale = _uniform(*ZOOM, gen)
    flip = -1.0 if float(torch.rand((), generator=gen)) < 0.5 else 1.0
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    shift = [_uniform(-SHIFT, SHIFT, gen) * 2 for _ in range(2)]
    theta = torch.tensor([[cos * flip, -sin, shift[0]], [sin * flip, cos, shift[1]]])
    grid = F.affine_grid(theta[None], [1, 1, size, size], align_corners=False)
    cells = torch.randn(1, 2, WARP_CELLS + 1, WARP_CELLS + 1, generator=gen) * (WARP * 2)
    warp = F.interpolate(cells, size=(size, size), mode="bicubic", align_corners=True)
    return grid + warp.permute(0, 2, 3, 1)


def exemplar_of(rgb: torch.Tensor, given: torch.Tensor | None = None) -> torch.Tensor:
    """An exemplar slot (EXEMPLAR_CHANNELS, S, S) from uint8 RGB (3, S, S) (and where it is
    given (1, S, S); default everywhere)."""
    l, ab = rgb_to_l_ab(uint8_to_float(rgb[None]))
    given = torch.ones_like(l[0]) if given is None else given
    return torch.cat([l[0], ab[0], given], dim=0) * given


def self_exemplar(rgb: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The picture's own exemplar slot under a random strong geometric change: uint8 RGB
    (3, S, S) -> (EXEMPLAR_CHANNELS, S, S), `given` 0 where the change brought in nothing."""
    size = rgb.shape[-1]
    grid = _grid(size, gen)
    image = uint8_to_float(rgb[None])
    warped = F.grid_sample(image, grid, mode="bilinear", align_corners=False)
    inside = F.grid_sample(torch.ones_like(image[:, :1]), grid, align_corners=False)
    given = (inside > 0.99).float()[0]
    rgb_warped = (warped[0].clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    return exemplar_of(rgb_warped, given)


def empty_exemplar(size: int) -> torch.Tensor:
    """No reference: one slot of zeros (1, EXEMPLAR_CHANNELS, S, S)."""
    return torch.zeros(1, EXEMPLAR_CHANNELS, size, size)
