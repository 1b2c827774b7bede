from __future__ import annotations

import pytest
import torch
from kornia.color import lab_to_rgb, rgb_to_lab

from colorgan.color import (
    _outside,
    _shrink_into_gamut,
    l_ab_to_rgb,
    rgb_to_gray_rgb,
    rgb_to_l_ab,
    uint8_to_l,
)

# (sRGB, CIELAB under D65) reference values, as published e.g. by Bruce Lindbloom's calculator.
KNOWN = [
    ((1.0, 1.0, 1.0), (100.0, 0.0, 0.0)),
    ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0)),
    ((1.0, 0.0, 0.0), (53.24, 80.09, 67.20)),
    ((0.0, 1.0, 0.0), (87.73, -86.18, 83.18)),
    ((0.0, 0.0, 1.0), (32.30, 79.19, -107.86)),
]


def _pixel(rgb: tuple[float, float, float]) -> torch.Tensor:
    return torch.tensor(rgb).view(1, 3, 1, 1)


@pytest.mark.parametrize(("rgb", "lab"), KNOWN)
def test_known_lab_values_with_normalisation(
    rgb: tuple[float, float, float], lab: tuple[float, float, float]
) -> None:
    l, ab = rgb_to_l_ab(_pixel(rgb))
    assert l.item() == pytest.approx(lab[0] / 50 - 1, abs=2e-3)
    assert ab[0, 0].item() == pytest.approx(lab[1] / 110, abs=2e-3)
    assert ab[0, 1].item() == pytest.approx(lab[2] / 110, abs=2e-3)


def test_round_trip() -> None:
    torch.manual_seed(0)
    rgb = torch.rand(2, 3, 16, 16)
    l, ab = rgb_to_l_ab(rgb)
    assert l.min() >= -1 and l.max() <= 1 and ab.abs().max() < 1.0
    assert torch.allclose(l_ab_to_rgb(l, ab), rgb, atol=1e-4)


def test_reconstruction_clips_to_gamut() -> None:
    l = torch.zeros(1, 1, 4, 4)
    ab = torch.full((1, 2, 4, 4), 5.0)  # far outside any gamut
    rgb = l_ab_to_rgb(l, ab)
    assert rgb.min() >= 0 and rgb.max() <= 1 and torch.isfinite(rgb).all()


def test_gray_keeps_lightness_and_drops_chroma() -> None:
    rgb = torch.rand(1, 3, 8, 8)
    gray = rgb_to_gray_rgb(rgb)
    l, _ = rgb_to_l_ab(rgb)
    l_gray, ab_gray = rgb_to_l_ab(gray)
    assert torch.allclose(l_gray, l, atol=1e-3)
    assert ab_gray.abs().max() < 1e-3
    assert torch.allclose(gray[:, 0], gray[:, 1], atol=1e-4)


def test_lightness_of_8_bit_colors_is_exactly_kornias() -> None:
    generator = torch.Generator().manual_seed(0)
    rgb = torch.randint(0, 256, (2, 3, 64, 96), dtype=torch.uint8, generator=generator)
    rgb[0, :, 0, :4] = torch.tensor([[0, 255, 1, 254]] * 3, dtype=torch.uint8)  # grays, ends
    assert torch.equal(uint8_to_l(rgb), rgb_to_l_ab(rgb.float() / 255.0)[0])
    with pytest.raises(TypeError, match="uint8"):
        uint8_to_l(rgb.float())


def _srgb(lab: torch.Tensor) -> torch.Tensor:
    """Lab (3, N) -> unclipped sRGB (3, N), kornia's conversion."""
    return lab_to_rgb(lab[:, None], clip=False)[:, 0]


def _lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB (3, N) in [0, 1] -> Lab (3, N)."""
    return rgb_to_lab(rgb[:, None])[:, 0]


def test_a_color_is_shrunk_into_the_gamut_as_little_as_it_needs() -> None:
    generator = torch.Generator().manual_seed(1)
    lab = torch.rand(3, 2000, generator=generator) * torch.tensor([[100.0], [260.0], [260.0]])
    lab[1:] -= 130.0
    lab = lab[:, _outside(_srgb(lab)[:, :, None])[:, 0]]  # the ones outside sRGB
    assert lab.shape[1] > 500
    fitted = _shrink_into_gamut(lab)
    assert not _outside(fitted[:, :, None]).any()  # inside now
    back = _lab(fitted.clamp(0.0, 1.0))
    assert torch.allclose(back[0], lab[0], atol=0.05)  # the same L
    scale = back[1:].norm(dim=0) / lab[1:].norm(dim=0)  # how much chroma it kept
    assert torch.allclose(back[1:], lab[1:] * scale, atol=0.1)  # the same hue
    # and only just: 1 % of the chroma more would be outside again
    more = torch.cat([lab[:1], lab[1:] * (scale + 0.01)])
    assert _outside(_srgb(more)[:, :, None]).all()
