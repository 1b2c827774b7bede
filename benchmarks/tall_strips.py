"""Tall strips colored in tiles (colorgan/tiles.py): is there a seam, and what does it cost?

A generated gray strip (default 800x12000: panels of shapes, gradients and lines, like a webtoon
chapter) is colorized by `Colorizer` at the model's scale. The seam is measured on the ab the
model gives at the working size (what is upsampled onto the full-resolution L): the mean |Δab|
between neighbouring rows, in Lab units, at the rows where a tile begins or ends, against the
same jump between neighbouring rows elsewhere (median and 99th percentile). For comparison:
the same tiles pasted edge to edge without blending (cut in the middle of each overlap), and
one pass of the model over the whole strip (no tiles; what the tiles stand in for). Time and
peak memory (the process's resident high-water mark, reset before each step, Linux) of a whole
`Colorizer.colorize` and of the one untiled pass.

    python benchmarks/tall_strips.py --model runs/cpu-small/checkpoints/best.pt --json FILE
    python benchmarks/tall_strips.py --random 256      # seeded random weights, working size 256
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import harness
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from colorgan.batch import Batch, split_output
from colorgan.colorize import Colorizer, resize_l
from colorgan.files import to_picture
from colorgan.request import NOTHING
from colorgan.tiles import MAX_ASPECT, OVERLAP, tile_starts

AB_SCALE = 110.0  # network ab -> Lab units


def tall_picture(width: int, height: int, seed: int = 0) -> Image.Image:
    """A gray strip of panels: each a gradient with shapes and ink lines, gutters between."""
    rng = np.random.default_rng(seed)
    image = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(image)
    top = 0
    while top < height:
        panel = int(rng.integers(width // 2, width * 3 // 2))
        bottom = min(height, top + panel)
        shade = np.linspace(rng.integers(90, 230), rng.integers(90, 230), bottom - top)
        for row, value in enumerate(shade):
            draw.line([(0, top + row), (width, top + row)], fill=int(value))
        for _ in range(int(rng.integers(3, 8))):
            x0, y0 = (
                int(rng.integers(0, width - 40)),
                int(rng.integers(top, max(top + 1, bottom - 40))),
            )
            x1, y1 = (
                x0 + int(rng.integers(40, width // 2)),
                y0 + int(rng.integers(40, panel // 2 + 41)),
            )
            draw.ellipse((x0, y0, x1, y1), fill=int(rng.integers(20, 240)), outline=0, width=3)
        draw.rectangle((0, top, width - 1, bottom - 1), outline=0, width=4)
        top = bottom + 30  # a white gutter
    return image.filter(ImageFilter.SMOOTH).convert("RGB")


def row_jumps(ab: torch.Tensor, dim: int) -> torch.Tensor:
    """Mean |Δab| (Lab units) between neighbouring rows along the long side `dim` of ab (1, 2, h,
    w): (length - 1,)."""
    other = 3 if dim == 2 else 2
    return (ab.diff(dim=dim).abs().mean(dim=(0, 1, other)) * AB_SCALE).cpu()


def seam(jumps: torch.Tensor, borders: set[int]) -> dict[str, float]:
    """The jumps at the border rows (between row r and r + 1, r in `borders`) against the rest."""
    at = jumps[sorted(borders)]
    inside = torch.tensor([r not in borders for r in range(len(jumps))])
    return {
        "border_mean": float(at.mean()),
        "border_max": float(at.max()),
        "elsewhere_median": float(jumps[inside].median()),
        "elsewhere_p99": float(torch.quantile(jumps[inside], 0.99)),
    }


def resident_mib(field: str = "VmRSS") -> float | None:
    """The process's resident memory (VmRSS) or its high-water mark (VmHWM), MiB; Linux."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return None


