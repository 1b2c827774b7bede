"""Where a toned manga page has drawn ink: a small learned map, shipped with the package.

A toned page is ink on paper twice over: the lines, lettering and solid blacks the artist drew,
and the screentone's dots, lines and hatching that stand for gray. Its colored version keeps the
first pixel-sharp and smooths the second into its gray (tones.page_lightness), so it has to tell
them apart. Sizes and local ink density alone do not (dense line work -- hair strands side by
side -- looks like a line tone), so `InkNet`, a fully convolutional net of dilated 3x3
convolutions (about 35 pixels of context, 12k weights), learns it from pages `tones.make_page`
draws, whose drawn ink is known. The shipped weights (`inknet.pt`) are trained on pictures we
draw ourselves (`experiments/ink_net.py`, which says how); `ink_probability` runs them.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path
from typing import IO

import torch
from torch import nn

WIDTH = 16
DILATIONS = (1, 2, 4, 8, 1)
WEIGHTS = "inknet.pt"
_TILE = 512  # pixels a side run at once: bounded memory on tall strips


class InkNet(nn.Module):
    """(B, 1, H, W) page lightness in 0..1 (0 = ink, 1 = paper) -> drawn-ink logits, same size."""

    def __init__(self, width: int = WIDTH, dilations: tuple[int, ...] = DILATIONS) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(1, width, 3, padding=1), nn.ReLU()]
        for dilation in dilations:
            layers += [nn.Conv2d(width, width, 3, padding=dilation, dilation=dilation), nn.ReLU()]
        layers.append(nn.Conv2d(width, 1, 1))
        self.body = nn.Sequential(*layers)
        self.reach = 1 + sum(dilations)  # pixels of context each side

    def forward(self, level: torch.Tensor) -> torch.Tensor:
        return self.body(level * 2 - 1)


def load(source: str | Path | IO[bytes]) -> InkNet:
    """An InkNet with the weights saved at `source` (a path or an open binary file), eval mode,
    on the CPU."""
    net = InkNet()
    net.load_state_dict(torch.load(source, map_location="cpu", weights_only=True))
    return net.eval().requires_grad_(False)


@cache
def shipped() -> InkNet:
    """The package's trained InkNet (loaded once)."""
    with resources.files("colorgan").joinpath(WEIGHTS).open("rb") as file:
        return load(file)


def ink_probability(level: torch.Tensor, net: InkNet | None = None) -> torch.Tensor:
    """The probability (H, W) that each pixel of a page's lightness `level` ((H, W) in 0..1) is
    drawn ink, run in overlapping tiles so a tall strip needs bounded memory."""
    net = net or shipped()
    height, width = level.shape
    out = torch.empty(height, width)
    margin = net.reach
    with torch.inference_mode():
        for top in range(0, height, _TILE):
            for left in range(0, width, _TILE):
                y0, x0 = max(0, top - margin), max(0, left - margin)
                y1, x1 = min(height, top + _TILE + margin), min(width, left + _TILE + margin)
                logits = net(level[y0:y1, x0:x1].float()[None, None])[0, 0]
                inner = logits[top - y0 : top - y0 + _TILE, left - x0 : left - x0 + _TILE]
                out[top : top + inner.shape[0], left : left + inner.shape[1]] = inner.sigmoid()
    return out
