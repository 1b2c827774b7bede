"""Manga pages from color pictures, and the lightness a toned page's colored version carries.

A printed manga page is not the gray rendering of a color picture: it is black ink and
screentone on white paper, often strictly two-level. `make_page` makes such a page from a color
training crop the way print does (data.input_style `manga`/`mixed`): ink lines where the
picture's lightness has edges (a difference of Gaussians, thresholded), solid black where it is
darkest, and its gray levels as screentones of several kinds (TONE_KINDS: dot halftones of
several periods and angles, line tones, gradient tones, cross-hatching, stipple), each band of
lightness with its own sheet, thresholded to ink and paper, with a little print and scan noise.
The target stays the picture's colors.

A toned page's colored output cannot keep the page's L as it is (black and white pixels hold no
color): `page_lightness` gives it the gray its tones stand for (a Gaussian of about the tone's
period, taken over the paper and tone pixels only, so lines do not darken their surroundings)
while the drawn ink -- lines, lettering and solid black, told from the tones by a small learned
map (inknet.py) -- keeps the page's own pixels, sharp.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from kornia.filters import box_blur, gaussian_blur2d

from colorgan.color import uint8_to_l
from colorgan.inknet import ink_probability

TONE_KINDS = ("dots", "lines", "gradient", "hatching", "stipple")
# a page is toned when its pixels differ from their surroundings (a Gaussian of sigma 1.5) by
# this much on average (L / 100): gray anime pictures and photos 0.084 at most at 128 px, 0.065
# at 256 px; pages made from them by make_page 0.058 at least, 5 of the 100 under 0.09 (little
# tone: 60 anime/unseen + 40 photos/val, measured 2026-12-07)
TONED_ENERGY = 0.09
# ... and is mostly ink and paper: at least this share of its pixels within 0.2 of black or white
# (most pages; a photo under fine texture can pass the energy test)
TONED_SHARE = 0.5
# ... unless its energy alone is this high: a soft scan whose dots print as grays (pages made
# from the demo's scenes: 3 of 40 with a share under 0.5, energy 0.13 and more). All told, 55
# of the 60 anime pages and 38 of the 40 photo pages are found at 128 px, and no gray picture
SOFT_TONED_ENERGY = 0.12
_PERIOD = (3.0, 7.0)  # screen periods in pixels at the training crop's scale


@dataclass(frozen=True)
class Page:
    """A page made from a color crop: its gray pixels and where it has drawn ink."""

    gray: torch.Tensor  # (1, H, W) uint8: ink near 0, paper near 255
    ink: torch.Tensor  # (1, H, W) bool: lines and solid black (not the tones' dots)


def _uniform(low: float, high: float, gen: torch.Generator) -> float:
    return low + (high - low) * float(torch.rand((), generator=gen))


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of (H, W) or (B, C, H, W) floats, kernel about 3 sigma each side."""
    four = x if x.dim() == 4 else x[None, None]
    size = 2 * math.ceil(3 * sigma) + 1
    out = gaussian_blur2d(four, (size, size), (sigma, sigma), border_type="replicate")
    return out if x.dim() == 4 else out[0, 0]


def _screen(kind: str, shape: tuple[int, int], gen: torch.Generator) -> torch.Tensor:
    """A tone sheet's threshold map (H, W) in [0, 1]: a pixel is ink where the darkness it
    stands for exceeds it. "gradient" is a dot screen; its darkness ramps (see _band)."""
    period = _uniform(*_PERIOD, gen)
    angle = _uniform(0.0, math.pi, gen)
    y, x = torch.meshgrid(
        torch.arange(shape[0], dtype=torch.float32),
        torch.arange(shape[1], dtype=torch.float32),
        indexing="ij",
    )
    u = (x * math.cos(angle) + y * math.sin(angle)) * 2 * math.pi / period
    v = (-x * math.sin(angle) + y * math.cos(angle)) * 2 * math.pi / period
    if kind in ("dots", "gradient"):
        return 0.5 - (torch.cos(u) + torch.cos(v)) / 4
    if kind == "lines":
        return 0.5 - torch.cos(u) / 2
    if kind == "hatching":  # one set of lines up to mid darkness, the crossing set above it
        first = (0.5 - torch.cos(u) / 2) * 0.6
        second = 0.35 + (0.5 - torch.cos(v) / 2) * 0.6
        return torch.minimum(first, second)
    if kind == "stipple":
        return torch.rand(shape, generator=gen)
    raise ValueError(f"unknown tone kind {kind!r}: use one of {', '.join(TONE_KINDS)}")


def _band(darkness: torch.Tensor, kind: str, gen: torch.Generator) -> torch.Tensor:
    """A band's darkness as its tone sheet gives it: flat (one sheet for the band) or the
    picture's own levels; a gradient tone ramps across the picture."""
    if kind == "gradient":
        angle = _uniform(0.0, 2 * math.pi, gen)
        h, w = darkness.shape
        y, x = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
        ramp = x * math.cos(angle) + y * math.sin(angle)
        ramp = (ramp - ramp.min()) / (ramp.max() - ramp.min()).clamp_min(1e-6)
        return darkness.mean() * 2 * ramp
    if float(torch.rand((), generator=gen)) < 0.6:
        return darkness.mean().expand_as(darkness)
    return darkness


