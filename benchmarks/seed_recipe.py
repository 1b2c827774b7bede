"""Peak memory and images/s of full training steps (D and G updates) of the seed recipe.

Runs `colorgan.train.train_step` on random batches at the seed config's size (512x512, batch 8,
U-Net width 64, depth 8, 70x70 PatchGAN, VGG16 perceptual) for each mixed-precision mode, and
prints a table and writes JSON. VGG16 uses random weights here (same compute as the ImageNet ones;
no download needed). Peak memory is torch.cuda.max_memory_allocated on CUDA; on CPU only the
throughput is measured.

    python benchmarks/seed_recipe.py --json seed_recipe.json [--steps 20] [--amp off bf16 fp16]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import harness
import torch

from colorgan.config import load_config
from colorgan.state import build_state
from colorgan.train import train_step

REPO = Path(__file__).resolve().parents[1]


def measure(amp: str, steps: int, size: int, batch: int, device: torch.device) -> dict[str, float]:
    """Time `steps` training steps after warm-up; peak memory over the timed steps."""
    config = load_config(
        REPO / "configs" / "seed-anime512.yaml",
        [
            f"train.amp={amp}",
            "loss.vgg_weights=random",
            f"data.image_size={size}",
            f"train.batch_size={batch}",
            f"train.device={device}",
        ],
    )
    state = build_state(config, device, steps_per_epoch=1000)
    batch_data = harness.random_batch(batch, size, device, config.model.hints)
    for _ in range(3):
        train_step(state, batch_data)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        train_step(state, batch_data)  # syncs once per step to read the losses
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    result = {"images_per_second": steps * batch / seconds, "seconds_per_step": seconds / steps}
    if device.type == "cuda":
        result["peak_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
        result["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
    del state
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def main() -> None:
    """Parse arguments, run each AMP mode, print and save."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--amp", nargs="+", default=["off", "bf16", "fp16"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    device = torch.device(args.device)
    results = {}
    for amp in args.amp:
        results[amp] = measure(amp, args.steps, args.size, args.batch, device)
        print(amp, {k: round(v, 3) for k, v in results[amp].items()}, flush=True)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"\nseed recipe, {args.size}px, batch {args.batch}, {name}, torch {torch.__version__}")
    print(f"{'amp':<6}{'images/s':>10}{'s/step':>9}{'peak alloc GiB':>16}{'peak reserved GiB':>19}")
    for amp, r in results.items():
        print(
            f"{amp:<6}{r['images_per_second']:>10.1f}{r['seconds_per_step']:>9.3f}"
            f"{r.get('peak_allocated_gib', float('nan')):>16.2f}"
            f"{r.get('peak_reserved_gib', float('nan')):>19.2f}"
        )
    if args.json:
        meta = {"device": name, "torch": torch.__version__, "size": args.size, "batch": args.batch}
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=2))


if __name__ == "__main__":
    main()
