"""Metrics against known values: PSNR, SSIM, CIEDE2000 and colorfulness."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.color import deltaE_ciede2000
from skimage.metrics import structural_similarity

from colorgan.metrics import (
    METRIC_KEYS,
    PSNR_MAX,
    colorfulness,
    delta_e2000,
    image_metrics,
    psnr,
    ssim,
)


def uniform(rgb: tuple[float, float, float], size: int = 8) -> torch.Tensor:
    """A (1, 3, size, size) image of one color in [0, 1]."""
    return torch.tensor(rgb, dtype=torch.float32).view(1, 3, 1, 1).expand(1, 3, size, size)


def test_psnr_of_identical_images_is_capped() -> None:
    image = torch.rand(2, 3, 16, 16)
    assert psnr(image, image).tolist() == [PSNR_MAX, PSNR_MAX]


def test_psnr_of_a_constant_offset() -> None:
    target = 0.2 + 0.6 * torch.rand(2, 3, 16, 16)
    # MSE 0.1^2 = 0.01 on a [0, 1] range -> 10 log10(1 / 0.01) = 20 dB
    assert psnr(target + 0.1, target) == pytest.approx([20.0, 20.0], abs=1e-3)


def test_ssim_of_identical_images_is_one_and_matches_scikit_image() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((24, 24, 3))
    b = np.clip(a + rng.normal(0.0, 0.1, a.shape), 0.0, 1.0)
    as_tensor = [torch.from_numpy(x).permute(2, 0, 1)[None].float() for x in (a, b)]
    assert ssim(as_tensor[0], as_tensor[0]).item() == pytest.approx(1.0, abs=1e-5)
    options = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}
    reference = structural_similarity(a, b, data_range=1.0, channel_axis=2, **options)
    # same Gaussian SSIM; the libraries differ only at the borders
    assert ssim(as_tensor[1], as_tensor[0]).item() == pytest.approx(reference, abs=5e-3)


def test_scikit_image_ciede2000_matches_published_pair() -> None:
    # Sharma, Wu & Dalal (2005), test pair 1: Delta E00 = 2.0425
    lab1, lab2 = np.array([50.0, 2.6772, -79.7751]), np.array([50.0, 0.0, -82.7485])
    assert float(deltaE_ciede2000(lab1, lab2)) == pytest.approx(2.0425, abs=1e-4)


def test_delta_e_known_values() -> None:
    white, black = uniform((1.0, 1.0, 1.0)), uniform((0.0, 0.0, 0.0))
    red = uniform((1.0, 0.0, 0.0))
    assert delta_e2000(red, red).item() == pytest.approx(0.0, abs=1e-9)
    # L 100 against L 0 with no chroma: Delta L' = 100, S_L = 1 at mean L 50
    assert delta_e2000(white, black).item() == pytest.approx(100.0, abs=1e-3)
    assert delta_e2000(white, black).item() == delta_e2000(black, white).item()


def test_colorfulness_of_a_2x2_image_by_hand() -> None:
    pixels = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [255, 255, 255]]], np.float64)
    image = torch.from_numpy(pixels / 255.0).permute(2, 0, 1)[None]
    # rg = |R - G| = 255, 255, 0, 0: mean 127.5, population variance 127.5^2
    # yb = |(R + G)/2 - B| = 127.5, 127.5, 255, 0: mean 127.5, variance (2 * 127.5^2) / 4
    expected = math.sqrt(127.5**2 + 127.5**2 / 2) + 0.3 * math.sqrt(127.5**2 + 127.5**2)
    assert colorfulness(image).item() == pytest.approx(expected, rel=1e-9)
    assert expected == pytest.approx(210.249, abs=1e-3)


def test_colorfulness_of_gray_is_zero() -> None:
    gray = torch.rand(2, 1, 8, 8).expand(2, 3, 8, 8)
    assert colorfulness(gray).tolist() == pytest.approx([0.0, 0.0], abs=1e-9)


def test_image_metrics_has_every_key_per_image() -> None:
    pred, target = torch.rand(3, 3, 16, 16), torch.rand(3, 3, 16, 16)
    values = image_metrics(pred, target)
    assert tuple(values) == METRIC_KEYS
    assert all(v.shape == (3,) and v.dtype == torch.float64 for v in values.values())
    assert values["colorfulness"].tolist() == pytest.approx(colorfulness(pred).tolist())
