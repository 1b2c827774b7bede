"""The conditioning contract: what a generator is given (`Batch`) and the one path through it
(`generate`).

Training, validation, sample grids, evaluate, `Colorizer`, serve and the ONNX export all build a
`Batch` and call `generate` (ONNX feeds `model_inputs` by `INPUT_NAMES`). A new generator input
(a hint map, a reference's colors) is a new optional `Batch` field, its name in `model_inputs`
and `INPUT_NAMES`, and the generator's `forward` keyword argument; no caller changes.

Shapes and ranges, for every generator:
    l      (B, 1, H, W) in [-1, 1]       Lab L / 50 - 1 (input)
    hints  (B, 3, H, W)                  color points: ab in [-1, 1] and a 0/1 mask (hints.py);
                                         None: no points (a model.hints generator sees zeros)
    reference (B, 257)                   a reference image's colors: its ab histogram and a
                                         "given" flag (reference.py); None: no reference
    exemplar (B, R, 4, H', W')           the reference images themselves, Lab and a "given"
                                         channel, for model.reference_match (matching.py)
    ab     (B, 2, H, W) in about [-1, 1] Lab ab / 110 (the truth; the generator's output, tanh)
    uncertainty (B, 1, H, W) > 0         a model.uncertainty generator's third output channel:
                                         its predicted mean |ab error| (uncertainty.py)
H and W are multiples of the generator's `multiple` (2**depth).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from colorgan.color import rgb_to_l_ab, uint8_to_float

INPUT_NAMES = (
    "l",
    "hints",
    "reference",
    "exemplar",
)  # the generator's inputs (forward's and ONNX's names)


@dataclass(frozen=True)
class Batch:
    """Images at the working size, on one device."""

    l: torch.Tensor  # (B, 1, H, W) in [-1, 1]
    ab: torch.Tensor | None = None  # (B, 2, H, W) in about [-1, 1]: the truth; None at inference
    hints: torch.Tensor | None = None  # (B, 3, H, W): color points (hints.py); None: none
    reference: torch.Tensor | None = None  # (B, REFERENCE_CHANNELS) (reference.py); None: none
    exemplar: torch.Tensor | None = None  # (B, R, 4, H', W') (matching.py); None: none

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


def to_batch(item: torch.Tensor | Mapping[str, torch.Tensor], device: torch.device) -> Batch:
    """A loader's item -> Batch on `device`, converted there: uint8 RGB (B, 3, H, W), or a dict
    of that ("rgb") and the conditioning the data simulates ("hints" (B, 3, H, W) with
    model.hints, "reference" (B, REFERENCE_CHANNELS) with model.reference, and with
    data.input_style manga/mixed "l" (B, 1, H, W): the input L, made a page or the crop's)."""
    rgb = item if isinstance(item, torch.Tensor) else item["rgb"]
    l, ab = rgb_to_l_ab(uint8_to_float(rgb.to(device, non_blocking=True)))
    extra = {} if isinstance(item, torch.Tensor) else item
    if extra.get("l") is not None:  # data.input_style manga/mixed: the input made a page
        l = extra["l"].to(device, non_blocking=True)
    given = {
        name: extra[name].to(device, non_blocking=True)
        for name in INPUT_NAMES[1:]
        if extra.get(name) is not None
    }
    return Batch(l=l, ab=ab, **given)


def model_inputs(batch: Batch) -> dict[str, torch.Tensor]:
    """The tensors a generator's forward takes, by name in the order of INPUT_NAMES (those
    present): `generator(**model_inputs(batch))`."""
    inputs = {name: getattr(batch, name) for name in INPUT_NAMES}
    return {name: t for name in INPUT_NAMES if (t := inputs[name]) is not None}


def from_inputs(names: Sequence[str], *inputs: torch.Tensor) -> Batch:
    """The Batch whose model_inputs are `inputs`, named by `names` (no truth): for exported
    graphs."""
    return Batch(**dict(zip(names, inputs, strict=True)))


@dataclass(frozen=True)
class Prediction:
    """What a generator gives: ab, and with model.uncertainty how sure it is of it."""

    ab: torch.Tensor  # (B, 2, H, W) in [-1, 1]
    uncertainty: torch.Tensor | None = None  # (B, 1, H, W) > 0; None: not predicted
    own: torch.Tensor | None = None  # (B, 2, H, W): model.hints in training, ab before the spread


def split_output(output: torch.Tensor) -> Prediction:
    """A generator's (or its ONNX graph's) output tensor -> Prediction: 2 channels are ab, 3
    are ab and the uncertainty; a model.hints generator in training mode adds its own ab
    (before HintSpread) as 2 more (4: ab, own; 5: ab, uncertainty, own)."""
    channels = output.shape[1]
    own = output[:, -2:] if channels >= 4 else None
    uncertainty = output[:, 2:3] if channels in (3, 5) else None
    return Prediction(output[:, :2], uncertainty, own)


def predict(generator: nn.Module, batch: Batch) -> Prediction:
    """Run `generator` (plain, DDP-wrapped or compiled) on `batch`, in the generator's dtype
    (bf16/fp16 under autocast)."""
    output = generator(**model_inputs(batch))
    assert isinstance(output, torch.Tensor)
    return split_output(output)


def generate(generator: nn.Module, batch: Batch) -> torch.Tensor:
    """`predict`'s ab alone: (B, 2, H, W) in [-1, 1]."""
    return predict(generator, batch).ab


class Generate(nn.Module):
    """The generator as a module whose forward takes its inputs positionally, named by `names`
    (a subsequence of INPUT_NAMES starting with "l"), and gives its whole output (ab, and the
    uncertainty channel with model.uncertainty): what ONNX export traces."""

    def __init__(self, generator: nn.Module, names: Sequence[str] = ("l",)) -> None:
        super().__init__()
        self.generator = generator
        self.names = tuple(names)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        output = self.generator(**model_inputs(from_inputs(self.names, *inputs)))
        assert isinstance(output, torch.Tensor)
        return output
