"""The conditioning contract: what a generator is given (`Batch`) and the one path through it
(`generate`).

Training, validation, sample grids, evaluate, `Colorizer`, serve and the ONNX export all build a
`Batch` and call `generate` (ONNX feeds `model_inputs` by `INPUT_NAMES`). A new generator input
(a hint map, a reference's colors) is a new optional `Batch` field, its place in `model_inputs`
and `INPUT_NAMES`, and the generator's `forward` argument; no caller changes.

Shapes and ranges, for every generator:
    l   (B, 1, H, W) in [-1, 1]       Lab L / 50 - 1 (input)
    ab  (B, 2, H, W) in about [-1, 1] Lab ab / 110 (the truth; the generator's output, tanh)
H and W are multiples of the generator's `multiple` (2**depth).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from colorgan.color import rgb_to_l_ab, uint8_to_float

INPUT_NAMES = ("l",)  # the generator's inputs, in forward's order (and the ONNX input names)


@dataclass(frozen=True)
class Batch:
    """Images at the working size, on one device."""

    l: torch.Tensor  # (B, 1, H, W) in [-1, 1]
    ab: torch.Tensor | None = None  # (B, 2, H, W) in about [-1, 1]: the truth; None at inference

    @property
    def ab_real(self) -> torch.Tensor:
        """The truth ab; only training and validation batches have it."""
        if self.ab is None:
            raise ValueError("this batch has no truth ab (an inference batch)")
        return self.ab

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Batch:
        """The same batch with `fn` applied to every tensor (device, dtype, memory layout)."""
        changes = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                changes[f.name] = fn(value)
        return dataclasses.replace(self, **changes)


def to_batch(rgb: torch.Tensor, device: torch.device) -> Batch:
    """uint8 RGB (B, 3, H, W) from the loader -> Batch(l, ab) on `device`, converted there."""
    l, ab = rgb_to_l_ab(uint8_to_float(rgb.to(device, non_blocking=True)))
    return Batch(l=l, ab=ab)


def model_inputs(batch: Batch) -> tuple[torch.Tensor, ...]:
    """The tensors a generator's forward takes, in the order of INPUT_NAMES."""
    return (batch.l,)


def from_inputs(*inputs: torch.Tensor) -> Batch:
    """The Batch whose model_inputs are `inputs` (no truth): for exported graphs."""
    (l,) = inputs
    return Batch(l=l)


def generate(generator: nn.Module, batch: Batch) -> torch.Tensor:
    """Run `generator` (plain, DDP-wrapped or compiled) on `batch`: ab (B, 2, H, W) in [-1, 1],
    in the generator's dtype (bf16/fp16 under autocast)."""
    ab = generator(*model_inputs(batch))
    assert isinstance(ab, torch.Tensor)
    return ab


class Generate(nn.Module):
    """`generate` as a module whose forward takes model_inputs: what ONNX export traces."""

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return generate(self.generator, from_inputs(*inputs))
