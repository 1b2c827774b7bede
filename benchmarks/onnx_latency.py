"""Milliseconds per image at 512 on the CPU: the PyTorch (.pt) path against the ONNX (.onnx,
onnxruntime) path, for the whole Colorizer call and for the model alone.

A checkpoint with random weights (U-Net width 64, depth 8, working size 512) is written and
exported with `colorgan export` into a temporary folder; a 512x512 grayscale image is colorized
through `Colorizer.from_checkpoint` with each file. The two paths run alternately, so a load that
comes and goes (another job on the machine) falls on both alike. Each figure is the median of
--runs timed calls after --warmup untimed ones.

    python benchmarks/onnx_latency.py [--size 512] [--runs 10] [--json onnx_latency.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import harness  # puts this repository's colorgan first on the path
import numpy as np
import torch
from PIL import Image

from colorgan.batch import Batch
from colorgan.colorize import Colorizer, resize_l
from colorgan.export import export_onnx


def write_models(folder: Path, size: int) -> tuple[Path, Path]:
    """A random-weight checkpoint at width 64, depth 8, and its ONNX export."""
    checkpoint = harness.random_checkpoint(folder / "model.pt", size)
    onnx_path = folder / "model.onnx"
    export_onnx(checkpoint, onnx_path)
    return checkpoint, onnx_path


def median_ms(calls: dict[str, Callable[[], object]], runs: int, warmup: int) -> dict[str, float]:
    """Median milliseconds of each call, the calls alternating run by run."""
    for _ in range(warmup):
        for call in calls.values():
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(runs):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def measure(size: int, runs: int, warmup: int) -> dict[str, float]:
    """ms per image for the whole Colorizer call and the model alone, .pt and .onnx."""
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint, onnx_path = write_models(Path(tmp), size)
        by_pt = Colorizer.from_checkpoint(checkpoint, device="cpu", batch_size=1)
        by_onnx = Colorizer.from_checkpoint(onnx_path, device="cpu", batch_size=1)
        rng = np.random.default_rng(0)
        image = Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8), "L")
        l = resize_l(torch.rand(1, 1, size, size) * 2 - 1, (size, size))
        return median_ms(
            {
                "colorize_pt_ms": lambda: by_pt.colorize(image),
                "colorize_onnx_ms": lambda: by_onnx.colorize(image),
                "model_pt_ms": lambda: by_pt.predict(Batch(l=l)),
                "model_onnx_ms": lambda: by_onnx.predict(Batch(l=l)),
            },
            runs,
            warmup,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="image and working size (512)")
    parser.add_argument("--runs", type=int, default=10, help="timed calls per figure (10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls first (2)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    result = measure(args.size, args.runs, args.warmup)
    import onnxruntime

    context = {
        "size": args.size,
        "runs": args.runs,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg()[0],
        "date": time.strftime("%Y-%m-%d"),
    }
    print(f"ms per image at {args.size}x{args.size}, CPU, median of {args.runs}")
    print(f"{'':12}{'PyTorch .pt':>14}{'ONNX .onnx':>14}{'speed-up':>10}")
    for what in ("colorize", "model"):
        pt, onnx = result[f"{what}_pt_ms"], result[f"{what}_onnx_ms"]
        print(f"{what:12}{pt:14.1f}{onnx:14.1f}{pt / onnx:9.2f}x")
    print(f"(load average {context['load_average']:.1f} on {context['cpus']} CPUs)")
    if args.json is not None:
        args.json.write_text(json.dumps({**context, **result}, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
