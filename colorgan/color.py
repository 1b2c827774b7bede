"""sRGB <-> CIELAB with the network's normalisation: l = L/50 - 1, ab = ab/110 (via kornia), and
fitting Lab colors into the sRGB gamut without changing their lightness."""

from __future__ import annotations

import torch
from kornia.color import lab_to_rgb, rgb_to_lab

AB_SCALE = 110.0
_GAMUT_STEPS = 10  # bisection steps when fitting a color into sRGB: chroma within 0.1 %
_GAMUT_TOLERANCE = 1e-4  # linear-RGB slack for float error; the final clip removes it


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


def _outside(rgb: torch.Tensor) -> torch.Tensor:
    """Unclipped sRGB (..., 3, H, W) -> (..., H, W) bool: the color is outside the gamut."""
    return ((rgb < -_GAMUT_TOLERANCE) | (rgb > 1.0 + _GAMUT_TOLERANCE)).any(dim=-3)


def _shrink_into_gamut(lab: torch.Tensor) -> torch.Tensor:
    """Out-of-gamut Lab colors (3, N) -> unclipped sRGB (3, N), chroma scaled toward gray
    (bisection) until inside: L and hue are kept."""
    low = torch.zeros(lab.shape[1], device=lab.device)  # gray is always inside
    high = torch.ones_like(low)
    for _ in range(_GAMUT_STEPS):
        mid = (low + high) / 2
        scale = torch.stack([torch.ones_like(mid), mid, mid])
        inside = ~_outside(lab_to_rgb((lab * scale)[:, None], clip=False))[0]
        low, high = torch.where(inside, mid, low), torch.where(inside, high, mid)
    scale = torch.stack([torch.ones_like(low), low, low])
    return lab_to_rgb((lab * scale)[:, None], clip=False)[:, 0]


def lab_in_gamut(l: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """l (1, 1, H, W) in [-1, 1] and ab (1, 2, H, W) -> sRGB (1, 3, H, W) in [0, 1] with the
    same Lab L: a color outside sRGB loses chroma, not lightness (clipping RGB would change L)."""
    lab = torch.cat([(l + 1.0) * 50.0, ab.clamp(-1.0, 1.0) * AB_SCALE], dim=1)
    rgb = lab_to_rgb(lab, clip=False)
    outside = _outside(rgb)  # (1, H, W)
    if outside.any():
        fixed = _shrink_into_gamut(lab.permute(1, 0, 2, 3)[:, outside])  # (3, N)
        rgb.permute(1, 0, 2, 3)[:, outside] = fixed
    return rgb.clamp(0.0, 1.0)
