"""HintSpread's cost: box sums from slices of cumulative sums, and the spread on the grid of the
generator's output stride (hints.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from colorgan.hints import HintSpread, _box_sums, draw_points, spread_candidates


def _box_sum_by_conv(x: torch.Tensor, half: int) -> torch.Tensor:
    """The (2 half + 1)^2 box sum around each pixel, clipped to the image: a convolution with
    a kernel of ones over zero padding (an independent reference)."""
    channels = x.shape[1]
    kernel = torch.ones(channels, 1, 2 * half + 1, 2 * half + 1, dtype=torch.float64)
    return F.conv2d(x.double(), kernel, padding=half, groups=channels).float()


def _box_sum_by_gather(x: torch.Tensor, half: int, dim: int) -> torch.Tensor:
    """The box sum as it was written before (index_select of the padded cumulative sum)."""
    size = x.shape[dim]
    shape = list(x.shape)
    shape[dim] = 1
    totals = torch.cat([x.new_zeros(shape), x.cumsum(dim)], dim=dim)
    index = torch.arange(size)
    high = (index + half + 1).clamp(max=size)
    low = (index - half).clamp(min=0)
    return totals.index_select(dim, high) - totals.index_select(dim, low)


def test_box_sums_match_a_convolution_including_boxes_wider_than_the_image() -> None:
    x = torch.rand(2, 3, 13, 20)
    halves = [0, 1, 4, 9, 25]  # 25: wider than both sides, the whole image in every box
    for half, summed in zip(halves, _box_sums(x, halves), strict=True):
        assert summed.shape == x.shape
        torch.testing.assert_close(summed, _box_sum_by_conv(x, half), rtol=1e-5, atol=1e-4)
    assert torch.allclose(next(_box_sums(x, [25])), x.sum(dim=(2, 3), keepdim=True).expand_as(x))


def test_box_sums_are_the_former_gathered_ones_bit_for_bit() -> None:
    x = torch.rand(2, 5, 32, 24)
    halves = [1, 3, 8, 16]
    for half, summed in zip(halves, _box_sums(x, halves), strict=True):
        before = _box_sum_by_gather(_box_sum_by_gather(x, half, 2), half, 3)
        assert torch.equal(summed, before)


def _hint_case(size: int, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A hint map (1, 3, size, size) of `count` points drawn as evaluate draws them from a
    random ab, and a random L (1, 1, size, size)."""
    gen = torch.Generator().manual_seed(seed)
    ab = torch.rand(2, size, size, generator=gen) * 1.6 - 0.8
    l = torch.rand(1, 1, size, size, generator=gen) * 2 - 1
    return draw_points(ab, count, [3], gen)[None], l


def test_candidates_at_stride_1_keep_the_no_point_in_reach_threshold() -> None:
    """Points in one corner of a 64 px map: the boxes that cannot reach the far corner hold
    no point there (cover exactly 0), and the widest box (half the side) reaches the centre."""
    hint_map = torch.zeros(1, 3, 64, 64)
    hint_map[:, :2, 0:3, 0:3], hint_map[:, 2, 0:3, 0:3] = 0.5, 1.0
    l = torch.zeros(1, 1, 64, 64)
    colors, cover, _ = spread_candidates(hint_map, l)
    assert torch.equal(cover[0, :, 0, 63, 63], torch.zeros(13))  # nothing in reach
    assert cover[0, 6, 0, 33, 33] > 0 and cover[0, 5, 0, 33, 33] == 0  # half-widths 32, 16
    assert torch.allclose(colors[0, 6, :, 33, 33], torch.tensor([0.5, 0.5]))


@pytest.mark.parametrize("stride", [2, 4])
def test_spread_at_a_stride_without_points_is_the_generators_ab_exactly(stride: int) -> None:
    ab = torch.rand(2, 2, 64, 64) * 2 - 1
    l = torch.rand(2, 1, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(HintSpread(stride)(ab, l, torch.zeros(2, 3, 64, 64)), ab)


def test_spread_at_stride_4_colors_the_point_and_nothing_beyond_its_reach() -> None:
    """One 4x4 point on a 64 px picture, spread on the grid of 4x4 cells: the point's own
    pixels take its color, a pixel 6 px away moves toward it, and beyond the widest box (half
    the side in whole cells from the point's cell, then half a cell of the bilinear step back
    to pixels) nothing moves."""
    ab = torch.full((1, 2, 64, 64), -0.1)
    l = torch.zeros(1, 1, 64, 64)
    hint_map = torch.zeros(1, 3, 64, 64)
    hint_map[:, 0, 20:24, 20:24], hint_map[:, 1, 20:24, 20:24] = 0.4, -0.3
    hint_map[:, 2, 20:24, 20:24] = 1.0
    with torch.no_grad():
        out = HintSpread(4)(ab, l, hint_map)
    point = torch.tensor([0.4, -0.3])
    assert torch.allclose(out[0, :, 21, 21], point, atol=0.03)
    near = out[0, :, 21, 29]
    assert (near - point).abs().sum() < 0.7 * (ab[0, :, 0, 0] - point).abs().sum()
    beyond = 24 + 32 + 2  # the point's cell's end, 8 cells of reach, half a cell
    assert torch.equal(out[0, :, beyond:, :], ab[0, :, beyond:, :])
    assert not torch.equal(out[0, :, beyond - 1, 21], ab[0, :, 0, 0])  # the last one moved


def test_spread_at_stride_4_prefers_pixels_as_light_as_the_point() -> None:
    ab = torch.full((1, 2, 64, 64), -0.1)
    l = torch.zeros(1, 1, 64, 64)
    l[:, :, :, 32:] = 0.8  # the right half is much lighter than the points (at L 0)
    hint_map = torch.zeros(1, 3, 64, 64)
    for left in (20, 24):
        hint_map[:, 0, 20:24, left : left + 4], hint_map[:, 1, 20:24, left : left + 4] = 0.4, -0.3
        hint_map[:, 2, 20:24, left : left + 4] = 1.0
    with torch.no_grad():
        out = HintSpread(4)(ab, l, hint_map)
    moved = (out - ab).abs().sum(dim=1)[0]
    assert moved[21, 30] > 4 * moved[21, 34]  # 2 px either side of the lightness edge


def test_spread_at_stride_4_trains_without_recompute_and_gives_gradients() -> None:
    """On the grid the spread's tensors are small: no checkpoint; the gradient reaches the
    generator's ab and the MLP."""
    hint_map, l = _hint_case(32, 6, seed=1)
    spread = HintSpread(4).train()
    with torch.no_grad():
        spread.net[2].weight.normal_(0.0, 0.3)
    ab = (torch.rand(1, 2, 32, 32) * 0.4).requires_grad_(True)
    out = spread(ab, l, hint_map)
    out.square().sum().backward()
    assert ab.grad is not None and ab.grad.abs().sum() > 0
    assert spread.net[0].weight.grad is not None and spread.net[0].weight.grad.abs().sum() > 0
