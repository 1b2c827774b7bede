"""The tables (and the plot) of docs/RESULTS.md's "Suggested points" and "Points the way the
field measures them" from `colorgan evaluate --json` files.

    python experiments/points_table.py runs --plot docs/points.png

reads RUNS/suggest-SET-random.json, RUNS/suggest-SET-suggested.json (the reference+uncertainty
model at 128 px, --hints 0,1,2,5,10) and RUNS/field-SET.json (the shipped cpu-small at 256 px,
--hints 0,1,2,5,10,20,50,100, random placement: Zhang et al.'s protocol) for SET anime-unseen
and photos-val, and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SETS = ("anime-unseen", "photos-val")
# Zhang et al. 2017 (ImageNet, their Table 2): PSNR gain over automatic at 1, 10, 100 points
ZHANG_GAIN = {1: 0.94, 10: 3.99, 100: 6.70}


def _load(path: Path) -> dict[str, dict[str, float]]:
    return json.loads(path.read_text())["by_hints"]


def suggested_table(runs: Path) -> str:
    rows = ["| set | points | ΔE00 random | ΔE00 suggested | PSNR random | PSNR suggested | "
            "colorfulness random / suggested |", "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for name in SETS:
        random = _load(runs / f"suggest-{name}-random.json")
        suggested = _load(runs / f"suggest-{name}-suggested.json")
        for count in random:
            a, b = random[count], suggested[count]
            rows.append(
                f"| {name} | {count} | {a['delta_e']:.2f} | {b['delta_e']:.2f} | "
                f"{a['psnr']:.2f} | {b['psnr']:.2f} | "
                f"{a['colorfulness']:.1f} / {b['colorfulness']:.1f} |"
            )
    return "\n".join(rows)


def field_table(runs: Path) -> str:
    rows = ["| set | points | PSNR | gain over automatic (dB) | Zhang's ImageNet gain | ΔE00 |",
            "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for name in SETS:
        found = _load(runs / f"field-{name}.json")
        automatic = found["0"]["psnr"]
        for count, metrics in found.items():
            zhang = ZHANG_GAIN.get(int(count))
            rows.append(
                f"| {name} | {count} | {metrics['psnr']:.2f} | {metrics['psnr'] - automatic:+.2f} "
                f"| {'' if zhang is None else f'+{zhang:.2f}'} | {metrics['delta_e']:.2f} |"
            )
    return "\n".join(rows)


def plot(runs: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for name in SETS:
        found = _load(runs / f"field-{name}.json")
        counts = [int(c) for c in found]
        gains = [found[c]["psnr"] - found["0"]["psnr"] for c in found]
        axes[0].plot(counts, gains, marker="o", label=f"cpu-small, {name}")
        for placement in ("random", "suggested"):
            scores = _load(runs / f"suggest-{name}-{placement}.json")
            axes[1].plot([int(c) for c in scores], [s["delta_e"] for s in scores.values()],
                         marker="o", label=f"{name}, {placement}")  # fmt: skip
    axes[0].plot(list(ZHANG_GAIN), list(ZHANG_GAIN.values()), "k--", marker="s",
                 label="Zhang et al. 2017, ImageNet")  # fmt: skip
    axes[0].set(xscale="symlog", xlabel="points", ylabel="PSNR gain (dB)", title="256 px, random")
    axes[1].set(xlabel="points", ylabel="ΔE00 (lower is better)", title="128 px, with uncertainty")
    for axis in axes:
        axis.legend(fontsize=7)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(out, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()
    print(suggested_table(args.runs), "\n")
    print(field_table(args.runs))
    if args.plot:
        plot(args.runs, args.plot)


if __name__ == "__main__":
    main()
