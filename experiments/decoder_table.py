"""Markdown tables of the lighter-decoder runs (experiments/decoder.sh), one per scored set, a
row per run, Δ ΔE00 against the mean of the --baseline runs, then a mean row per variant.

    python experiments/decoder_table.py runs/decoder stride1-s0 stride1-s1 stride4sepa-s0 ... \
        --baseline stride1-s0 stride1-s1

reads RUN/NAME/eval-{anime-unseen,anime-val,photos-val}.json (`colorgan evaluate --json`).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

SETS = ("anime-unseen", "anime-val", "photos-val")
COLUMNS = ("delta_e", "psnr", "ssim", "colorfulness", "fd_lite0", "kid_lite0")
HEADER = "| run | ΔE00 | Δ | PSNR | SSIM | colorfulness | fd_lite0 | kid_lite0 |"


def _row(name: str, values: dict[str, float], baseline: float) -> str:
    cells = [f"{values['delta_e']:.2f}", f"{values['delta_e'] - baseline:+.2f}"]
    cells += [f"{values['psnr']:.2f}", f"{values['ssim']:.3f}", f"{values['colorfulness']:.1f}"]
    cells += [f"{values['fd_lite0']:.1f}", f"{values['kid_lite0']:.1f}"]
    return f"| {name} | " + " | ".join(cells) + " |"


def table(root: Path, names: list[str], baseline: list[str], data_set: str) -> str:
    scores = {n: json.loads((root / n / f"eval-{data_set}.json").read_text()) for n in names}
    base = statistics.mean(scores[n]["delta_e"] for n in baseline)
    gray = next(iter(scores.values()))["baseline_gray"]
    lines = [f"{data_set}", "", HEADER, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    lines.append(_row("gray image", gray, base))
    lines += [_row(n, scores[n], base) for n in names]
    variants: dict[str, list[str]] = {}
    for n in names:
        variants.setdefault(n.rsplit("-s", 1)[0], []).append(n)
    for variant, runs in variants.items():
        if len(runs) > 1:
            mean = {k: statistics.mean(scores[n][k] for n in runs) for k in COLUMNS}
            lines.append(_row(f"**{variant}, mean of {len(runs)}**", mean, base))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("names", nargs="+")
    parser.add_argument("--baseline", nargs="+", required=True, help="runs Δ is taken against")
    args = parser.parse_args()
    for data_set in SETS:
        print(table(args.root, args.names, args.baseline, data_set), end="\n\n")


if __name__ == "__main__":
    main()
