"""A training run's state: the networks, optimizers, schedules and counters that a step changes
and a checkpoint holds (checkpoint.py writes and restores it), and how a fresh one is built."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from colorgan import ddp
from colorgan.config import Config
from colorgan.ddp import Dist
from colorgan.device import amp_dtype
from colorgan.discriminator import Discriminator
from colorgan.ema import EMA
from colorgan.errors import ColorganError
from colorgan.generator import ColorModel
from colorgan.losses import load_perceptual
from colorgan.models import build_generator


@dataclass
class State:
    """Everything a training run changes, and so everything a checkpoint holds."""

    config: Config
    device: torch.device
    generator: ColorModel
    discriminator: nn.Module | None
    perceptual: nn.Module | None  # frozen VGG16 or Lite0 features
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer | None
    sched_g: torch.optim.lr_scheduler.LRScheduler
    sched_d: torch.optim.lr_scheduler.LRScheduler | None
    scaler: torch.amp.GradScaler
    dtype: torch.dtype | None  # autocast dtype; None: full precision
    # What the step calls: the modules above, wrapped in DDP and/or torch.compile as configured.
    # d_frozen is the discriminator for the generator's update, outside DDP (no D gradients).
    g_run: nn.Module
    d_run: nn.Module | None
    d_frozen: nn.Module | None
    dist: Dist = field(default_factory=Dist)
    ema: EMA | None = None  # train.ema_decay > 0
    total_steps: int = 1  # of the cosine schedule: train.epochs x steps per epoch
    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps taken
    epoch_items: int = 0  # items of the current epoch done before an interruption
    epoch_sums: dict[str, float] = field(default_factory=dict)  # their image-weighted losses
    best: float = math.inf
    history: list[dict[str, Any]] = field(default_factory=list)
    sources: dict[str, str | None] = field(default_factory=dict)  # data folders, for resume

    @property
    def adversarial(self) -> bool:
        """Whether this epoch trains against the discriminator (after train.pretrain_epochs)."""
        return self.discriminator is not None and self.epoch >= self.config.train.pretrain_epochs

    @property
    def eval_generator(self) -> ColorModel:
        """What validation, samples and inference use: the EMA weights when train.ema_decay > 0."""
        if self.ema is None:
            return self.generator
        module = self.ema.module
        assert isinstance(module, type(self.generator))
        return module


def _prepare(module: nn.Module, config: Config, info: Dist, device: torch.device) -> nn.Module:
    """Apply train.sync_batchnorm and train.channels_last to `module` (in place where possible)."""
    if config.train.sync_batchnorm and info.enabled:
        if device.type != "cuda":
            raise ColorganError("train.sync_batchnorm needs CUDA GPUs; turn it off for CPU runs")
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if config.train.channels_last:
        module = module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return module


def _runner(module: nn.Module, config: Config, info: Dist, device: torch.device) -> nn.Module:
    """The callable the step uses: DDP around `module` when distributed, compiled if asked."""
    wrapped = ddp.wrap(module, info, device)
    if config.train.compile:
        compiled = torch.compile(wrapped)
        assert isinstance(compiled, nn.Module)
        return compiled
    return wrapped


def _optimizers(
    config: Config,
    device: torch.device,
    groups: list[list[nn.Parameter]],
    total_steps: int,
    lr: float,
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.CosineAnnealingLR]:
    """AdamW over `groups` and its cosine schedule over the whole run."""
    o = config.optim
    # fused: the same update in one kernel per device (7x faster than the CPU default here)
    opt = torch.optim.AdamW(
        [{"params": params} for params in groups],
        lr=lr,
        betas=(o.beta1, o.beta2),
        weight_decay=o.weight_decay,
        fused=device.type in ("cuda", "cpu"),
    )
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps, eta_min=o.eta_min)
    return opt, sched


def build_state(
    config: Config, device: torch.device, steps_per_epoch: int, info: Dist | None = None
) -> State:
    """Fresh models, optimizers (AdamW) and cosine schedules over the whole run."""
    info = info or Dist()
    torch.manual_seed(config.train.seed)
    m = config.model
    generator = build_generator(m, pretrained=True).to(device)
    generator = _prepare(generator, config, info, device)  # type: ignore[assignment]
    discriminator: nn.Module | None = None
    if config.loss.adversarial_weight > 0:
        discriminator = Discriminator(m.disc_channels, m.disc_layers, m.disc_norm, m.spectral_norm)
        discriminator = _prepare(discriminator.to(device), config, info, device)
    perceptual = None
    if config.loss.perceptual_weight > 0:
        perceptual = load_perceptual(config.loss.perceptual_network, config.loss.vgg_weights)
        perceptual = perceptual.to(device)
    total_steps = max(1, config.train.epochs * steps_per_epoch)
    opt_g, sched_g = _optimizers(
        config, device, generator.param_groups(), total_steps, config.optim.lr
    )
    opt_d = sched_d = d_run = d_frozen = None
    if discriminator is not None:
        lr_d = config.optim.lr_d or config.optim.lr
        groups = [list(discriminator.parameters())]
        opt_d, sched_d = _optimizers(config, device, groups, total_steps, lr_d)
        d_run = d_frozen = _runner(discriminator, config, info, device)
        if info.enabled:
            d_frozen = _runner(discriminator, config, Dist(), device)
    dtype = amp_dtype(config.train.amp, device)
    return State(
        config=config,
        device=device,
        generator=generator,
        discriminator=discriminator,
        perceptual=perceptual,
        opt_g=opt_g,
        opt_d=opt_d,
        sched_g=sched_g,
        sched_d=sched_d,
        scaler=torch.amp.GradScaler(device.type, enabled=dtype == torch.float16),
        dtype=dtype,
        g_run=_runner(generator, config, info, device),
        d_run=d_run,
        d_frozen=d_frozen,
        dist=info,
        total_steps=total_steps,
        ema=EMA(generator, config.train.ema_decay) if config.train.ema_decay > 0 else None,
    )
