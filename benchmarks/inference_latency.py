"""Milliseconds per image of colorizing, and of the generator's forward alone beside pix2pix's.

1. `colorgan.Colorizer` on a grayscale image at each input size (a checkpoint with random
   weights, working size 512, U-Net width 64, depth 8): the whole path, Lab conversion, model at
   512 and the full-resolution join included.
2. The generator's forward alone on one 512x512 L image, eval mode, batch 1: colorgan's U-Net
   in several variants that keep its math (inference mode, channels-last, BatchNorm folded into
   the convolutions, bf16 autocast), beside the pix2pix reference U-Net (from
   train_throughput.py) run eagerly.

Each figure is the median of --runs calls after --warmup untimed ones, the variants timed in
turns (bf16 on a CPU without native bf16, which is emulated and some 30x slower: a single call);
CPU always, CUDA too when present (or as --devices says). --compile adds torch.compile variants
(inductor, weights frozen); --profile N prints the top ops of the reference's forward and of the
fastest colorgan variant.

    python benchmarks/inference_latency.py --sizes 256 512 1024 --json inference.json
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import statistics
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import harness
import numpy as np
import torch
from PIL import Image
from torch import nn
from train_throughput import ReferenceUNet, generator_gflops, profile

from colorgan import speed
from colorgan.colorize import Colorizer
from colorgan.generator import Generator

WORKING_SIZE = 512


def gray_image(size: int) -> Image.Image:
    """A photo-like grayscale test image: smooth shading plus fine texture."""
    rng = np.random.default_rng(size)
    yy, xx = np.mgrid[0:size, 0:size] / size
    shade = 128 + 80 * np.sin(6 * xx + 3 * yy) * np.cos(4 * yy)
    values = shade + rng.normal(0, 12, (size, size))
    return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8), mode="L")


def fold_batchnorm(generator: Generator) -> nn.Module:
    """A copy of an eval-mode generator with each BatchNorm folded into the (transposed)
    convolution before it (colorgan.speed, what colorize runs): the same function up to float
    rounding, one pass less per block."""
    folded = copy.deepcopy(generator).eval()
    speed.fold_batchnorm(folded)
    return folded


def channels_last(module: nn.Module) -> nn.Module:
    """A channels-last copy of `module`."""
    return copy.deepcopy(module).to(memory_format=torch.channels_last)  # type: ignore[call-overload]


def compiled(module: nn.Module) -> nn.Module:
    """`module` compiled by torch.compile with weights frozen as constants (inference only)."""
    import torch._inductor.config as inductor

    inductor.freezing = True
    result = torch.compile(module)
    assert isinstance(result, nn.Module)
    return result


def forward_variants(device: torch.device, compile_too: bool) -> dict[str, Callable[[], Any]]:
    """Named zero-argument calls of one 512x512 forward each."""
    torch.manual_seed(0)
    colorgan = Generator(base_channels=64, depth=8).to(device).eval()
    reference = ReferenceUNet(num_downs=8).to(device).eval()
    folded = fold_batchnorm(colorgan)
    l = torch.rand(1, 1, WORKING_SIZE, WORKING_SIZE, device=device) * 2 - 1
    l_cl = l.contiguous(memory_format=torch.channels_last)

    def run(model: nn.Module, x: torch.Tensor, mode: str = "inference") -> Callable[[], Any]:
        def call() -> Any:
            guard = torch.no_grad() if mode == "no_grad" else torch.inference_mode()
            dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mode)
            autocast = (
                torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
            )
            with guard, autocast:
                return model(x)

        return call

    variants = {
        "reference eager (no_grad)": run(reference, l, "no_grad"),
        "colorgan eager (no_grad)": run(colorgan, l, "no_grad"),
        "colorgan inference_mode": run(colorgan, l),
        "colorgan channels_last": run(channels_last(colorgan), l_cl),
        "colorgan BN folded": run(folded, l),
        "colorgan BN folded + channels_last": run(channels_last(folded), l_cl),
        "colorgan bf16 autocast": run(colorgan, l, "bf16"),
        "colorgan channels_last + bf16 autocast": run(channels_last(colorgan), l_cl, "bf16"),
    }
    if device.type == "cuda":
        variants["colorgan fp16 autocast"] = run(colorgan, l, "fp16")
        variants["colorgan channels_last + fp16 autocast"] = run(
            channels_last(colorgan), l_cl, "fp16"
        )
    if compile_too:
        variants["colorgan torch.compile (frozen)"] = run(compiled(colorgan), l)
        variants["colorgan torch.compile (frozen) + channels_last"] = run(
            compiled(channels_last(colorgan)), l_cl
        )
    return variants


def folding_error(device: torch.device) -> float:
    """Max |ab| difference between the generator and its BatchNorm-folded copy (a check)."""
    torch.manual_seed(0)
    generator = Generator(base_channels=64, depth=8).to(device).eval()
    with torch.no_grad():  # give the BatchNorms non-trivial statistics first
        for block in [*generator.down, *generator.up]:
            norm = block[1]
            if isinstance(norm, nn.BatchNorm2d):
                assert norm.running_mean is not None and norm.running_var is not None
                norm.running_mean.uniform_(-0.1, 0.1)
                norm.running_var.uniform_(0.5, 2.0)
    l = torch.rand(1, 1, 256, 256, device=device) * 2 - 1
    with torch.inference_mode():
        return float((generator(l) - fold_batchnorm(generator)(l)).abs().max())


def interleaved_ms(
    calls: Mapping[str, Callable[[], Any]],
    device: torch.device,
    warmup: int,
    runs: int,
    once: frozenset[str] = frozenset(),
) -> dict[str, float]:
    """Median ms of each call, timed in turns (one call of each per round, so a busy machine
    slows all alike) after `warmup` untimed ones; calls named in `once` run a single time."""
    for name, call in calls.items():
        for _ in range(0 if name in once else warmup):
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for round_ in range(runs):
        for name, call in calls.items():
            if round_ == 0 or name not in once:
                times[name].append(harness.timed(call, device))
    for name, seconds in times.items():
        print(f"{name} on {device}: {statistics.median(seconds) * 1e3:.0f} ms", flush=True)
    return {name: statistics.median(seconds) * 1e3 for name, seconds in times.items()}


def colorizer_ms(
    colorizer: Colorizer, sizes: list[int], device: torch.device, warmup: int, runs: int
) -> dict[str, float]:
    """Median ms of Colorizer.colorize on a grayscale image of each size."""
    calls = {str(size): functools.partial(colorizer.colorize, gray_image(size)) for size in sizes}
    return interleaved_ms(calls, device, warmup, runs)


def cpu_has_bf16() -> bool:
    """True if oneDNN runs bf16 natively on this CPU."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def measure(
    device: torch.device,
    sizes: list[int],
    warmup: int,
    runs: int,
    compile_too: bool,
    profile_rows: int = 0,
) -> dict[str, Any]:
    """Both measurements on one device."""
    with tempfile.TemporaryDirectory() as folder:
        colorizer = Colorizer.from_checkpoint(
            harness.random_checkpoint(Path(folder) / "random-512.pt", WORKING_SIZE), device
        )
        colorize = colorizer_ms(colorizer, sizes, device, warmup, runs)
    variants = forward_variants(device, compile_too)
    # Without native bf16 (AVX512-BF16 or AMX) a CPU emulates it, some 30x slower: one call.
    emulated = device.type == "cpu" and not cpu_has_bf16()
    once = frozenset(name for name in variants if "bf16" in name and emulated)
    forward = interleaved_ms(variants, device, warmup, runs, once)
    if profile_rows:
        fastest = min((n for n in forward if n.startswith("colorgan")), key=forward.__getitem__)
        names = ["reference eager (no_grad)", fastest]
        profile({name: variants[name] for name in names}, device, profile_rows)
    reference_ms = forward["reference eager (no_grad)"]
    return {
        "colorize_ms": colorize,
        "forward_512_ms": forward,
        "speedup_over_reference": {name: reference_ms / ms for name, ms in forward.items()},
        "generator_gflops_512": {
            "colorgan": generator_gflops(Generator(64, 8).to(device), WORKING_SIZE, device),
            "reference": generator_gflops(ReferenceUNet().to(device), WORKING_SIZE, device),
        },
        "bn_folding_max_abs_error": folding_error(device),
        "cpu_native_bf16": cpu_has_bf16(),
    }


