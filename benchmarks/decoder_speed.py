"""The generator's eager forward at one size beside pix2pix's, per `model.output_stride`.

Models (eval mode, float32, `torch.inference_mode`, batch --batch, one --size x --size L image):

- pix2pix reference: the U-Net rebuilt from the paper in train_throughput.py (width 64, depth 8),
  the denominator of every ratio;
- colorgan unet 64/8: `model.encoder=unet`, `base_channels=64`, `depth=8` (the same network in
  colorgan's code, a check on the reference);
- Lite0 stride S, width W (--lite0 S/W[/KEY=VALUE...] ...; default 1/32 with and without
  hints=true, 4/16/upsample=bilinear, and 4/16 (the default generator: affine upsampling) with
  and without hints=true): the Lite0 U-Net (ImageNet encoder weights) with
  `model.output_stride=S`, `model.base_channels=W` and each `model.KEY=VALUE`; 1/32 is the conv
  decoder at full resolution. (The separable decoder and guided upsampling this also measured
  were removed; docs/journal/performance.md's commands for them run at the commits it names.)
- Lite0 encoder alone: the ImageNet encoder's features of the same input and nothing else, the
  floor under any decoder on it.

The models run in turns, one forward each per round (the order rotated every round), so a busy
machine slows all alike; each figure is the median over --repeats rounds after --warmup untimed
ones. "paired" is the median over rounds of (reference time / model time) in the same round,
which one stalled forward cannot move. GFLOPs (2 per multiply-add) from FlopCounterMode.
--channels-last adds a channels-last copy of each model (input channels-last too); --folded a
copy with BatchNorm folded into the convs (colorgan.speed.fast_model, what colorize runs).

    python benchmarks/decoder_speed.py --size 512 --batch 1 --repeats 7 --json decoder.json
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import harness
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from train_throughput import ReferenceUNet

from colorgan.config import load_config
from colorgan.generator import Lite0UNet
from colorgan.lite0 import to_input
from colorgan.models import build_generator
from colorgan.speed import fast_model

REFERENCE = "pix2pix reference"
# output_stride/base_channels[/model key=value...]; 1/32 is the full-resolution conv decoder,
# 4/16 the default generator (conv decoder of width 16 at stride 4, affine upsampling)
LITE0 = ["1/32", "1/32/hints=true", "4/16/upsample=bilinear", "4/16", "4/16/hints=true"]


class EncoderAlone(nn.Module):
    """A Lite0 U-Net's encoder on its own: L in, the stride-2..32 features out."""

    def __init__(self, generator: Lite0UNet) -> None:
        super().__init__()
        self.encoder = generator.encoder

    def forward(self, l: torch.Tensor) -> list[torch.Tensor]:
        return self.encoder.features(to_input((l + 1.0) * 0.5))


def models(
    device: torch.device, lite0: list[str], channels_last: bool, folded: bool
) -> dict[str, nn.Module]:
    """The models compared, seeded, in eval mode on `device`; `lite0` as
    "STRIDE/WIDTH[/KEY=VALUE...]" (model keys)."""
    torch.manual_seed(0)
    unet = load_config(None, ["model.encoder=unet", "model.base_channels=64", "model.depth=8"])
    built: dict[str, nn.Module] = {
        REFERENCE: ReferenceUNet(num_downs=8),
        "colorgan unet 64/8": build_generator(unet.model),
    }
    for spec in lite0:
        stride, width, *keys = spec.split("/")
        settings = [f"model.output_stride={stride}", f"model.base_channels={width}"]
        config = load_config(None, [*settings, *(f"model.{k}" for k in keys)])
        name = f"Lite0 stride {stride}, width {width}" + "".join(f", {k}" for k in keys)
        built[name] = build_generator(config.model, True)
    shipped = build_generator(load_config(None).model, pretrained=True)
    assert isinstance(shipped, Lite0UNet)
    built["Lite0 encoder alone"] = EncoderAlone(shipped)
    for name in list(built) if folded else []:
        built[f"{name}, folded"] = fast_model(built[name].eval())
    if channels_last:
        for name in list(built):
            built[f"{name}, channels-last"] = copy.deepcopy(built[name]).to(
                memory_format=torch.channels_last  # type: ignore[call-overload]
            )
    return {name: model.to(device).eval() for name, model in built.items()}


