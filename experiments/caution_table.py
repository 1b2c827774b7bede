"""Tables and docs/caution.png for experiments/caution.sh: ΔE00 against colorfulness as caution
goes from 0 to 1, beside the gray image, the L1-only and the pix2pix baselines.

    python experiments/caution_table.py runs/caution [--plot docs/caution.png] [--models unc-s0]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

SETS = ["anime-unseen", "anime-val", "photos-val"]
BASELINES = [("l1only-s0", "L1-only"), ("pix2pix-s0", "pix2pix baseline")]


def _load(runs: Path, name: str, split: str) -> dict[str, Any] | None:
    path = runs / name / f"eval-{split}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _row(label: str, r: dict[str, Any], spearman: str = "–") -> str:
    return (f"| {label} | {r['delta_e']:.2f} | {r['psnr']:.2f} | {r['ssim']:.3f} | "
            f"{r['colorfulness']:.1f} | {spearman} |")  # fmt: skip


def table(runs: Path, models: list[str]) -> str:
    lines = []
    for split in SETS:
        first = next((r for m in models if (r := _load(runs, m, split))), None)
        if first is None:
            continue
        lines += [f"\n{split} ({first['n_images']} images; colorfulness of the originals "
                  f"{first['colorfulness_reference']:.1f})", ""]  # fmt: skip
        lines += ["| model | ΔE00 | PSNR | SSIM | colorfulness | uncertainty_spearman |"]
        lines += ["|---|---:|---:|---:|---:|---:|"]
        lines.append(_row("gray image", first["baseline_gray"]))
        for name, label in BASELINES:
            result = _load(runs, name, split)
            if result is not None:
                lines.append(_row(label, result))
        for model in models:
            result = _load(runs, model, split)
            if result is None:
                continue
            spearman = result.get("uncertainty_spearman")
            shown = "–" if spearman is None else f"{spearman:.3f}"
            for caution, row in result.get("by_caution", {}).items():
                lines.append(_row(f"{model}, caution {caution}", row, shown))
    return "\n".join(lines)


def plot(runs: Path, models: list[str], out: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(13, 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(SETS))
    for ax, split in zip(axes, SETS, strict=True):
        for index, model in enumerate(models):
            result = _load(runs, model, split)
            if result is None or "by_caution" not in result:
                continue
            rows = result["by_caution"]
            x = [r["colorfulness"] for r in rows.values()]
            y = [r["delta_e"] for r in rows.values()]
            ax.plot(x, y, "o-", color=f"C{index}", label=f"{model}, caution 0 → 1")
            for caution, (xi, yi) in zip(rows, zip(x, y, strict=True), strict=True):
                ax.annotate(caution, (xi, yi), fontsize="x-small", xytext=(3, 3),
                            textcoords="offset points")  # fmt: skip
            gray = result["baseline_gray"]
            reference = result["colorfulness_reference"]
        for marker, (name, label) in zip("s^", BASELINES, strict=True):
            baseline = _load(runs, name, split)
            if baseline is not None:
                ax.plot(baseline["colorfulness"], baseline["delta_e"], marker, label=label)
        ax.plot(gray["colorfulness"], gray["delta_e"], "kx", markersize=9, label="gray image")
        ax.axhline(gray["delta_e"], color="gray", ls="--", lw=0.8)
        ax.axvline(reference, color="gray", ls=":", lw=0.8, label="originals' colorfulness")
        ax.set_title(split.replace("-", "/"))
        ax.set_xlabel("colorfulness")
        ax.set_ylabel("CIEDE2000 (lower is better)")
        ax.legend(fontsize="x-small")
    figure.tight_layout()
    figure.savefig(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("runs", type=Path)
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--models", default="unc-s0", help="comma-separated uncertainty runs")
    args = parser.parse_args()
    models = args.models.split(",")
    print(table(args.runs, models))
    if args.plot:
        plot(args.runs, models, args.plot)


if __name__ == "__main__":
    main()
