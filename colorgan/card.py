"""The model card: a model folder's README.md in the Hugging Face Hub's format (a YAML metadata
block: library_name, tags, pipeline_tag, model-index metrics; then Markdown) holding what a
checkpoint knows about its model (config, data folders, epochs, images seen, last validation)
and, when given, `colorgan evaluate`'s JSON beside the gray baseline."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from colorgan.errors import ColorganError
from colorgan.files import read_bounded
from colorgan.request import PLAIN, Capabilities

LIBRARY = "colorgan"
TASK = "image-to-image"  # the Hub's pipeline tag for image in, image out
MAX_EVAL_BYTES = 2**20  # an evaluate JSON is a few KiB
# (evaluate key, the card's label, Hub metric name): in the order evaluate prints them
EVAL_METRICS = [
    ("delta_e", "ΔE00 (mean CIEDE2000), lower is better", "ΔE00 (CIEDE2000)"),
    ("psnr", "PSNR [dB], higher is better", "PSNR (dB)"),
    ("ssim", "SSIM, higher is better", "SSIM"),
    ("colorfulness", "colorfulness (Hasler–Süsstrunk, 0–255)", "Colorfulness"),
    ("fd_lite0", "FD on EfficientNet-Lite0 features, lower is better", "FD (Lite0)"),
    ("kid_lite0", "KID×1000 on EfficientNet-Lite0 features, lower is better", "KID×1000 (Lite0)"),
    ("fid", "FID (Inception), lower is better", "FID"),
]
VAL_METRICS = [
    ("val_delta_e", "ΔE00 (mean CIEDE2000), lower is better", "ΔE00 (CIEDE2000)"),
    ("val_psnr", "PSNR [dB], higher is better", "PSNR (dB)"),
    ("val_l1", "L1 of ab, lower is better", "L1 (ab)"),
    ("val_colorfulness", "colorfulness (Hasler–Süsstrunk, 0–255)", "Colorfulness"),
]


@dataclass(frozen=True)
class Facts:
    """What the card says: the model and what its checkpoint recorded about its training."""

    name: str  # the model's name: the repo's, or the folder's
    repo_id: str | None  # owner/name once pushed; None: not known
    config: dict[str, dict[str, Any]]  # the resolved config (config.to_dict)
    ema: bool  # the weights are the generator's moving average
    parameters: int
    epoch: int | None = None  # epochs done (None: not recorded)
    step: int | None = None  # optimizer steps done
    sources: dict[str, str | None] = field(default_factory=dict)  # data folders
    history: list[dict[str, Any]] = field(default_factory=list)  # metrics.jsonl's rows
    best: float | None = None  # the lowest val_delta_e of a full epoch
    evaluation: dict[str, Any] | None = None  # `colorgan evaluate --json`
    takes: Capabilities = PLAIN  # what a user may give it besides the picture


def load_evaluation(path: Path) -> dict[str, Any]:
    """`colorgan evaluate --json`'s result from `path`; one line naming the file otherwise."""
    try:
        data = read_bounded(path, MAX_EVAL_BYTES)
        if len(data) > MAX_EVAL_BYTES:
            raise ColorganError(
                f"--eval {path}: over {MAX_EVAL_BYTES // 1024} KiB; not an evaluate JSON"
            )
        result = json.loads(data.decode("utf-8"))
    except OSError as err:
        raise ColorganError(f"--eval {path}: cannot read ({err.strerror or err})") from None
    except (ValueError, RecursionError) as err:
        raise ColorganError(f"--eval {path}: not JSON ({str(err)[:80]})") from None
    needed = ("n_images", "delta_e", "psnr", "baseline_gray")
    missing = [k for k in needed if not isinstance(result, dict) or k not in result]
    if missing or not isinstance(result["baseline_gray"], dict):
        raise ColorganError(
            f"--eval {path}: not the JSON of `colorgan evaluate --json` "
            f"(no {', '.join(missing) or 'baseline_gray object'})"
        )
    return result


