"""Checkpoints: plain dicts of a run's State, written atomically, loaded with weights_only=True;
restoring a State (RNG included) from one; finding the checkpoint a resume means; rebuilding a
generator from a checkpoint alone."""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import random
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from colorgan.config import Config, ModelConfig, from_dict, to_dict
from colorgan.errors import CheckpointError, ColorganError, ConfigError, WriteFailed
from colorgan.files import atomic_write, temporary_prefix, write_error
from colorgan.generator import ColorModel
from colorgan.models import build_generator
from colorgan.state import State

log = logging.getLogger("colorgan")

FORMAT_VERSION = 1
LOADED_FROM = "loaded_from"  # the path load_checkpoint read a checkpoint dict from
BEST_METRIC = "val_delta_e"  # lower is better; the field's main per-pixel color error


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write `state` to `path` atomically: a crash leaves the old file or the new one, whole."""
    payload = {"format_version": FORMAT_VERSION, **state}
    try:
        atomic_write(path, lambda tmp: _torch_save(payload, tmp), durable=True)
    except OSError as err:
        full = err.errno in (errno.ENOSPC, errno.EDQUOT)
        kept = f"; the checkpoint that was at {path.name} is kept" if path.exists() else ""
        needed = _tensor_bytes(payload) if full else None
        raise WriteFailed(write_error(err, needed) + kept) from None


def _torch_save(payload: dict[str, Any], tmp: Path) -> None:
    """torch.save, its failed writes as the OSError they are: its zip writer reports a full
    disk as a RuntimeError ("unexpected pos", "iostream error")."""
    try:
        torch.save(payload, tmp)
    except RuntimeError as err:
        full = shutil.disk_usage(tmp.parent).free < _tensor_bytes(payload)
        reason = str(err).strip().splitlines()[-1][:120] if str(err).strip() else "write failed"
        code = errno.ENOSPC if full else errno.EIO
        raise OSError(code, os.strerror(code) if full else reason, str(tmp)) from None


def _tensor_bytes(value: Any) -> int:
    """The bytes of the tensors in a nested dict/list: about a checkpoint's size on disk."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_tensor_bytes(v) for v in value)
    return 0


def load_weights(
    target: nn.Module | Any,
    weights: Any,
    source: str,
    what: str,
    advice: str = "Resume with the checkpoint's own model settings",
) -> None:
    """`target.load_state_dict(weights)` (a module, optimizer or schedule), or one line naming
    `source`, the first mismatch and `advice` when they do not fit (another architecture,
    changed keys)."""
    try:
        target.load_state_dict(weights)
    except (RuntimeError, KeyError, TypeError, ValueError) as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        detail = next((line for line in lines[1:] if line), lines[0] if lines else "")
        raise CheckpointError(
            f"{source}: its {what} do not fit the model its config describes "
            f"({detail[:160]}); was it made by another colorgan version, or were model.* keys "
            f"changed? {advice}"
        ) from None


def link_checkpoint(source: Path, target: Path) -> None:
    """Make `target` the same checkpoint as `source` (a hard link where possible), atomically."""
    tmp = target.with_name(f"{temporary_prefix(target.name)}linktemp.tmp")
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
    state[LOADED_FROM] = str(path)  # for messages; checkpoint_dict never writes it back
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
        "epoch_sums": dict(state.epoch_sums),
        "best": state.best,
        "best_metric": BEST_METRIC,
        "generator": state.generator.state_dict(),
        "generator_ema": state.ema.module.state_dict() if state.ema is not None else None,
        "ema_updates": state.ema.updates if state.ema is not None else 0,
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
    source = str(saved.get(LOADED_FROM, "the checkpoint"))
    load_weights(state.generator, saved["generator"], source, "generator weights")
    if state.ema is not None:
        if saved.get("generator_ema") is not None:
            load_weights(state.ema.module, saved["generator_ema"], source, "EMA generator weights")
            state.ema.updates = int(saved.get("ema_updates", 0))
        else:  # train.ema_decay switched on at resume: start the average here
            load_weights(state.ema.module, saved["generator"], source, "generator weights")
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
            load_weights(obj, saved[key], source, f"{key} state")
    load_weights(state.opt_g, saved["opt_g"], source, "optimizer state (opt_g)")
    load_weights(state.sched_g, saved["sched_g"], source, "schedule state (sched_g)")


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
    state.epoch_sums = {k: float(v) for k, v in (saved.get("epoch_sums") or {}).items()}
    state.best = float(saved.get("best", math.inf))
    state.history = list(saved.get("history", []))
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


def holds_run(run_dir: Path) -> str | None:
    """What says `run_dir` holds a run (a checkpoint or metrics rows), or None."""
    for name in ("checkpoints/last.pt", "checkpoints/best.pt"):
        if (run_dir / name).is_file():
            return name
    if any((run_dir / "checkpoints").glob("epoch_*.pt")):
        return "checkpoints/epoch_*.pt"
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file() and metrics.stat().st_size > 0:
        return "metrics.jsonl"
    return None


def _further(run_dir: Path, resumed: Path, saved: dict[str, Any]) -> str | None:
    """How `run_dir` went further than the checkpoint `saved` (read from `resumed`): its
    last.pt at a later step, or metrics rows past its epoch; None if it did not."""
    last = run_dir / "checkpoints" / "last.pt"
    if last.is_file() and not (resumed.exists() and os.path.samefile(last, resumed)):
        try:
            newest = torch.load(last, map_location="cpu", weights_only=True, mmap=True)
            if int(newest.get("step", 0)) > int(saved["step"]):
                return f"its last.pt is at epoch {newest['epoch']}, step {newest['step']}"
        except Exception:  # an unreadable last.pt is not a newer run
            pass
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        for line in metrics.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                epoch = int(json.loads(line)["epoch"])
            except (ValueError, KeyError, TypeError):
                continue
            if epoch > int(saved["epoch"]):
                return f"its metrics.jsonl has epoch {epoch}"
    return None


