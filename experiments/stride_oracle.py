"""What predicting ab at a stride costs by itself, whatever a model learns: the true ab of each
image average-pooled to the stride and brought back to full size the way `Lite0UNet` does
(bilinear; the fast guided filter, the removed `model.upsample=guided`; for
`model.upsample=affine`, the per-cell least-squares b and a of `fitted_affine`, the best the
head could predict), scored against the
original by CIEDE2000 like `colorgan evaluate` (center crops at --sizes, through uint8 RGB).
The floor under any `model.output_stride` decoder, per training/evaluation size: the 64-px
experiments of docs/journal/results.md are harsher on a stride than 512-px use.

    python experiments/stride_oracle.py ../shared/data/anime/unseen --sizes 64,128,256
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from colorgan.batch import to_batch
from colorgan.color import float_to_uint8, l_ab_to_rgb, uint8_to_float
from colorgan.config import DataConfig
from colorgan.data import ColorImages, scan_images
from colorgan.generator import affine_upsample, lightness_detail
from colorgan.metrics import image_metrics

STRIDES = (2, 4)
UPSAMPLES = ("bilinear", "guided", "affine")
GUIDED_RADIUS = 1  # guided_upsample's window: 3x3 cells at the output stride
GUIDED_EPS = 0.01  # its regulariser, in squared L units ([-1, 1]): a local L std of 0.1
AFFINE_LIMIT = 0.999  # fitted_affine clamps ab inside (-1, 1) before its atanh
AFFINE_EPS = 1e-3  # and regularises each cell's slope (squared L units)


def fitted_affine(ab: torch.Tensor, l: torch.Tensor, stride: int) -> torch.Tensor:
    """The coefficients (B, 4, H/stride, W/stride) that `affine_upsample` turns back into
    about `ab` (B, 2, H, W): per cell, the least-squares b and a of atanh(ab) ~ b + a * (L -
    smooth L). What the head could at best predict."""
    detail = lightness_detail(l, stride)
    target = torch.atanh(ab.clamp(-AFFINE_LIMIT, AFFINE_LIMIT))
    mean_d, mean_t = F.avg_pool2d(detail, stride), F.avg_pool2d(target, stride)
    covariance = F.avg_pool2d(detail * target, stride) - mean_d * mean_t
    variance = F.avg_pool2d(detail * detail, stride) - mean_d.square()
    a = covariance / (variance + AFFINE_EPS)
    return torch.cat([mean_t - a * mean_d, a], dim=1)


def _box(x: torch.Tensor, radius: int) -> torch.Tensor:
    """The mean over each (2 radius + 1)^2 window, of the cells inside the image."""
    size = 2 * radius + 1
    return F.avg_pool2d(x, size, stride=1, padding=radius, count_include_pad=False)


def guided_upsample(
    coarse: torch.Tensor, l: torch.Tensor, stride: int, radius: int = GUIDED_RADIUS
) -> torch.Tensor:
    """`coarse` ab (B, 2, H/stride, W/stride) brought to l's (B, 1, H, W) size along l's edges:
    the fast guided filter (He & Sun 2015), what `model.upsample=guided` was until it lost to
    affine (docs/journal/results.md). In each window of cells, ab ~ a * L + b is fitted against L
    average-pooled to the stride; a and b, averaged over the windows that hold a cell, are
    upsampled bilinearly and applied to the full-resolution L. In float32; clamped to [-1, 1]."""
    ab, guide = coarse.float(), F.avg_pool2d(l.float(), stride)
    mean_l, mean_ab = _box(guide, radius), _box(ab, radius)
    covariance = _box(guide * ab, radius) - mean_l * mean_ab
    variance = _box(guide * guide, radius) - mean_l * mean_l
    a = covariance / (variance + GUIDED_EPS)
    b = mean_ab - a * mean_l
    up = {"scale_factor": float(stride), "mode": "bilinear", "align_corners": False}
    a, b = F.interpolate(_box(a, radius), **up), F.interpolate(_box(b, radius), **up)
    return (a * l.float() + b).clamp(-1.0, 1.0).to(coarse.dtype)


def reconstructed(ab: torch.Tensor, l: torch.Tensor, stride: int, how: str) -> torch.Tensor:
    """`ab` at `stride` brought back to full size, `how` one of UPSAMPLES."""
    if how == "affine":
        return affine_upsample(fitted_affine(ab, l, stride), l, stride)
    coarse = F.avg_pool2d(ab, stride)
    if how == "guided":
        return guided_upsample(coarse, l, stride)
    return F.interpolate(coarse, size=ab.shape[-2:], mode="bilinear", align_corners=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--sizes", default="64,128,256")
    parser.add_argument("--limit", type=int, default=400)
    args = parser.parse_args()
    paths = scan_images(args.data, DataConfig().gray_threshold, args.limit, quiet=True).usable
    cpu = torch.device("cpu")
    print(f"{args.data} ({len(paths)} images): mean CIEDE2000 of the true ab at a stride")
    print(f"{'size':>5} {'stride':>6} {'bilinear':>9} {'guided':>7} {'affine':>7}")
    for size in (int(s) for s in args.sizes.split(",")):
        sums = {(s, how): 0.0 for s in STRIDES for how in UPSAMPLES}
        for start in range(0, len(paths), 32):
            rgb = ColorImages(paths[start : start + 32], size, train=False).crops(32)
            batch = to_batch(rgb, cpu)
            real = uint8_to_float(rgb)
            for stride, how in sums:
                ab = reconstructed(batch.ab_real, batch.l, stride, how)
                fake = uint8_to_float(float_to_uint8(l_ab_to_rgb(batch.l, ab)))
                sums[stride, how] += float(image_metrics(fake, real, ("delta_e",))["delta_e"].sum())
        for stride in STRIDES:
            row = [sums[stride, how] / len(paths) for how in UPSAMPLES]
            print(f"{size:>5} {stride:>6} {row[0]:>9.2f} {row[1]:>7.2f} {row[2]:>7.2f}")


if __name__ == "__main__":
    main()