def measured(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """fn()'s result, seconds, and the peak resident memory while it ran, MiB (Linux: the
    high-water mark reset first; elsewhere the process's peak so far)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    peak = resident_mib("VmHWM")
    if peak is None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result, seconds, peak


def hard_cut(
    colorizer: Colorizer, l_small: torch.Tensor, starts: list[int], tile: int
) -> torch.Tensor:
    """The tiles pasted edge to edge, each cut in the middle of its overlaps (no blending)."""
    ab = torch.zeros(1, 2, *l_small.shape[-2:])
    cuts = [0] + [(starts[i] + starts[i - 1] + tile) // 2 for i in range(1, len(starts))]
    cuts.append(l_small.shape[2])
    for i, start in enumerate(starts):
        [part] = colorizer.predict_batch(l_small[:, :, start : start + tile], [NOTHING])
        ab[:, :, cuts[i] : cuts[i + 1]] = part.ab[:, :, cuts[i] - start : cuts[i + 1] - start]
    return ab


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = harness.pick_device(args.device)
    torch.set_num_threads(args.threads or torch.get_num_threads())
    model = args.model
    if model is None:
        model = harness.random_checkpoint(Path(tempfile.mkdtemp()) / "random.pt", args.random)
    colorizer = Colorizer.from_checkpoint(model, device)
    image = tall_picture(args.width, args.height)
    picture = to_picture(image)
    shape = colorizer.working_shape(picture, args.size)
    tile, overlap = MAX_ASPECT * min(shape), OVERLAP * min(shape)
    starts = tile_starts(shape[0], tile, overlap)
    colorizer.colorize(image.crop((0, 0, args.width, args.width)), args.size)  # warm-up
    before = resident_mib()  # the model, the picture and its decoded tensor
    out, seconds, peak = measured(lambda: colorizer.colorize(image, args.size))
    assert out.size == image.size
    start = time.perf_counter()  # the model's part: l, the tiles through the model, the blend
    [(l_full, blended)] = colorizer.predict_pictures([picture], args.size)
    model_seconds = time.perf_counter() - start
    l_small = resize_l(l_full, shape)
    borders = {s - 1 for s in starts[1:]} | {s + tile - 1 for s in starts[:-1]}
    cut = hard_cut(colorizer, l_small, starts, tile)
    cut_rows = {(starts[i] + starts[i - 1] + tile) // 2 - 1 for i in range(1, len(starts))}

    def whole() -> torch.Tensor:
        with torch.inference_mode():
            return split_output(colorizer.predict(Batch(l=l_small.to(device)))).ab

    untiled, untiled_seconds, untiled_peak = measured(whole)
    return {
        "machine": harness.machine(device),
        "model": str(args.model or f"random weights, working size {args.random}"),
        "picture": [args.width, args.height],
        "working_shape": list(shape),
        "tiles": len(starts),
        "tile_shape": [tile, min(shape)],
        "overlap": overlap,
        "colorize_seconds": seconds,
        "model_seconds": model_seconds,
        "resident_before_mib": before,
        "colorize_peak_mib": peak,
        "untiled_pass_seconds": untiled_seconds,
        "untiled_pass_peak_mib": untiled_peak,
        "blended": seam(row_jumps(blended.ab, 2), borders),
        "hard_cut": seam(row_jumps(cut, 2), cut_rows),
        "untiled_at_the_tile_borders": seam(row_jumps(untiled, 2), borders),
        "untiled_at_the_cuts": seam(row_jumps(untiled, 2), cut_rows),
    }


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--model", help="a MODEL colorize takes (e.g. runs/cpu-small/checkpoints/best.pt)"
    )
    p.add_argument(
        "--random",
        type=int,
        default=128,
        help="without --model: random weights at this working size",
    )
    p.add_argument("--width", type=int, default=800)
    p.add_argument("--height", type=int, default=12000)
    p.add_argument("--size", type=int, help="working size (default: the model's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    results = run(args)
    print(harness.describe(results["machine"]))
    r = results
    print(f"{args.width}x{args.height} at working shape {r['working_shape']}: {r['tiles']} "
          f"tiles of {r['tile_shape']}, overlap {r['overlap']}")  # fmt: skip
    print(f"colorize: {r['colorize_seconds']:.2f} s, peak {r['colorize_peak_mib']:.0f} MiB "
          f"({r['resident_before_mib']:.0f} MiB resident before; the model's part "
          f"{r['model_seconds']:.2f} s)")  # fmt: skip
    print(f"one untiled pass: {r['untiled_pass_seconds']:.2f} s, "
          f"peak {r['untiled_pass_peak_mib']:.0f} MiB")  # fmt: skip
    rows = [
        [name, *results[name].values()]
        for name in ("blended", "untiled_at_the_tile_borders", "hard_cut", "untiled_at_the_cuts")
    ]
    print(
        harness.table(
            [
                "|Δab| between rows (Lab)",
                "border mean",
                "border max",
                "elsewhere median",
                "elsewhere p99",
            ],
            rows,
        )
    )
    harness.write_json(args.json, results)


if __name__ == "__main__":
    main()
