"""Images/s of full training steps (D and G updates): colorgan beside the pix2pix recipe.

colorgan runs its own `build_state` + `train_step` with a U-Net of width 64 and depth log2(size)
(a 1x1 bottleneck, like pix2pix's unet_256 at 256 px) and `loss.perceptual_weight=0`, so both
sides compute the same losses: adversarial (vanilla GAN) + 100 L1. The reference is pix2pix
rebuilt here from its paper (Isola et al., 2017, appendix 6.1): a U-Net of width 64 with
BatchNorm and dropout 0.5, the 70x70 PatchGAN with BatchNorm, Adam 2e-4 (0.5, 0.999), D loss
halved, separate D forwards for real and fake. Steps of the two alternate (and swap order each
time) in one process, so a busy machine slows both alike. Random batches; L in, ab out.

    python benchmarks/train_throughput.py --size 128 --batch 8 --steps 10 --json tt.json
    python benchmarks/train_throughput.py ... --colorgan-set train.channels_last=true

With --colorgan-set model.hints=true the batches carry the data's simulated color points, and
the same colorgan config without model.hints runs beside it (its steps without points).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import math
import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import harness
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from colorgan.batch import Batch
from colorgan.config import load_config
from colorgan.state import State, build_state
from colorgan.train import train_step

# ---- the pix2pix reference, from the paper -----------------------------------------------------


def _ref_down(c_in: int, c_out: int, first: bool, innermost: bool) -> nn.Sequential:
    """Encoder block: (LeakyReLU 0.2) - 4x4 stride-2 conv - (BatchNorm); the first block has
    no activation before it, the first and innermost no BatchNorm."""
    layers: list[nn.Module] = [] if first else [nn.LeakyReLU(0.2)]
    layers.append(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1, bias=False))
    if not (first or innermost):
        layers.append(nn.BatchNorm2d(c_out))
    return nn.Sequential(*layers)


def _ref_up(c_in: int, c_out: int, dropout: float) -> nn.Sequential:
    """Decoder block: ReLU - 4x4 stride-2 transposed conv - BatchNorm - (Dropout)."""
    layers: list[nn.Module] = [
        nn.ReLU(inplace=True),
        nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class ReferenceUNet(nn.Module):
    """pix2pix's U-Net generator (unet_256 at num_downs=8): encoder C64-C128-C256-C512-C512...,
    decoder mirrored with skips, dropout 0.5 in the decoder blocks just outside the innermost."""

    def __init__(
        self, in_channels: int = 1, out_channels: int = 2, ngf: int = 64, num_downs: int = 8
    ) -> None:
        super().__init__()
        channels = [ngf * min(2**i, 8) for i in range(num_downs)]
        inner = num_downs - 1
        self.down = nn.ModuleList(
            _ref_down(in_channels if i == 0 else channels[i - 1], channels[i], i == 0, i == inner)
            for i in range(num_downs)
        )
        # up[k] goes from level num_downs-1-k to num_downs-2-k; k = 1 .. num_downs-5 drop out.
        self.up = nn.ModuleList(
            _ref_up(
                channels[i] * (1 if k == 0 else 2),
                channels[i - 1],
                0.5 if 1 <= k <= num_downs - 5 else 0.0,
            )
            for k, i in enumerate(range(num_downs - 1, 0, -1))
        )
        self.head = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(channels[0] * 2, out_channels, 4, stride=2, padding=1),
            nn.Tanh(),
        )
        for m in self.modules():  # N(0, 0.02) weights, N(1, 0.02) BatchNorm scales
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, l: torch.Tensor) -> torch.Tensor:
        """l: (B, 1, H, W) in [-1, 1] -> ab: (B, 2, H, W) in [-1, 1]."""
        skips = []
        x = l
        for block in self.down:
            x = block(x)
            skips.append(x)
        skips.pop()
        for block in self.up:
            x = torch.cat([block(x), skips.pop()], dim=1)
        return self.head(x)


class ReferencePatchGAN(nn.Module):
    """The 70x70 PatchGAN: C64-C128-C256-C512 (4x4 convs, the last stride 1, no BatchNorm on
    the first, LeakyReLU 0.2), then a 4x4 conv to one logit per patch."""

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        c_out = ndf
        for n in range(1, n_layers + 1):
            c_in, c_out = c_out, ndf * min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(c_in, c_out, 4, stride, 1, bias=False), nn.BatchNorm2d(c_out)]
            layers.append(nn.LeakyReLU(0.2, True))
        layers.append(nn.Conv2d(c_out, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, l_ab: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W): l and ab joined -> (B, 1, h, w) logits."""
        return self.net(l_ab)