def _lines(gray: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Ink lines (H, W) bool: the dark side of the lightness's edges (a difference of
    Gaussians, as XDoG line drawings) at a random pen width."""
    sigma = _uniform(0.5, 1.2, gen)
    dog = blur(gray, sigma) - blur(gray, 1.6 * sigma)
    return dog < -_uniform(0.01, 0.03, gen)


def make_page(rgb: torch.Tensor, gen: torch.Generator, kinds: Sequence[str] = TONE_KINDS) -> Page:
    """A manga page (uint8 (1, H, W)) made from the color crop `rgb` (uint8 (3, H, W)), drawn
    by `gen`: ink lines, solid black, and 2-4 bands of lightness each in a tone of `kinds`."""
    gray = (uint8_to_l(rgb[None])[0, 0] + 1) / 2  # (H, W): L / 100
    darkness = 1 - gray
    lines = _lines(gray, gen)
    black = darkness > _uniform(0.8, 0.92, gen)
    paper = darkness < _uniform(0.12, 0.3, gen)
    n_bands = int(torch.randint(2, 5, (), generator=gen))
    cuts = torch.linspace(0, 1, n_bands + 1)[1:-1]
    middle = darkness[~paper & ~black]
    edges = torch.quantile(middle, cuts) if middle.numel() else cuts
    band = torch.bucketize(darkness, edges)
    tones = torch.zeros_like(black)
    for index in range(n_bands):
        inside = (band == index) & ~paper & ~black
        if not bool(inside.any()):
            continue
        kind = kinds[int(torch.randint(len(kinds), (), generator=gen))]
        level = _band(torch.where(inside, darkness, darkness[inside].mean()), kind, gen)
        tones |= inside & (level > _screen(kind, tuple(gray.shape), gen))  # type: ignore[arg-type]
    drawn = lines | black
    page = torch.where(drawn | tones, _uniform(0.0, 0.12, gen), _uniform(0.9, 1.0, gen))
    page = _print_noise(page, gen)
    return Page((page * 255).round().to(torch.uint8)[None], drawn[None])


def _print_noise(page: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A little print and scan: a slight blur, grain, and half the time thresholded back to
    strictly two levels."""
    if float(torch.rand((), generator=gen)) < 0.5:
        page = blur(page, _uniform(0.3, 0.8, gen))
    page = page + torch.randn(page.shape, generator=gen) * _uniform(0.0, 0.05, gen)
    if float(torch.rand((), generator=gen)) < 0.5:
        page = (page > 0.5).float() * page.max().clamp(0.9, 1.0)
    return page.clamp(0.0, 1.0)


def is_toned(l: torch.Tensor) -> bool:
    """Whether a picture's l ((..., H, W) in [-1, 1]) is a toned page: ink and screentone on
    paper (scanned sharp or soft), which `page_lightness` should smooth for its colored version."""
    level = ((l.float() + 1) / 2).reshape(-1, 1, *l.shape[-2:])
    energy = (level - blur(level, 1.5)).abs().mean()
    near = ((level < 0.2) | (level > 0.8)).float().mean()
    dark = (level < 0.5).float().mean()
    textured = energy >= SOFT_TONED_ENERGY or (energy >= TONED_ENERGY and near >= TONED_SHARE)
    return bool(textured and 0.005 < float(dark) < 0.95)


def tone_scale(dark: torch.Tensor) -> float:
    """About half the period (pixels) of a page's finest tone: the mean run of ink or paper
    along rows and columns where ink and paper alternate most (dark: (H, W) bool)."""
    changes = torch.zeros(dark.shape)
    changes[:, 1:] += (dark[:, 1:] != dark[:, :-1]).float()
    changes[1:, :] += (dark[1:, :] != dark[:-1, :]).float()
    local = box_blur(changes[None, None], (9, 9))[0, 0] / 2
    busy = local[local > 0.05]
    if busy.numel() == 0:
        return 1.0
    return float(1.0 / torch.quantile(busy[:: max(1, busy.numel() // 100_000)], 0.9))


def page_lightness(l: torch.Tensor, ink: torch.Tensor | None = None) -> torch.Tensor:
    """The lightness a toned page's colored version carries: l (1, 1, H, W) in [-1, 1] with
    its tones smoothed into the gray they stand for (a Gaussian of sigma about the tone's
    period, over the pixels that are not drawn ink) and its drawn ink kept as it is,
    pixel-sharp. `ink`: where (H, W), 0..1, the drawn ink is (default: inknet's map)."""
    level = ((l.float().cpu() + 1) / 2)[0, 0]
    scale = tone_scale(level < 0.5)
    ink = ink_probability(level) if ink is None else ink.float().cpu()
    keep = 1 - ink
    sigma = max(0.8, 1.2 * scale)
    share = blur(keep, sigma)  # how much of each pixel's surroundings is not ink
    smooth = blur(level * keep, sigma) / share.clamp_min(1e-3)
    smooth = torch.where(share > 0.05, smooth, level).clamp(0.0, 1.0)
    out = ink * level + keep * smooth
    return (out * 2 - 1)[None, None].to(l.device, l.dtype)


def colored_lightness(l: torch.Tensor) -> torch.Tensor:
    """The lightness a colored output carries for a picture of lightness l (1, 1, H, W): its
    own, or for a two-level page (is_toned) page_lightness's."""
    return page_lightness(l) if is_toned(l) else l
