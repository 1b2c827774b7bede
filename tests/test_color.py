from __future__ import annotations

import pytest
import torch

from colorgan.color import l_ab_to_rgb, rgb_to_gray_rgb, rgb_to_l_ab

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