def main() -> None:
    """Measure on each device, print tables, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    default_devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    parser.add_argument("--devices", nargs="+", default=default_devices)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--compile", action="store_true", help="also torch.compile variants (slow to build)"
    )
    parser.add_argument(
        "--profile", type=int, default=0, metavar="ROWS", help="print the top ops of a forward"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results: dict[str, Any] = {}
    for name in args.devices:
        device = harness.pick_device(name)
        result = measure(device, args.sizes, args.warmup, args.runs, args.compile, args.profile)
        meta = harness.machine(device)
        results[str(device)] = result | {"meta": meta}
        print(f"\n{device}: {harness.describe(meta)}")
        rows = [
            [f"colorize {size}px (model at 512)", ms] for size, ms in result["colorize_ms"].items()
        ]
        print(harness.table(["Colorizer.colorize", "ms/image"], rows))
        speedups = result["speedup_over_reference"]
        rows = [[k, ms, speedups[k]] for k, ms in result["forward_512_ms"].items()]
        print(harness.table(["generator forward, 512x512, batch 1", "ms", "x reference"], rows))
        gflops = result["generator_gflops_512"]
        print(
            f"generator GFLOPs at 512: colorgan {gflops['colorgan']:.1f}, reference "
            f"{gflops['reference']:.1f}; BN folding max |error| "
            f"{result['bn_folding_max_abs_error']:.1e}"
        )
    harness.write_json(args.json, results)


if __name__ == "__main__":
    main()