@dataclass
class Reference:
    """The reference's models and optimizers."""

    generator: ReferenceUNet
    discriminator: ReferencePatchGAN
    opt_g: torch.optim.Adam
    opt_d: torch.optim.Adam


def build_reference(size: int, device: torch.device) -> Reference:
    """pix2pix at `size` px: num_downs = log2(size), Adam 2e-4, betas (0.5, 0.999)."""
    torch.manual_seed(0)
    g = ReferenceUNet(num_downs=int(math.log2(size))).to(device)
    d = ReferencePatchGAN().to(device)

    def adam(m: nn.Module) -> torch.optim.Adam:
        return torch.optim.Adam(m.parameters(), lr=2e-4, betas=(0.5, 0.999))

    return Reference(g, d, adam(g), adam(d))


def reference_step(ref: Reference, batch: Batch) -> None:
    """One D update on real and fake (loss halved), then one G update: GAN + 100 L1."""
    g, d = ref.generator, ref.discriminator
    ab_fake = g(batch.l)
    d.requires_grad_(True)
    ref.opt_d.zero_grad(set_to_none=True)
    pred_fake = d(torch.cat([batch.l, ab_fake.detach()], 1))
    pred_real = d(torch.cat([batch.l, batch.ab], 1))
    loss_d = 0.5 * (
        F.binary_cross_entropy_with_logits(pred_fake, torch.zeros_like(pred_fake))
        + F.binary_cross_entropy_with_logits(pred_real, torch.ones_like(pred_real))
    )
    loss_d.backward()
    ref.opt_d.step()
    d.requires_grad_(False)
    ref.opt_g.zero_grad(set_to_none=True)
    pred = d(torch.cat([batch.l, ab_fake], 1))
    loss_g = F.binary_cross_entropy_with_logits(pred, torch.ones_like(pred))
    loss_g = loss_g + 100.0 * F.l1_loss(ab_fake, batch.ab)
    loss_g.backward()
    ref.opt_g.step()


# ---- measuring ---------------------------------------------------------------------------------


def colorgan_state(size: int, batch: int, device: torch.device, extra: list[str]) -> State:
    """colorgan's training state at width 64, depth log2(size), no perceptual term, fp32 unless
    `extra` overrides say otherwise."""
    config = load_config(
        None,
        [
            "model.encoder=unet",
            f"data.image_size={size}",
            "model.base_channels=64",
            f"model.depth={int(math.log2(size))}",
            f"train.batch_size={batch}",
            f"train.device={device}",
            "train.amp=off",
            "loss.perceptual_weight=0",
            *extra,
        ],
    )
    return build_state(config, device, steps_per_epoch=1000)


def generator_gflops(generator: nn.Module, size: int, device: torch.device) -> float:
    """GFLOPs (2 per multiply-add) of one forward of one size x size image."""
    l = torch.zeros(1, 1, size, size, device=device)
    generator.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        generator(l)
    generator.train()
    return counter.get_total_flops() / 1e9


def alternate(
    steps: dict[str, Any], warmup: int, count: int, device: torch.device
) -> dict[str, list[float]]:
    """Seconds per step of each named step function, run in turns (order swapped each turn)."""
    names = list(steps)
    for _ in range(warmup):
        for name in names:
            steps[name]()
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for turn in range(count):
        for name in names if turn % 2 == 0 else names[::-1]:
            seconds[name].append(harness.timed(steps[name], device))
    return seconds


