"""The generator: a U-Net with skip connections, l (B, 1, H, W) in -> ab (B, 2, H, W) out."""

from __future__ import annotations

import torch
from torch import nn

Norm = str  # "batch" | "instance" | "none"


def norm_layer(kind: Norm, channels: int) -> nn.Module:
    """The normalisation layer `kind` names, for `channels` feature maps."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}: use batch, instance or none")


def init_weights(module: nn.Module) -> None:
    """pix2pix's initialisation: conv weights ~ N(0, 0.02), norm scales ~ N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def _down(c_in: int, c_out: int, norm: Norm, outer: bool, inner: bool) -> nn.Sequential:
    use_norm = not (outer or inner)
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 4, stride=2, padding=1, bias=not use_norm or norm == "none"),
        norm_layer(norm, c_out) if use_norm else nn.Identity(),
        nn.ReLU(inplace=True) if inner else nn.LeakyReLU(0.2, inplace=True),
    )


def _up(c_in: int, c_out: int, norm: Norm, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=norm == "none"),
        norm_layer(norm, c_out),
        nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
        nn.ReLU(inplace=True),
    )


class Generator(nn.Module):
    """U-Net: `depth` stride-2 convs down, `depth` transposed convs up, skips at every level."""

    def __init__(
        self,
        base_channels: int = 64,
        depth: int = 8,
        norm: Norm = "batch",
        dropout: float = 0.0,
        in_channels: int = 1,
        out_channels: int = 2,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.depth = depth
        channels = [base_channels * min(2**i, 8) for i in range(depth)]
        self.down = nn.ModuleList(
            _down(
                in_channels if i == 0 else channels[i - 1],
                channels[i],
                norm,
                i == 0,
                i == depth - 1,
            )
            for i in range(depth)
        )
        # up[k] maps level depth-1-k to level depth-2-k; only the three innermost get dropout.
        self.up = nn.ModuleList(
            _up(
                channels[i] if i == depth - 1 else 2 * channels[i],
                channels[i - 1],
                norm,
                dropout if depth - 1 - i < 3 else 0.0,
            )
            for i in range(depth - 1, 0, -1)
        )
        self.head = nn.Sequential(
            nn.ConvTranspose2d(channels[0] * (2 if depth > 1 else 1), out_channels, 4, 2, 1),
            nn.Tanh(),
        )
        init_weights(self)

    @property
    def multiple(self) -> int:
        """Height and width must be multiples of this."""
        return 2**self.depth

    def forward(self, l: torch.Tensor) -> torch.Tensor:
        """l: (B, 1, H, W) in [-1, 1] -> ab: (B, 2, H, W) in [-1, 1]."""
        height, width = l.shape[-2:]
        if height % self.multiple or width % self.multiple:
            raise ValueError(
                f"input size {height}x{width} is not a multiple of 2**depth={self.multiple}; "
                f"resize or pad it, or use a model with a smaller depth"
            )
        skips = []
        x = l
        for block in self.down:
            x = block(x)
            skips.append(x)
        skips.pop()  # the innermost output is x itself
        for block in self.up:
            x = block(x)
            x = torch.cat([x, skips.pop()], dim=1)
        return self.head(x)
