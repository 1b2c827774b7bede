"""A training run's context (`Run`): opened from a config, data folders and maybe a checkpoint;
the signals that stop it after a step, and the resumable checkpoint an interruption leaves."""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import torch

from colorgan.checkpoint import holds_run, restore, save_run
from colorgan.config import Config, save_config
from colorgan.data import Loaders, make_loaders, training_split
from colorgan.ddp import Dist
from colorgan.errors import ConfigError, Interrupted
from colorgan.files import stale_temporary_of
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


# What a run directory holds: deleted by --overwrite (nothing else in the folder is touched).
RUN_FILES = ("checkpoints", "samples", "tensorboard", "metrics.jsonl", "metrics.jsonl.bak",
             "loss_curves.png", "train.log", "config.yaml")  # fmt: skip
_VIRTUAL = (Path("/proc"), Path("/sys"), Path("/dev"))


def check_run_dir(run_dir: Path) -> None:
    """ConfigError unless `run_dir` is (or can be made) a folder we can write files in."""
    resolved = run_dir.resolve()
    if any(resolved == top or top in resolved.parents for top in _VIRTUAL):
        raise ConfigError(f"--run-dir {run_dir}: is inside a virtual file system; give a folder")
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--run-dir {run_dir}: is a file, not a folder; give a folder")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=run_dir) as probe:
            probe.write(b"colorgan")
    except OSError as err:
        raise ConfigError(
            f"--run-dir {run_dir}: cannot write there ({err.strerror or err}); "
            f"give a folder you can write to"
        ) from None


def start_fresh(run_dir: Path, overwrite: bool) -> None:
    """A new run in `run_dir`: refused where a run already is, unless `overwrite`, which
    deletes that run's files (RUN_FILES) first."""
    found = holds_run(run_dir)
    if found is None:
        return
    if not overwrite:
        raise ConfigError(
            f"--run-dir {run_dir} already holds a run ({found}): continue it with --resume auto, "
            f"choose another --run-dir, or start it over with --overwrite"
        )
    log.warning("--overwrite: deleting the run in %s", run_dir)
    for name in RUN_FILES:
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def clean_temporaries(run_dir: Path) -> None:
    """Delete the hidden temporaries an interrupted write left (a SIGKILL during a checkpoint
    save leaves a full-size one): nothing else writes in a run directory while it trains."""
    stale = [
        path
        for folder in (run_dir, run_dir / "checkpoints", run_dir / "samples")
        for path in folder.glob(".*.tmp")
        if stale_temporary_of(path) is not None and path.is_file()
    ]
    if stale:
        size = sum(path.stat().st_size for path in stale)
        log.warning(
            "deleting %d temporary file(s) (%.1f MB) an interrupted save left in %s",
            len(stale), size / 2**20, run_dir,
        )  # fmt: skip
        for path in stale:
            path.unlink(missing_ok=True)


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
    # absolute, so that a resume from another working directory finds them
    state.sources = {
        "data": str(data.resolve()),
        "val_data": str(val_data.resolve()) if val_data else None,
    }
    if resume is not None:
        restore(state, resume)
        log.info("resumed at epoch %d, step %d", state.epoch + 1, state.step)
    report = None
    if info.is_main:
        clean_temporaries(run_dir)
        save_config(config, run_dir / "config.yaml")
        report = EpochReport(run_dir, config.train.tensorboard)
        report.reconcile(state.history)
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
