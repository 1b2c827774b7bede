"""The learned drawn-ink map of toned pages (inknet.py)."""

from __future__ import annotations

import torch

from colorgan import inknet
from colorgan.inknet import InkNet, ink_probability, shipped


def test_the_tiled_map_equals_the_whole_page_run_at_once(monkeypatch) -> None:
    torch.manual_seed(0)
    net = InkNet().eval()  # explicitly random weights
    level = torch.rand(70, 45)
    with torch.no_grad():
        whole = net(level[None, None])[0, 0].sigmoid()
    monkeypatch.setattr(inknet, "_TILE", 16)  # 5 x 3 tiles, each with its margin of context
    tiled = ink_probability(level, net)
    assert tiled.shape == (70, 45)
    assert torch.allclose(tiled, whole, atol=1e-5)


def test_the_shipped_map_keeps_a_drawn_line_and_drops_a_dot_screen() -> None:
    size = 96
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    spot = (torch.cos(x * 2 * torch.pi / 5) + torch.cos(y * 2 * torch.pi / 5)) / 4
    ink = 0.5 - spot < 0.3  # a 30% dot screen of period 5 ...
    ink[48:50, :] = True  # ... and a 2-px drawn line across it
    ink[70:, 20:60] = True  # ... and a solid black area
    probability = ink_probability(torch.where(ink, 0.0, 1.0), shipped())
    assert float(probability[48:50, 8:-8].mean()) > 0.8
    assert float(probability[75:90, 30:50].min()) > 0.6  # (inside it: less context, less sure)
    dots = ink[8:40, 8:-8]
    assert float(probability[8:40, 8:-8][dots].mean()) < 0.2
