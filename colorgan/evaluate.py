"""Evaluation: make color images gray, colorize them, compare with the originals and with gray.

Every image is center-cropped to a square of `size` pixels (short side resized to `size`,
center crop), colorized by the generator at that size, and both the output and the plain gray
image are compared with the crop at that size. Outputs are rounded to 8 bits first, as a saved
file would be. `fd_lite0` and `kid_lite0` compare the set of outputs (and of gray images) with the
set of crops on EfficientNet-Lite0 features (`colorgan.set_distance`).

Training's per-epoch validation is this same path (`colorize_crops`, then `image_metrics`, in
`validation_metrics`), so an epoch's `val_delta_e` is `colorgan evaluate`'s `delta_e` on the same
images at the same size.
"""

from __future__ import annotations

import json
import logging
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from colorgan.batch import Batch, generate, to_batch
from colorgan.color import (
    float_to_uint8,
    l_ab_to_rgb,
    rgb_to_gray_rgb,
    rgb_to_l_ab,
    uint8_to_float,
)
from colorgan.data import ColorImages, scan_images
from colorgan.device import check_fits, resolve_device
from colorgan.errors import ColorganError, EvaluateError
from colorgan.files import atomic_write
from colorgan.generator import ColorModel, bytes_per_pixel
from colorgan.hints import eval_points
from colorgan.lite0 import EfficientNetLite0, load_lite0
from colorgan.losses import l1_loss
from colorgan.metrics import METRIC_KEYS, colorfulness, delta_e2000_pixels, image_metrics
from colorgan.modeldir import ModelSource, load_model, resolve_model
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


def check_size(size: int, generator: ColorModel) -> int:
    """`size` if the generator can run at it, else raise EvaluateError."""
    multiple = generator.multiple
    if size <= 0 or size % multiple:
        raise EvaluateError(
            f"--size {size} must be a positive multiple of {multiple} for this model "
            f"(2**depth); try --size {max(1, round(size / multiple)) * multiple}"
        )
    return size


DEFAULT_BATCH_SIZE = 16  # crops per model batch
# per pixel of a crop besides the model: the crop, its gray and output in 8 and 32 bits, Lab
# of both, the feature network's input
_METRIC_BYTES_PER_PIXEL = 128
VAL_KEYS = ("val_l1", "val_psnr", "val_delta_e", "val_colorfulness")  # training's per-epoch row
_VAL_METRICS = ("psnr", "delta_e", "colorfulness")  # the val_ keys measured by image_metrics


@dataclass(frozen=True)
class Crops:
    """What the generator made of a batch of crops."""

    gray: torch.Tensor  # (B, 3, S, S) in [0, 1] on the CPU, 8-bit values: the plain gray image
    fake: torch.Tensor  # (B, 3, S, S) in [0, 1] on the CPU, 8-bit values: the colorized one
    ab_fake: torch.Tensor  # (B, 2, S, S) in [-1, 1] on the device: the generator's output


@torch.no_grad()
def colorize_crops(
    generator: ColorModel,
    rgb: torch.Tensor,
    device: torch.device,
    hints: torch.Tensor | None = None,
) -> Crops:
    """Crops (B, 3, S, S) uint8 (and color points, a hint map (B, 3, S, S)) -> their gray and
    colorized versions, rounded to 8 bits. The model sees the Lab L of the 8-bit gray image, as
    a user's gray file would give it, so output and gray share their lightness exactly."""
    gray = uint8_to_float(float_to_uint8(rgb_to_gray_rgb(uint8_to_float(rgb.to(device)))))
    l, _ = rgb_to_l_ab(gray)  # (B, 1, S, S) in [-1, 1]
    batch = Batch(l=l, hints=None if hints is None else hints.to(device))
    ab_fake = generate(generator, batch).float()  # (B, 2, S, S) in [-1, 1]
    fake = uint8_to_float(float_to_uint8(l_ab_to_rgb(l, ab_fake)))
    return Crops(gray.cpu(), fake.cpu(), ab_fake)


@torch.no_grad()
def validation_metrics(
    generator: ColorModel, loader: DataLoader[torch.Tensor], device: torch.device
) -> dict[str, float]:
    """Training's per-epoch validation (VAL_KEYS): mean ab L1 against the truth, and evaluate's
    PSNR, CIEDE2000 and colorfulness of the 8-bit outputs (the generator in eval mode)."""
    sums = dict.fromkeys(VAL_KEYS, 0.0)
    count = 0
    for rgb in loader:
        crops = colorize_crops(generator, rgb, device)
        ab_real = to_batch(rgb, device).ab_real
        sums["val_l1"] += l1_loss(crops.ab_fake, ab_real).item() * rgb.shape[0]
        values = image_metrics(crops.fake, uint8_to_float(rgb), _VAL_METRICS)
        for key in _VAL_METRICS:
            sums[f"val_{key}"] += float(values[key].sum())
        count += rgb.shape[0]
    return {k: v / max(count, 1) for k, v in sums.items()}


