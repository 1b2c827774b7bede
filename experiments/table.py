"""Markdown tables from the recipe experiments: one row per run, one table per validation set.

    python experiments/table.py runs/recipe NAME [NAME ...]

reads RUN/NAME/metrics.jsonl (training minutes) and RUN/NAME/eval-{anime,photos}.json
(`colorgan evaluate --json`) and prints the tables docs/journal/results.md holds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SETS = {"anime": "anime/val (200 images)", "photos": "photos/val (40 images)"}


def _cell(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def table(root: Path, names: list[str], data_set: str) -> str:
    lines = [
        f"**{SETS[data_set]}**",
        "",
        "| run | PSNR | SSIM | ΔE00 | CF | \\|CF − ref\\| | fd_lite0 | kid_lite0 | train min |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    gray: dict[str, float] | None = None
    for name in names:
        result = json.loads((root / name / f"eval-{data_set}.json").read_text())
        rows = [json.loads(x) for x in (root / name / "metrics.jsonl").read_text().splitlines()]
        minutes = sum(r["seconds"] for r in rows) / 60.0
        gap = abs(result["colorfulness"] - result["colorfulness_reference"])
        lines.append(
            f"| {name} | {result['psnr']:.2f} | {result['ssim']:.3f} | {result['delta_e']:.2f} "
            f"| {result['colorfulness']:.1f} | {gap:.1f} | {_cell(result.get('fd_lite0'), 1)} "
            f"| {_cell(result.get('kid_lite0'), 1)} | {minutes:.1f} |"
        )
        gray = gray or result["baseline_gray"] | {"reference": result["colorfulness_reference"]}
    if gray is not None:
        lines.append(
            f"| *gray input* | {gray['psnr']:.2f} | {gray['ssim']:.3f} | {gray['delta_e']:.2f} "
            f"| {gray['colorfulness']:.1f} | {abs(gray['colorfulness'] - gray['reference']):.1f} "
            f"| {_cell(gray.get('fd_lite0'), 1)} | {_cell(gray.get('kid_lite0'), 1)} | – |"
        )
        lines.append(f"\nReference colorfulness of the originals: {gray['reference']:.1f}.")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    root, names = Path(argv[0]), argv[1:]
    print("\n\n".join(table(root, names, s) for s in SETS))


if __name__ == "__main__":
    main(sys.argv[1:])
