from __future__ import annotations

import pytest
import torch

from colorgan import Discriminator, Generator
from colorgan.discriminator import receptive_field


def test_generator_shapes_and_range() -> None:
    g = Generator(base_channels=8, depth=4)
    ab = g(torch.randn(2, 1, 32, 48))
    assert ab.shape == (2, 2, 32, 48)
    assert ab.abs().max() <= 1.0


def test_generator_default_is_pix2pix_sized() -> None:
    g = Generator()
    params = sum(p.numel() for p in g.parameters())
    assert 54e6 < params < 55e6  # pix2pix's unet_256 has 54.4 M parameters


def test_generator_skips_carry_detail() -> None:
    # A skip connection lets a one-pixel change in l reach the output at the same place.
    torch.manual_seed(0)
    g = Generator(base_channels=8, depth=3).eval()
    l = torch.zeros(1, 1, 16, 16)
    changed = l.clone()
    changed[0, 0, 5, 5] = 1.0
    diff = (g(changed) - g(l)).abs().sum(dim=1)[0]
    assert diff[4:7, 4:7].max() > 10 * diff[12:, 12:].max()  # strongest where the change was


def test_size_not_multiple_is_clear_error() -> None:
    g = Generator(base_channels=8, depth=4)
    with pytest.raises(ValueError, match=r"not a multiple of 2\*\*depth=16"):
        g(torch.randn(1, 1, 40, 48))


def test_discriminator_is_a_70px_patchgan() -> None:
    assert receptive_field(3) == 70
    d = Discriminator(base_channels=8)
    logits = d(torch.randn(2, 1, 128, 128), torch.randn(2, 2, 128, 128))
    assert logits.shape == (2, 1, 14, 14)
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in d.modules())


def test_discriminator_spectral_norm_bounds_weights() -> None:
    d = Discriminator(base_channels=8, spectral_norm=True, norm="none")
    names = [n for n, _ in d.named_parameters()]
    assert any("parametrizations.weight" in n for n in names)
    torch.manual_seed(0)
    for _ in range(5):  # power iterations run in train mode
        d(torch.randn(2, 1, 64, 64), torch.randn(2, 2, 64, 64))
    conv = d.net[0]
    sigma = torch.linalg.matrix_norm(conv.weight.flatten(1), ord=2)
    assert sigma.item() == pytest.approx(1.0, rel=0.1)
