"""Checkpoints: plain dicts, written atomically, loaded with weights_only=True; the device
they run on."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from colorgan.config import ColorganError, Config, ModelConfig, from_dict
from colorgan.generator import ColorModel, Generator, Lite0UNet

FORMAT_VERSION = 1


class CheckpointError(ColorganError):
    """A checkpoint that is missing, unreadable or not colorgan's."""


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda, then mps, then cpu; anything else as given (checked)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ColorganError(f"{name!r} is not a device; use auto, cpu, cuda or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ColorganError(f"device {name!r} asked for, but this torch sees no CUDA GPU; use cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ColorganError(f"device {name!r} asked for, but MPS is not available; use cpu")
    return device


def build_generator(model: ModelConfig, pretrained: bool = False) -> ColorModel:
    """The generator a model config describes; `pretrained` loads the Lite0 encoder's ImageNet
    weights (for a fresh run; a checkpoint brings its own)."""
    if model.encoder == "efficientnet_lite0":
        return Lite0UNet(model.base_channels, model.norm, model.dropout, pretrained=pretrained)
    return Generator(
        base_channels=model.base_channels,
        depth=model.depth,
        norm=model.norm,
        dropout=model.dropout,
    )


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write `state` to `path` atomically: a crash leaves the old file or the new one, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save({"format_version": FORMAT_VERSION, **state}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def link_checkpoint(source: Path, target: Path) -> None:
    """Make `target` the same checkpoint as `source` (a hard link where possible), atomically."""
    tmp = target.with_name(f".{target.name}.link.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a colorgan checkpoint safely (weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"{path}: cannot read checkpoint ({type(err).__name__}); is it a colorgan .pt file?"
        ) from None
    if not isinstance(state, dict) or "generator" not in state or "config" not in state:
        raise CheckpointError(f"{path}: not a colorgan checkpoint (no generator or config)")
    version = state.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {version} is not supported by this colorgan "
            f"(format {FORMAT_VERSION})"
        )
    return state


def load_generator(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[ColorModel, Config]:
    """Rebuild the generator (EMA weights when the checkpoint has them) from a checkpoint alone,
    in eval mode, with the config it was trained with."""
    state = load_checkpoint(path, map_location)
    config = from_dict(state["config"])
    generator = build_generator(config.model)
    weights = state.get("generator_ema") or state["generator"]
    generator.load_state_dict(weights)
    generator.eval()
    return generator, config
