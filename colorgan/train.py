"""Training: build the models, run the GAN steps, validate, log, checkpoint and resume."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from colorgan import distributed
from colorgan.checkpoint import (
    build_generator,
    link_checkpoint,
    save_checkpoint,
)
from colorgan.color import l_ab_to_rgb, rgb_to_gray_rgb, uint8_to_float
from colorgan.config import ColorganError, Config, save_config, to_dict
from colorgan.data import (
    Batch,
    ColorImages,
    DataError,
    EpochSampler,
    scan_images,
    split_paths,
    to_batch,
)
from colorgan.discriminator import Discriminator
from colorgan.distributed import Dist
from colorgan.ema import EMA
from colorgan.figures import save_loss_curves, save_samples
from colorgan.generator import Lite0UNet
from colorgan.losses import (
    ab_histogram,
    d_losses,
    g_adversarial_loss,
    l1_loss,
    load_perceptual,
    perceptual_loss,
    rebalance_weights,
)
from colorgan.metrics import colorfulness, delta_e2000, psnr

log = logging.getLogger("colorgan")

BEST_METRIC = "val_delta_e"  # lower is better; the field's main per-pixel color error
LOSS_KEYS = ("g_adv", "g_l1", "g_perceptual", "g_total", "d_real", "d_fake", "d_total")


class NonFiniteLoss(ColorganError):
    """A loss became NaN or infinite."""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM arrived; a resumable checkpoint has been written."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype `train.amp` asks for on `device`, or None for full precision."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


@dataclass
class State:
    """Everything a training run changes, and so everything a checkpoint holds."""

    config: Config
    device: torch.device
    generator: torch.nn.Module
    discriminator: torch.nn.Module | None
    perceptual: torch.nn.Module | None  # frozen VGG16 or Lite0 features
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer | None
    sched_g: torch.optim.lr_scheduler.LRScheduler
    sched_d: torch.optim.lr_scheduler.LRScheduler | None
    scaler: torch.amp.GradScaler
    dtype: torch.dtype | None
    # What the step calls: the modules above, wrapped in DDP and/or torch.compile as configured.
    # d_frozen is the discriminator for the generator's update, outside DDP (no D gradients).
    g_run: torch.nn.Module
    d_run: torch.nn.Module | None
    d_frozen: torch.nn.Module | None
    dist: Dist = field(default_factory=Dist)
    ema: EMA | None = None  # train.ema_decay > 0
    ab_counts: torch.Tensor | None = None  # training ab histogram, for loss.rebalance
    l1_weights: torch.Tensor | None = None  # per-ab-bin L1 weights from it
    total_steps: int = 1  # of the cosine schedule: train.epochs x steps per epoch
    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps taken
    epoch_items: int = 0  # items of the current epoch done before an interruption
    best: float = math.inf
    history: list[dict[str, Any]] = field(default_factory=list)
    sources: dict[str, str | None] = field(default_factory=dict)  # data folders, for resume


def _prepare(
    module: torch.nn.Module, config: Config, info: Dist, device: torch.device
) -> torch.nn.Module:
    """Apply train.sync_batchnorm and train.channels_last to `module` (in place where possible)."""
    if config.train.sync_batchnorm and info.enabled:
        if device.type != "cuda":
            raise ColorganError("train.sync_batchnorm needs CUDA GPUs; turn it off for CPU runs")
        module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if config.train.channels_last:
        module = module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return module


def _runner(
    module: torch.nn.Module, config: Config, info: Dist, device: torch.device
) -> torch.nn.Module:
    """The callable the step uses: DDP around `module` when distributed, compiled if asked."""
    wrapped = distributed.wrap(module, info, device)
    if config.train.compile:
        compiled = torch.compile(wrapped)
        assert isinstance(compiled, torch.nn.Module)
        return compiled
    return wrapped


def build_state(
    config: Config, device: torch.device, steps_per_epoch: int, info: Dist | None = None
) -> State:
    """Fresh models, optimizers (AdamW) and cosine schedules over the whole run."""
    info = info or Dist()
    torch.manual_seed(config.train.seed)
    m, o = config.model, config.optim
    generator = _prepare(build_generator(m, pretrained=True).to(device), config, info, device)
    discriminator: torch.nn.Module | None = None
    if config.loss.adversarial_weight > 0:
        discriminator = Discriminator(m.disc_channels, m.disc_layers, m.disc_norm, m.spectral_norm)
        discriminator = _prepare(discriminator.to(device), config, info, device)
    perceptual = (
        load_perceptual(config.loss.perceptual_network, config.loss.vgg_weights).to(device)
        if config.loss.perceptual_weight > 0
        else None
    )
    total_steps = max(1, config.train.epochs * steps_per_epoch)

    def adamw(model: torch.nn.Module, lr: float) -> torch.optim.AdamW:
        # fused: the same update in one kernel per device (7x faster than the CPU default here)
        return torch.optim.AdamW(
            _param_groups(model),
            lr=lr,
            betas=(o.beta1, o.beta2),
            weight_decay=o.weight_decay,
            fused=device.type in ("cuda", "cpu"),
        )

    def cosine(opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total_steps, eta_min=o.eta_min)

    opt_g = adamw(generator, o.lr)
    opt_d = adamw(discriminator, o.lr_d or o.lr) if discriminator is not None else None
    dtype = amp_dtype(config.train.amp, device)
    d_run = _runner(discriminator, config, info, device) if discriminator is not None else None
    d_frozen = d_run
    if info.enabled and discriminator is not None:
        d_frozen = _runner(discriminator, config, Dist(), device)
    return State(
        config=config,
        device=device,
        generator=generator,
        discriminator=discriminator,
        perceptual=perceptual,
        opt_g=opt_g,
        opt_d=opt_d,
        sched_g=cosine(opt_g),
        sched_d=cosine(opt_d) if opt_d is not None else None,
        scaler=torch.amp.GradScaler(device.type, enabled=dtype == torch.float16),
        dtype=dtype,
        g_run=_runner(generator, config, info, device),
        d_run=d_run,
        d_frozen=d_frozen,
        dist=info,
        total_steps=total_steps,
        ema=EMA(generator, config.train.ema_decay) if config.train.ema_decay > 0 else None,
    )


def _param_groups(model: torch.nn.Module) -> list[dict[str, Any]]:
    """One group, or for the Lite0 U-Net two: [decoder, encoder], so that the encoder's learning
    rate can be held at 0 while model.freeze_encoder_epochs lasts."""
    if isinstance(model, Lite0UNet):
        encoder = {id(p) for p in model.encoder.parameters()}
        rest = [p for p in model.parameters() if id(p) not in encoder]
        return [{"params": rest}, {"params": list(model.encoder.parameters())}]
    return [{"params": list(model.parameters())}]


def encoder_frozen(state: State) -> bool:
    """Whether the Lite0 encoder is still held fixed (model.freeze_encoder_epochs)."""
    return (
        isinstance(state.generator, Lite0UNet)
        and state.epoch < state.config.model.freeze_encoder_epochs
    )


def train_mode(state: State) -> None:
    """Generator to training mode, except a frozen encoder, whose BatchNorm keeps its ImageNet
    statistics."""
    state.generator.train()
    if encoder_frozen(state):
        assert isinstance(state.generator, Lite0UNet)
        state.generator.encoder.eval()


def adversarial(state: State) -> bool:
    """Whether this epoch trains against the discriminator (after train.pretrain_epochs)."""
    return state.discriminator is not None and state.epoch >= state.config.train.pretrain_epochs


def _noise(state: State, ab: torch.Tensor) -> torch.Tensor:
    """Instance noise on D's ab input: loss.instance_noise at the start, fading to 0 linearly."""
    sigma = state.config.loss.instance_noise * max(0.0, 1.0 - state.step / state.total_steps)
    return ab + sigma * torch.randn_like(ab) if sigma > 0 else ab


