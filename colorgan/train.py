"""Training: open a run, loop over epochs, and the GAN step as named parts (d_step, g_step,
after_step). Building the state is state.py's, checkpoints and resume are checkpoint.py's,
splits and loaders data.py's, the per-epoch report runlog.py's, validation metrics evaluate.py's.
"""

from __future__ import annotations

import errno
import logging
import math
import signal
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from colorgan import ddp
from colorgan.batch import Batch, Prediction, model_inputs, predict, to_batch
from colorgan.checkpoint import BEST_METRIC, resolve_resume, save_run
from colorgan.color import uint8_to_float
from colorgan.config import Config, load_config, resume_config
from colorgan.device import autocast
from colorgan.errors import ConfigError, NonFiniteLoss, WriteFailed
from colorgan.evaluate import colorize_crops, validation_metrics
from colorgan.figures import save_samples
from colorgan.files import write_error
from colorgan.losses import (
    d_losses,
    g_adversarial_loss,
    l1_loss,
    perceptual_loss,
)
from colorgan.run import Run, check_run_dir, interrupt, open_run, start_fresh, stop_on_signals
from colorgan.runlog import EpochMeter, log_start, run_logging
from colorgan.state import State
from colorgan.uncertainty import fit_novelty, laplace_nll

log = logging.getLogger("colorgan")

LOSS_KEYS = (
    *("g_adv", "g_l1", "g_l1_own", "g_perceptual", "g_nll", "g_total"),
    *("d_real", "d_fake", "d_total"),
)
_D_KEYS = ("g_adv", "d_real", "d_fake", "d_total")  # null in the metrics while D is off
# errno values that mean "this file cannot be written": the run fails with WriteFailed
_WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def train(
    config: Config,
    data: Path,
    run_dir: Path,
    val_data: Path | None = None,
    resume: dict[str, Any] | None = None,
    quiet: bool = False,
    overwrite: bool = False,
) -> list[dict[str, Any]]:
    """Train from scratch or from `resume` (a loaded checkpoint); returns the metrics history.
    A fresh run refuses a `run_dir` that holds a run unless `overwrite` (which deletes it).
    A file that cannot be written (full disk, read-only) stops the run with WriteFailed; what
    was written before is kept. Under torchrun, every process calls this; only rank 0 writes."""
    info, device = ddp.init(config.train.device)
    try:
        if info.is_main:
            check_run_dir(run_dir)
            if resume is None:
                start_fresh(run_dir, overwrite)
        with run_logging(run_dir, quiet, info.is_main):
            quiet = quiet or not info.is_main
            run = open_run(config, data, run_dir, val_data, resume, quiet, info, device)
            return loop(run)
    except OSError as err:
        if err.errno not in _WRITE_ERRORS:
            raise
        raise WriteFailed(
            f"{write_error(err)}; the run stopped, its last checkpoint is kept: make room "
            f"(or fix the folder) and resume with --run-dir {run_dir} --resume auto"
        ) from None
    finally:
        ddp.shutdown(info)


