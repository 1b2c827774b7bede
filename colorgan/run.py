"""A training run's context (`Run`): opened from a config, data folders and maybe a checkpoint;
the signals that stop it after a step, and the resumable checkpoint an interruption leaves."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import torch

from colorgan.checkpoint import restore, save_run
from colorgan.config import Config, save_config
from colorgan.data import Loaders, ab_counts, make_loaders, training_split
from colorgan.ddp import Dist
from colorgan.errors import Interrupted
from colorgan.losses import rebalance_weights
from colorgan.runlog import EpochReport
from colorgan.state import State, build_state

log = logging.getLogger("colorgan")


@dataclass
class Run:
    """One training run's context: its state, where it writes, what it reads and how it
    reports (the main rank only); the state knows the distributed setup."""

    state: State
    run_dir: Path
    loaders: Loaders
    samples_rgb: torch.Tensor  # (N, 3, S, S) uint8: the fixed rows of samples/epoch_NNN.png
    report: EpochReport | None  # None on ranks other than the main one
    quiet: bool


def open_run(
    config: Config,
    data: Path,
    run_dir: Path,
    val_data: Path | None,
    resume: dict[str, Any] | None,
    quiet: bool,
    info: Dist,
    device: torch.device,
) -> Run:
    """Split and load the data, build (or restore) the state, write config.yaml."""
    train_paths, val_paths = training_split(config, data, val_data, quiet)
    pin = device.type == "cuda"
    loaders = make_loaders(config, train_paths, val_paths, pin, info.rank, info.world_size)
    state = build_state(config, device, len(loaders.train), info)
    state.sources = {"data": str(data), "val_data": str(val_data) if val_data else None}
    if resume is not None:
        restore(state, resume)
        log.info("resumed at epoch %d, step %d", state.epoch + 1, state.step)
    if config.loss.rebalance > 0:
        if state.ab_counts is None:
            state.ab_counts = ab_counts(config, train_paths, quiet)
        state.l1_weights = rebalance_weights(state.ab_counts, config.loss.rebalance).to(device)
    report = None
    if info.is_main:
        save_config(config, run_dir / "config.yaml")
        report = EpochReport(run_dir, config.train.tensorboard)
    samples = loaders.sample_images(config.train.sample_images)
    return Run(state, run_dir, loaders, samples, report, quiet)


def interrupt(run: Run, signum: int) -> None:
    """Save a resumable mid-epoch checkpoint (main rank) and raise Interrupted."""
    state = run.state
    if state.dist.is_main:
        save_run(state, run.run_dir, epoch_done=False)
    log.warning(
        "interrupted at epoch %d, step %d; resume with: colorgan train --run-dir %s --resume auto",
        state.epoch + 1,
        state.step,
        run.run_dir,
    )
    raise Interrupted(signum)


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
