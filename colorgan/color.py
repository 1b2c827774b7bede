"""sRGB <-> CIELAB with the network's normalisation: l = L/50 - 1, ab = ab/110 (via kornia), and
fitting Lab colors into the sRGB gamut without changing their lightness."""

from __future__ import annotations

import torch
from kornia.color import lab_to_rgb, rgb_to_lab, rgb_to_linear_rgb, xyz_to_rgb

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


# kornia's sRGB -> linear RGB for each of the 256 levels of an 8-bit value (a table lookup
# replaces the power per pixel), and the Y row of its RGB -> XYZ matrix
_LINEAR_LEVELS = rgb_to_linear_rgb((torch.arange(256) / 255.0).expand(3, 1, 256))[0, 0]
_Y_ROW = torch.tensor([0.212671, 0.715160, 0.072169])
_F_THRESHOLD = 0.008856  # CIE's (6/29)**3, as kornia writes it


def uint8_to_l(rgb: torch.Tensor) -> torch.Tensor:
    """8-bit sRGB (..., 3, H, W) -> normalised l (..., 1, H, W), the same values as
    rgb_to_l_ab's l (kornia's operations in its order) at about a third of the time: only L,
    and the linearisation looked up per level instead of computed per pixel."""
    if rgb.dtype != torch.uint8:
        raise TypeError(f"uint8_to_l takes uint8 values, got {rgb.dtype}")
    linear = _LINEAR_LEVELS.to(rgb.device)[rgb.long()]  # (..., 3, H, W)
    y = torch.einsum("i,...ihw->...hw", _Y_ROW.to(rgb.device), linear)
    power = torch.pow(y.clamp(min=_F_THRESHOLD), 1 / 3.0)
    f = torch.where(y > _F_THRESHOLD, power, 7.787 * y + 4.0 / 29.0)
    return ((116.0 * f - 16.0) / 50.0 - 1.0).unsqueeze(-3)


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


# _outside's bounds carried back through the sRGB curve (monotonic; 12.92 x below 0, the power
# law above 1), so the bisection tests linear RGB and skips that curve's power in every step
_LINEAR_LOW = -_GAMUT_TOLERANCE / 12.92
_LINEAR_HIGH = ((1.0 + _GAMUT_TOLERANCE + 0.055) / 1.055) ** 2.4
_WHITE = (0.95047, 1.0, 1.08883)  # D65, as kornia's lab_to_rgb
_XYZ_TO_RGB = xyz_to_rgb(torch.eye(3)[:, :, None])[:, :, 0]  # kornia's matrix, column j = M e_j


def _f_inverse(f: torch.Tensor) -> torch.Tensor:
    """CIE Lab's f^-1 as kornia's lab_to_rgb has it (cube above 6/29, linear below)."""
    return torch.where(f > 0.2068966, f * f * f, (f - 4.0 / 29.0) / 7.787)


def _shrink_into_gamut(lab: torch.Tensor) -> torch.Tensor:
    """Out-of-gamut Lab colors (3, N) -> unclipped sRGB (3, N), chroma scaled toward gray
    (bisection) until inside: L and hue are kept. Each step tests linear RGB (kornia's
    lab_to_rgb without the sRGB curve; L's share is computed once)."""
    matrix = _XYZ_TO_RGB.to(lab.device)
    fy = (lab[0] + 16.0) / 116.0
    from_y = matrix[:, 1:2] * (_f_inverse(fy) * _WHITE[1])  # (3, N): the part L fixes
    a, b = lab[1] / 500.0, lab[2] / 200.0
    low = torch.zeros_like(fy)  # the largest scale known inside: gray always is
    for step in range(1, _GAMUT_STEPS + 1):
        mid = low + 0.5**step  # halfway to the smallest scale known outside
        x = _f_inverse(fy + mid * a) * _WHITE[0]
        z = _f_inverse((fy - mid * b).clamp(min=0.0)) * _WHITE[2]
        linear = from_y + matrix[:, :1] * x + matrix[:, 2:] * z
        inside = (linear.amin(dim=0) >= _LINEAR_LOW) & (linear.amax(dim=0) <= _LINEAR_HIGH)
        low = low + inside * 0.5**step
    scale = torch.stack([torch.ones_like(low), low, low])
    return lab_to_rgb((lab * scale)[:, None], clip=False)[:, 0]


def lab_in_gamut(l: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """l (1, 1, H, W) in [-1, 1] and ab (1, 2, H, W) -> sRGB (1, 3, H, W) in [0, 1] with the
    same Lab L: a color outside sRGB loses chroma, not lightness (clipping RGB would change L)."""
    lab = torch.cat([(l + 1.0) * 50.0, ab.clamp(-1.0, 1.0) * AB_SCALE], dim=1)
    rgb = lab_to_rgb(lab, clip=False).contiguous()
    where = _outside(rgb).flatten().nonzero()[:, 0]  # the out-of-gamut pixels' indices
    if len(where):
        flat = rgb.view(3, -1)  # (1, 3, H, W) is contiguous: a view that writes into rgb
        flat[:, where] = _shrink_into_gamut(lab.reshape(3, -1)[:, where])
    return rgb.clamp(0.0, 1.0)
