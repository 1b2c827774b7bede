"""The configuration: one frozen dataclass tree, overridden by YAML and then by `--set`."""

from __future__ import annotations

import dataclasses
import logging
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from colorgan.errors import ConfigError

log = logging.getLogger("colorgan")

GanMode = Literal["vanilla", "lsgan", "hinge"]
Norm = Literal["batch", "instance", "none"]
Amp = Literal["auto", "off", "bf16", "fp16"]


LITE0_DEPTH = 5  # EfficientNet-Lite0's encoder halves the size five times (stride 32)
# model.depth when not given: the encoder's (pix2pix's 8 for the from-scratch U-Net)
DEFAULT_DEPTH = {"unet": 8, "efficientnet_lite0": LITE0_DEPTH}


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


@dataclass(frozen=True)
class ModelConfig:
    # The defaults are the recipe that won docs/RESULTS.md's experiments: the U-Net on the
    # ImageNet-pretrained EfficientNet-Lite0 encoder (weights ship with a package: no download),
    # decoder width 32. model.encoder=unet with base_channels=64 is pix2pix's from-scratch U-Net.
    encoder: Literal["unet", "efficientnet_lite0"] = "efficientnet_lite0"
    base_channels: int = 32
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
    real_label: float = 1.0  # D's target for real images; 0.9 is one-sided label smoothing
    instance_noise: float = 0.0  # std of noise on D's ab inputs, fading linearly to 0 by the end
    rebalance: float = 0.0  # chroma re-balancing of L1 by color rarity (0: off; 0.5: Zhang et al.)


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


def to_dict(config: Config) -> dict[str, dict[str, Any]]:
    """The config as plain nested dicts (for YAML and checkpoints)."""
    return dataclasses.asdict(config)


def _check_value(key: str, value: Any, annotation: Any) -> Any:
    """Return `value` as the type `annotation` names, or raise ConfigError."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        allowed = typing.get_args(annotation)
        if isinstance(value, bool) and "off" in allowed:  # YAML 1.1 reads off/on as booleans
            value = "auto" if value else "off"
        if value not in allowed:
            choices = " | ".join(str(a) for a in allowed)
            raise ConfigError(f"{key}: {value!r} is not one of {choices}")
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if arg is type(None) and value is None:
                return None
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _check_value(key, value, inner[0])
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif annotation is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    else:  # pragma: no cover - a field type this function does not know is a programming error
        raise TypeError(f"unsupported config type {annotation!r} for {key}")
    name = getattr(annotation, "__name__", str(annotation))
    raise ConfigError(f"{key}: expected {name}, got {value!r}")


def _apply(config: Config, overrides: dict[str, Any], source: str) -> Config:
    """Return `config` with nested `overrides` ({section: {key: value}}) applied."""
    if not isinstance(overrides, dict):
        raise ConfigError(
            f"{source}: expected a mapping of sections, got {type(overrides).__name__}"
        )
    sections = {f.name: f for f in dataclasses.fields(config)}
    changes: dict[str, Any] = {}
    for section_name, values in overrides.items():
        if section_name not in sections:
            known = ", ".join(sections)
            raise ConfigError(f"{source}: unknown section {section_name!r} (known: {known})")
        section = getattr(config, section_name)
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: section {section_name!r} must be a mapping")
        hints = typing.get_type_hints(type(section))
        updates = {}
        for key, value in values.items():
            full = f"{section_name}.{key}"
            if key not in hints:
                known = ", ".join(hints)
                raise ConfigError(
                    f"{source}: unknown key {full!r} (known in {section_name}: {known})"
                )
            updates[key] = _check_value(full, value, hints[key])
        changes[section_name] = dataclasses.replace(section, **updates)
    return dataclasses.replace(config, **changes)


def parse_set(assignments: list[str]) -> dict[str, dict[str, Any]]:
    """Turn `["train.epochs=3", ...]` into nested overrides; values are parsed as YAML scalars."""
    nested: dict[str, dict[str, Any]] = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not section or not name:
            raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. train.epochs=5")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        nested.setdefault(section, {})[name] = value
    return nested


def _resolve_depth(config: Config) -> Config:
    """model.depth=0 (not given) becomes the encoder's own depth."""
    if config.model.depth != 0:
        return config
    model = dataclasses.replace(config.model, depth=DEFAULT_DEPTH[config.model.encoder])
    return dataclasses.replace(config, model=model)


