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

import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from colorgan.batch import Batch, predict, to_batch
from colorgan.color import (
    float_to_uint8,
    l_ab_to_rgb,
    rgb_to_gray_rgb,
    rgb_to_l_ab,
    uint8_to_float,
)
from colorgan.data import ColorImages, scan_images
from colorgan.device import check_fits, resolve_device
from colorgan.errors import EvaluateError
from colorgan.generator import ColorModel
from colorgan.hints import EVAL_PATCH, HINT_CHANNELS, eval_points, patch_side, place_patch
from colorgan.losses import l1_loss
from colorgan.metrics import METRIC_KEYS, colorfulness, delta_e2000_pixels, image_metrics
from colorgan.modeldir import ModelSource, load_model, resolve_model
from colorgan.models import bytes_per_pixel
from colorgan.protocols import Inputs, Protocol, protocol
from colorgan.request import Capabilities
from colorgan.scores import (
    Scores,
    fid_pair,
    load_feature_network,
    make_fid,
    set_distances,
)
from colorgan.set_distance import (
    DISTRIBUTION_KEYS,
    lite0_features,
)
from colorgan.suggest import suggest
from colorgan.uncertainty import fade

log = logging.getLogger("colorgan")


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
MAX_BATCH_SIZE = 4096
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
    l: torch.Tensor  # (B, 1, S, S) in [-1, 1] on the device: what the generator saw
    uncertainty: torch.Tensor | None = None  # (B, 1, S, S) on the device (model.uncertainty)

    def at_caution(self, caution: float) -> torch.Tensor:
        """The colorized crops with `caution` (uncertainty.fade), as `fake` is at 0."""
        if caution == 0.0 or self.uncertainty is None:
            return self.fake
        ab = fade(self.ab_fake, self.uncertainty, caution)
        return uint8_to_float(float_to_uint8(l_ab_to_rgb(self.l, ab))).cpu()


@torch.no_grad()
def colorize_crops(
    generator: ColorModel,
    rgb: torch.Tensor,
    device: torch.device,
    hints: torch.Tensor | None = None,
    reference: Inputs | None = None,
) -> Crops:
    """Crops (B, 3, S, S) uint8 (and color points, a hint map (B, 3, S, S); and the inputs of
    their references, protocols.py) -> their gray and colorized versions (the model's colors
    as they are: caution 0), rounded to 8 bits. The model sees the Lab L of the 8-bit gray
    image, as a user's gray file would give it, so output and gray share their lightness
    exactly. A model without model.reference_match takes the references' summary alone."""
    gray = uint8_to_float(float_to_uint8(rgb_to_gray_rgb(uint8_to_float(rgb.to(device)))))
    l, _ = rgb_to_l_ab(gray)  # (B, 1, S, S) in [-1, 1]
    given = dict(reference or {})
    if getattr(generator, "match", None) is None:
        given.pop("exemplar", None)
    batch = Batch(
        l=l,
        hints=None if hints is None else hints.to(device),
        **{name: value.to(device) for name, value in given.items()},
    )
    prediction = predict(generator, batch)
    ab_fake = prediction.ab.float()  # (B, 2, S, S) in [-1, 1]
    fake = uint8_to_float(float_to_uint8(l_ab_to_rgb(l, ab_fake)))
    u = None if prediction.uncertainty is None else prediction.uncertainty.float()
    return Crops(gray.cpu(), fake.cpu(), ab_fake, l, u)


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


CALIBRATION_PIXELS = 4096  # pixels per image (a fixed random subset) for uncertainty_spearman


class _Calibration:
    """The predicted uncertainty against the actual per-pixel CIEDE2000 of the model's colors
    (at caution 0), on a fixed subset of each image's pixels: `uncertainty_spearman`."""

    def __init__(self) -> None:
        self.predicted: list[torch.Tensor] = []
        self.actual: list[torch.Tensor] = []
        self.random = torch.Generator().manual_seed(0)

    def add(self, crops: Crops, real: torch.Tensor) -> None:
        if crops.uncertainty is None:
            return
        error = delta_e2000_pixels(crops.fake, real).flatten(1).float()  # (B, S*S)
        predicted = crops.uncertainty.cpu().flatten(1)
        pixels = error.shape[1]
        take = torch.randperm(pixels, generator=self.random)[:CALIBRATION_PIXELS]
        self.predicted.append(predicted[:, take].flatten())
        self.actual.append(error[:, take].flatten())

    def spearman(self) -> float | None:
        if not self.predicted:
            return None
        from torchmetrics.functional import spearman_corrcoef

        predicted, actual = torch.cat(self.predicted), torch.cat(self.actual)
        return float(spearman_corrcoef(predicted.double(), actual.double()))


