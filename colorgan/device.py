"""Where and in what precision models run: device names and `train.amp`."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from colorgan.errors import ColorganError

DEVICE_CHOICES = "auto | cpu | cuda | cuda:N | mps"


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


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype `train.amp` asks for on `device`, or None for full precision."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


def autocast(
    device: torch.device, dtype: torch.dtype | None
) -> contextlib.AbstractContextManager[Any]:
    """Mixed precision in `dtype` on `device`, or nothing when `dtype` is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