def validate(config: Config) -> Config:
    """Fill in model.depth when not given, and check relations between keys that single types
    cannot express. Returns the resolved config."""
    config = _resolve_depth(config)
    multiple = 2**config.model.depth
    if config.data.image_size % multiple:
        raise ConfigError(
            f"data.image_size={config.data.image_size} is not a multiple of 2**model.depth="
            f"{multiple}; change data.image_size"
            + (" or lower model.depth" if config.model.encoder == "unet" else "")
        )
    positives = {
        "data.image_size": config.data.image_size,
        "model.base_channels": config.model.base_channels,
        "model.depth": config.model.depth,
        "train.epochs": config.train.epochs,
        "train.batch_size": config.train.batch_size,
        "optim.lr": config.optim.lr,
        "data.hint_max_patch": config.data.hint_max_patch,
    }
    for key, value in positives.items():
        if value <= 0:
            raise ConfigError(f"{key} must be positive, got {value}")
    if not 0.0 < config.data.hint_p <= 1.0:
        raise ConfigError(f"data.hint_p must be in (0, 1], got {config.data.hint_p}")
    if not 0.0 <= config.data.val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be in [0, 1), got {config.data.val_fraction}")
    if not 0.0 <= config.model.dropout < 1.0:
        raise ConfigError(f"model.dropout must be in [0, 1), got {config.model.dropout}")
    if config.model.encoder == "efficientnet_lite0" and config.model.depth != LITE0_DEPTH:
        raise ConfigError(
            f"model.encoder=efficientnet_lite0 downsamples {LITE0_DEPTH} times: "
            f"set model.depth={LITE0_DEPTH}"
        )
    non_negatives = {
        "model.freeze_encoder_epochs": config.model.freeze_encoder_epochs,
        "train.pretrain_epochs": config.train.pretrain_epochs,
        "train.max_minutes": config.train.max_minutes,
        "train.num_workers": config.train.num_workers,
        "loss.instance_noise": config.loss.instance_noise,
    }
    for key, value in non_negatives.items():
        if value < 0:
            raise ConfigError(f"{key} must be >= 0, got {value}")
    if config.loss.adversarial_weight > 0 and config.train.pretrain_epochs >= config.train.epochs:
        raise ConfigError(
            f"train.pretrain_epochs={config.train.pretrain_epochs} leaves no adversarial epochs "
            f"in train.epochs={config.train.epochs}; lower it or set loss.adversarial_weight=0"
        )
    if not 0.0 <= config.train.ema_decay < 1.0:
        raise ConfigError(f"train.ema_decay must be in [0, 1), got {config.train.ema_decay}")
    if not 0.0 < config.loss.real_label <= 1.0:
        raise ConfigError(f"loss.real_label must be in (0, 1], got {config.loss.real_label}")
    if config.loss.real_label < 1.0 and config.loss.gan_mode == "hinge":
        raise ConfigError("loss.real_label < 1 has no meaning for gan_mode=hinge; use 1.0")
    if not 0.0 <= config.loss.rebalance < 1.0:
        raise ConfigError(f"loss.rebalance must be in [0, 1), got {config.loss.rebalance}")
    return config


def load_config(
    path: str | Path | None = None,
    assignments: list[str] | None = None,
    base: Config | None = None,
) -> Config:
    """Defaults (or `base`), then the YAML file at `path`, then `--set` assignments; validated."""
    config = base if base is not None else Config()
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise ConfigError(f"cannot read config {path}: {err.strerror or err}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({err.__class__.__name__})") from None
        config = _apply(config, loaded or {}, str(path))
    if assignments:
        config = _apply(config, parse_set(assignments), "--set")
    return validate(config)


def resume_config(
    saved: dict[str, Any], path: str | Path | None, assignments: list[str] | None
) -> Config:
    """The config to resume a run with: the checkpoint's `saved` config, then the YAML file at
    `path`, then `--set`; the keys that differ from the checkpoint's are named in a warning."""
    base = from_dict(saved)
    config = load_config(path, assignments, base=base)
    old, new = to_dict(base), to_dict(config)
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
    """Rebuild a Config saved by `to_dict` (checkpoints, config.yaml); validated. A saved config
    older than model.encoder had the from-scratch U-Net, whatever today's default is."""
    model = values.get("model")
    if isinstance(model, dict) and "encoder" not in model:
        values = {**values, "model": {**model, "encoder": "unet"}}
    return validate(_apply(Config(), values, "saved config"))


def save_config(config: Config, path: Path) -> None:
    """Write the resolved config as YAML."""
    path.write_text(yaml.safe_dump(to_dict(config), sort_keys=False), encoding="utf-8")
