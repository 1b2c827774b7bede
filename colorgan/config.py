"""The configuration: one frozen dataclass tree, overridden by YAML and then by `--set`; saved
configs (checkpoints, model folders, run directories) carry a version and are read back by
`from_dict`."""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from colorgan.errors import ConfigError
from colorgan.files import read_bounded
from colorgan.overrides import (
    CONFIG_VERSION,
    MAX_CONFIG_BYTES,
    SAVED,
    apply,
    current,
    parse_set,
    parse_text,
    shown,
)
from colorgan.tones import TONE_KINDS

log = logging.getLogger("colorgan")

GanMode = Literal["vanilla", "lsgan", "hinge"]
Norm = Literal["batch", "instance", "none"]
Upsample = Literal["bilinear", "affine"]
Amp = Literal["auto", "off", "bf16", "fp16"]


LITE0_DEPTH = 5  # EfficientNet-Lite0's encoder halves the size five times (stride 32)
# model.depth and model.output_stride when not given: the encoder's (pix2pix's depth 8 for the
# from-scratch U-Net, which predicts at full resolution only; the recipe's stride 4 for Lite0)
DEFAULT_DEPTH = {"unet": 8, "efficientnet_lite0": LITE0_DEPTH}
DEFAULT_STRIDE = {"unet": 1, "efficientnet_lite0": 4}

# Bounds on what a config may ask for, checked before anything is built (see RANGES).
MAX_IMAGE_SIZE = 4096  # data.image_size: at batch 1 the default model already needs ~50 GB
# Saved activations of one training step (Lite0 U-Net at stride 1, width 32 + PatchGAN, fp32:
# more than the default) per pixel of one crop: 2.9 kB at 128 and 256 px. For a message only.
ACTIVATION_BYTES_PER_PIXEL = 3000
MAX_DEPTH = MAX_IMAGE_SIZE.bit_length() - 1  # model.depth: 2**depth must divide image_size
MAX_CHANNELS = 1024  # model.base_channels, model.disc_channels (pix2pix: 64; x8 inside)
MAX_WORKERS = 256  # train.num_workers: processes
COUNT_MAX = 2**31 - 1  # counts (epochs, images, ...): more means nothing and overflows C ints
# train.seed: torch.manual_seed takes < 2**64, and data.EpochSampler seeds with seed * 100_003
SEED_MAX = 2**32 - 1


