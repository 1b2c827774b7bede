"""An exponential moving average of the generator's weights (`train.ema_decay`).

GAN generators oscillate from step to step; the average of recent weights gives steadier, less
artifact-prone outputs (Karras et al. 2018; Yazici et al. 2019). torch's AveragedModel cannot
average BatchNorm's integer step counter, so this small class does parameters and float buffers
with one `_foreach_lerp_` and copies the integer buffers.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """`module`'s running average. The decay warms up as min(decay, (1 + n) / (10 + n)) over
    the first updates n, so early random weights fade fast even in short runs."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(module).eval().requires_grad_(False)
        self.decay = decay
        self.updates = 0

    def current_decay(self) -> float:
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """Move the average towards `module`'s current weights."""
        self.updates += 1
        weight = 1.0 - self.current_decay()
        torch._foreach_lerp_(list(self.module.parameters()), list(module.parameters()), weight)
        for mine, theirs in zip(self.module.buffers(), module.buffers(), strict=True):
            if mine.is_floating_point():
                mine.lerp_(theirs, weight)
            else:
                mine.copy_(theirs)
