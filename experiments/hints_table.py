"""Tables and docs/hints.png for experiments/hints.sh: ΔE00, PSNR and hint_fidelity against the
number of color points, beside the gray image and the model trained without points.

    python experiments/hints_table.py runs/hints [--plot docs/hints.png]
        [--no-hint anime/unseen=12.13,12.29 ...]

--no-hint gives the no-hint model's ΔE00 on a set (one value a seed) where RUNS holds no
{domain}-nohint-s{seed} run: quoted from docs/journal/results.md, for the plot's lines.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

SETS = [("anime", "val"), ("anime", "unseen"), ("photos", "val")]
# the hint runs shown, with their label and the plot's style
HINT_RUNS = [("hints s0", "hint-s0", "o-C0"), ("hints s1", "hint-s1", "^-C4"),
             ("hints s0, 15 epochs", "hint-s0-e15", "s-C2")]  # fmt: skip


def _load(runs: Path, name: str, split: str) -> dict[str, Any] | None:
    path = runs / name / f"eval-{split}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def table(runs: Path) -> str:
    lines = []
    for domain, split in SETS:
        hint = _load(runs, f"{domain}-hint-s0", split)
        plain = [_load(runs, f"{domain}-nohint-s{s}", split) for s in (0, 1)]
        if hint is None:
            continue
        gray = hint["baseline_gray"]
        lines += [f"\n{domain}/{split} ({hint['n_images']} images)", ""]
        lines += ["| model | points | ΔE00 | PSNR | SSIM | colorfulness | hint_fidelity |"]
        lines += ["|---|---:|---:|---:|---:|---:|---:|"]
        lines.append(f"| gray image | – | {gray['delta_e']:.2f} | {gray['psnr']:.2f} | "
                     f"{gray['ssim']:.3f} | {gray['colorfulness']:.1f} | – |")  # fmt: skip
        for seed, result in enumerate(plain):
            if result is not None:
                lines.append(f"| no-hint s{seed} | – | {result['delta_e']:.2f} | "
                             f"{result['psnr']:.2f} | {result['ssim']:.3f} | "
                             f"{result['colorfulness']:.1f} | – |")  # fmt: skip
        for label, run, _ in HINT_RUNS:
            result = _load(runs, f"{domain}-{run}", split)
            for count, row in (result or {}).get("by_hints", {}).items():
                fidelity = "–" if row["hint_fidelity"] is None else f"{row['hint_fidelity']:.2f}"
                cells = f"{row['delta_e']:.2f} | {row['psnr']:.2f} | {row['ssim']:.3f}"
                cells += f" | {row['colorfulness']:.1f} | {fidelity}"
                lines.append(f"| {label} | {count} | {cells} |")
    return "\n".join(lines)


def plot(runs: Path, out: Path, quoted: dict[str, list[float]]) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(12, 3.6), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(SETS))
    for ax, (domain, split) in zip(axes, SETS, strict=True):
        hint = _load(runs, f"{domain}-hint-s0", split)
        if hint is None:
            continue
        for label, run, style in HINT_RUNS:
            result = _load(runs, f"{domain}-{run}", split)
            if result is not None:
                counts = [int(c) for c in result["by_hints"]]
                values = [r["delta_e"] for r in result["by_hints"].values()]
                ax.plot(counts, values, style[:-2], color=style[-2:], label=label)
        ax.axhline(hint["baseline_gray"]["delta_e"], color="gray", ls="--", label="gray image")
        for seed in (0, 1):
            plain = _load(runs, f"{domain}-nohint-s{seed}", split)
            values = quoted.get(f"{domain}/{split}", [])
            value = plain["delta_e"] if plain is not None else (values[seed:] or [None])[0]
            if value is not None:
                ax.axhline(value, color="C1", ls=":", label=f"no-hint s{seed}")
        ax.set_title(f"{domain}/{split}")
        ax.set_xlabel("color points per image")
        ax.set_ylabel("CIEDE2000 (lower is better)")
        ax.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("runs", type=Path)
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--no-hint", action="append", default=[], metavar="SET=V[,V]")
    args = parser.parse_args()
    quoted = {}
    for item in args.no_hint:
        name, _, values = item.partition("=")
        quoted[name] = [float(v) for v in values.split(",")]
    print(table(args.runs))
    if args.plot:
        plot(args.runs, args.plot, quoted)


if __name__ == "__main__":
    main()