@dataclass(frozen=True)
class Scoring:
    """How evaluate colorizes its crops: `size` x `size` center crops, `batch_size` at a time
    on `device`, at the model's `caution`, each crop with its `reference` (None: none)."""

    size: int
    device: torch.device
    batch_size: int = DEFAULT_BATCH_SIZE
    quiet: bool = False
    caution: float = 0.0
    reference: Protocol | None = None


# where evaluate's test points go: random (Zhang et al.'s simulated user: around the center),
# or suggested (where Colorizer.suggest_points would put each next one)
PLACEMENTS = ("random", "suggested")


@dataclass(frozen=True)
class Trial:
    """What evaluate measures besides the model's own colors (the CLI's options): `hints`
    (numbers of test points: by_hints, placed as `placement` says), `cautions` (by_caution),
    `reference` (protocols.py: "self", "sibling", an image file or a folder) and `fid`."""

    hints: tuple[int, ...] = ()
    cautions: tuple[float, ...] = ()
    reference: str | Path | None = None
    fid: bool = False
    placement: str = "random"  # PLACEMENTS

    def check(self, capabilities: Capabilities) -> None:
        """Refuse (one line naming the option) what the model was trained without."""
        if self.placement not in PLACEMENTS:
            raise EvaluateError(
                f"--hint-placement {self.placement!r}: use {' or '.join(PLACEMENTS)}"
            )
        asked = {"hints": self.hints, "uncertainty": self.cautions, "reference": self.reference}
        options = {"hints": "--hints", "uncertainty": "--caution", "reference": "--reference"}
        for name, value in asked.items():
            if value:
                capabilities.need(name, options[name])


PLAIN_TRIAL = Trial()  # the model's own colors alone


def evaluate_images(
    generator: ColorModel,
    paths: Sequence[Path],
    scoring: Scoring,
    fid: bool = False,
    cautions: Sequence[float] = (),
) -> dict[str, Any]:
    """Mean metrics of the generator's output (see Scoring) and of the plain gray image on
    `paths`' center crops: a dict with RESULT_KEYS (+ `fid` when asked and possible); with
    `cautions`, `by_caution` (each value as a string key -> the metrics), and
    `uncertainty_spearman` whenever the model predicts uncertainty."""
    size, device, caution, reference = (
        scoring.size, scoring.device, scoring.caution, scoring.reference,
    )  # fmt: skip
    quiet = scoring.quiet
    loader = DataLoader(ColorImages(paths, size, train=False), batch_size=scoring.batch_size)
    generator = generator.to(device).eval()
    # every caution asked for, the default among them, each scored once
    scored = {caution_key(c): c for c in (caution, *cautions)}
    scores = Scores(["gray", *scored], load_feature_network(device))
    calibration = _Calibration()
    fids = make_fid(device) if fid else None
    reference_colorfulness, done = 0.0, 0
    for rgb in tqdm(loader, desc="evaluating", unit="batch", disable=True if quiet else None):
        summaries = (
            None if reference is None else reference.inputs(paths[done : done + len(rgb)], rgb)
        )
        done += len(rgb)
        crops = colorize_crops(generator, rgb, device, reference=summaries)
        real = uint8_to_float(rgb)
        outputs = {k: crops.at_caution(c) for k, c in scored.items()}
        fake = outputs[caution_key(caution)]
        scores.add(outputs | {"gray": crops.gray}, real)
        calibration.add(crops, real)
        reference_colorfulness += float(colorfulness(real).sum())
        if fids is not None:
            for metric, output in zip(fids, (fake, crops.gray), strict=True):
                metric.update(rgb.to(device), real=True)
                metric.update(float_to_uint8(output).to(device), real=False)
    results = {key: scores.result(key) for key in scored}
    model = results[caution_key(caution)]
    result: dict[str, Any] = {"n_images": scores.count, **{k: model[k] for k in METRIC_KEYS}}
    result["colorfulness_reference"] = reference_colorfulness / max(scores.count, 1)
    result.update({k: model[k] for k in DISTRIBUTION_KEYS})
    result["baseline_gray"] = scores.result("gray")
    fid_values = fid_pair(fids) if fids is not None else None
    if fid_values is not None:
        result["fid"], result["baseline_gray"]["fid"] = fid_values
    if calibration.predicted:
        result["caution"] = caution
        result["uncertainty_spearman"] = calibration.spearman()
    if cautions:
        result["by_caution"] = {caution_key(c): results[caution_key(c)] for c in cautions}
    return result