def _autocast(state: State) -> contextlib.AbstractContextManager[Any]:
    if state.dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(state.device.type, dtype=state.dtype)


def train_step(state: State, batch: Batch) -> dict[str, float]:
    """One discriminator update, then one generator update. Returns the losses."""
    loss_cfg = state.config.loss
    d, scaler = state.discriminator, state.scaler
    if state.config.train.channels_last:
        batch = Batch(
            l=batch.l.contiguous(memory_format=torch.channels_last),
            ab=batch.ab.contiguous(memory_format=torch.channels_last),
        )
    with _autocast(state):
        ab_fake = state.g_run(batch.l)  # (B, 2, H, W) in [-1, 1]
    zero = torch.zeros((), device=state.device)
    d_real = d_fake = zero
    use_d = adversarial(state)
    if use_d and d is not None and state.opt_d is not None and state.d_run is not None:
        d_run = state.d_run
        d.requires_grad_(True)
        state.opt_d.zero_grad(set_to_none=True)
        with _autocast(state):
            d_real, d_fake = d_losses(
                d_run(batch.l, _noise(state, batch.ab)),
                d_run(batch.l, _noise(state, ab_fake.detach())),
                loss_cfg.gan_mode,
                loss_cfg.real_label,
            )
        scaler.scale(0.5 * (d_real + d_fake)).backward()  # halved as in pix2pix
        scaler.step(state.opt_d)
        d.requires_grad_(False)  # no D gradients from the generator's step
    g_adv = zero
    with _autocast(state):
        if use_d and state.d_frozen is not None:
            g_adv = g_adversarial_loss(
                state.d_frozen(batch.l, _noise(state, ab_fake)), loss_cfg.gan_mode
            )
        g_l1 = l1_loss(ab_fake, batch.ab, state.l1_weights)
        g_perc = zero
        if state.perceptual is not None:
            g_perc = perceptual_loss(state.perceptual, batch.l, ab_fake, batch.ab)
    g_total = (
        loss_cfg.adversarial_weight * g_adv.float()
        + loss_cfg.l1_weight * g_l1
        + loss_cfg.perceptual_weight * g_perc.float()
    )
    state.opt_g.zero_grad(set_to_none=True)
    scaler.scale(g_total).backward()
    if len(state.opt_g.param_groups) == 2:  # the Lite0 encoder's group: lr 0 while frozen
        groups = state.opt_g.param_groups
        groups[1]["lr"] = 0.0 if encoder_frozen(state) else groups[0]["lr"]
    scaler.step(state.opt_g)
    scaler.update()
    state.sched_g.step()
    if state.sched_d is not None:
        state.sched_d.step()
    if state.ema is not None:
        state.ema.update(state.generator)
    state.step += 1
    values = torch.stack([g_adv, g_l1, g_perc, g_total, d_real, d_fake, 0.5 * (d_real + d_fake)])
    values = distributed.mean_over_ranks(values.detach().float(), state.dist)
    losses = dict(zip(LOSS_KEYS, values.cpu().tolist(), strict=True))
    if not all(math.isfinite(v) for v in losses.values()):
        shown = ", ".join(f"{k}={v:.4g}" for k, v in losses.items())
        raise NonFiniteLoss(
            f"a loss became non-finite at epoch {state.epoch + 1}, step {state.step} ({shown}); "
            f"the last good checkpoint is kept; lower optim.lr or try train.amp=off"
        )
    return losses