def gflops(model: nn.Module, l: torch.Tensor) -> float:
    """GFLOPs of one forward of `l` (all images of the batch)."""
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(l)
    return counter.get_total_flops() / 1e9


def round_robin(
    calls: dict[str, Callable[[], Any]], device: torch.device, warmup: int, repeats: int
) -> dict[str, list[float]]:
    """Seconds of each call per round: one call of each per round, the order rotated."""
    names = list(calls)
    for _ in range(warmup):
        for name in names:
            calls[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(harness.timed(calls[name], device))
        load = os.getloadavg()[0]
        print(f"round {round_ + 1}/{repeats} done, load {load:.2f}", flush=True)
    return times


def summary(times: dict[str, list[float]], flops: dict[str, float]) -> dict[str, dict[str, Any]]:
    """Per model: median and min ms, x reference (medians and paired), GFLOPs."""
    reference = times[REFERENCE]
    ref_median = statistics.median(reference)
    rows = {}
    for name, seconds in times.items():
        paired = [r / s for r, s in zip(reference, seconds, strict=True)]
        rows[name] = {
            "median_ms": statistics.median(seconds) * 1e3,
            "min_ms": min(seconds) * 1e3,
            "all_ms": [s * 1e3 for s in seconds],
            "x_reference": ref_median / statistics.median(seconds),
            "x_reference_paired": statistics.median(paired),
            "gflops": flops[name],
        }
    return rows


def measure(device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    """Every model's forward on `device`: the summary rows and the load around the runs."""
    built = models(device, args.lite0, args.channels_last, args.folded)
    torch.manual_seed(1)
    l = torch.rand(args.batch, 1, args.size, args.size, device=device) * 2 - 1
    l_cl = l.contiguous(memory_format=torch.channels_last)
    inputs = {name: l_cl if name.endswith("channels-last") else l for name in built}
    flops = {name: gflops(model, inputs[name]) for name, model in built.items()}

    def call(name: str) -> Callable[[], Any]:
        def run() -> Any:
            with torch.inference_mode():
                return built[name](inputs[name])

        return run

    load_before = os.getloadavg()
    times = round_robin({name: call(name) for name in built}, device, args.warmup, args.repeats)
    return {
        "size": args.size,
        "batch": args.batch,
        "repeats": args.repeats,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "models": summary(times, flops),
    }


def main() -> None:
    """Measure on each device, print a table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1)
    default_devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    parser.add_argument("--devices", nargs="+", default=default_devices)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--lite0", nargs="+", default=LITE0, metavar="STRIDE/WIDTH[/KEY=VALUE]")
    parser.add_argument("--channels-last", action="store_true", help="add channels-last copies")
    parser.add_argument("--folded", action="store_true", help="add BatchNorm-folded copies")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results: dict[str, Any] = {}
    for name in args.devices:
        device = harness.pick_device(name)
        result = measure(device, args)
        meta = harness.machine(device)
        results[str(device)] = result | {"meta": meta}
        print(f"\n{device}: {harness.describe(meta)}")
        header = [f"forward {args.size}px, batch {args.batch}", "GFLOP", "median ms", "min ms"]
        rows = [
            [k, r["gflops"], r["median_ms"], r["min_ms"], r["x_reference"], r["x_reference_paired"]]
            for k, r in result["models"].items()
        ]
        print(harness.table([*header, "x ref (medians)", "x ref (paired)"], rows))
    harness.write_json(args.json, results)


if __name__ == "__main__":
    main()
