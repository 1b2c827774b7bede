"""Where to click next: the places where one more color point would help the most.

A point changes the colors around it, of the pixels about as light as it (hints.HintSpread).
So a place's gain is the predicted error (`model.uncertainty`'s per-pixel |ab error|) summed
over the pixels a point there would reach: those within REACH of the shorter side around it,
in the same one of LIGHTNESS_BINS lightness bands. Places are chosen one after another, the
highest gain first; each chosen place (and each point the user already gave) takes its reach
out of the next ones' gains, so the suggestions spread over the picture instead of piling up.
Without `model.uncertainty` every pixel counts the same: the suggestions then go where a point
reaches the most picture. Each suggestion carries the model's current color there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from colorgan.color import float_to_uint8, lab_in_gamut
from colorgan.hints import Hint

REACH = 1 / 8  # a point's reach: this fraction of the shorter side, each way
LIGHTNESS_BINS = 8  # "about as light": the same of this many bands of l in [-1, 1]
MAX_SUGGESTIONS = 100
TIE_BREAK = 1e-3  # how much a place's own uncertainty counts beside its reach's


def _bands(l: torch.Tensor) -> torch.Tensor:
    """Each pixel's lightness band (1, 1, h, w), 0 .. LIGHTNESS_BINS - 1, of l in [-1, 1]."""
    band = ((l.clamp(-1.0, 1.0) + 1.0) * (LIGHTNESS_BINS / 2)).long()
    return band.clamp(0, LIGHTNESS_BINS - 1)


def _gains(weight: torch.Tensor, bands: torch.Tensor, half: int) -> torch.Tensor:
    """Each pixel's gain (h, w): `weight` (1, 1, h, w) summed over the pixels within `half`
    of it in its own lightness band."""
    gain = torch.zeros_like(weight)
    for band in range(LIGHTNESS_BINS):
        inside = bands == band
        if not inside.any():
            continue
        summed = F.avg_pool2d(
            weight * inside, 2 * half + 1, stride=1, padding=half, count_include_pad=True
        )
        gain = torch.where(inside, summed, gain)
    return gain[0, 0]


def _cover(weight: torch.Tensor, bands: torch.Tensor, row: int, col: int, half: int) -> None:
    """Take what a point at (row, col) reaches out of `weight`, in place."""
    rows = slice(max(0, row - half), row + half + 1)
    cols = slice(max(0, col - half), col + half + 1)
    same = bands[..., rows, cols] == bands[0, 0, row, col]
    weight[..., rows, cols] = torch.where(same, 0.0, weight[..., rows, cols])


def suggest(
    l: torch.Tensor,
    ab: torch.Tensor,
    uncertainty: torch.Tensor | None,
    hint_map: torch.Tensor | None,
    n: int,
    image_hw: tuple[int, int],
) -> list[Hint]:
    """The `n` places (pixels of an image of `image_hw`) where a point would help most, each
    with the model's color there, from its output at the working size: l (1, 1, h, w) in
    [-1, 1], ab (1, 2, h, w) in [-1, 1], uncertainty (1, 1, h, w) > 0 or None, and the hint
    map of the points already given (1, 3, h, w), or None. Fewer when nothing is left to
    gain."""
    if not 0 <= n <= MAX_SUGGESTIONS:
        raise ValueError(f"suggestions must be from 0 to {MAX_SUGGESTIONS}, got {n}")
    l, ab = l.float().cpu(), ab.float().cpu()
    h, w = l.shape[-2:]
    half = max(1, round(min(h, w) * REACH))
    bands = _bands(l)
    weight = torch.ones_like(l) if uncertainty is None else uncertainty.float().cpu().clone()
    if hint_map is not None:
        for row, col in torch.nonzero(hint_map[0, 2].cpu() > 0).tolist():
            _cover(weight, bands, row, col, half)
    rgb = float_to_uint8(lab_in_gamut(l, ab))[0]  # (3, h, w): its colors, as colorize joins them
    height, width = image_hw
    chosen = []
    for _ in range(n):
        gains = _gains(weight, bands, half)
        # among equal reaches, the place whose own color is least sure
        best = int((gains + TIE_BREAK * weight[0, 0]).argmax())
        if float(gains.flatten()[best]) <= 0.0:
            break
        row, col = divmod(best, w)
        _cover(weight, bands, row, col, half)
        x = min(width - 1, int((col + 0.5) * width / w))
        y = min(height - 1, int((row + 0.5) * height / h))
        color = "#{:02x}{:02x}{:02x}".format(*rgb[:, row, col].tolist())
        chosen.append(Hint(x, y, color))
    return chosen