@torch.no_grad()
def validate(state: State, loader: DataLoader[torch.Tensor]) -> dict[str, float]:
    """Mean ab L1, PSNR, CIEDE2000 and colorfulness of the generator (its EMA when there is
    one) on the validation images."""
    generator = eval_generator(state)
    generator.eval()
    sums: dict[str, float] = {
        "val_l1": 0.0,
        "val_psnr": 0.0,
        "val_delta_e": 0.0,
        "val_colorfulness": 0.0,
    }
    count = 0
    for rgb in loader:
        batch = to_batch(rgb, state.device)
        with _autocast(state):
            ab_fake = generator(batch.l)
        real = uint8_to_float(rgb.to(state.device))
        fake = l_ab_to_rgb(batch.l, ab_fake.float())
        n = rgb.shape[0]
        sums["val_l1"] += l1_loss(ab_fake, batch.ab).item() * n
        sums["val_psnr"] += psnr(fake, real).sum().item()
        sums["val_delta_e"] += delta_e2000(fake, real).sum().item()
        sums["val_colorfulness"] += colorfulness(fake).sum().item()
        count += n
    train_mode(state)
    return {k: v / max(count, 1) for k, v in sums.items()}


@torch.no_grad()
def write_samples(state: State, rgb: torch.Tensor, path: Path) -> None:
    """gray | generated | truth for the fixed sample images."""
    generator = eval_generator(state)
    generator.eval()
    batch = to_batch(rgb, state.device)
    with _autocast(state):
        ab_fake = generator(batch.l)
    real = uint8_to_float(rgb)
    fake = l_ab_to_rgb(batch.l, ab_fake.float()).cpu()
    save_samples(rgb_to_gray_rgb(real), fake, real, path)
    train_mode(state)