def largest_disc_layers(image_size: int) -> int:
    """The most model.disc_layers that leave the PatchGAN a patch at `image_size`: its stride-2
    convs must leave at least 3 px for the two final 4x4 convs (0 or less: none work)."""
    return (image_size // 3).bit_length() - 1


@dataclass(frozen=True)
class DataConfig:
    image_size: int = 256  # training crop, pixels; a multiple of 2**model.depth
    val_fraction: float = 0.05  # held out when no --val-data is given
    gray_threshold: float = 4.0  # mean YCbCr chroma below which an image counts as grayscale
    max_images: int = 0  # use at most this many training images (0: all)
    # model.hints: training's simulated user (Zhang et al. 2017): P(no points) and, at 256 px
    # (scaled with data.image_size), the largest square patch; the count is geometric (mean 7)
    hint_p: float = 0.125
    hint_max_patch: int = 9
    # model.reference: P(no reference) in training, and the smallest side (a fraction of the
    # crop's) of the random crop whose colors are the sample's reference (reference.simulate)
    reference_drop: float = 0.5
    reference_crop: float = 0.5
    # model.reference_match: where a sample's reference image comes from (pairs.py): the same
    # picture warped (self), another picture of its sub-folder (sibling), or either (both)
    reference_source: Literal["self", "sibling", "both"] = "self"
    # what the model's input looks like in training (tones.py): the crop's gray (gray), a manga
    # page made from it -- ink lines and screentones, two-level -- (manga), or either (mixed);
    # the target stays the crop's colors. data.tones: the screentone kinds pages are made with
    input_style: Literal["gray", "manga", "mixed"] = "gray"
    tones: str = "dots,lines,gradient,hatching,stipple"


@dataclass(frozen=True)
class ModelConfig:
    # The defaults are the recipe both shipped configs use (docs/journal/results.md, "A lighter
    # decoder, third round"): the U-Net on the ImageNet-pretrained EfficientNet-Lite0 encoder
    # (weights ship with a package: no download), a decoder of width 16 that predicts ab at stride
    # 4, brought to full size by a learned per-cell affine model of L. pix2pix's from-scratch U-Net
    # is model.encoder=unet with base_channels=64.
    encoder: Literal["unet", "efficientnet_lite0"] = "efficientnet_lite0"
    base_channels: int = 16
    depth: int = 0  # number of 2x downsamplings in the U-Net; 0: the encoder's (DEFAULT_DEPTH)
    norm: Norm = "batch"
    dropout: float = 0.0  # in the three innermost decoder blocks (pix2pix uses 0.5)
    disc_channels: int = 64
    disc_layers: int = 3  # 3 gives the 70x70 PatchGAN
    disc_norm: Norm = "batch"
    spectral_norm: bool = False
    # efficientnet_lite0 only: the pretrained encoder's weights stay fixed for this many epochs
    freeze_encoder_epochs: int = 0
    hints: bool = False  # the generator also takes color points (a hint map; see hints.py)
    # efficientnet_lite0: the stride at which the decoder predicts ab (1: full resolution,
    # with a last full-resolution layer; 2 or 4: lighter); 0: the encoder's (DEFAULT_STRIDE: 4
    # for efficientnet_lite0, 1 for unet, which predicts at full resolution only)
    output_stride: int = 0
    # model.output_stride 2 or 4: how the ab predicted at that stride reaches the input's size.
    # bilinear, or affine: learned, the decoder predicts per cell a color and how it changes
    # with the lightness detail inside the cell (ab = b + a * (L - smooth L), a and b upsampled).
    # At output stride 1 nothing is upsampled: it is bilinear there
    upsample: Upsample = "affine"
    # the generator also predicts, per pixel, how far off its ab may be (see uncertainty.py)
    uncertainty: bool = False
    # model.uncertainty: colorize's default caution (0: colors as predicted; 1: fade toward gray
    # wherever the predicted error is as large as the color itself). 0.05: the largest that kept
    # anime/val's colorfulness within 15% of the originals' (docs/journal/results.md, "Knowing
    # when it is guessing")
    caution: float = 0.05
    # the generator also takes a reference image's colors (an ab histogram; see reference.py)
    reference: bool = False
    # model.reference also matches the picture to the reference images place by place and
    # takes their colors where they correspond (matching.py). Lite0 encoder only (the U-Net
    # has no features that match across pictures: it takes the histogram alone)
    reference_match: bool = True


@dataclass(frozen=True)
class LossConfig:
    adversarial_weight: float = 1.0  # 0 trains the generator on L1 (+ perceptual) alone, no D
    l1_weight: float = 100.0  # as pix2pix
    # 0: off, as in the winning recipe; the founding spec's VGG16 term is loss.perceptual_weight=10
    # (configs/seed-anime512.yaml), which downloads 528 MB of torchvision weights once
    perceptual_weight: float = 0.0
    gan_mode: GanMode = "vanilla"
    perceptual_network: Literal["vgg16", "efficientnet_lite0"] = "vgg16"
    vgg_weights: str = "torchvision"  # "torchvision" (download), a file path, or "random"


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 2e-4
    lr_d: float = 0.0  # discriminator learning rate; 0 means the same as lr
    beta1: float = 0.5
    beta2: float = 0.999
    weight_decay: float = 0.01
    eta_min: float = 0.0  # cosine schedule's final learning rate


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 8
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    seed: int = 0
    num_workers: int = 4
    amp: Amp = "auto"  # auto: bf16 on CUDA where supported, else fp16; off on CPU
    keep_checkpoints: int = 3  # epoch_NNN.pt files kept
    sample_images: int = 8  # rows in samples/epoch_NNN.png
    val_images: int = 256  # at most this many validation images per epoch
    tensorboard: bool = False
    channels_last: bool = False  # channels-last memory layout (faster convs on recent GPUs)
    compile: bool = False  # torch.compile the networks (slow first steps; opt-in)
    sync_batchnorm: bool = False  # SyncBatchNorm across GPUs under torchrun
    max_minutes: float = 0.0  # stop after the epoch in which this much time ran out (0: no limit)
    pretrain_epochs: int = 0  # first epochs on L1 (+ perceptual) alone, before the adversarial part
    ema_decay: float = 0.0  # EMA of the generator for validation, samples and inference (0: off)


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def to_dict(config: Config) -> dict[str, Any]:
    """The config as plain nested dicts, with its format version (CONFIG_VERSION) at the top,
    for YAML, JSON and checkpoints; `from_dict` reads it back."""
    return {"version": CONFIG_VERSION, **dataclasses.asdict(config)}


def _number(x: float) -> str:
    """A range bound as a message shows it: 0, 0.5, inf, 2**31 - 1."""
    if x == math.inf:
        return "inf"
    if isinstance(x, int) and x >= 2**16 and (x + 1) & x == 0:
        return f"2**{x.bit_length()} - 1"
    return f"{x:g}"


@dataclass(frozen=True)
class Range:
    """The values a numeric key accepts: `lo` to `hi`, each end included unless `open_lo` or
    `open_hi`; NaN and the infinities never. `note` says what a special value means."""

    lo: float
    hi: float = math.inf
    open_lo: bool = False
    open_hi: bool = False
    note: str = ""

    def __contains__(self, value: float) -> bool:
        if not isinstance(value, int) and not math.isfinite(value):  # ints may exceed floats
            return False
        above = value > self.lo if self.open_lo else value >= self.lo
        below = value < self.hi if self.open_hi else value <= self.hi
        return above and below

    def __str__(self) -> str:
        left = "(" if self.open_lo else "["
        right = ")" if self.open_hi or self.hi == math.inf else "]"
        text = f"{left}{_number(self.lo)}, {_number(self.hi)}{right}"
        return f"{text} ({self.note})" if self.note else text


_FRACTION = Range(0, 1, open_hi=True)  # [0, 1)
_PROBABILITY = Range(0, 1, open_lo=True)  # (0, 1]
_NON_NEGATIVE = Range(0)
_COUNT = Range(1, COUNT_MAX)
_EPOCHS = Range(0, COUNT_MAX)

# Every int and float key's range, checked by validate (so by load_config, from_dict and
# resume_config alike). Relations between keys are in _check_relations.
RANGES: dict[str, Range] = {
    "data.val_fraction": _FRACTION,
    "data.gray_threshold": _NON_NEGATIVE,
    "data.max_images": Range(0, COUNT_MAX, note="0: all"),
    "data.hint_p": _PROBABILITY,
    "data.hint_max_patch": Range(1, 256, note="pixels at 256 px; 256 is the whole crop"),
    "data.reference_drop": _FRACTION,
    "data.reference_crop": Range(0, 1, open_lo=True, note="a fraction of the crop's side"),
    "model.base_channels": Range(1, MAX_CHANNELS),
    "model.depth": Range(0, MAX_DEPTH, note="0: the encoder's"),
    "model.dropout": _FRACTION,
    "model.disc_channels": Range(1, MAX_CHANNELS),
    "model.disc_layers": Range(1, largest_disc_layers(MAX_IMAGE_SIZE)),
    "model.freeze_encoder_epochs": _EPOCHS,
    "model.output_stride": Range(0, 4, note="1, 2 or 4; 0: the encoder's"),
    "model.caution": Range(0, 1),
    "loss.adversarial_weight": Range(0, note="0: no discriminator"),
    "loss.l1_weight": _NON_NEGATIVE,
    "loss.perceptual_weight": Range(0, note="0: off"),
    "optim.lr": Range(0, open_lo=True),
    "optim.lr_d": Range(0, note="0: optim.lr"),
    "optim.beta1": _FRACTION,
    "optim.beta2": _FRACTION,
    "optim.weight_decay": _NON_NEGATIVE,
    "optim.eta_min": _NON_NEGATIVE,
    "train.epochs": _COUNT,
    "train.batch_size": _COUNT,
    "train.seed": Range(0, SEED_MAX),
    "train.num_workers": Range(0, MAX_WORKERS, note="0: load in the main process"),
    "train.keep_checkpoints": Range(0, COUNT_MAX, note="0: only last.pt"),
    "train.sample_images": _COUNT,
    "train.val_images": _COUNT,
    "train.max_minutes": Range(0, note="0: no limit"),
    "train.pretrain_epochs": _EPOCHS,
    "train.ema_decay": Range(0, 1, open_hi=True, note="0: off"),
    # after train.batch_size, which its message uses
    "data.image_size": Range(1, MAX_IMAGE_SIZE, note="a multiple of 2**model.depth"),
}


@functools.cache
def numeric_keys() -> dict[str, type]:
    """Every int and float key ("section.name") of Config, with its type."""
    found: dict[str, type] = {}
    for section, section_type in typing.get_type_hints(Config).items():
        hints = typing.get_type_hints(section_type)
        found |= {f"{section}.{k}": t for k, t in hints.items() if t in (int, float)}
    return found


def _batch_memory(config: Config) -> str:
    """data.image_size's message above MAX_IMAGE_SIZE: about how much a batch would need."""
    size, batch = config.data.image_size, config.train.batch_size
    need = size * size * batch * ACTIVATION_BYTES_PER_PIXEL // 10**9
    amount = f"{need:,}" if need < 10**9 else f"10**{int(math.log10(need))}"
    return (
        f"data.image_size={shown(size)} needs about {amount} GB of activations per batch of "
        f"train.batch_size={shown(batch)}; the largest accepted is {MAX_IMAGE_SIZE}"
    )


def _check_ranges(config: Config) -> None:
    """Each numeric key against RANGES: one line naming the key, the value and the range."""
    kinds = numeric_keys()
    for key, allowed in RANGES.items():
        section, name = key.split(".")
        value, kind = getattr(getattr(config, section), name), kinds[key]
        if isinstance(value, bool) or not isinstance(value, int if kind is int else (int, float)):
            raise ConfigError(f"{key}: expected {kind.__name__}, got {shown(value)}")
        if value in allowed:
            continue
        if key == "data.image_size" and value > allowed.hi:
            raise ConfigError(_batch_memory(config))
        finite = isinstance(value, int) or math.isfinite(value)
        problem = "is out of range" if finite else "is not a finite number"
        raise ConfigError(f"{key}={shown(value)} {problem}; allowed: {allowed}")


def _read_yaml(path: Path) -> Any:
    """The YAML file at `path`: at most MAX_CONFIG_BYTES of UTF-8, parsed by parse_text."""
    try:
        data = read_bounded(path, MAX_CONFIG_BYTES)
    except OSError as err:
        raise ConfigError(f"cannot read config {path}: {err.strerror or err}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{path}: over {MAX_CONFIG_BYTES // 2**10} KiB; a config is a short YAML file"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}); "
            f"save it as UTF-8"
        ) from None
    return parse_text(text, str(path))