def caution_key(caution: float) -> str:
    """by_caution's key for a caution value: '0', '0.25', '1'."""
    return f"{caution:g}"


def _point_maps(rgb: torch.Tensor, names: Sequence[str], count: int) -> torch.Tensor:
    """Evaluate's color points for a batch of crops: `count` EVAL_PATCH patches of each crop's
    own colors, seeded by the file's name (the same for every model)."""
    ab = to_batch(rgb, torch.device("cpu")).ab_real
    seeds = [zlib.crc32(name.encode("utf-8")) for name in names]
    return torch.stack([eval_points(a, count, seed) for a, seed in zip(ab, seeds, strict=True)])


def _suggested_maps(
    generator: ColorModel, rgb: torch.Tensor, most: int, scoring: Scoring, reference: Inputs | None
) -> list[torch.Tensor]:
    """The hint maps (B, 3, S, S) of 0, 1, ... `most` suggested points per crop: a simulated
    user who gives the truth's mean color over an EVAL_PATCH patch at each place
    Colorizer.suggest_points would suggest, one after another, each after the last applied."""
    ab = to_batch(rgb, torch.device("cpu")).ab_real
    side = patch_side(EVAL_PATCH, ab.shape[-1])
    maps = [torch.zeros(ab.shape[0], HINT_CHANNELS, *ab.shape[2:])]
    for _ in range(most):
        crops = colorize_crops(generator, rgb, scoring.device, maps[-1], reference)
        placed = maps[-1].clone()
        for i, crop_map in enumerate(placed):
            u = None if crops.uncertainty is None else crops.uncertainty[i : i + 1]
            l, ab_fake = crops.l[i : i + 1], crops.ab_fake[i : i + 1]
            hw = (ab.shape[2], ab.shape[3])
            for point in suggest(l, ab_fake, u, crop_map[None], 1, hw):  # none: nothing to gain
                top = min(max(0, int(point.y) - side // 2), ab.shape[2] - side)
                left = min(max(0, int(point.x) - side // 2), ab.shape[3] - side)
                place_patch(crop_map, ab[i], top, left, side)
        maps.append(placed)
    return maps


def _points_batch(
    generator: ColorModel,
    rgb: torch.Tensor,
    maps: torch.Tensor,
    device: torch.device,
    caution: float = 0.0,
    reference: Inputs | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], float, int]:
    """One batch with its test points `maps` (B, 3, S, S) (and its references' inputs): the
    8-bit output (at `caution`), its metrics, and the CIEDE2000 summed over the hinted pixels
    with their number."""
    fake = colorize_crops(generator, rgb, device, maps, reference).at_caution(caution)
    real = uint8_to_float(rgb)
    mask = maps[:, 2] > 0
    inside = float(delta_e2000_pixels(fake, real)[mask].sum()) if mask.any() else 0.0
    return fake, image_metrics(fake, real), inside, int(mask.sum())


def hint_scores(
    generator: ColorModel,
    paths: Sequence[Path],
    scoring: Scoring,
    counts: Sequence[int],
    placement: str = "random",
) -> dict[str, dict[str, Any]]:
    """`by_hints`: for each number of points (as a string key), the model's metrics with
    that many test points per image (see Scoring; `placement` PLACEMENTS: random, Zhang et
    al.'s simulated user, or where the model suggests them, one after another), and
    `hint_fidelity`, the mean CIEDE2000 inside them. Each crop is decoded (and its Lite0
    features taken) once for all counts."""
    size, device, quiet = scoring.size, scoring.device, scoring.quiet
    caution, reference = scoring.caution, scoring.reference
    loader = DataLoader(ColorImages(paths, size, train=False), batch_size=scoring.batch_size)
    network = load_feature_network(device)
    generator = generator.to(device).eval()
    sums = {c: dict.fromkeys(METRIC_KEYS, 0.0) for c in counts}
    inside = {c: [0.0, 0] for c in counts}  # ΔE00 summed over hinted pixels, their number
    features: dict[int, list[torch.Tensor]] = {c: [] for c in counts}
    real_features: list[torch.Tensor] = []
    done = 0
    for rgb in tqdm(loader, desc="color points", unit="batch", disable=True if quiet else None):
        batch_paths = paths[done : done + rgb.shape[0]]
        names = [p.name for p in batch_paths]
        done += rgb.shape[0]
        summaries = None if reference is None else reference.inputs(batch_paths, rgb)
        if network is not None:
            real_features.append(lite0_features(network, uint8_to_float(rgb)))
        suggested = []
        if placement == "suggested":
            suggested = _suggested_maps(generator, rgb, max(counts), scoring, summaries)
        for count in counts:
            maps = suggested[count] if suggested else _point_maps(rgb, names, count)
            fake, values, error, pixels = _points_batch(
                generator, rgb, maps, device, caution, summaries
            )
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
        metrics.update(set_distances(sets)["model"])
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
    quiet: bool = False,
    trial: Trial = PLAIN_TRIAL,
) -> dict[str, Any]:
    """Evaluate the generator in `checkpoint` (a training checkpoint, a model folder or
    hf://owner/name[@revision]) on the color images under `data` (at most `limit` of them; 0:
    all), at `size` px (default: the model's data.image_size), with what `trial` asks (its
    reference recorded as `reference`). The top-level metrics are at the model's default
    caution (model.caution; 0 without uncertainty)."""
    if not 0 < batch_size <= MAX_BATCH_SIZE:
        raise EvaluateError(f"--batch-size must be from 1 to {MAX_BATCH_SIZE}, got {batch_size}")
    if limit < 0:
        raise EvaluateError(f"--limit must be 0 (all) or more, got {limit}")
    source = checkpoint if isinstance(checkpoint, ModelSource) else resolve_model(checkpoint)
    generator, config = load_model(source)
    capabilities = Capabilities.of(config.model)
    trial.check(capabilities)
    size = check_size(config.data.image_size if size is None else size, generator)
    target = resolve_device(device)
    check_fits(
        min(batch_size, 2**16) * size**2 * (bytes_per_pixel(generator) + _METRIC_BYTES_PER_PIXEL),
        target,
        f"evaluating {batch_size} crops of {size}x{size} at once",
        "use a smaller --size or --batch-size",
    )
    scan = scan_images(data, config.data.gray_threshold, limit=limit, quiet=quiet)
    references = None
    if trial.reference is not None:
        threshold = config.data.gray_threshold
        references = protocol(trial.reference, scan.usable, size, threshold)
    scoring = Scoring(size, target, batch_size, quiet, capabilities.caution, references)
    if scan.grayscale or scan.unreadable:
        log.warning(
            "evaluating %d color image(s); skipped %d grayscale and %d unreadable",
            len(scan.usable),
            len(scan.grayscale),
            len(scan.unreadable),
        )
    result = evaluate_images(generator, scan.usable, scoring, trial.fid, trial.cautions)
    if references is not None:
        result["reference"] = references.name
        result["reference_missing"] = references.missing
    if trial.hints:
        result["by_hints"] = hint_scores(
            generator, scan.usable, scoring, trial.hints, trial.placement
        )
        result["hint_placement"] = trial.placement
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


def parse_cautions(text: str) -> list[float]:
    """'0,0.5,1' -> [0.0, 0.5, 1.0]; EvaluateError for anything but values in [0, 1]."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or any(not 0.0 <= v <= 1.0 for v in values):
        raise EvaluateError(f"--caution {text!r}: give values in [0, 1], e.g. --caution 0,0.5,1")
    return list(dict.fromkeys(values))
