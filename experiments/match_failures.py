"""Where the match fails (issue #34, item 5): the match's confidence against the error it makes.

Each image of a folder grouped one sub-folder per character is colorized, as evaluate does
(center crops at the model's size, its default caution), without a reference and with its
`sibling` (the next image of its folder). A `model.reference_match` generator's own match is
read during that forward (hooks on `ReferenceMatch` and its gate: the confidence at stride 8,
the best cosine similarity, and the learned blend gate at stride 4, both upsampled to the
crop) and related to the per-pixel CIEDE2000, per character and over all:

- ΔE00 with and without the reference where the confidence is high (at least THRESHOLD, where
  the gate starts at one half) and where it is low, and the share of pixels each way;
- the share of pixels whose learned gate is over one half (the matched colors weigh more than
  the generator's own) and its mean;
- Spearman's correlation of the confidence with the per-pixel gain (ΔE00 without the reference
  less ΔE00 with it), on a fixed sample of each image's pixels;
- the hair (the top third of the face crop, as experiments/reference_consistency.py takes it)
  against the rest;
- the chroma of the gathered colors (the softmax's mean over reference places, Lab units)
  against the truth's at the same stride: how much the mean pales them.

`--scales 1,2,4`: the same with the match's softmax temperature divided by each (an override of
the loaded weights here, at inference; no retraining): is the mean over places what pales the
colors? `--figure DIR` writes a few pictures as rows of gray | no reference | palette only
(`--palette CKPT`) | with correspondence | truth | reference | confidence, and `--scenes N` does
the same for N of the demo's generated scenes, each with its own scene moved as the reference
(the part of the picture outside the reference is known: its confidence is reported apart).

    python experiments/match_failures.py CKPT GROUPED_DIR --json OUT [--palette CKPT2]
        [--scales 1,2,4] [--figure DIR] [--scenes 6]
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from colorgan.color import float_to_uint8, l_ab_to_rgb, rgb_to_gray_rgb, rgb_to_l_ab, uint8_to_float
from colorgan.data import ColorImages, scan_images
from colorgan.demo import draw_scene
from colorgan.evaluate import colorize_crops
from colorgan.figures import image_grid
from colorgan.generator import ColorModel, Lite0UNet
from colorgan.metrics import colorfulness, delta_e2000_pixels
from colorgan.modeldir import load_model, resolve_model
from colorgan.pairs import exemplar_of
from colorgan.protocols import Inputs, sibling_protocol
from colorgan.reference import from_rgb
from colorgan.request import Capabilities

THRESHOLD = 0.75  # the confidence where the gate starts at one half: sigmoid(8 * 0.75 - 6)
LAB = 110.0  # network ab units -> Lab
SAMPLE = 1024  # pixels per image for the rank correlation
BATCH = 32
CPU = torch.device("cpu")


@dataclass
class Colored:
    """A batch colorized with (or without) references, and what the match saw."""

    fake: torch.Tensor  # (B, 3, S, S) in [0, 1], 8-bit values, at the model's caution
    own: torch.Tensor  # the same at caution 0 (the model's colors unfaded)
    confidence: torch.Tensor | None = None  # (B, S, S) cosine similarity, upsampled
    gate: torch.Tensor | None = None  # (B, S, S) in [0, 1], upsampled
    gathered: torch.Tensor | None = None  # (B, 2, S/8, S/8) the matched ab, network units


class Taps:
    """Keeps the last outputs of a generator's ReferenceMatch and of its blend gate."""

    def __init__(self, generator: Lite0UNet) -> None:
        assert generator.match is not None, "a model.reference_match generator"
        self.maps: torch.Tensor | None = None
        self.gate: torch.Tensor | None = None
        generator.match.register_forward_hook(self._maps)
        generator.match.gate.register_forward_hook(self._gate)

    def _maps(self, _: Any, __: Any, output: torch.Tensor) -> None:
        self.maps = output.detach().float()

    def _gate(self, _: Any, __: Any, output: torch.Tensor) -> None:
        self.gate = torch.sigmoid(output.detach().float())


@contextmanager
def sharper(generator: Lite0UNet, scale: float) -> Iterator[None]:
    """The match's softmax temperature divided by `scale` while inside (restored after)."""
    assert generator.match is not None
    parameter = generator.match.log_temperature
    saved = parameter.detach().clone()
    with torch.no_grad():
        parameter.sub_(math.log(scale))
    try:
        yield
    finally:
        with torch.no_grad():
            parameter.copy_(saved)


def upsampled(x: torch.Tensor, side: int) -> torch.Tensor:
    """(B, 1, h, w) -> (B, side, side), bilinear."""
    return F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)[:, 0]


