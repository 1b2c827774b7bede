"""sRGB <-> CIELAB with the network's normalisation: l = L/50 - 1, ab = ab/110 (via kornia)."""

from __future__ import annotations

import torch
from kornia.color import lab_to_rgb, rgb_to_lab

AB_SCALE = 110.0


def rgb_to_l_ab(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split sRGB into normalised lightness and chroma.

    rgb: (B, 3, H, W) in [0, 1]. Returns l: (B, 1, H, W) in [-1, 1] and ab: (B, 2, H, W) in
    about [-1, 1] (sRGB's gamut reaches |ab| < 1.0 after the 1/110 scale).
    """
    lab = rgb_to_lab(rgb.float().clamp(0.0, 1.0))
    l = lab[:, :1] / 50.0 - 1.0
    ab = lab[:, 1:] / AB_SCALE
    return l, ab


def l_ab_to_rgb(l: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """Join normalised l (B, 1, H, W) and ab (B, 2, H, W) into sRGB (B, 3, H, W) in [0, 1].

    ab is clipped to [-1, 1] first (out-of-range ab paints colored blotches), and the result is
    clipped to the sRGB gamut.
    """
    lightness = (l.float() + 1.0) * 50.0
    chroma = ab.float().clamp(-1.0, 1.0) * AB_SCALE
    return lab_to_rgb(torch.cat([lightness, chroma], dim=1), clip=True)


def rgb_to_gray_rgb(rgb: torch.Tensor) -> torch.Tensor:
    """The plain gray image: sRGB (B, 3, H, W) with its chroma removed, keeping Lab L."""
    l, ab = rgb_to_l_ab(rgb)
    return l_ab_to_rgb(l, torch.zeros_like(ab))


def uint8_to_float(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) uint8 in [0, 255] -> float32 in [0, 1]."""
    return images.float() / 255.0


def float_to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) float in [0, 1] -> uint8 in [0, 255], rounded."""
    return (images.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
