"""Checkpoints: plain dicts of a run's State, written atomically, loaded with weights_only=True;
restoring a State (RNG included) from one; finding the checkpoint a resume means; rebuilding a
generator from a checkpoint alone."""

from __future__ import annotations

import logging
import math
import os
import random
import shutil
from pathlib import Path
from typing import Any

import torch

from colorgan.config import Config, from_dict, to_dict
from colorgan.errors import CheckpointError, ColorganError, ConfigError
from colorgan.files import atomic_write
from colorgan.generator import ColorModel, build_generator
from colorgan.state import State

log = logging.getLogger("colorgan")

FORMAT_VERSION = 1
BEST_METRIC = "val_delta_e"  # lower is better; the field's main per-pixel color error


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write `state` to `path` atomically: a crash leaves the old file or the new one, whole."""
    payload = {"format_version": FORMAT_VERSION, **state}
    atomic_write(path, lambda tmp: torch.save(payload, tmp), durable=True)


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
    """A plain, complete dict of the run's state."""

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


def _restore_models(state: State, saved: dict[str, Any]) -> None:
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


def restore(state: State, saved: dict[str, Any]) -> None:
    """Load a checkpoint_dict into `state` (models, optimizers, schedules, scaler, RNG)."""
    _restore_models(state, saved)
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


def save_run(state: State, run_dir: Path, epoch_done: bool, is_best: bool = False) -> None:
    """RUN_DIR/checkpoints: last.pt always; epoch_NNN.pt (keeping the newest
    train.keep_checkpoints) and best.pt after a full epoch."""
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


def resolve_resume(
    resume: str | None, run_dir: Path | None
) -> tuple[dict[str, Any] | None, Path | None]:
    """What `--resume` means: (the loaded checkpoint or None, the run directory). 'auto' takes
    RUN_DIR/checkpoints/last.pt when there is one (a fresh run otherwise); a path's run
    directory defaults to the folder above its checkpoints/ folder."""
    if resume == "auto":
        if run_dir is None:
            raise ConfigError("--resume auto needs --run-dir to know which run to continue")
        candidate = run_dir / "checkpoints" / "last.pt"
        if candidate.is_file():
            return load_checkpoint(candidate), run_dir
        log.warning("no checkpoint in %s; starting a new run", candidate.parent)
        return None, run_dir
    if resume:
        saved = load_checkpoint(resume)
        return saved, run_dir if run_dir is not None else Path(resume).resolve().parent.parent
    return None, run_dir


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