def eval_generator(state: State) -> torch.nn.Module:
    """What validation, samples and inference use: the EMA weights when train.ema_decay > 0."""
    return state.ema.module if state.ema is not None else state.generator


def _rng_state() -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": list(random.getstate()[1]),
    }


def _set_rng_state(rng: dict[str, Any]) -> None:
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    random.setstate((3, tuple(rng["python"]), None))


def checkpoint_dict(state: State) -> dict[str, Any]:
    """A plain, complete dict of the run's state (see checkpoint.py for how it is written)."""

    def sd(obj: Any) -> Any:
        return obj.state_dict() if obj is not None else None

    return {
        "config": to_dict(state.config),
        "epoch": state.epoch,
        "step": state.step,
        "epoch_items": state.epoch_items,
        "best": state.best,
        "best_metric": BEST_METRIC,
        "generator": state.generator.state_dict(),
        "generator_ema": state.ema.module.state_dict() if state.ema is not None else None,
        "ema_updates": state.ema.updates if state.ema is not None else 0,
        "ab_counts": state.ab_counts,
        "discriminator": sd(state.discriminator),
        "opt_g": state.opt_g.state_dict(),
        "opt_d": sd(state.opt_d),
        "sched_g": state.sched_g.state_dict(),
        "sched_d": sd(state.sched_d),
        "scaler": state.scaler.state_dict(),
        "rng": _rng_state(),
        "history": state.history,
        "sources": state.sources,
    }


def restore(state: State, saved: dict[str, Any]) -> None:
    """Load a checkpoint_dict into `state` (models, optimizers, schedules, scaler, RNG)."""
    state.generator.load_state_dict(saved["generator"])
    if state.ema is not None:
        if saved.get("generator_ema") is not None:
            state.ema.module.load_state_dict(saved["generator_ema"])
            state.ema.updates = int(saved.get("ema_updates", 0))
        else:  # train.ema_decay switched on at resume: start the average here
            state.ema.module.load_state_dict(saved["generator"])
    pairs = [
        (state.discriminator, "discriminator"),
        (state.opt_d, "opt_d"),
        (state.sched_d, "sched_d"),
    ]
    for obj, key in pairs:
        if obj is not None:
            if saved.get(key) is None:
                raise ColorganError(
                    f"the checkpoint has no {key} to resume an adversarial run from"
                )
            obj.load_state_dict(saved[key])
    state.opt_g.load_state_dict(saved["opt_g"])
    state.sched_g.load_state_dict(saved["sched_g"])
    for sched in (state.sched_g, state.sched_d):
        if sched is not None:
            _retarget(sched, state.total_steps)
    if saved.get("scaler"):
        state.scaler.load_state_dict(saved["scaler"])
    state.epoch, state.step = int(saved["epoch"]), int(saved["step"])
    state.epoch_items = int(saved.get("epoch_items", 0))
    state.best = float(saved.get("best", math.inf))
    state.history = list(saved.get("history", []))
    if saved.get("ab_counts") is not None:
        state.ab_counts = saved["ab_counts"]
    _set_rng_state(saved["rng"])


def _retarget(sched: torch.optim.lr_scheduler.LRScheduler, total_steps: int) -> None:
    """Stretch a restored cosine schedule to a new length (train.epochs changed on resume):
    the learning rate continues from the closed-form value at the current step."""
    assert isinstance(sched, torch.optim.lr_scheduler.CosineAnnealingLR)
    if sched.T_max == total_steps:
        return
    sched.T_max = total_steps
    progress = min(sched.last_epoch, total_steps) / total_steps
    for group, base in zip(sched.optimizer.param_groups, sched.base_lrs, strict=True):
        group["lr"] = (
            sched.eta_min + (base - sched.eta_min) * (1 + math.cos(math.pi * progress)) / 2
        )
    sched._last_lr = [group["lr"] for group in sched.optimizer.param_groups]