def colorize(
    generator: ColorModel, rgb: torch.Tensor, caution: float, inputs: Inputs | None, taps: Any
) -> Colored:
    """`rgb` (B, 3, S, S) uint8 colorized (with `inputs`: its references'); the match's maps
    read by `taps` when there are references and a match."""
    crops = colorize_crops(generator, rgb, CPU, reference=inputs)
    fake = crops.at_caution(caution)
    if taps is None or inputs is None or "exemplar" not in inputs:
        return Colored(fake, crops.fake)
    side = rgb.shape[-1]
    maps, gate = taps.maps, taps.gate
    given = upsampled(maps[:, 3:4], side)
    confidence, gate = upsampled(maps[:, 2:3], side), upsampled(gate, side) * given
    return Colored(fake, crops.fake, confidence, gate, maps[:, :2])


def ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks 0..n-1 of a 1-D tensor (ties broken by order)."""
    out = torch.empty_like(x)
    out[x.argsort()] = torch.arange(len(x), dtype=x.dtype)
    return out


def spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    rx, ry = ranks(x.double()), ranks(y.double())
    rx, ry = rx - rx.mean(), ry - ry.mean()
    return float((rx * ry).sum() / (rx.norm() * ry.norm()).clamp_min(1e-12))


class Tally:
    """Pixel sums of one group of images (a character, or all)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.conf: list[torch.Tensor] = []
        self.gain: list[torch.Tensor] = []

    def add(self, sums: dict[str, float], conf: torch.Tensor, gain: torch.Tensor) -> None:
        for key, value in sums.items():
            self.sums[key] += value
        self.conf.append(conf)
        self.gain.append(gain)

    def result(self) -> dict[str, float]:
        s = self.sums
        out = {
            "images": s["images"],
            "delta_e_none": s["de_none"] / s["images"],
            "delta_e_reference": s["de_ref"] / s["images"],
            "colorfulness_none": s["cf_none"] / s["images"],
            "colorfulness_reference": s["cf_ref"] / s["images"],
            "colorfulness_none_caution_0": s["cf_none0"] / s["images"],
            "colorfulness_truth": s["cf_truth"] / s["images"],
            "colorfulness_reference_caution_0": s["cf_ref0"] / s["images"],
            "chroma_none": s["chroma_none"] / s["pixels"],
            "chroma_reference": s["chroma_ref"] / s["pixels"],
            "chroma_truth": s["chroma_truth"] / s["pixels"],
            "chroma_gathered_only": s["chroma_alone"] / s["pixels"],
            "delta_e_gathered_only": s["de_alone"] / s["images"],
            "share_confident": s["n_high"] / s["pixels"],
            "share_gate_over_half": s["n_gate"] / s["pixels"],
            "mean_gate": s["gate"] / s["pixels"],
            "mean_confidence": s["conf"] / s["pixels"],
            "gathered_chroma": s["gathered_chroma"] / s["cells"],
            "truth_chroma_cells": s["truth_chroma"] / s["cells"],
            "spearman_confidence_gain": spearman(torch.cat(self.conf), torch.cat(self.gain)),
        }
        for part in ("high", "low", "hair", "rest"):
            n = max(s[f"n_{part}"], 1.0)
            out[f"delta_e_none_{part}"] = s[f"de_none_{part}"] / n
            out[f"delta_e_reference_{part}"] = s[f"de_ref_{part}"] / n
            out[f"delta_e_gathered_{part}"] = s[f"de_alone_{part}"] / n
        out["share_confident_hair"] = s["n_high_hair"] / max(s["n_hair"], 1.0)
        out["share_confident_rest"] = s["n_high_rest"] / max(s["n_rest"], 1.0)
        return out


def gathered_only(real: torch.Tensor, gathered: torch.Tensor) -> torch.Tensor:
    """The picture's L (of `real` (1, 3, S, S)) with the match's gathered colors alone
    ((2, S/8, S/8), upsampled): the output the blend would give with its gate at 1, in [0, 1]
    8-bit values (gray L, as colorize_crops gives the model)."""
    gray = uint8_to_float(float_to_uint8(rgb_to_gray_rgb(real)))
    l = rgb_to_l_ab(gray)[0]
    ab = F.interpolate(gathered[None], size=l.shape[-2:], mode="bilinear", align_corners=False)
    return uint8_to_float(float_to_uint8(l_ab_to_rgb(l, ab.clamp(-1.0, 1.0))))


def chroma(rgb: torch.Tensor) -> float:
    """The summed Lab chroma of the pixels of `rgb` (1, 3, S, S) in [0, 1]."""
    return float(rgb_to_l_ab(rgb)[1].norm(dim=1).sum() * LAB)


