"""Image-quality metrics for colorization, per image: PSNR, SSIM, CIEDE2000, colorfulness."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from skimage.color import deltaE_ciede2000, rgb2lab
from torchmetrics.functional.image import (
    peak_signal_noise_ratio,
    structural_similarity_index_measure,
)

METRIC_KEYS = ("psnr", "ssim", "delta_e", "colorfulness")

# Identical images have infinite PSNR; capping keeps means and JSON finite. 100 dB is above
# any uint8 difference that matters (one level off in every pixel is 48 dB).
PSNR_MAX = 100.0


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of RGB images (B, 3, H, W) in [0, 1], one value per image, capped at
    PSNR_MAX (identical images): (B,)."""
    values = peak_signal_noise_ratio(
        pred.float(), target.float(), data_range=1.0, reduction="none", dim=(1, 2, 3)
    )
    return values.clamp(max=PSNR_MAX)


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SSIM (Gaussian 11x11, sigma 1.5) of RGB images (B, 3, H, W) in [0, 1]: (B,)."""
    kernel = min(11, pred.shape[-1], pred.shape[-2])
    kernel -= 1 - kernel % 2  # odd
    values = structural_similarity_index_measure(
        pred.float(), target.float(), data_range=1.0, reduction="none", kernel_size=kernel
    )
    assert isinstance(values, torch.Tensor)
    return values


def _delta_e_maps(pred: torch.Tensor, target: torch.Tensor) -> list[np.ndarray]:
    pred_np = pred.detach().float().permute(0, 2, 3, 1).cpu().numpy()
    target_np = target.detach().float().permute(0, 2, 3, 1).cpu().numpy()
    pairs = zip(pred_np, target_np, strict=True)
    return [deltaE_ciede2000(rgb2lab(p), rgb2lab(t)) for p, t in pairs]


def delta_e2000(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean CIEDE2000 color difference per image of RGB (B, 3, H, W) in [0, 1]: (B,)."""
    values = [float(np.mean(m)) for m in _delta_e_maps(pred, target)]
    return torch.tensor(values, dtype=torch.float64)


def delta_e2000_pixels(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CIEDE2000 per pixel of RGB (B, 3, H, W) in [0, 1]: (B, H, W) float64 on the CPU."""
    return torch.from_numpy(np.stack(_delta_e_maps(pred, target))).double()


def colorfulness(rgb: torch.Tensor) -> torch.Tensor:
    """Hasler & Suesstrunk (2003) colorfulness of RGB (B, 3, H, W) in [0, 1], on the 0-255
    scale of the colorization literature: (B,).

    rg = |R - G|, yb = |(R + G)/2 - B|; CF = sqrt(std_rg^2 + std_yb^2) + 0.3 sqrt(mean_rg^2 +
    mean_yb^2). The absolute values follow the form DDColor and others report (see RESEARCH.md).
    """
    x = rgb.double() * 255.0
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    rg = (r - g).abs().flatten(1)
    yb = (0.5 * (r + g) - b).abs().flatten(1)
    std = torch.sqrt(rg.var(dim=1, unbiased=False) + yb.var(dim=1, unbiased=False))
    mean = torch.sqrt(rg.mean(dim=1) ** 2 + yb.mean(dim=1) ** 2)
    return std + 0.3 * mean


def image_metrics(
    pred: torch.Tensor, target: torch.Tensor, keys: Sequence[str] = METRIC_KEYS
) -> dict[str, torch.Tensor]:
    """The `keys` metrics (default: all METRIC_KEYS) of RGB `pred` against `target`, both
    (B, 3, H, W) in [0, 1]; each value (B,) float64 on the CPU. Colorfulness is `pred`'s own."""
    functions: dict[str, Callable[[], torch.Tensor]] = {
        "psnr": lambda: psnr(pred, target),
        "ssim": lambda: ssim(pred, target),
        "delta_e": lambda: delta_e2000(pred, target),
        "colorfulness": lambda: colorfulness(pred),
    }
    return {key: functions[key]().detach().double().cpu() for key in keys}
