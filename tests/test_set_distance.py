"""fd_lite0 / kid_lite0: the two distances against direct NumPy/SciPy computations, and the
Lite0 feature function."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.linalg
import torch

from colorgan.lite0 import HEAD_CHANNELS, load_lite0
from colorgan.set_distance import (
    frechet_distance,
    kernel_inception_distance,
    lite0_features,
)


def gaussian(seed: int, n: int, dim: int, mean: float = 0.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(mean, 1.0, (n, dim))


def fd_by_sqrtm(a: np.ndarray, b: np.ndarray) -> float:
    """The textbook formula, as pytorch-fid computes it."""
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(s_a @ s_b).real
    return float(np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(s_a + s_b - 2.0 * root))


def fd_by_eigenvalues(a: np.ndarray, b: np.ndarray) -> float:
    """tr sqrt(S_a S_b) from the eigenvalues of the product (torchmetrics' form)."""
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    roots = np.sqrt(np.clip(np.linalg.eigvals(s_a @ s_b).real, 0.0, None))
    mean_term = np.sum((a.mean(0) - b.mean(0)) ** 2)
    return float(mean_term + np.trace(s_a) + np.trace(s_b) - 2.0 * roots.sum())


def kid_by_pairs(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD^2 x 1000 as a plain sum over pairs, k(x, y) = (x.y / d + 1)^3."""
    dim = a.shape[1]

    def k(x: np.ndarray, y: np.ndarray) -> float:
        return float((x @ y / dim + 1.0) ** 3)

    n, m = len(a), len(b)
    within_a = sum(k(a[i], a[j]) for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))
    within_b = sum(k(b[i], b[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    across = sum(k(x, y) for x in a for y in b) / (n * m)
    return 1000.0 * (within_a + within_b - 2.0 * across)


def test_frechet_distance_matches_scipy_sqrtm_on_full_rank_sets() -> None:
    a, b = gaussian(0, 400, 16), gaussian(1, 300, 16, mean=0.5)
    expected = fd_by_sqrtm(a, b)
    assert 3.5 < expected < 5.0  # the mean term, 16 * 0.5^2 = 4, plus sampling noise
    assert frechet_distance(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(
        expected, rel=1e-9
    )


def test_frechet_distance_with_fewer_samples_than_dimensions() -> None:
    # evaluate's case: a few hundred images against 1280 features, so rank-deficient covariances
    a, b = gaussian(2, 40, 64), gaussian(3, 50, 64, mean=0.5)
    expected = fd_by_eigenvalues(a, b)
    assert frechet_distance(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(
        expected, rel=1e-6
    )


def test_kid_matches_a_sum_over_pairs() -> None:
    a, b = gaussian(4, 12, 8), gaussian(5, 9, 8, mean=0.3)
    expected = kid_by_pairs(a, b)
    assert kernel_inception_distance(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(
        expected, rel=1e-9
    )


def test_distances_are_near_zero_for_one_distribution_and_large_for_a_shift() -> None:
    a = torch.from_numpy(gaussian(6, 300, 16))
    same = torch.from_numpy(gaussian(7, 200, 16))  # an independent draw of a's distribution
    shifted = torch.from_numpy(gaussian(8, 200, 16, mean=0.5))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(a, shifted) > 5 * frechet_distance(a, same)
    kid_same = kernel_inception_distance(a, same)
    kid_shifted = kernel_inception_distance(a, shifted)
    assert abs(kid_same) < 0.02 * kid_shifted and kid_shifted > 100.0


@pytest.mark.parametrize("n", [0, 1])
def test_distances_need_two_samples_per_set(n: int) -> None:
    a, b = torch.rand(n, 4, dtype=torch.float64), torch.rand(5, 4, dtype=torch.float64)
    for distance in (frechet_distance, kernel_inception_distance):
        with pytest.raises(ValueError, match="at least 2"):
            distance(a, b)


def test_lite0_features_are_float64_per_image_for_any_size_and_batch() -> None:
    network = load_lite0(pretrained=False).train()  # the function needs no weights
    torch.manual_seed(0)
    images = torch.rand(3, 3, 40, 48)
    features = lite0_features(network, images)
    assert features.shape == (3, HEAD_CHANNELS) and features.dtype == torch.float64
    assert network.training  # its mode is given back
    one_by_one = lite0_features(network, images, batch_size=1)
    assert torch.allclose(features, one_by_one, rtol=1e-4, atol=1e-6)  # eval-mode BN
    assert lite0_features(network, torch.rand(0, 3, 32, 32)).shape == (0, HEAD_CHANNELS)