def save(state: State, run_dir: Path, epoch_done: bool, is_best: bool = False) -> None:
    """last.pt always; epoch_NNN.pt (keeping the newest N) and best.pt after a full epoch."""
    folder = run_dir / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    last = folder / "last.pt"
    keep = state.config.train.keep_checkpoints
    if not epoch_done or keep <= 0:
        save_checkpoint(checkpoint_dict(state), last)
    else:
        epoch_file = folder / f"epoch_{state.epoch:03d}.pt"
        save_checkpoint(checkpoint_dict(state), epoch_file)
        link_checkpoint(epoch_file, last)
        for old in sorted(folder.glob("epoch_*.pt"))[:-keep]:
            old.unlink()
    if epoch_done and is_best:
        link_checkpoint(last, folder / "best.pt")


@contextlib.contextmanager
def stop_on_signals() -> Iterator[list[int]]:
    """Catch SIGINT/SIGTERM into a list the loop checks after each step; a second signal
    interrupts at once."""
    caught: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        caught.append(signum)
        signal.signal(signum, previous[signum])
        log.warning(
            "%s received: saving a resumable checkpoint after this step",
            signal.Signals(signum).name,
        )

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.getsignal(sig)
            signal.signal(sig, handler)
    try:
        yield caught
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _format(row: dict[str, Any]) -> str:
    parts = [f"epoch {row['epoch']:>3}"]
    for key, value in row.items():
        if key in ("epoch", "step"):
            continue
        if value is None:
            parts.append(f"{key} -")
        elif key == "lr":
            parts.append(f"lr {value:.3g}")
        elif isinstance(value, float):
            parts.append(f"{key} {value:.4f}" if abs(value) < 100 else f"{key} {value:.1f}")
    return "  ".join(parts)


def run_epoch(
    state: State, loader: DataLoader[torch.Tensor], stop: list[int], quiet: bool
) -> tuple[dict[str, float], int, float]:
    """Train one epoch (or its rest, after a mid-epoch resume). Returns mean losses, images
    seen and seconds spent. Raises Interrupted once a caught signal's step is done."""
    sums = dict.fromkeys(LOSS_KEYS, 0.0)
    images = 0
    start = time.perf_counter()
    bar = tqdm(
        loader,
        desc=f"epoch {state.epoch + 1}/{state.config.train.epochs}",
        unit="batch",
        leave=False,
        disable=True if quiet else None,
        dynamic_ncols=True,
    )
    for rgb in bar:
        losses = train_step(state, to_batch(rgb, state.device))
        n = rgb.shape[0]
        images += n
        state.epoch_items += n
        for key, value in losses.items():
            sums[key] += value * n
        rate = images / (time.perf_counter() - start)
        bar.set_postfix(
            g=f"{sums['g_total'] / images:.3f}",
            l1=f"{sums['g_l1'] / images:.4f}",
            d=f"{sums['d_total'] / images:.3f}",
            ips=f"{rate:.1f}",
        )
        if distributed.any_rank(bool(stop), state.dist, state.device):
            raise Interrupted(stop[0] if stop else signal.SIGTERM)
    bar.close()
    return {k: v / max(images, 1) for k, v in sums.items()}, images, time.perf_counter() - start


def _loaders(
    config: Config, train_paths: list[Path], val_paths: list[Path], device: torch.device, info: Dist
) -> tuple[DataLoader[torch.Tensor], DataLoader[torch.Tensor], EpochSampler]:
    t = config.train
    if len(train_paths) < t.batch_size * info.world_size:
        raise DataError(
            f"only {len(train_paths)} training image(s) for train.batch_size={t.batch_size}; "
            f"add images or lower train.batch_size"
        )
    sampler = EpochSampler(len(train_paths), t.seed, True, info.rank, info.world_size)
    common: dict[str, Any] = {
        "num_workers": t.num_workers,
        "pin_memory": device.type == "cuda",
        "persistent_workers": t.num_workers > 0,
    }
    train_loader = DataLoader(
        ColorImages(train_paths, config.data.image_size, train=True),
        batch_size=t.batch_size,
        sampler=sampler,
        drop_last=True,
        **common,
    )
    val_set = ColorImages(val_paths[: t.val_images], config.data.image_size, train=False)
    val_loader = DataLoader(
        val_set,
        batch_size=t.batch_size,
        sampler=EpochSampler(len(val_set), t.seed, shuffle=False),
        **common,
    )
    return train_loader, val_loader, sampler


