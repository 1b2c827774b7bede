"""Evaluate's numbers: per-image metrics summed over batches, the distances between sets
of images (Lite0 features; FID when asked), and the table and JSON they are reported in."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from colorgan.errors import ColorganError
from colorgan.files import atomic_write
from colorgan.lite0 import EfficientNetLite0, load_lite0
from colorgan.metrics import METRIC_KEYS, image_metrics
from colorgan.set_distance import (
    DISTRIBUTION_KEYS,
    MIN_IMAGES,
    distribution_distances,
    lite0_features,
)

log = logging.getLogger("colorgan")

RESULT_KEYS = (
    "n_images",
    "psnr",
    "ssim",
    "delta_e",
    "colorfulness",
    "colorfulness_reference",
    *DISTRIBUTION_KEYS,
    "baseline_gray",
)
GRAY_KEYS = (*METRIC_KEYS, *DISTRIBUTION_KEYS)


def make_fid(device: torch.device) -> list[Any] | None:
    """Two torchmetrics FID metrics (model, gray), or None after one line saying why not."""
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance

        return [FrechetInceptionDistance(feature=2048).to(device) for _ in range(2)]
    except ImportError:
        log.warning(
            "FID skipped: torchmetrics' FID needs the torch-fidelity package "
            "(pip install torch-fidelity; its Inception weights download on first use)"
        )
    except Exception as err:  # optional extra: no network, a broken download, bad weights
        reason = (str(err).strip().splitlines() or [""])[0]
        log.warning(
            "FID skipped: cannot load the Inception weights (%s: %s); they download on first "
            "use and need a network connection",
            type(err).__name__,
            reason,
        )
    return None


def fid_pair(fids: list[Any]) -> list[float] | None:
    """The computed FIDs, or None (with a warning) when they cannot be computed."""
    try:
        return [float(fid.compute()) for fid in fids]
    except (RuntimeError, ValueError) as err:
        log.warning("FID skipped: %s", (str(err).strip().splitlines() or ["error"])[0])
        return None


def load_feature_network(device: torch.device) -> EfficientNetLite0 | None:
    """The pretrained Lite0 for fd_lite0 / kid_lite0, or None after one line saying why not."""
    try:
        return load_lite0(pretrained=True).to(device).eval()
    except ColorganError as err:
        log.warning("fd_lite0 and kid_lite0 not computed (null): %s", err)
        return None


def set_distances(
    features: dict[str, list[torch.Tensor]] | None, warn: bool = True
) -> dict[str, dict[str, Any]]:
    """fd_lite0 and kid_lite0 of the model's and the gray images' features against the real
    ones', per name; None values (after one line saying why, if `warn`) when undefined."""
    names = [name for name in ("model", "gray") if features is None or features.get(name)]
    undefined = {name: dict.fromkeys(DISTRIBUTION_KEYS) for name in ("model", "gray")}
    if features is None:
        return undefined
    real = torch.cat(features["real"])
    if len(real) < MIN_IMAGES:
        if not warn:
            return undefined
        log.warning(
            "fd_lite0 and kid_lite0 need at least %d images, got %d: reported as null",
            MIN_IMAGES,
            len(real),
        )
        return undefined
    return {name: dict(distribution_distances(torch.cat(features[name]), real)) for name in names}


class Scores:
    """Running sums of the image metrics and the Lite0 features of named outputs (and of the
    originals), for the means and set distances of each."""

    def __init__(self, names: Sequence[str], network: EfficientNetLite0 | None) -> None:
        self.network = network
        self.sums = {name: dict.fromkeys(METRIC_KEYS, 0.0) for name in names}
        self.features: dict[str, list[torch.Tensor]] = {name: [] for name in (*names, "real")}
        self.count = 0
        self._warned = False  # too few images for the set distances: said once, not per name

    def add(self, outputs: dict[str, torch.Tensor], real: torch.Tensor) -> None:
        for name, output in outputs.items():
            for key, values in image_metrics(output, real).items():
                self.sums[name][key] += float(values.sum())
            if self.network is not None:
                self.features[name].append(lite0_features(self.network, output))
        if self.network is not None:
            self.features["real"].append(lite0_features(self.network, real))
        self.count += real.shape[0]

    def result(self, name: str) -> dict[str, Any]:
        """`name`'s mean metrics and set distances."""
        means: dict[str, Any] = {k: v / max(self.count, 1) for k, v in self.sums[name].items()}
        sets = None
        if self.network is not None:
            sets = {"model": self.features[name], "real": self.features["real"]}
        distances = set_distances(sets, warn=not self._warned)["model"]
        self._warned = True
        return means | distances


# evaluate's references: (the batch's files, their crops (B, 3, S, S) uint8) -> summaries (B, 257)


def write_json(result: dict[str, Any], path: Path) -> None:
    """Write an evaluation result as JSON (atomically)."""
    text = json.dumps(result, indent=2) + "\n"
    try:
        atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    except OSError as err:
        raise ColorganError(f"cannot write {path}: {err.strerror or err}") from None


def format_table(result: dict[str, Any]) -> str:
    """The result as a small text table: model against the gray baseline."""
    gray = result["baseline_gray"]
    rows = [
        ("psnr [dB]", "higher is better"),
        ("ssim", "higher is better"),
        ("delta_e", "CIEDE2000, lower is better"),
        ("colorfulness", f"reference images: {result['colorfulness_reference']:.2f}"),
        ("fd_lite0", "Lite0 Fréchet distance to the originals, lower is better"),
        ("kid_lite0", "Lite0 KID x1000 (trust on small sets), lower is better"),
    ]
    keys = [*GRAY_KEYS, *(["fid"] if "fid" in result else [])]
    if "fid" in result:
        rows.append(("fid", "lower is better"))
    count = f"{result['n_images']} image(s)"
    if "reference" in result:
        count += f", colorized with the reference {result['reference']}"
    lines = [count, f"{'metric':<14}{'model':>9}{'gray':>9}"]
    for key, (label, note) in zip(keys, rows, strict=True):
        lines.append(f"{label:<14}{_number(result[key]):>9}{_number(gray[key]):>9}  {note}")
    if result.get("uncertainty_spearman") is not None:
        lines.append(
            f"at caution {result['caution']:g}; uncertainty_spearman "
            f"{result['uncertainty_spearman']:.3f} (rank correlation with the per-pixel error)"
        )
    if "by_caution" in result:
        lines.append(f"{'caution':<8}{'psnr':>9}{'delta_e':>9}{'colorfulness':>14}")
        for caution, row in result["by_caution"].items():
            values = [_number(row[k]) for k in ("psnr", "delta_e", "colorfulness")]
            lines.append(f"{caution:<8}{values[0]:>9}{values[1]:>9}{values[2]:>14}")
    if "by_hints" in result:
        lines.append(f"{'points':<8}{'psnr':>9}{'delta_e':>9}{'hint_fidelity':>15}")
        for count, row in result["by_hints"].items():
            values = [_number(row[k]) for k in ("psnr", "delta_e", "hint_fidelity")]
            lines.append(f"{count:<8}{values[0]:>9}{values[1]:>9}{values[2]:>15}")
    return "\n".join(lines)


def _number(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4f}" if math.isfinite(value) and abs(value) < 10 else f"{value:.2f}"
