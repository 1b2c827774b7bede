"""A page that is ours to publish, before and after: the demo's procedural scenes (colorgan.demo,
drawn here, nobody else's pictures) made into manga pages by tones.make_page with the held-out
seed of experiments/manga_pages.py, colorized through `Colorizer` (as `colorgan colorize` does,
the toned page's lightness included) by each model. Rows: the scene | its page | each model.

    python experiments/manga_figure.py OUT.png gray=CKPT manga=CKPT mixed=CKPT
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from colorgan.colorize import Colorizer
from colorgan.demo import draw_scene
from colorgan.tones import TONE_KINDS, make_page

SEED = 36_000  # experiments/manga_pages.py's held-out seed
SIZE = 256


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("models", nargs="+", help="NAME=CHECKPOINT")
    parser.add_argument("--scenes", type=int, default=3)
    args = parser.parse_args()
    models = dict(m.split("=", 1) for m in args.models)
    colorizers = {
        name: Colorizer.from_checkpoint(path, device="cpu") for name, path in models.items()
    }
    rows = []
    for i in range(args.scenes):
        scene = draw_scene(np.random.default_rng(SEED + i), SIZE).convert("RGB")
        rgb = torch.from_numpy(np.asarray(scene).copy()).permute(2, 0, 1)
        gray = make_page(rgb, torch.Generator().manual_seed(SEED + i), TONE_KINDS).gray[0]
        page = Image.fromarray(gray.numpy()).convert("RGB")
        row = [scene, page, *(c.colorize(page) for c in colorizers.values())]
        rows.append(row)
    labels = ["scene (truth)", "page", *models]
    grid = Image.new("RGB", (SIZE * len(labels), SIZE * len(rows) + 16), "white")
    draw = ImageDraw.Draw(grid)
    for j, label in enumerate(labels):
        draw.text((j * SIZE + 4, 2), label, fill="black")
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            grid.paste(image.resize((SIZE, SIZE)), (j * SIZE, 16 + i * SIZE))
    grid.save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
