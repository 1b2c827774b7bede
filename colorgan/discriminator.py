"""The discriminator: a plain-CNN conditional PatchGAN on (l, ab), no skip connections."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as spectral

from colorgan.generator import Norm, init_weights, norm_layer


def receptive_field(layers: int) -> int:
    """Receptive field in pixels of a PatchGAN with `layers` stride-2 convs (3 gives 70)."""
    field = 1
    for stride in reversed([2] * layers + [1, 1]):  # every conv is 4x4
        field = (field - 1) * stride + 4
    return field


class Discriminator(nn.Module):
    """PatchGAN: one real/fake logit per overlapping patch (70x70 pixels with layers=3)."""

    def __init__(
        self,
        base_channels: int = 64,
        layers: int = 3,
        norm: Norm = "batch",
        spectral_norm: bool = False,
        in_channels: int = 3,
    ) -> None:
        super().__init__()

        def conv(c_in: int, c_out: int, stride: int, bias: bool) -> nn.Module:
            layer = nn.Conv2d(c_in, c_out, 4, stride=stride, padding=1, bias=bias)
            return spectral(layer) if spectral_norm else layer

        with_bias = norm == "none"
        blocks: list[nn.Module] = [
            conv(in_channels, base_channels, 2, True),
            nn.LeakyReLU(0.2, True),
        ]
        c_out = base_channels
        for n in range(1, layers + 1):
            c_in, c_out = c_out, base_channels * min(2**n, 8)
            stride = 2 if n < layers else 1
            blocks += [conv(c_in, c_out, stride, with_bias), norm_layer(norm, c_out)]
            blocks.append(nn.LeakyReLU(0.2, True))
        blocks.append(conv(c_out, 1, 1, True))
        self.net = nn.Sequential(*blocks)
        init_weights(self)

    def forward(self, l: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
        """l: (B, 1, H, W), ab: (B, 2, H, W) -> logits (B, 1, h, w), one per patch."""
        return self.net(torch.cat([l, ab], dim=1))