def _value(value: Any) -> float | None:
    """A metric as a finite float, or None (missing, null, NaN, not a number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _shown(value: Any) -> str:
    number = _value(value)
    if number is None:
        return "n/a"
    return f"{number:.4f}" if abs(number) < 10 else f"{number:.2f}"


def _folder_name(path: str | None) -> str | None:
    """A data folder as the card shows it: its name only (the trainer's full paths stay home)."""
    return Path(path).name or path if path else None


def last_validation(facts: Facts) -> dict[str, Any] | None:
    """The last metrics row with validation metrics, or None."""
    rows = [row for row in facts.history if _value(row.get("val_delta_e")) is not None]
    return rows[-1] if rows else None


def _index_result(
    metrics: list[tuple[str, str, str]], values: dict[str, Any], dataset: dict[str, str]
) -> dict[str, Any] | None:
    shown = [
        {"type": key, "name": hub_name, "value": round(number, 4)}
        for key, _, hub_name in metrics
        if (number := _value(values.get(key))) is not None
    ]
    if not shown:
        return None
    task = {"type": TASK, "name": "Image colorization"}
    return {"task": task, "dataset": dataset, "metrics": shown}


def metadata(facts: Facts) -> dict[str, Any]:
    """The card's YAML metadata block, as the Hub reads it."""
    model = facts.config["model"]
    tags = [
        LIBRARY,
        "image-colorization",
        "gan",
        "pix2pix",
        str(model["encoder"]).replace("_", "-"),
    ]
    tags += facts.takes.tags()
    meta: dict[str, Any] = {"library_name": LIBRARY, "pipeline_tag": TASK, "tags": tags}
    results = []
    if facts.evaluation is not None:
        held_out = {"type": "image-folder", "name": "held-out images", "split": "test"}
        results.append(_index_result(EVAL_METRICS, facts.evaluation, held_out))
    row = last_validation(facts)
    if row is not None:
        data = _folder_name(facts.sources.get("val_data") or facts.sources.get("data"))
        validation = {"type": "image-folder", "name": data or "validation", "split": "validation"}
        results.append(_index_result(VAL_METRICS, row, validation))
    if any(results):
        meta["model-index"] = [{"name": facts.name, "results": [r for r in results if r]}]
    return meta


def _table(rows: list[tuple[str, str]]) -> list[str]:
    return ["| | |", "|---|---|", *(f"| {key} | {value} |" for key, value in rows)]


def _usage(facts: Facts) -> list[str]:
    where = facts.repo_id or "OWNER/NAME"
    return [
        "## Use it",
        "",
        "```bash",
        "pip install colorgan",
        f"colorgan colorize hf://{where} photos/ --out colored/",
        "```",
        "",
        "```python",
        "from PIL import Image",
        "from colorgan import Colorizer",
        "",
        f'colorizer = Colorizer.from_pretrained("{where}")  # revision="..." pins a commit',
        'colorizer.colorize(Image.open("photo.jpg")).save("photo (color).png")',
        "```",
        "",
        "`model.safetensors` holds the generator alone, `config.json` its architecture and "
        "working size (the resolved colorgan config). Loading reads these two files only, as "
        "safetensors and JSON: no code from this repository runs. Offline (`HF_HUB_OFFLINE=1`), "
        "colorgan uses the copy in the Hugging Face cache.",
        *(
            []
            if facts.repo_id
            else [
                "",
                "Not on the Hub yet: OWNER/NAME is the repo it is pushed to; before that, the "
                "folder itself is the MODEL (`colorgan colorize path/to/folder photos/ ...`).",
            ]
        ),
    ]


def _decoder_row(model: dict[str, Any]) -> list[tuple[str, str]]:
    """The Lite0 decoder's kind and where it predicts ab (a config from before the keys: the
    full-resolution conv decoder); none for the from-scratch U-Net."""
    if model["encoder"] != "efficientnet_lite0":
        return []
    stride = int(model.get("output_stride", 1))
    upsample = model.get("upsample", "bilinear")
    where = "at full resolution" if stride == 1 else f"at stride {stride}, upsampled {upsample}"
    label = "decoder (`model.output_stride`, `model.upsample`)"
    return [(label, f"conv; ab {where}")]


def _model(facts: Facts) -> list[str]:
    model, data = facts.config["model"], facts.config["data"]
    encoder = {
        "efficientnet_lite0": "U-Net decoder on the ImageNet-pretrained EfficientNet-Lite0",
        "unet": "U-Net trained from scratch, as pix2pix",
    }.get(str(model["encoder"]), str(model["encoder"]))
    rows = [
        ("generator", f"{encoder} (`model.encoder={model['encoder']}`)"),
        ("width (`model.base_channels`)", str(model["base_channels"])),
        *_decoder_row(model),
        (
            "depth (`model.depth`)",
            f"{model['depth']}: sides are multiples of {2 ** model['depth']}",
        ),
        ("working size (`data.image_size`)", f"{data['image_size']} px (the default `--size`)"),
        *((label, "yes" if taken else "no") for label, taken in facts.takes.rows()),
        ("weights", "the generator's moving average (EMA)" if facts.ema else "the generator"),
        ("parameters", f"{facts.parameters:,}"),
    ]
    return [
        "## Model",
        "",
        "The generator predicts the *ab* chroma of CIELAB from the *L* "
        "lightness; outputs keep the input's size, detail and lightness.",
        "",
        *_table(rows),
    ]


def _recipe(cfg: dict[str, dict[str, Any]]) -> str:
    """The loss terms and optimizer, in one line."""
    loss, optim = cfg["loss"], cfg["optim"]
    terms = [f"L1 × {loss['l1_weight']:g}"]
    if loss["adversarial_weight"] > 0:
        terms.insert(0, f"adversarial ({loss['gan_mode']}) × {loss['adversarial_weight']:g}")
    if loss["perceptual_weight"] > 0:
        terms.append(f"perceptual ({loss['perceptual_network']}) × {loss['perceptual_weight']:g}")
    return f"{' + '.join(terms)}; AdamW, lr {optim['lr']:g}, cosine schedule"


def _training(facts: Facts) -> list[str]:
    cfg = facts.config
    data = _folder_name(facts.sources.get("data"))
    val = _folder_name(facts.sources.get("val_data"))
    split = f"a seeded {cfg['data']['val_fraction']:.0%} split of the training folder"
    epochs = "not recorded" if facts.epoch is None else f"{facts.epoch} of {cfg['train']['epochs']}"
    rows = [
        ("training data", f"`{data}` (folder name)" if data else "not recorded"),
        ("validation data", f"`{val}` (folder name)" if val else split if data else "not recorded"),
        ("epochs", epochs),
    ]
    if facts.step is not None:
        batch = cfg["train"]["batch_size"]
        rows.append(("optimizer steps", f"{facts.step:,}"))
        rows.append(
            (
                "images seen",
                f"about {facts.step * batch:,} (steps × `train.batch_size` "
                f"{batch}; × the number of processes if trained with torchrun)",
            )
        )
    rows.append(("loss and optimizer", _recipe(cfg)))
    lines = ["## Training", "", *_table(rows)]
    row = last_validation(facts)
    if row is not None:
        lines += [
            "",
            f"Validation after epoch {row.get('epoch', '?')} (the last one recorded):",
            "",
            "| metric | value |",
            "|---|---|",
        ]
        lines += [
            f"| {label} | {_shown(row.get(key))} |" for key, label, _ in VAL_METRICS if key in row
        ]
        if _value(facts.best) is not None:
            lines.append(f"| best ΔE00 of a full epoch (`best.pt`) | {_shown(facts.best)} |")
    return lines


def _evaluation(result: dict[str, Any]) -> list[str]:
    gray = result["baseline_gray"]
    lines = [
        "## Evaluation",
        "",
        f"`colorgan evaluate` on {result['n_images']} held-out color images, made gray and "
        "colorized, beside the plain gray image (a strong baseline on ΔE00 and PSNR that a "
        "colorizer has to beat):",
        "",
        "| metric | model | gray image |",
        "|---|---|---|",
    ]
    for key, label, _ in EVAL_METRICS:
        if key in result:
            lines.append(f"| {label} | {_shown(result[key])} | {_shown(gray.get(key))} |")
    if "colorfulness_reference" in result:
        lines.append(
            f"| colorfulness of the originals | {_shown(result['colorfulness_reference'])} | |"
        )
    by_hints = result.get("by_hints")
    if isinstance(by_hints, dict) and by_hints:
        lines += [
            "",
            "With color points (`evaluate --hints`):",
            "",
            "| points | PSNR | ΔE00 | ΔE00 inside the points |",
            "|---|---|---|---|",
        ]
        for count, row in by_hints.items():
            if isinstance(row, dict):
                values = [_shown(row.get(k)) for k in ("psnr", "delta_e", "hint_fidelity")]
                lines.append(f"| {count} | {' | '.join(values)} |")
    return lines


def model_card(facts: Facts) -> str:
    """The README.md of a model folder: the Hub's YAML metadata block, then Markdown."""
    front = yaml.safe_dump(metadata(facts), sort_keys=False, allow_unicode=True)
    config = yaml.safe_dump(facts.config, sort_keys=False, allow_unicode=True)
    lines = [
        "---",
        front.rstrip("\n"),
        "---",
        "",
        f"# {facts.name}",
        "",
        "A colorizer for black-and-white images, trained with colorgan (a conditional GAN: "
        "U-Net generator, PatchGAN discriminator).",
        "",
        *_usage(facts),
        "",
        *_model(facts),
        "",
        *_training(facts),
        "",
    ]
    if facts.evaluation is not None:
        lines += [*_evaluation(facts.evaluation), ""]
    lines += [
        "## Config",
        "",
        "The resolved colorgan config it was trained with:",
        "",
        "```yaml",
        config.rstrip("\n"),
        "```",
        "",
    ]
    return "\n".join(lines)