def _make_fid(device: torch.device) -> list[Any] | None:
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


def _fid_values(fids: list[Any]) -> list[float] | None:
    """The computed FIDs, or None (with a warning) when they cannot be computed."""
    try:
        return [float(fid.compute()) for fid in fids]
    except (RuntimeError, ValueError) as err:
        log.warning("FID skipped: %s", (str(err).strip().splitlines() or ["error"])[0])
        return None


def _load_feature_network(device: torch.device) -> EfficientNetLite0 | None:
    """The pretrained Lite0 for fd_lite0 / kid_lite0, or None after one line saying why not."""
    try:
        return load_lite0(pretrained=True).to(device).eval()
    except ColorganError as err:
        log.warning("fd_lite0 and kid_lite0 not computed (null): %s", err)
        return None


def _distances(features: dict[str, list[torch.Tensor]] | None) -> dict[str, dict[str, Any]]:
    """fd_lite0 and kid_lite0 of the model's and the gray images' features against the real
    ones', per name; None values (after one line saying why) when they are undefined."""
    names = [name for name in ("model", "gray") if features is None or features.get(name)]
    undefined = {name: dict.fromkeys(DISTRIBUTION_KEYS) for name in ("model", "gray")}
    if features is None:
        return undefined
    real = torch.cat(features["real"])
    if len(real) < MIN_IMAGES:
        log.warning(
            "fd_lite0 and kid_lite0 need at least %d images, got %d: reported as null",
            MIN_IMAGES,
            len(real),
        )
        return undefined
    return {name: dict(distribution_distances(torch.cat(features[name]), real)) for name in names}


def evaluate_images(
    generator: ColorModel,
    paths: Sequence[Path],
    size: int,
    device: torch.device,
    batch_size: int = DEFAULT_BATCH_SIZE,
    fid: bool = False,
    quiet: bool = False,
) -> dict[str, Any]:
    """Mean metrics of the generator's output and of the plain gray image on `paths`'
    `size` x `size` center crops: a dict with RESULT_KEYS (+ `fid` when asked and possible)."""
    loader = DataLoader(ColorImages(paths, size, train=False), batch_size=batch_size)
    generator = generator.to(device).eval()
    network = _load_feature_network(device)
    features: dict[str, list[torch.Tensor]] = {"model": [], "gray": [], "real": []}
    fids = _make_fid(device) if fid else None
    sums = {"model": dict.fromkeys(METRIC_KEYS, 0.0), "gray": dict.fromkeys(METRIC_KEYS, 0.0)}
    reference = 0.0
    count = 0
    for rgb in tqdm(loader, desc="evaluating", unit="batch", disable=True if quiet else None):
        crops = colorize_crops(generator, rgb, device)
        gray, fake = crops.gray, crops.fake
        real = uint8_to_float(rgb)
        for name, output in (("model", fake), ("gray", gray)):
            for key, values in image_metrics(output, real).items():
                sums[name][key] += float(values.sum())
        reference += float(colorfulness(real).sum())
        count += rgb.shape[0]
        if network is not None:
            for name, images in (("model", fake), ("gray", gray), ("real", real)):
                features[name].append(lite0_features(network, images))
        if fids is not None:
            for metric, output in zip(fids, (fake, gray), strict=True):
                metric.update(rgb.to(device), real=True)
                metric.update(float_to_uint8(output).to(device), real=False)
    means = {name: {k: v / count for k, v in values.items()} for name, values in sums.items()}
    result: dict[str, Any] = {"n_images": count, **means["model"]}
    result["colorfulness_reference"] = reference / count
    distances = _distances(features if network is not None else None)
    result.update(distances["model"])
    result["baseline_gray"] = {**means["gray"], **distances["gray"]}
    fid_values = _fid_values(fids) if fids is not None else None
    if fid_values is not None:
        result["fid"], result["baseline_gray"]["fid"] = fid_values
    return result


def _point_maps(rgb: torch.Tensor, names: Sequence[str], count: int) -> torch.Tensor:
    """Evaluate's color points for a batch of crops: `count` EVAL_PATCH patches of each crop's
    own colors, seeded by the file's name (the same for every model)."""
    ab = to_batch(rgb, torch.device("cpu")).ab_real
    seeds = [zlib.crc32(name.encode("utf-8")) for name in names]
    return torch.stack([eval_points(a, count, seed) for a, seed in zip(ab, seeds, strict=True)])


def _points_batch(
    generator: ColorModel,
    rgb: torch.Tensor,
    names: Sequence[str],
    count: int,
    device: torch.device,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], float, int]:
    """One batch with `count` test points per crop: the 8-bit output, its metrics, and the
    CIEDE2000 summed over the hinted pixels with their number."""
    maps = _point_maps(rgb, names, count)
    fake, real = colorize_crops(generator, rgb, device, maps).fake, uint8_to_float(rgb)
    mask = maps[:, 2] > 0
    inside = float(delta_e2000_pixels(fake, real)[mask].sum()) if mask.any() else 0.0
    return fake, image_metrics(fake, real), inside, int(mask.sum())


