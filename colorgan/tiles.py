"""Tall pictures (webtoon strips, long pages, panoramas) at the model's scale.

A picture whose working shape (short side about the working size) is more than MAX_ASPECT times
as long as it is wide runs through the model in tiles: each tile the full short side and
MAX_ASPECT short sides long, neighbouring tiles overlapping by at least one short side. Each
pixel's colors are the tiles' colors there weighted by ramps that fall linearly to zero toward a
tile's inner edges, so one tile fades into the next over the overlap and no border shows. Only a
batch of tiles (Colorizer.chunk) is in the model at once; the picture's ab is summed into one
working-size tensor, so memory grows with the strip's working pixels, not with its tiles.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from colorgan.batch import Prediction
from colorgan.request import Request

MAX_ASPECT = 4  # one model pass sees at most this many short sides along the long side
OVERLAP = 1  # neighbouring tiles share at least this many short sides

# Colorizer.predict_batch: l (B, 1, h, w) in [-1, 1], a Request per picture, its inputs at that
# shape -> a Prediction per picture
PredictBatch = Callable[
    [torch.Tensor, Sequence[Request], Sequence[dict[str, torch.Tensor]]], list[Prediction]
]


def is_tall(shape: Sequence[int]) -> bool:
    """Whether a working shape (h, w) runs in tiles: its long side over MAX_ASPECT short ones."""
    return max(shape) > MAX_ASPECT * min(shape)


def model_shape(shape: tuple[int, int]) -> tuple[int, int]:
    """The largest shape the model runs at for working shape `shape` (h, w): a tile's when the
    picture is tall, else the shape itself (what memory checks size)."""
    if not is_tall(shape):
        return shape
    short = min(shape)
    return (MAX_ASPECT * short, short) if shape[0] > shape[1] else (short, MAX_ASPECT * short)


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Where the tiles of `tile` pixels start along a side of `length`: the fewest evenly spaced
    tiles that cover it, neighbours sharing at least `overlap` pixels."""
    if length <= tile:
        return [0]
    count = 1 + -(-(length - tile) // (tile - overlap))  # ceil: each further tile adds a step
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def tile_weights(starts: Sequence[int], tile: int) -> list[torch.Tensor]:
    """Each tile's weight along the long side, (tile,) in (0, 1]: rising linearly over its
    overlap with the previous tile and falling over its overlap with the next (half-pixel
    centres, so no weight is 0 and every pixel has some), 1 elsewhere."""
    weights = []
    position = torch.arange(tile, dtype=torch.float32) + 0.5
    for i, start in enumerate(starts):
        weight = torch.ones(tile)
        if i > 0:  # rises over [start, end of the previous tile)
            rise = starts[i - 1] + tile - start
            weight = torch.minimum(weight, position / rise)
        if i + 1 < len(starts):  # falls over [start of the next tile, end)
            fall = start + tile - starts[i + 1]
            weight = torch.minimum(weight, (tile - position) / fall)
        weights.append(weight)
    return weights


def _crop(
    inputs: dict[str, torch.Tensor], shape: torch.Size, dim: int, start: int, tile: int
) -> dict[str, torch.Tensor]:
    """A picture's inputs for one tile: maps at the working shape (a hint map) cut like its l;
    the rest (a reference's summary and images) the same for every tile."""
    return {
        name: t.narrow(dim, start, tile) if t.dim() == 4 and t.shape[-2:] == shape else t
        for name, t in inputs.items()
    }


def predict_tiled(
    predict: PredictBatch,
    l_small: torch.Tensor,
    requests: Sequence[Request],
    given: Sequence[dict[str, torch.Tensor]],
    chunk: Callable[[tuple[int, int]], int],
) -> list[Prediction]:
    """`predict` for tall pictures, l_small (B, 1, h, w) in [-1, 1]: each picture in
    overlapping tiles (at most `chunk(tile shape)` through the model at once), blended by
    tile_weights -> a Prediction per picture at (h, w)."""
    shape = l_small.shape[-2:]
    dim = 2 if shape[0] >= shape[1] else 3  # the long side's dimension
    tile_shape = model_shape((shape[0], shape[1]))
    tile = tile_shape[dim - 2]
    starts = tile_starts(l_small.shape[dim], tile, OVERLAP * min(shape))
    weights = [
        w.to(l_small.device).view((1, 1, -1, 1) if dim == 2 else (1, 1, 1, -1))
        for w in tile_weights(starts, tile)
    ]
    step = max(1, chunk(tile_shape))
    found = []
    for l_one, request, inputs in zip(l_small.split(1), requests, given, strict=True):
        sums: dict[str, torch.Tensor] = {}
        for first in range(0, len(starts), step):
            group = starts[first : first + step]
            tiles = torch.cat([l_one.narrow(dim, start, tile) for start in group])
            cut = [_crop(inputs, shape, dim, start, tile) for start in group]
            parts = predict(tiles, [request] * len(group), cut)
            for start, weight, part in zip(group, weights[first:], parts, strict=False):
                _add(sums, part, start, weight, dim, l_one)
        total = sums.pop("weight")
        found.append(Prediction(**{name: value / total for name, value in sums.items()}))
    return found


def _add(
    sums: dict[str, torch.Tensor],
    part: Prediction,
    start: int,
    weight: torch.Tensor,
    dim: int,
    like: torch.Tensor,
) -> None:
    """Add one tile's weighted ab (and uncertainty) into the picture's sums at `start`."""
    values = {"ab": part.ab, "weight": weight.expand_as(part.ab[:, :1])}
    if part.uncertainty is not None:
        values["uncertainty"] = part.uncertainty
    for name, value in values.items():
        if name not in sums:
            sums[name] = like.new_zeros((1, value.shape[1], *like.shape[-2:]))
        scale = weight if name != "weight" else 1.0
        sums[name].narrow(dim, start, value.shape[dim]).add_(value * scale)