def loop(run: Run) -> list[dict[str, Any]]:
    """Epochs until train.epochs (or train.max_minutes); a resumable checkpoint if interrupted."""
    state, config = run.state, run.state.config
    warm_up = config.train.pretrain_epochs if state.discriminator is not None else 0
    log_start(state.device, state.dist.world_size, state.dtype, len(run.loaders.train), warm_up)
    run_start = time.perf_counter()
    with stop_on_signals() as stop, warnings.catch_warnings():
        # GradScaler skips an optimizer step when it finds inf gradients; the schedule
        # still advances, which is what we want, so its warning is noise.
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)`")
        while state.epoch < config.train.epochs:
            start = time.perf_counter()
            measured = run_epoch(run, stop)
            end_epoch(run, measured, start)
            minutes = (time.perf_counter() - run_start) / 60.0
            if 0 < config.train.max_minutes <= minutes and state.epoch < config.train.epochs:
                log.info("train.max_minutes=%g reached: stopping", config.train.max_minutes)
                break
    log.info("done: %s (best %s %.4f)", run.run_dir / "checkpoints", BEST_METRIC, state.best)
    return state.history


def run_epoch(run: Run, stop: list[int]) -> dict[str, float]:
    """Train one epoch (or its rest, after a mid-epoch resume): the mean losses and
    images_per_second. After the step in which a signal arrived: a resumable checkpoint, then
    Interrupted."""
    state = run.state
    run.loaders.sampler.set_epoch(state.epoch, skip=state.epoch_items)
    state.generator.freeze_encoder(state.epoch < state.config.model.freeze_encoder_epochs)
    state.generator.train()
    # A mid-epoch resume carries on the interrupted part's sums (older checkpoints: none).
    meter = EpochMeter(LOSS_KEYS, state.epoch_sums, state.epoch_items if state.epoch_sums else 0)
    state.epoch_sums = meter.sums  # saved with an interruption's checkpoint
    title = f"epoch {state.epoch + 1}/{state.config.train.epochs}"
    bar = tqdm(
        run.loaders.train,
        desc=title,
        unit="batch",
        leave=False,
        disable=True if run.quiet else None,
        dynamic_ncols=True,
    )
    for item in bar:
        batch = to_batch(item, state.device)
        meter.add(train_step(state, batch), batch.l.shape[0])
        state.epoch_items += batch.l.shape[0]
        bar.set_postfix(meter.postfix())
        if ddp.any_rank(bool(stop), state.dist, state.device):
            interrupt(run, stop[0] if stop else signal.SIGTERM)
    bar.close()
    return meter.means() | {"images_per_second": meter.rate() * state.dist.world_size}


def train_step(state: State, batch: Batch) -> dict[str, float]:
    """One discriminator update, then one generator update. Returns the losses (means over
    ranks)."""
    if state.config.train.channels_last:
        batch = batch.map(lambda t: t.contiguous(memory_format=torch.channels_last))
    with autocast(state.device, state.dtype):
        prediction = predict(state.g_run, batch)  # ab (B, 2, H, W) in [-1, 1]
    losses = d_step(state, batch, prediction.ab.detach()) | g_step(state, batch, prediction)
    after_step(state)
    return _reduce_and_check(state, losses)


def d_step(state: State, batch: Batch, ab_fake: torch.Tensor) -> dict[str, torch.Tensor]:
    """One discriminator update on real and (detached) generated ab; zeros while D is off."""
    zero = torch.zeros((), device=state.device)
    d, d_run, opt_d = state.discriminator, state.d_run, state.opt_d
    if not state.adversarial or d is None or d_run is None or opt_d is None:
        return {"d_real": zero, "d_fake": zero, "d_total": zero}
    d.requires_grad_(True)
    opt_d.zero_grad(set_to_none=True)
    with autocast(state.device, state.dtype):
        d_real, d_fake = d_losses(
            d_run(batch.l, batch.ab_real), d_run(batch.l, ab_fake), state.config.loss.gan_mode
        )
    d_total = 0.5 * (d_real + d_fake)  # halved as in pix2pix
    state.scaler.scale(d_total).backward()
    state.scaler.step(opt_d)
    d.requires_grad_(False)  # no D gradients from the generator's step
    return {"d_real": d_real, "d_fake": d_fake, "d_total": d_total}


def g_step(state: State, batch: Batch, prediction: Prediction) -> dict[str, torch.Tensor]:
    """One generator update: adversarial + λ1·L1 + λ2·perceptual, + with model.hints λ1·L1 of
    the generator's own ab before HintSpread (g_l1_own), + with model.uncertainty the Laplace
    NLL of the truth's ab, which trains the uncertainty head alone (uncertainty.py)."""
    loss = state.config.loss
    ab_fake = prediction.ab
    g_adv = g_perc = g_nll = g_own = torch.zeros((), device=state.device)
    with autocast(state.device, state.dtype):
        if state.adversarial and state.d_frozen is not None:
            logits = state.d_frozen(batch.l, ab_fake)
            g_adv = g_adversarial_loss(logits, loss.gan_mode)
        g_l1 = l1_loss(ab_fake, batch.ab_real)
        if prediction.own is not None:  # model.hints: the generator's ab before the spread
            g_own = l1_loss(prediction.own, batch.ab_real)
        if state.perceptual is not None:
            g_perc = perceptual_loss(state.perceptual, batch.l, ab_fake, batch.ab_real)
    if prediction.uncertainty is not None:  # the head's input is detached: colors unchanged
        g_nll = laplace_nll(prediction.uncertainty, ab_fake.detach() - batch.ab_real)
    g_total = (
        loss.adversarial_weight * g_adv.float()
        + loss.l1_weight * (g_l1 + g_own)
        + loss.perceptual_weight * g_perc.float()
        + g_nll
    )
    state.opt_g.zero_grad(set_to_none=True)
    state.scaler.scale(g_total).backward()
    groups = state.opt_g.param_groups  # later groups follow group 0's rate unless held
    for i in range(1, len(groups)):
        groups[i]["lr"] = 0.0 if i in state.generator.frozen_groups else groups[0]["lr"]
    state.scaler.step(state.opt_g)
    return {
        "g_adv": g_adv,
        "g_l1": g_l1,
        "g_l1_own": g_own,
        "g_perceptual": g_perc,
        "g_nll": g_nll,
        "g_total": g_total,
    }


def after_step(state: State) -> None:
    """Loss scale, learning-rate schedules, EMA and the step counter."""
    state.scaler.update()
    state.sched_g.step()
    if state.sched_d is not None:
        state.sched_d.step()
    if state.ema is not None:
        state.ema.update(state.generator)
    state.step += 1


def _reduce_and_check(state: State, losses: dict[str, torch.Tensor]) -> dict[str, float]:
    """The losses as floats, averaged over ranks; NonFiniteLoss if any is NaN or infinite."""
    values = torch.stack([losses[key] for key in LOSS_KEYS])
    values = ddp.mean_over_ranks(values.detach().float(), state.dist)
    result = dict(zip(LOSS_KEYS, values.cpu().tolist(), strict=True))
    if not all(math.isfinite(v) for v in result.values()):
        shown = ", ".join(f"{k}={v:.4g}" for k, v in result.items())
        raise NonFiniteLoss(
            f"a loss became non-finite at epoch {state.epoch + 1}, step {state.step} ({shown}); "
            f"the last good checkpoint is kept; lower optim.lr or try train.amp=off"
        )
    return result


def validate(state: State, loader: torch.utils.data.DataLoader[torch.Tensor]) -> dict[str, float]:
    """evaluate.py's metrics of the generator (its EMA when there is one) on the validation
    crops: val_l1, val_psnr, val_delta_e, val_colorfulness."""
    generator = state.eval_generator.eval()
    metrics = validation_metrics(generator, loader, state.device)
    state.generator.train()
    return metrics


def write_samples(state: State, rgb: torch.Tensor, path: Path) -> None:
    """gray | generated | truth for the fixed sample crops (uint8 (N, 3, S, S))."""
    generator = state.eval_generator.eval()
    crops = colorize_crops(generator, rgb, state.device)
    save_samples(crops.gray, crops.fake, uint8_to_float(rgb), path)
    state.generator.train()


def fit_novelties(run: Run) -> None:
    """model.uncertainty: fit the novelty statistics (uncertainty.py) of the generator and its
    EMA to the training crops, so every checkpoint carries its own. Under a forked random
    stream: the next epoch draws what it would have drawn without."""
    state = run.state
    if not state.config.model.uncertainty:
        return
    with torch.random.fork_rng(devices=[]):
        for generator in {id(g): g for g in (state.generator, state.eval_generator)}.values():
            batches = (model_inputs(to_batch(item, state.device)) for item in run.loaders.train)
            fit_novelty(generator, batches)


def end_epoch(run: Run, measured: dict[str, float], start: float) -> None:
    """Validate, write samples, checkpoints and the report (main rank), then sync ranks."""
    state = run.state
    trained_adversarially = state.adversarial  # for the epoch just finished
    state.epoch += 1
    state.epoch_items = 0
    state.epoch_sums = {}
    row: dict[str, Any] = {"epoch": state.epoch, "step": state.step}
    row["lr"] = state.opt_g.param_groups[0]["lr"]
    row.update({k: measured[k] for k in LOSS_KEYS})
    if not trained_adversarially:
        row.update(dict.fromkeys(_D_KEYS))
    fit_novelties(run)
    if run.report is not None:
        row.update(validate(state, run.loaders.val))
        sample = run.run_dir / "samples" / f"epoch_{state.epoch:03d}.png"
        write_samples(state, run.samples_rgb, sample)
        row["seconds"] = time.perf_counter() - start
        row["images_per_second"] = measured["images_per_second"]
        state.history.append(row)
        # Warm-up epochs (no D yet) do not compete for best.pt: their dull colors score well.
        warm_up = state.discriminator is not None and not trained_adversarially
        is_best = not warm_up and row[BEST_METRIC] <= state.best
        state.best = state.best if warm_up else min(state.best, row[BEST_METRIC])
        save_run(state, run.run_dir, epoch_done=True, is_best=is_best)
        run.report.write(row, state.history, sample)
    ddp.barrier(state.dist)


def train_from_options(
    config_file: Path | None,
    assignments: list[str],
    data: Path | None,
    val_data: Path | None,
    run_dir: Path | None,
    resume: str | None,
    quiet: bool = False,
    overwrite: bool = False,
) -> list[dict[str, Any]]:
    """`colorgan train`: resolve --resume, merge the config (the checkpoint's, then the file,
    then --set), take the data folders from the checkpoint when not given, and train."""
    saved, run_dir = resolve_resume(resume, run_dir)
    if saved is not None:
        config = resume_config(saved["config"], config_file, assignments)
        sources = saved.get("sources") or {}
        if data is None:
            data = Path(sources["data"]) if sources.get("data") else None
            if val_data is None and sources.get("val_data"):
                val_data = Path(sources["val_data"])
    else:
        config = load_config(config_file, assignments)
    if data is None:
        raise ConfigError("--data DIR is required: a folder of color images to train on")
    run_dir = run_dir or Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
    for folder, option in ((data, "--data"), (val_data, "--val-data")):
        if folder is not None and folder.resolve() in (
            run_dir.resolve(),
            *run_dir.resolve().parents,
        ):
            raise ConfigError(
                f"--run-dir {run_dir} is inside {option} {folder}: its sample grids would be "
                "read as training images; put the run elsewhere"
            )
    # A fresh network's first CPU steps make denormal floats, which run several times slower.
    torch.set_flush_denormal(True)
    return train(
        config, data, run_dir, val_data=val_data, resume=saved, quiet=quiet, overwrite=overwrite
    )