def profile(steps: dict[str, Any], device: torch.device, rows: int) -> None:
    """Print torch.profiler's top ops (by self time) of one step of each."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    for name, step in steps.items():
        with torch_profile(activities=activities) as prof:
            step()
            harness.sync(device)
        print(f"\n== profile: one {name} step, top {rows} ops by self time ==")
        print(prof.key_averages().table(sort_by=sort, row_limit=rows))


@contextlib.contextmanager
def fused_adamw(enabled: bool) -> Iterator[None]:
    """While active, torch.optim.AdamW builds fused (one-kernel) optimizers: what colorgan's
    build_state would give with fused=True, same math, for measuring that change."""
    original = torch.optim.AdamW
    if enabled:
        torch.optim.AdamW = functools.partial(original, fused=True)  # type: ignore[misc,assignment]
    try:
        yield
    finally:
        torch.optim.AdamW = original  # type: ignore[misc]


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10, help="timed steps of each")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps of each first")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--flush-denormal", action="store_true", help="torch.set_flush_denormal(True) first"
    )
    parser.add_argument(
        "--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark = True"
    )
    parser.add_argument(
        "--colorgan-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra colorgan config override, e.g. train.channels_last=true (repeatable)",
    )
    parser.add_argument(
        "--fused-adamw", action="store_true", help="colorgan's AdamW with fused=True (a variant)"
    )
    parser.add_argument("--profile", type=int, default=0, metavar="ROWS", help="print top ops")
    parser.add_argument("--json", type=Path)
    return parser.parse_args()


def measure(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Build both recipes, count their generator FLOPs, time their steps in turns."""
    with fused_adamw(args.fused_adamw):
        state = colorgan_state(args.size, args.batch, device, args.colorgan_set)
    ref = build_reference(args.size, device)
    points = state.config.model.hints  # with the data's simulated points, and without them
    batch = harness.random_batch(args.batch, args.size, device, hints=points)
    steps = {
        "colorgan": lambda: train_step(state, batch),
        "reference": lambda: reference_step(ref, batch),
    }
    generators = {"colorgan": state.generator, "reference": ref.generator}
    if points:
        plain = colorgan_state(
            args.size, args.batch, device, [*args.colorgan_set, "model.hints=false"]
        )
        bare = dataclasses.replace(batch, hints=None)
        steps["colorgan without points"] = lambda: train_step(plain, bare)
        generators["colorgan without points"] = plain.generator
    seconds = alternate(steps, args.warmup, args.steps, device)
    results: dict[str, Any] = {}
    for name, times in seconds.items():
        results[name] = {
            "images_per_second": args.batch * len(times) / sum(times),
            "median_seconds_per_step": statistics.median(times),
            "seconds_per_step": times,
            "generator_gflops": generator_gflops(generators[name], args.size, device),
            "generator_parameters": sum(p.numel() for p in generators[name].parameters()),
        }
    if args.profile:
        profile(steps, device, args.profile)
    results["meta"] = {"colorgan_amp": str(state.dtype or "off")}
    return results


def main() -> None:
    """Measure both recipes, print a table, write JSON."""
    args = parse_args()
    device = harness.pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.flush_denormal:
        torch.set_flush_denormal(True)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    results = measure(args, device)
    meta = harness.machine(device) | results["meta"]
    meta |= {
        "size": args.size,
        "batch": args.batch,
        "steps": args.steps,
        "warmup": args.warmup,
        "colorgan_set": args.colorgan_set,
        "fused_adamw": args.fused_adamw,
        "flush_denormal": args.flush_denormal,
        "cudnn_benchmark": args.cudnn_benchmark,
        "losses": "both: vanilla GAN + 100 L1 (colorgan loss.perceptual_weight=0)",
        "differences": "colorgan: AdamW (wd 0.01) + cosine schedule, no dropout, reads its "
        "losses every step (one device sync); reference: Adam, dropout 0.5, no per-step sync",
    }
    ratio = results["colorgan"]["images_per_second"] / results["reference"]["images_per_second"]
    times = results["reference"]["seconds_per_step"], results["colorgan"]["seconds_per_step"]
    paired = statistics.median(r / c for r, c in zip(*times, strict=True))  # back-to-back steps
    meta["colorgan_over_reference"] = ratio
    meta["colorgan_over_reference_paired_median"] = paired
    results["meta"] = meta
    print(f"\ntraining throughput, {args.size}px, batch {args.batch}: {harness.describe(meta)}")
    header = ["recipe", "images/s", "median s/step", "G GFLOPs/img", "G params M"]
    keys = ["images_per_second", "median_seconds_per_step", "generator_gflops"]
    rows = [
        [name, *(r[k] for k in keys), r["generator_parameters"] / 1e6]
        for name, r in results.items()
        if name != "meta"
    ]
    print(harness.table(header, rows))
    print(
        f"colorgan / reference: {ratio:.2f}x over all steps, {paired:.2f}x median of "
        f"back-to-back pairs  (losses: {meta['losses']})"
    )
    if "colorgan without points" in results:
        plain = results["colorgan without points"]["median_seconds_per_step"]
        cost = results["colorgan"]["median_seconds_per_step"] / plain
        meta["points_over_no_points"] = cost
        print(f"colorgan with the data's points / without them: {cost:.2f}x per step")
    harness.write_json(args.json, results)


if __name__ == "__main__":
    main()
