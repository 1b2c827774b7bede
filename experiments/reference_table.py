"""The tables of docs/journal/results.md ("Colors from a reference image") from the runs of
experiments/reference.sh, and (--figure) a picture of a few images: gray | no reference |
reference | truth, and the reference itself.

    python experiments/reference_table.py runs/reference
    python experiments/reference_table.py runs/reference --figure runs/reference/unseen.png \
        --checkpoint runs/reference/anime-ref-s0/checkpoints/last.pt \
        --data ../shared/data/anime/unseen

The figure shows images of ../shared/data, which are not ours to redistribute: it is written
under runs/ (not committed) for whoever has the data.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_pairs import pairs

from colorgan.colorize import Colorizer
from colorgan.files import find_images, load_rgb

LABELS = {"none": "no reference", "self": "self (own colors)", "same": "same character",
          "other": "other character"}  # fmt: skip
METRICS = ("delta_e", "psnr", "ssim", "colorfulness", "fd_lite0")


def _cell(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def table(runs: dict[str, dict[str, Any]], data: str) -> list[str]:
    lines = [f"{Path(data).parent.name}/{Path(data).name}", "",
             "| model | reference | ΔE00 | PSNR | SSIM | colorfulness | fd_lite0 |",
             "|---|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    gray = next(iter(runs.values()))[data]["gray"]
    cells = [_cell(gray[k], 3 if k == "ssim" else 2) for k in METRICS]
    lines.append("| gray image | – | " + " | ".join(cells) + " |")
    for name, result in runs.items():
        for mode, label in LABELS.items():
            if mode in result[data]:
                row = result[data][mode]
                cells = [_cell(row[k], 3 if k == "ssim" else 2) for k in METRICS]
                lines.append(f"| {name} | {label} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def figure(checkpoint: str, data: Path, out: Path, count: int = 6) -> None:
    """gray | no reference | same-character reference | truth | the reference, per row."""
    colorizer = Colorizer.from_checkpoint(checkpoint, device="cpu")
    paths = find_images(data)
    drawn = pairs(paths)["same"]
    chosen = paths[:: max(1, len(paths) // count)][:count]
    side = 128
    sheet = Image.new("RGB", (5 * side, len(chosen) * side), "white")
    for row, path in enumerate(chosen):
        truth = load_rgb(path)
        gray = truth.convert("L")
        reference = load_rgb(drawn[path])
        tiles = [gray.convert("RGB"), colorizer.colorize(gray),
                 colorizer.colorize(gray, reference=reference), truth, reference]  # fmt: skip
        for col, tile in enumerate(tiles):
            sheet.paste(tile.convert("RGB").resize((side, side)), (col * side, row * side))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("--figure", type=Path)
    parser.add_argument("--checkpoint")
    parser.add_argument("--data", type=Path)
    args = parser.parse_args()
    runs = {}
    for path in sorted(args.runs.glob("*/pairs.json")):
        runs[path.parent.name] = json.loads(path.read_text(encoding="utf-8"))
    sets = dict.fromkeys(data for result in runs.values() for data in result)
    for data in sets:
        having = {name: result for name, result in runs.items() if data in result}
        print("\n".join(table(having, data)))
    if args.figure is not None:
        if args.checkpoint is None or args.data is None:
            parser.error("--figure needs --checkpoint and --data")
        figure(args.checkpoint, args.data, args.figure)


if __name__ == "__main__":
    main()