def image_sums(
    real: torch.Tensor, colored: Colored, ref: Colored, gen: torch.Generator
) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    """One image's pixel sums (real (1, 3, S, S) in [0, 1], its output without a reference
    and with), and a fixed sample of its confidence and per-pixel gain."""
    none = colored.fake
    de_none = delta_e2000_pixels(none, real)[0].float()
    de_ref = delta_e2000_pixels(ref.fake, real)[0].float()
    conf, gate, gathered = (t[0] for t in _maps(ref))
    side = conf.shape[-1]
    alone = gathered_only(real, gathered)
    de_alone = delta_e2000_pixels(alone, real)[0].float()
    hair = torch.zeros(side, side, dtype=torch.bool)
    hair[: side // 3] = True
    high = conf >= THRESHOLD
    parts = {"high": high, "low": ~high, "hair": hair, "rest": ~hair}
    sums = {
        "images": 1.0,
        "pixels": float(side * side),
        "de_none": float(de_none.mean()),
        "de_ref": float(de_ref.mean()),
        "cf_none": float(colorfulness(none)[0]),
        "cf_ref": float(colorfulness(ref.fake)[0]),
        "cf_none0": float(colorfulness(colored.own)[0]),
        "cf_truth": float(colorfulness(real)[0]),
        "cf_ref0": float(colorfulness(ref.own)[0]),
        "chroma_none": chroma(none),
        "chroma_ref": chroma(ref.fake),
        "chroma_truth": chroma(real),
        "chroma_alone": chroma(alone),
        "de_alone": float(de_alone.mean()),
        "conf": float(conf.sum()),
        "gate": float(gate.sum()),
        "n_gate": float((gate > 0.5).sum()),
        "n_high_hair": float((high & hair).sum()),
        "n_high_rest": float((high & ~hair).sum()),
    }
    for name, mask in parts.items():
        sums[f"n_{name}"] = float(mask.sum())
        sums[f"de_none_{name}"] = float(de_none[mask].sum())
        sums[f"de_ref_{name}"] = float(de_ref[mask].sum())
        sums[f"de_alone_{name}"] = float(de_alone[mask].sum())
    cells = gathered.norm(dim=0) * LAB  # (h, w)
    truth_ab = rgb_to_l_ab(real)[1]
    truth = F.avg_pool2d(truth_ab, side // cells.shape[-1])[0].norm(dim=0) * LAB
    sums |= {"cells": float(cells.numel()), "gathered_chroma": float(cells.sum())}
    sums["truth_chroma"] = float(truth.sum())
    take = torch.randperm(side * side, generator=gen)[:SAMPLE]
    return sums, conf.flatten()[take], (de_none - de_ref).flatten()[take]


def crops_of(paths: Sequence[Path], size: int) -> list[torch.Tensor]:
    """Evaluate's center crops, uint8 (B, 3, S, S), in batches in the order of `paths`."""
    images = ColorImages(list(paths), size, train=False)
    rows = []
    for i in range(len(paths)):
        row = images[i]
        assert isinstance(row, torch.Tensor)  # evaluation's items are the crop alone
        rows.append(row)
    return [torch.stack(rows[i : i + BATCH]) for i in range(0, len(rows), BATCH)]


def analyse(
    generator: Lite0UNet,
    taps: Taps,
    paths: Sequence[Path],
    batches: Sequence[torch.Tensor],
    caution: float,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Per character and over all (Tally.result), and per image (for the figure's choice)."""
    size = batches[0].shape[-1]
    protocol = sibling_protocol(paths, size)
    tallies: dict[str, Tally] = defaultdict(Tally)
    per_image, done = [], 0
    gen = torch.Generator().manual_seed(0)
    for rgb in batches:
        names = paths[done : done + len(rgb)]
        done += len(rgb)
        none = colorize(generator, rgb, caution, None, None)
        ref = colorize(generator, rgb, caution, protocol.inputs(names, rgb), taps)
        real = uint8_to_float(rgb)
        for i, path in enumerate(names):
            one = Colored(
                ref.fake[i : i + 1], ref.own[i : i + 1], *(t[i : i + 1] for t in _maps(ref))
            )
            mine = Colored(none.fake[i : i + 1], none.own[i : i + 1])
            sums, conf, gain = image_sums(real[i : i + 1], mine, one, gen)
            for key in (path.parent.name, "all"):
                tallies[key].add(sums, conf, gain)
            share = sums["n_high"] / sums["pixels"]
            gained = sums["de_none"] - sums["de_ref"]
            per_image.append({"path": str(path), "gain": gained, "share_confident": share})
    return {name: t.result() for name, t in sorted(tallies.items())}, per_image


def _maps(colored: Colored) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    assert colored.confidence is not None and colored.gate is not None
    assert colored.gathered is not None
    return colored.confidence, colored.gate, colored.gathered


def gray_rgb(x: torch.Tensor) -> torch.Tensor:
    """(B, S, S) in [0, 1] as (B, 3, S, S)."""
    return x.clamp(0.0, 1.0)[:, None].expand(-1, 3, -1, -1)


def figure_rows(
    models: dict[str, ColorModel | None],
    taps: Taps,
    rgb: torch.Tensor,
    references: torch.Tensor,
    options: tuple[float, Sequence[float]],
) -> tuple[list[torch.Tensor], list[str], Colored]:
    """Columns gray | none | palette only | correspondence (| the same at each temperature
    divided by `scales`) | truth | reference | confidence for crops `rgb` with one reference
    each (both uint8 (B, 3, S, S)); `options` = (caution, scales)."""
    caution, scales = options
    inputs = {
        "reference": torch.cat([from_rgb(r[None]) for r in references]),
        "exemplar": torch.stack([exemplar_of(r) for r in references])[:, None],
    }
    match = models["match"]
    assert isinstance(match, Lite0UNet)
    none = colorize(match, rgb, caution, None, None)
    columns = [colorize_crops(match, rgb, CPU).gray, none.fake]
    labels = ["gray", "no ref"]
    if models["palette"] is not None:
        columns.append(colorize(models["palette"], rgb, caution, inputs, None).fake)
        labels.append("palette only")
    ref = colorize(match, rgb, caution, inputs, taps)
    columns.append(ref.fake)
    labels.append("correspondence")
    for scale in scales:
        with sharper(match, scale):
            columns.append(colorize(match, rgb, caution, inputs, taps).fake)
        labels.append(f"corr. T/{scale:g}")
    columns += [uint8_to_float(rgb), uint8_to_float(references), gray_rgb(_maps(ref)[0])]
    return columns, [*labels, "truth", "reference", "confidence"], ref


def scenes(count: int, size: int, shift: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` demo scenes (uint8 (N, 3, S, S)) and each one moved by `shift` pixels right and
    down as its reference (drawn larger, two crops of it): the picture's last `shift` rows
    and columns are not in its reference."""
    rng = np.random.default_rng(34)
    pictures, references = [], []
    for _ in range(count):
        big = torch.from_numpy(np.asarray(draw_scene(rng, size + shift)).copy()).permute(2, 0, 1)
        pictures.append(big[:, shift:, shift:])
        references.append(big[:, :size, :size])
    return torch.stack(pictures), torch.stack(references)


def scene_numbers(
    columns: Sequence[torch.Tensor], labels: Sequence[str], ref: Colored, shift: int
) -> dict[str, float]:
    """The scenes' ΔE00 per output column, and the confidence inside and outside the part of
    the picture its reference shows."""
    truth = columns[labels.index("truth")]
    out = {}
    for label in labels[1 : labels.index("truth")]:
        out[f"delta_e {label}"] = float(
            delta_e2000_pixels(columns[labels.index(label)], truth).mean()
        )
    conf = _maps(ref)[0]
    side = conf.shape[-1]
    inside = torch.zeros(side, side, dtype=torch.bool)
    inside[: side - shift, : side - shift] = True
    out["confidence_inside"] = float(conf[:, inside].mean())
    out["confidence_outside"] = float(conf[:, ~inside].mean())
    out["share_confident_inside"] = float((conf[:, inside] >= THRESHOLD).float().mean())
    out["share_confident_outside"] = float((conf[:, ~inside] >= THRESHOLD).float().mean())
    return out


def chosen(per_image: Sequence[dict[str, Any]], rows: int) -> list[Path]:
    """For the figure: per character the images the reference helped most and least."""
    by_folder: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in per_image:
        by_folder[Path(row["path"]).parent.name].append(row)
    picked: list[Path] = []
    for found in by_folder.values():
        ordered = sorted(found, key=lambda r: r["gain"])
        picked += [Path(ordered[-1]["path"]), Path(ordered[0]["path"])]
    return picked[:rows]


def sibling_of(path: Path, paths: Sequence[Path]) -> Path:
    """The next image (sorted, wrapping) of its folder, as the sibling protocol takes it."""
    mates = sorted(p for p in paths if p.parent == path.parent)
    return mates[(mates.index(path) + 1) % len(mates)]


def show(results: dict[str, Any], scale: float) -> None:
    """One table row per character."""
    print(f"\ntemperature / {scale:g}")
    print(
        "group     n   ΔE none  ref  | hi: none  ref | lo: none  ref | conf≥.75 gate>.5 ρ    "
        "| hair: none ref conf≥ | rest: none ref conf≥ | colorful none ref (caution 0) "
        "| chroma none ref truth, gathered truth@8 | gathered alone: ΔE chroma"
    )
    for name, r in results.items():
        print(
            f"{name:<8}{r['images']:4.0f}  {r['delta_e_none']:6.2f} {r['delta_e_reference']:5.2f} |"
            f" {r['delta_e_none_high']:6.2f} {r['delta_e_reference_high']:5.2f} |"
            f" {r['delta_e_none_low']:6.2f} {r['delta_e_reference_low']:5.2f} |"
            f" {r['share_confident']:6.2f} {r['share_gate_over_half']:6.2f}"
            f" {r['spearman_confidence_gain']:5.2f} | {r['delta_e_none_hair']:6.2f}"
            f" {r['delta_e_reference_hair']:5.2f} {r['share_confident_hair']:4.2f} |"
            f" {r['delta_e_none_rest']:6.2f} {r['delta_e_reference_rest']:5.2f}"
            f" {r['share_confident_rest']:4.2f} | {r['colorfulness_none']:5.1f}"
            f" {r['colorfulness_reference']:5.1f} ({r['colorfulness_none_caution_0']:4.1f}"
            f" {r['colorfulness_reference_caution_0']:4.1f}) | {r['chroma_none']:5.1f}"
            f" {r['chroma_reference']:5.1f} {r['chroma_truth']:5.1f}, {r['gathered_chroma']:5.1f}"
            f" {r['truth_chroma_cells']:5.1f} | {r['delta_e_gathered_only']:5.2f}"
            f" {r['chroma_gathered_only']:5.1f}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("data", type=Path, nargs="?", help="grouped folder (none: scenes only)")
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--palette", help="a palette-only reference model, for the figures")
    parser.add_argument("--scales", default="1,2,4", help="temperature divisors")
    parser.add_argument("--figure", type=Path, help="the unseen pictures' figure (a PNG)")
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--scenes", type=int, default=0, help="generated scenes, for a figure")
    parser.add_argument("--scenes-figure", type=Path)
    parser.add_argument("--shift", type=int, default=32, help="the scenes' reference moved by")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    torch.manual_seed(0)
    generator, config = load_model(resolve_model(args.checkpoint))
    assert isinstance(generator, Lite0UNet) and generator.match is not None
    generator = generator.eval()
    palette = load_model(resolve_model(args.palette))[0].eval() if args.palette else None
    models: dict[str, ColorModel | None] = {"match": generator, "palette": palette}
    caution = Capabilities.of(config.model).caution
    size = config.data.image_size
    taps = Taps(generator)
    scales = [float(x) for x in args.scales.split(",")]
    out: dict[str, Any] = {"checkpoint": args.checkpoint, "data": str(args.data), "size": size}
    out |= {"caution": caution, "threshold": THRESHOLD, "by_temperature_divisor": {}}
    paths = (
        scan_images(args.data, config.data.gray_threshold, quiet=True).usable if args.data else []
    )
    batches = crops_of(paths, size) if paths else []
    per_image: list[dict[str, Any]] = []
    for scale in scales if paths else []:
        with sharper(generator, scale):
            results, found = analyse(generator, taps, paths, batches, caution)
        out["by_temperature_divisor"][f"{scale:g}"] = results
        per_image = per_image or found
        show(results, scale)
    sharp = [s for s in scales if s != 1.0]
    if args.figure and paths:
        crops = torch.cat(batches)
        index = {p: i for i, p in enumerate(paths)}
        picked = chosen(per_image, args.rows)
        rgb = crops[[index[p] for p in picked]]
        refs = crops[[index[sibling_of(p, paths)] for p in picked]]
        columns, labels, _ = figure_rows(models, taps, rgb, refs, (caution, sharp))
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        image_grid(columns, labels).save(args.figure)
        out["figure"] = {"path": str(args.figure), "rows": [str(p) for p in picked]}
    if args.scenes:
        rgb, refs = scenes(args.scenes, size, args.shift)
        columns, labels, ref = figure_rows(models, taps, rgb, refs, (caution, sharp))
        out["scenes"] = scene_numbers(columns, labels, ref, args.shift) | {"shift": args.shift}
        print("scenes", json.dumps(out["scenes"], indent=1))
        if args.scenes_figure:
            args.scenes_figure.parent.mkdir(parents=True, exist_ok=True)
            image_grid(columns, labels).save(args.scenes_figure)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