def ab_counts(config: Config, paths: list[Path], quiet: bool, limit: int = 2000) -> torch.Tensor:
    """Histogram of the training images' ab (center crops; at most `limit` images, evenly
    spaced) for loss.rebalance. Computed once and kept in the checkpoint."""
    step = max(1, math.ceil(len(paths) / limit))
    images = ColorImages(paths[::step], config.data.image_size, train=False)
    loader = DataLoader(images, batch_size=32, num_workers=config.train.num_workers)
    counts = torch.zeros(1)
    for rgb in tqdm(loader, desc="color histogram", leave=False, disable=True if quiet else None):
        counts = counts + ab_histogram(to_batch(rgb, torch.device("cpu")).ab)
    log.info("loss.rebalance: ab histogram of %d training images", len(images))
    return counts


def _split(
    config: Config, data: Path, val_data: Path | None, quiet: bool
) -> tuple[list[Path], list[Path]]:
    d = config.data
    scan = scan_images(data, d.gray_threshold, limit=d.max_images, quiet=quiet)
    log.info(
        "%s: %d usable color images, %d unreadable skipped, %d grayscale skipped",
        data,
        len(scan.usable),
        len(scan.unreadable),
        len(scan.grayscale),
    )
    if val_data is not None:
        val_scan = scan_images(val_data, d.gray_threshold, quiet=quiet)
        log.info("%s: %d validation images", val_data, len(val_scan.usable))
        return scan.usable, val_scan.usable
    if d.val_fraction <= 0 or len(scan.usable) < 2:
        raise DataError(
            f"{data}: no validation images; give --val-data DIR or data.val_fraction > 0"
        )
    train_paths, val_paths = split_paths(scan.usable, d.val_fraction, config.train.seed)
    log.info("seeded split: %d training, %d validation images", len(train_paths), len(val_paths))
    return train_paths, val_paths