def branch_dir(run_dir: Path, epoch: int) -> Path:
    """A new run directory beside `run_dir` for a run resumed from its epoch `epoch`:
    RUN-from-epoch002 (then -2, -3, ... if taken)."""
    base = run_dir.with_name(f"{run_dir.name}-from-epoch{epoch:03d}")
    candidate, number = base, 1
    while candidate.exists() and holds_run(candidate):
        number += 1
        candidate = base.with_name(f"{base.name}-{number}")
    return candidate


def _resume_path(resume: str, run_dir: Path | None) -> tuple[dict[str, Any], Path]:
    """A checkpoint file to resume and the run directory it continues in (see resolve_resume)."""
    saved = load_checkpoint(resume)
    path = Path(resume).resolve()
    home = path.parent.parent if path.parent.name == "checkpoints" else None
    if run_dir is None:
        if home is None:
            raise ConfigError(
                f"--resume {resume}: the file is not in a run's checkpoints/ folder; "
                f"say where the run goes with --run-dir"
            )
        further = _further(home, path, saved)
        if further is None:
            return saved, home
        branch = branch_dir(home, int(saved["epoch"]))
        log.warning(
            "%s went further (%s): resuming from epoch %d branches into %s; %s is left as it is",
            home, further, int(saved["epoch"]), branch, home,
        )  # fmt: skip
        return saved, branch
    same = home is not None and run_dir.resolve() == home
    further = _further(run_dir, path, saved) if same else holds_run(run_dir)
    if further is not None:
        raise ConfigError(
            f"--run-dir {run_dir} holds a run that went further than {resume} ({further}); "
            f"resuming there would overwrite it: give another --run-dir"
            + (", or leave out --run-dir to branch into a new one" if same else "")
        )
    return saved, run_dir


def resolve_resume(
    resume: str | None, run_dir: Path | None
) -> tuple[dict[str, Any] | None, Path | None]:
    """What `--resume` means: (the loaded checkpoint or None, the run directory). 'auto' takes
    RUN_DIR/checkpoints/last.pt when there is one (a fresh run otherwise). A path continues
    the run whose checkpoints/ folder holds it, or --run-dir (required for a file elsewhere);
    a run that went further than the file is never overwritten: without --run-dir the resumed
    run branches into RUN-from-epochNNN, with it the resume is refused."""
    if resume == "auto":
        if run_dir is None:
            raise ConfigError("--resume auto needs --run-dir to know which run to continue")
        candidate = run_dir / "checkpoints" / "last.pt"
        if candidate.is_file():
            return load_checkpoint(candidate), run_dir
        log.warning("no checkpoint in %s; starting a new run", candidate.parent)
        return None, run_dir
    if resume:
        return _resume_path(resume, run_dir)
    return None, run_dir


def check_shapes(
    model: ModelConfig,
    shapes: Mapping[str, Sequence[int]],
    source: str,
    advice: str = "Resume with the checkpoint's own model settings",
) -> None:
    """CheckpointError (load_weights' line) unless the generator `model` describes holds
    exactly these tensor names and shapes. It is built on the meta device, so a config that
    describes a network far larger than its weights allocates nothing."""
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in build_generator(model).state_dict().items()}
    given = {k: tuple(v) for k, v in shapes.items()}
    if given == expected:
        return
    missing, unexpected = sorted(expected.keys() - given.keys()), sorted(given.keys() - expected)
    if missing or unexpected:
        detail = f"missing key {missing[0]!r}" if missing else f"unexpected key {unexpected[0]!r}"
    else:
        name = next(k for k in expected if expected[k] != given[k])
        sizes = f"weights of shape {list(given[name])}, the model {list(expected[name])}"
        detail = f"size mismatch for {name}: {sizes}"
    raise CheckpointError(
        f"{source}: its generator weights do not fit the model its config describes "
        f"({detail}); was it made by another colorgan version, or were model.* keys "
        f"changed? {advice}"
    )


def check_finite(weights: Mapping[str, Any], source: str) -> None:
    """CheckpointError naming the first weight that holds NaN or infinity: such a generator
    gives black or gray pictures, not an error."""
    for name, value in weights.items():
        floating = isinstance(value, torch.Tensor) and value.is_floating_point()
        if floating and not bool(torch.isfinite(value).all()):
            raise CheckpointError(
                f"{source}: its generator weight {name!r} holds NaN or infinite values; "
                "the model cannot colorize (did its training diverge?)"
            )


def generator_from(state: dict[str, Any], source: str) -> tuple[ColorModel, Config]:
    """The generator of a loaded checkpoint dict (EMA weights when it has them), on the CPU, in
    eval mode, with the config it was trained with; `source` names it in errors."""
    try:
        config = from_dict(state["config"])
    except ConfigError as err:  # a removed option, a newer format: the file is named
        raise CheckpointError(f"{source}: {err}") from None
    weights = state.get("generator_ema") or state["generator"]
    if isinstance(weights, Mapping):  # checked before anything as large as the config says
        shapes = {k: v.shape for k, v in weights.items() if isinstance(v, torch.Tensor)}
        check_shapes(config.model, shapes, source)
    generator = build_generator(config.model)
    load_weights(generator, weights, source, "generator weights")
    check_finite(weights, source)
    generator.eval()
    return generator, config


def load_generator(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[ColorModel, Config]:
    """Rebuild the generator (EMA weights when the checkpoint has them) from a checkpoint alone,
    in eval mode, with the config it was trained with."""
    return generator_from(load_checkpoint(path, map_location), str(path))