def _resolve(config: Config) -> Config:
    """model.depth and model.output_stride 0 (not given) become the encoder's own; at output
    stride 1, model.upsample is bilinear (nothing is upsampled); the U-Net has no
    model.reference_match."""
    m = config.model
    stride = m.output_stride or DEFAULT_STRIDE[m.encoder]
    model = dataclasses.replace(
        m,
        depth=m.depth or DEFAULT_DEPTH[m.encoder],
        output_stride=stride,
        upsample="bilinear" if stride == 1 else m.upsample,
        reference_match=m.reference_match and m.encoder == "efficientnet_lite0",
    )
    return dataclasses.replace(config, model=model)


def _check_discriminator(config: Config) -> None:
    """The PatchGAN needs image_size / 2**disc_layers >= 3 to give at least one patch."""
    size, layers = config.data.image_size, config.model.disc_layers
    top = largest_disc_layers(size)
    if top < 1:
        raise ConfigError(
            f"data.image_size={size} is too small for the discriminator (6 px at least); "
            f"raise it or set loss.adversarial_weight=0"
        )
    if layers > top:
        raise ConfigError(
            f"model.disc_layers={layers} leaves the discriminator no patch at "
            f"data.image_size={size}; the most there is {top}"
        )


def tone_kinds(tones: str) -> tuple[str, ...]:
    """data.tones ("dots,lines,...") as a tuple of kinds."""
    return tuple(kind.strip() for kind in tones.split(",") if kind.strip())