class _TqdmHandler(logging.Handler):
    """Console logging that does not tear the progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record), file=sys.stdout)


@contextlib.contextmanager
def run_logging(run_dir: Path, quiet: bool, main: bool = True) -> Iterator[None]:
    """Send colorgan's log to the console and to RUN_DIR/train.log for the duration; processes
    other than the main one only report errors."""
    handlers: list[logging.Handler] = []
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(run_dir / "train.log", encoding="utf-8"))
        handlers[0].setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
        )
        if not quiet:
            handlers.append(_TqdmHandler())
    for handler in handlers:
        log.addHandler(handler)
    old_level, old_propagate = log.level, log.propagate
    log.setLevel(logging.INFO if main else logging.ERROR)
    log.propagate = False
    try:
        yield
    finally:
        for handler in handlers:
            log.removeHandler(handler)
            handler.close()
        log.setLevel(old_level)
        log.propagate = old_propagate


def train(
    config: Config,
    data: Path,
    run_dir: Path,
    val_data: Path | None = None,
    resume: dict[str, Any] | None = None,
    quiet: bool = False,
) -> list[dict[str, Any]]:
    """Train from scratch or from `resume` (a loaded checkpoint); returns the metrics history.
    Under torchrun, every process calls this; only rank 0 writes."""
    info, device = distributed.init(config.train.device)
    try:
        with run_logging(run_dir, quiet, info.is_main):
            quiet = quiet or not info.is_main
            train_paths, val_paths = _split(config, data, val_data, quiet)
            loaders = _loaders(config, train_paths, val_paths, device, info)
            state = build_state(config, device, len(loaders[0]), info)
            state.sources = {"data": str(data), "val_data": str(val_data) if val_data else None}
            if resume is not None:
                restore(state, resume)
                log.info("resumed at epoch %d, step %d", state.epoch + 1, state.step)
            if config.loss.rebalance > 0:
                if state.ab_counts is None:
                    state.ab_counts = ab_counts(config, train_paths, quiet)
                weights = rebalance_weights(state.ab_counts, config.loss.rebalance)
                state.l1_weights = weights.to(device)
            if info.is_main:
                save_config(config, run_dir / "config.yaml")
            return _loop(state, *loaders, run_dir, quiet)
    finally:
        distributed.shutdown(info)


def _loop(
    state: State,
    train_loader: DataLoader[torch.Tensor],
    val_loader: DataLoader[torch.Tensor],
    sampler: EpochSampler,
    run_dir: Path,
    quiet: bool,
) -> list[dict[str, Any]]:
    """Epochs until train.epochs (or train.max_minutes); saves a checkpoint if interrupted."""
    config = state.config
    val_set = val_loader.dataset
    assert isinstance(val_set, ColorImages)
    samples_rgb = torch.stack(
        [val_set[i] for i in range(min(config.train.sample_images, len(val_set)))]
    )
    writer = _tensorboard(run_dir) if config.train.tensorboard and state.dist.is_main else None
    log.info(
        "training on %s x%d (amp: %s), %d steps per epoch",
        state.device,
        state.dist.world_size,
        state.dtype or "off",
        len(train_loader),
    )
    if config.train.pretrain_epochs and state.discriminator is not None:
        log.info(
            "epochs 1-%d: generator warm-up without the discriminator", config.train.pretrain_epochs
        )
    run_start = time.perf_counter()
    with stop_on_signals() as stop, warnings.catch_warnings():
        # GradScaler skips an optimizer step when it finds inf gradients; the schedule
        # still advances, which is what we want, so its warning is noise.
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)`")
        while state.epoch < config.train.epochs:
            sampler.set_epoch(state.epoch, skip=state.epoch_items)
            train_mode(state)
            start = time.perf_counter()
            try:
                losses, images, train_seconds = run_epoch(state, train_loader, stop, quiet)
            except Interrupted:
                if state.dist.is_main:
                    save(state, run_dir, epoch_done=False)
                log.warning(
                    "interrupted at epoch %d, step %d; resume with: colorgan train "
                    "--run-dir %s --resume auto",
                    state.epoch + 1,
                    state.step,
                    run_dir,
                )
                raise
            row = {"images_per_second": images * state.dist.world_size / max(train_seconds, 1e-9)}
            _end_epoch(state, losses | row, start, val_loader, samples_rgb, run_dir, writer)
            minutes = (time.perf_counter() - run_start) / 60.0
            if 0 < config.train.max_minutes <= minutes and state.epoch < config.train.epochs:
                log.info("train.max_minutes=%g reached: stopping", config.train.max_minutes)
                break
    log.info("done: %s (best %s %.4f)", run_dir / "checkpoints", BEST_METRIC, state.best)
    return state.history


def _end_epoch(
    state: State,
    measured: dict[str, float],
    start: float,
    val_loader: DataLoader[torch.Tensor],
    samples_rgb: torch.Tensor,
    run_dir: Path,
    writer: Any,
) -> None:
    """Validate, write samples, metrics, curves and checkpoints (rank 0), then sync ranks."""
    trained_adversarially = adversarial(state)  # for the epoch just finished
    state.epoch += 1
    state.epoch_items = 0
    row: dict[str, Any] = {
        "epoch": state.epoch,
        "step": state.step,
        "lr": state.opt_g.param_groups[0]["lr"],
    }
    row.update({k: measured[k] for k in LOSS_KEYS})
    if not trained_adversarially:
        row.update({"g_adv": None, "d_real": None, "d_fake": None, "d_total": None})
    if state.dist.is_main:
        row.update(validate(state, val_loader))
        sample_path = run_dir / "samples" / f"epoch_{state.epoch:03d}.png"
        write_samples(state, samples_rgb, sample_path)
        row["seconds"] = time.perf_counter() - start
        row["images_per_second"] = measured["images_per_second"]
        state.history.append(row)
        # Warm-up epochs (no D yet) do not compete for best.pt: their dull colors score well.
        warm_up = state.discriminator is not None and not trained_adversarially
        is_best = not warm_up and row[BEST_METRIC] <= state.best
        state.best = state.best if warm_up else min(state.best, row[BEST_METRIC])
        save(state, run_dir, epoch_done=True, is_best=is_best)
        with (run_dir / "metrics.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        save_loss_curves(state.history, run_dir / "loss_curves.png")
        if writer is not None:
            _tensorboard_epoch(writer, row, sample_path)
        log.info(_format(row))
    distributed.barrier(state.dist)


def _tensorboard(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning(
            "train.tensorboard is on but tensorboard is not installed: pip install tensorboard"
        )
        return None
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))


def _tensorboard_epoch(writer: Any, row: dict[str, Any], sample: Path) -> None:
    import numpy as np
    from PIL import Image

    for key, value in row.items():
        if isinstance(value, (int, float)) and key != "epoch":
            writer.add_scalar(key, value, row["epoch"])
    writer.add_image(
        "samples", np.asarray(Image.open(sample).convert("RGB")), row["epoch"], dataformats="HWC"
    )
    writer.flush()
