"""What a training run reports: the console and RUN_DIR/train.log, one metrics.jsonl row per
epoch, loss_curves.png, and TensorBoard when it is installed and asked for."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from colorgan.figures import save_loss_curves

log = logging.getLogger("colorgan")


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


def format_row(row: dict[str, Any]) -> str:
    """A metrics row as the one console line of its epoch."""
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


class EpochReport:
    """Writes each finished epoch's row: metrics.jsonl, loss_curves.png, TensorBoard, console."""

    def __init__(self, run_dir: Path, tensorboard: bool) -> None:
        self.run_dir = run_dir
        self.writer = _tensorboard(run_dir) if tensorboard else None

    def write(self, row: dict[str, Any], history: list[dict[str, Any]], sample: Path) -> None:
        """Report `row` (the newest of `history`), whose sample grid is at `sample`."""
        with (self.run_dir / "metrics.jsonl").open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        save_loss_curves(history, self.run_dir / "loss_curves.png")
        if self.writer is not None:
            _tensorboard_epoch(self.writer, row, sample)
        log.info(format_row(row))


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