def _check_tones(tones: str) -> None:
    kinds = tone_kinds(tones)
    unknown = [kind for kind in kinds if kind not in TONE_KINDS]
    if unknown or not kinds:
        raise ConfigError(
            f"data.tones={tones!r}: {'unknown ' + ', '.join(unknown) if unknown else 'empty'}; "
            f"list one or more of {','.join(TONE_KINDS)}"
        )


def _check_relations(config: Config) -> None:
    """What single ranges cannot express: keys that must agree with each other."""
    d, m, loss, t = config.data, config.model, config.loss, config.train
    multiple = 2**m.depth
    if d.image_size % multiple:
        raise ConfigError(
            f"data.image_size={d.image_size} is not a multiple of 2**model.depth="
            f"{multiple}; change data.image_size"
            + (" or lower model.depth" if m.encoder == "unet" else "")
        )
    if m.encoder == "efficientnet_lite0" and m.depth != LITE0_DEPTH:
        raise ConfigError(
            f"model.encoder=efficientnet_lite0 downsamples {LITE0_DEPTH} times: "
            f"set model.depth={LITE0_DEPTH}"
        )
    _check_tones(d.tones)
    if m.output_stride not in (1, 2, 4):
        raise ConfigError(f"model.output_stride={m.output_stride} is not allowed: use 1, 2 or 4")
    if m.encoder == "unet" and m.output_stride != 1:
        raise ConfigError(
            f"model.output_stride={m.output_stride} needs model.encoder=efficientnet_lite0; "
            f"the unet encoder predicts at full resolution (1)"
        )
    if m.encoder == "unet" and m.freeze_encoder_epochs:
        raise ConfigError(
            f"model.freeze_encoder_epochs={m.freeze_encoder_epochs} needs model.encoder="
            "efficientnet_lite0: the unet encoder has no pretrained weights to hold; set it to 0"
        )
    if m.encoder == "efficientnet_lite0" and d.image_size == 2**LITE0_DEPTH and t.batch_size < 2:
        raise ConfigError(
            f"train.batch_size=1 at data.image_size={d.image_size}: the Lite0 encoder's batch "
            f"norm sees one value per channel; use train.batch_size >= 2 or a larger image_size"
        )
    if loss.adversarial_weight == loss.l1_weight == loss.perceptual_weight == 0:
        raise ConfigError(
            "loss.adversarial_weight, loss.l1_weight and loss.perceptual_weight are all 0: "
            "the generator would learn nothing"
        )
    if loss.adversarial_weight > 0:
        _check_discriminator(config)
        if t.pretrain_epochs >= t.epochs:
            raise ConfigError(
                f"train.pretrain_epochs={t.pretrain_epochs} leaves no adversarial epochs "
                f"in train.epochs={t.epochs}; lower it or set loss.adversarial_weight=0"
            )


