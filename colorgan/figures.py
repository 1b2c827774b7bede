"""Pictures a run writes: sample grids (gray | generated | truth) and loss curves."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw

from colorgan.color import float_to_uint8
from colorgan.files import atomic_write, save_image

_HEADER = 16  # pixels of label strip above the columns


def image_grid(columns: Sequence[torch.Tensor], labels: Sequence[str]) -> Image.Image:
    """One row per image, one column per tensor; each tensor (B, 3, H, W) in [0, 1]."""
    if len(columns) != len(labels):
        raise ValueError("one label per column")
    rows, _, height, width = columns[0].shape
    grid = Image.new("RGB", (width * len(columns), _HEADER + height * rows), "white")
    draw = ImageDraw.Draw(grid)
    for c, (column, label) in enumerate(zip(columns, labels, strict=True)):
        draw.text((c * width + 3, 2), label, fill="black")
        pixels = float_to_uint8(column.detach().cpu()).permute(0, 2, 3, 1).numpy()
        for r in range(rows):
            grid.paste(Image.fromarray(pixels[r]), (c * width, _HEADER + r * height))
    return grid


def save_samples(gray: torch.Tensor, fake: torch.Tensor, real: torch.Tensor, path: Path) -> None:
    """Write the gray | generated | truth grid to `path`."""
    save_image(image_grid([gray, fake, real], ["gray", "generated", "truth"]), path, "PNG")


_LOSS_KEYS = (
    *("g_adv", "g_l1", "g_l1_own", "g_perceptual", "g_nll", "g_total"),
    *("d_real", "d_fake", "d_total"),
)


def save_loss_curves(history: Sequence[dict[str, Any]], path: Path) -> None:
    """Plot every loss in `history` (metrics.jsonl rows) against epoch."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(figure)
    generator_axes, disc_axes = figure.subplots(1, 2)
    epochs = [row["epoch"] for row in history]
    for key in _LOSS_KEYS:
        values = [row.get(key) for row in history]
        if all(v is None for v in values):
            continue
        axes = disc_axes if key.startswith("d_") else generator_axes
        axes.plot(epochs, [float("nan") if v is None else v for v in values], marker="o", label=key)
    for axes, title in ((generator_axes, "generator"), (disc_axes, "discriminator")):
        axes.set_title(title)
        axes.set_xlabel("epoch")
        axes.set_yscale("symlog", linthresh=1e-2)
        if axes.lines:
            axes.legend(fontsize="small")
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png"))