def hint_scores(
    generator: ColorModel,
    paths: Sequence[Path],
    size: int,
    device: torch.device,
    counts: Sequence[int],
    batch_size: int = DEFAULT_BATCH_SIZE,
    quiet: bool = False,
) -> dict[str, dict[str, Any]]:
    """`by_hints`: for each number of points (as a string key), the model's metrics with
    that many test points per image, and `hint_fidelity`, the mean CIEDE2000 inside them.
    Each crop is decoded (and its Lite0 features taken) once for all counts."""
    loader = DataLoader(ColorImages(paths, size, train=False), batch_size=batch_size)
    network = _load_feature_network(device)
    generator = generator.to(device).eval()
    sums = {c: dict.fromkeys(METRIC_KEYS, 0.0) for c in counts}
    inside = {c: [0.0, 0] for c in counts}  # ΔE00 summed over hinted pixels, their number
    features: dict[int, list[torch.Tensor]] = {c: [] for c in counts}
    real_features: list[torch.Tensor] = []
    done = 0
    for rgb in tqdm(loader, desc="color points", unit="batch", disable=True if quiet else None):
        names = [p.name for p in paths[done : done + rgb.shape[0]]]
        done += rgb.shape[0]
        if network is not None:
            real_features.append(lite0_features(network, uint8_to_float(rgb)))
        for count in counts:
            fake, values, error, pixels = _points_batch(generator, rgb, names, count, device)
            for key, value in values.items():
                sums[count][key] += float(value.sum())
            inside[count][0] += error
            inside[count][1] += pixels
            if network is not None:
                features[count].append(lite0_features(network, fake))
    result = {}
    for count in counts:
        metrics: dict[str, Any] = {k: v / len(paths) for k, v in sums[count].items()}
        sets = {"model": features[count], "real": real_features} if network is not None else None
        metrics.update(_distances(sets)["model"])
        metrics["hint_fidelity"] = inside[count][0] / inside[count][1] if inside[count][1] else None
        result[str(count)] = metrics
    return result


def evaluate_checkpoint(
    checkpoint: str | Path | ModelSource,
    data: Path,
    size: int | None = None,
    limit: int = 0,
    device: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    fid: bool = False,
    quiet: bool = False,
    hints: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Evaluate the generator in `checkpoint` (a training checkpoint, a model folder or
    hf://owner/name[@revision]) on the color images under `data` (at most `limit` of them; 0:
    all), at `size` px (default: the model's data.image_size); with `hints` (numbers of
    points), `by_hints` too."""
    if batch_size <= 0 or limit < 0:
        raise EvaluateError("--batch-size must be positive and --limit >= 0")
    source = checkpoint if isinstance(checkpoint, ModelSource) else resolve_model(checkpoint)
    generator, config = load_model(source)
    if hints and not config.model.hints:
        raise EvaluateError(
            f"{source.name} was trained without color points (model.hints=false); drop --hints"
        )
    size = check_size(config.data.image_size if size is None else size, generator)
    target = resolve_device(device)
    check_fits(
        min(batch_size, 2**16) * size**2 * (bytes_per_pixel(generator) + _METRIC_BYTES_PER_PIXEL),
        target,
        f"evaluating {batch_size} crops of {size}x{size} at once",
        "use a smaller --size or --batch-size",
    )
    scan = scan_images(data, config.data.gray_threshold, limit=limit, quiet=quiet)
    if scan.grayscale or scan.unreadable:
        log.warning(
            "evaluating %d color image(s); skipped %d grayscale and %d unreadable",
            len(scan.usable),
            len(scan.grayscale),
            len(scan.unreadable),
        )
    result = evaluate_images(generator, scan.usable, size, target, batch_size, fid, quiet)
    if hints:
        result["by_hints"] = hint_scores(
            generator, scan.usable, size, target, hints, batch_size, quiet
        )
    return result


def parse_counts(text: str) -> list[int]:
    """'0,1,2,5' -> [0, 1, 2, 5]; EvaluateError for anything but counts >= 0."""
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        counts = []
    if not counts or any(c < 0 or c > 1000 for c in counts):
        raise EvaluateError(f"--hints {text!r}: give numbers of points, e.g. --hints 0,1,2,5,10")
    return list(dict.fromkeys(counts))


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
    lines = [f"{result['n_images']} image(s)", f"{'metric':<14}{'model':>9}{'gray':>9}"]
    for key, (label, note) in zip(keys, rows, strict=True):
        lines.append(f"{label:<14}{_number(result[key]):>9}{_number(gray[key]):>9}  {note}")
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