def validate(config: Config) -> Config:
    """Check every numeric key's range (RANGES), fill in what was not given (_resolve), and
    check the relations between keys. Returns the resolved config."""
    _check_ranges(config)
    config = _resolve(config)
    _check_relations(config)
    return config


def load_config(
    path: str | Path | None = None,
    assignments: list[str] | None = None,
    base: Config | None = None,
) -> Config:
    """Defaults (or `base`), then the YAML file at `path`, then `--set` assignments; validated.
    A file may hold the `version` a saved config.yaml has; one without is the current version."""
    config = base if base is not None else Config()
    if path is not None:
        path = Path(path)
        raw = _read_yaml(path)
        config = apply(config, current(raw or {}, str(path), CONFIG_VERSION), str(path))
    if assignments:
        config = apply(config, current(parse_set(assignments), "--set", None), "--set")
    return validate(config)


def resume_config(
    saved: dict[str, Any], path: str | Path | None, assignments: list[str] | None
) -> Config:
    """The config to resume a run with: the checkpoint's `saved` config, then the YAML file at
    `path`, then `--set`; the keys that differ from the checkpoint's are named in a warning."""
    base = from_dict(saved)
    config = load_config(path, assignments, base=base)
    old, new = dataclasses.asdict(base), dataclasses.asdict(config)
    changed = [
        f"{section}.{key}"
        for section, values in new.items()
        for key, value in values.items()
        if old[section][key] != value
    ]
    if changed:
        log.warning("resuming with changed keys: %s", ", ".join(changed))
    return config


def from_dict(values: dict[str, Any]) -> Config:
    """The Config a saved config means, validated: every saved config (a checkpoint's, a model
    folder's config.json, a run's config.yaml) is read back through here. One without a
    version is version 1 (_current)."""
    return validate(apply(Config(), current(values, SAVED, 1), SAVED))


def save_config(config: Config, path: Path) -> None:
    """Write the resolved config as YAML, with its version (to_dict)."""
    path.write_text(yaml.safe_dump(to_dict(config), sort_keys=False), encoding="utf-8")
