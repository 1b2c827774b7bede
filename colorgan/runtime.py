"""Which runtime colorizes a folder: the model in PyTorch, or exported once to ONNX (cached by
the model's identity) and run in onnxruntime (--runtime auto|torch|onnx)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from colorgan.colorize import DEFAULT_BATCH_SIZE, Colorizer
from colorgan.errors import ColorganError, OnnxModelError
from colorgan.jobs import model_identity, run_key
from colorgan.modeldir import resolve_model
from colorgan.request import Request

log = logging.getLogger("colorgan")
RUNTIMES = ("auto", "torch", "onnx")
# --runtime auto exports to ONNX (once, about a minute; cached) for a CPU run of this many
# images: onnxruntime ran the default model 3.3x faster than folded PyTorch on 2 CPU cores
# (docs/journal/performance.md), so the export pays for itself within a few dozen images.
ONNX_MIN_IMAGES = 100


@dataclass(frozen=True)
class ModelChoice:
    """MODEL as a folder run loads it."""

    model: str
    runtime: str = "auto"
    batch_size: int = DEFAULT_BATCH_SIZE
    compile_model: bool = False


def onnx_cache() -> Path:
    """Where --runtime onnx keeps its exports: $COLORGAN_CACHE/onnx, else ~/.cache/colorgan."""
    root = os.environ.get("COLORGAN_CACHE") or Path.home() / ".cache" / "colorgan"
    return Path(root) / "onnx"


def _onnx_path(model: str) -> Path:
    """The cached export of MODEL, named by the identity of the files it resolves to (for
    hf://, the snapshot of one commit)."""
    identity = model_identity(resolve_model(model).path)
    return onnx_cache() / f"{run_key(identity, None, 'onnx', Request(), 0.0)}.onnx"


def _onnx_available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime"))


def _runtime(choice: ModelChoice, device: torch.device, count: int) -> str:
    """'torch' or 'onnx' for this run (--runtime auto: onnx on a CPU for a large folder, or
    when the model is exported already, and when the ONNX packages are installed)."""
    if choice.runtime not in RUNTIMES:
        raise ColorganError(f"--runtime {choice.runtime!r}: use {', '.join(RUNTIMES)}")
    if choice.runtime != "auto" or Path(choice.model).suffix.lower() == ".onnx":
        return "torch" if choice.runtime == "auto" else choice.runtime
    cached = _onnx_path(choice.model).is_file()
    large = count >= ONNX_MIN_IMAGES
    fits = device.type == "cpu" and not choice.compile_model and _onnx_available()
    return "onnx" if fits and (cached or large) else "torch"


ONNX_TIP = (
    "tip: pip install 'colorgan[onnx]' and a CPU folder run like this one goes through "
    "onnxruntime, about 1.5x as fast (--runtime auto)"
)


def _onnx_would_help(choice: ModelChoice, device: torch.device, count: int) -> bool:
    """Whether --runtime auto would have picked onnx here if the ONNX packages were there."""
    auto = choice.runtime == "auto" and Path(choice.model).suffix.lower() != ".onnx"
    large = device.type == "cpu" and not choice.compile_model and count >= ONNX_MIN_IMAGES
    return auto and large and not _onnx_available()


def load_for_folder(
    choice: ModelChoice, device: torch.device, count: int, quiet: bool
) -> Colorizer:
    """The Colorizer for a folder run of `count` files: MODEL in PyTorch, or exported once to
    ONNX (cached by the model's identity) and run in onnxruntime."""
    if _runtime(choice, device, count) == "torch" or Path(choice.model).suffix.lower() == ".onnx":
        if not quiet and _onnx_would_help(choice, device, count):
            print(ONNX_TIP, flush=True)
        return Colorizer.from_checkpoint(
            choice.model, str(device), choice.batch_size, choice.compile_model
        )
    from colorgan.export import export_onnx

    path = _onnx_path(choice.model)
    if path.is_file():
        try:
            colorizer = Colorizer.from_onnx(path, str(device), choice.batch_size)
        except OnnxModelError as err:  # a cached export that broke (a full disk, a crash)
            log.warning("%s; exporting it again", err)
            path.unlink(missing_ok=True)
    if not path.is_file():
        if not quiet:
            print(f"exporting the model to ONNX once (cached as {path})", flush=True)
        try:
            export_onnx(choice.model, path)
        except ColorganError as err:
            if choice.runtime == "onnx":
                raise
            log.warning("%s; running it in PyTorch instead", err)
            return Colorizer.from_checkpoint(
                choice.model, str(device), choice.batch_size, choice.compile_model
            )
        colorizer = Colorizer.from_onnx(path, str(device), choice.batch_size)
    colorizer.source = choice.model
    return colorizer
