"""Where and in what precision models run: device names and `train.amp`."""

from __future__ import annotations

import contextlib
import os
from typing import Any

import torch

from colorgan.errors import ColorganError, DoesNotFit

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


def free_memory(device: torch.device) -> int | None:
    """Bytes free for tensors on `device` now: a CUDA GPU's free memory plus what torch holds
    unused, or the machine's available memory for the CPU (Linux's MemAvailable); None when
    it cannot be told (then nothing is refused)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def human_bytes(count: float) -> str:
    """1536 -> '1.5 KB' (powers of 1024), for messages."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(count) < 1024 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def check_fits(
    needed: float, device: torch.device, what: str, advice: str, free: int | None = -1
) -> None:
    """Raise DoesNotFit, before anything is allocated, when `what` needs more than `device`
    has free (`needed`: an estimate in bytes); `advice` says what to change. `free`: bytes
    measured earlier (None: unknown), instead of asking the device now."""
    free = free_memory(device) if free == -1 else free
    if free is not None and needed > free:
        raise DoesNotFit(
            f"{what} needs about {human_bytes(needed)} of memory and {device} has "
            f"{human_bytes(free)} free; {advice}"
        )
