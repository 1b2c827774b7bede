"""What a training run reports: the console and RUN_DIR/train.log, one metrics.jsonl row per
epoch, loss_curves.png, and TensorBoard when it is installed and asked for."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from colorgan.figures import save_loss_curves
from colorgan.files import atomic_write

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


class EpochMeter:
    """Image-weighted running means of an epoch's losses, and its images per second. A meter
    resumed mid-epoch starts from the interrupted part's `sums` over `images`, so the epoch's
    row averages every step of it; the rate counts this process's images only."""

    def __init__(
        self, keys: Sequence[str], sums: dict[str, float] | None = None, images: int = 0
    ) -> None:
        self.sums = dict.fromkeys(keys, 0.0) | (sums or {})
        self.images = images
        self._rate_from = images
        self.start = time.perf_counter()

    def add(self, losses: dict[str, float], n: int) -> None:
        """Count one step's losses, measured on `n` images."""
        self.images += n
        for key, value in losses.items():
            self.sums[key] += value * n

    def means(self) -> dict[str, float]:
        return {k: v / max(self.images, 1) for k, v in self.sums.items()}

    def rate(self) -> float:
        """Images per second since the meter started."""
        return (self.images - self._rate_from) / max(time.perf_counter() - self.start, 1e-9)

    def postfix(self) -> dict[str, str]:
        """The progress bar's short summary."""
        means = self.means()
        g, l1, d = means["g_total"], means["g_l1"], means["d_total"]
        return {"g": f"{g:.3f}", "l1": f"{l1:.4f}", "d": f"{d:.3f}", "ips": f"{self.rate():.1f}"}


def log_start(
    device: object, world_size: int, dtype: object, steps: int, warm_up_epochs: int
) -> None:
    """The run's first console lines: where it trains, and the warm-up if there is one."""
    log.info(
        "training on %s x%d (amp: %s), %d steps per epoch",
        device,
        world_size,
        dtype or "off",
        steps,
    )
    if warm_up_epochs:
        log.info("epochs 1-%d: generator warm-up without the discriminator", warm_up_epochs)


class EpochReport:
    """Writes each finished epoch's row: metrics.jsonl, loss_curves.png, TensorBoard, console."""

    def __init__(self, run_dir: Path, tensorboard: bool) -> None:
        self.run_dir = run_dir
        self.writer = _tensorboard(run_dir) if tensorboard else None

    def reconcile(self, history: list[dict[str, Any]]) -> None:
        """Make metrics.jsonl the checkpoint's `history` (the truth) at the start of a run: a
        kill between a checkpoint save and the row's append leaves the row missing; rows past
        the checkpoint are moved to metrics.jsonl.bak."""
        path = self.run_dir / "metrics.jsonl"
        text = "".join(json.dumps(row) + "\n" for row in history)
        old = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
        if old == text:
            return
        rows = old.splitlines()
        if len(rows) > len(history):
            backup = path.with_name("metrics.jsonl.bak")
            atomic_write(backup, lambda tmp: tmp.write_text(old, encoding="utf-8"))
            log.warning("metrics.jsonl had rows past the checkpoint: moved to %s", backup)
        else:
            log.warning(
                "metrics.jsonl (%d rows) did not match the checkpoint's %d: rewritten from it",
                len(rows), len(history),
            )  # fmt: skip
        atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))

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
