"""Peak training memory of the seed recipe (configs/seed-anime512.yaml, VGG16 with random
weights) at 512x512, batch 8: measured on a GPU, estimated on a CPU.

GPU: torch.cuda.max_memory_allocated over a full training step (D and G updates) after warm-up,
for train.amp=off, bf16 and fp16.

Estimate (any device): weights (G, D and the frozen VGG16) + gradients (G, D) + AdamW's two
states per parameter + the peak of the tensors autograd keeps for backward, counted as unique
storages with torch.autograd.graph.saved_tensors_hooks while one training step runs and freed
when autograd frees them. Not counted: transient buffers (activation gradients during backward,
kernel workspaces, casts not kept for backward, optimizer temporaries). bf16 autocast on the CPU
gives the AMP sizes (fp16 keeps the same bytes). A full-size step is too slow on a CPU, so the
saved tensors are counted in a step at --probe-size/--probe-batch: activations are scaled by
B*H*W to the target, AMP's low-precision weight copies are kept as they are. On a GPU the count
at full size and the measurement are printed beside the scaled estimate, as a check of the
method.

    python benchmarks/memory.py --json memory.json          # a GPU when present
    python benchmarks/memory.py --device cpu --json memory-cpu.json
"""

from __future__ import annotations

import argparse
import gc
import sys
import warnings
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import harness
import torch
from torch import nn

from colorgan.config import load_config
from colorgan.state import State, build_state
from colorgan.train import train_step

GIB = 2**30
SEED_CONFIG = harness.REPO / "configs" / "seed-anime512.yaml"
PACKAGE = harness.REPO / "colorgan"


def colorgan_line() -> str:
    """The innermost line of colorgan's own code on the call stack: "module.py:LINE function"."""
    frame = sys._getframe(1)
    while frame is not None:
        path = Path(frame.f_code.co_filename)
        if path.parent == PACKAGE:
            return f"{path.name}:{frame.f_lineno} {frame.f_code.co_name}"
        frame = frame.f_back  # type: ignore[assignment]
    return "elsewhere"


class SavedTensors:
    """Counts the bytes of unique storages autograd keeps for backward, as they come and go;
    remembers the peak and, at the peak, how much each part kept: "<network> activations" (they
    grow with B*H*W) and "<network> weights" (AMP's low-precision copies of its parameters)."""

    def __init__(self, exclude: set[int]) -> None:
        self.exclude = exclude  # storages of parameters and buffers, counted elsewhere
        self.live: dict[int, list[Any]] = {}  # data_ptr -> [bytes, references, part, source]
        self.by_part: dict[str, int] = defaultdict(int)
        self.by_source: dict[str, int] = defaultdict(int)
        self.current = 0
        self.peak = 0
        self.peak_by_part: dict[str, int] = {}
        self.peak_by_source: dict[str, int] = {}
        self.label = "losses"
        self.weight_shapes: dict[str, set[tuple[int, ...]]] = {}

    def pack(self, tensor: torch.Tensor) -> Any:
        """Autograd saves `tensor`: count its storage once, while any save of it is alive."""
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key in self.exclude or storage.nbytes() == 0:
            return tensor
        entry = self.live.get(key)
        if entry is None:
            is_weight = tuple(tensor.shape) in self.weight_shapes.get(self.label, set())
            kind = "weights" if is_weight else "activations"
            part, source = f"{self.label} {kind}", f"{colorgan_line()} {kind}"
            entry = self.live[key] = [storage.nbytes(), 0, part, source]
            self.current += entry[0]
            self.by_part[part] += entry[0]
            self.by_source[source] += entry[0]
            if self.current > self.peak:
                self.peak, self.peak_by_part = self.current, dict(self.by_part)
                self.peak_by_source = dict(self.by_source)
        entry[1] += 1
        return _Kept(self, key, tensor.detach())  # detached: no reference cycle via grad_fn

    @staticmethod
    def unpack(kept: Any) -> torch.Tensor:
        """Backward needs the tensor back."""
        return kept.tensor if isinstance(kept, _Kept) else kept

    def release(self, key: int) -> None:
        """One save of storage `key` was freed by autograd."""
        entry = self.live[key]
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            self.by_part[entry[2]] -= entry[0]
            self.by_source[entry[3]] -= entry[0]
            del self.live[key]

    @contextmanager
    def labelled(self, modules: dict[str, nn.Module]) -> Iterator[None]:
        """Label what each module's forward saves with its name."""
        handles = []
        for name, module in modules.items():
            self.weight_shapes[name] = {tuple(p.shape) for p in module.parameters()}

            def enter(*_: Any, name: str = name) -> None:
                self.label = name

            def leave(*_: Any) -> None:
                self.label = "losses"

            handles += [
                module.register_forward_pre_hook(enter),
                module.register_forward_hook(leave),
            ]
        try:
            with torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack):
                yield
        finally:
            for handle in handles:
                handle.remove()


class _Kept:
    """A saved tensor held for autograd; tells the counter when autograd lets go of it."""

    __slots__ = ("counter", "key", "tensor")

    def __init__(self, counter: SavedTensors, key: int, tensor: torch.Tensor) -> None:
        self.counter, self.key, self.tensor = counter, key, tensor

    def __del__(self) -> None:
        self.counter.release(self.key)


EXTRA: list[str] = []  # --set: more config settings (e.g. model.reference=true)


def seed_state(amp: str, size: int, batch: int, device: torch.device) -> State:
    """The seed recipe's training state at `size` and `batch` on `device` (with EXTRA)."""
    sets = [f"train.amp={amp}", "loss.vgg_weights=random", f"data.image_size={size}", *EXTRA]
    sets += [f"train.batch_size={batch}", f"train.device={device}"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "random VGG16 weights": intended here
        return build_state(load_config(SEED_CONFIG, sets), device, steps_per_epoch=1000)


def networks(state: State) -> dict[str, nn.Module]:
    """The step's networks by name."""
    found = {
        "generator": state.generator,
        "discriminator": state.discriminator,
        "perceptual": state.perceptual,
    }
    return {name: module for name, module in found.items() if module is not None}


def nbytes(tensors: Iterator[torch.Tensor]) -> int:
    """Total bytes of `tensors`."""
    return sum(t.numel() * t.element_size() for t in tensors)


def static_bytes(state: State) -> dict[str, int]:
    """Weights (with buffers), gradients and AdamW states: known without running a step."""
    weights = sum(nbytes(m.parameters()) + nbytes(m.buffers()) for m in networks(state).values())
    trained = [m for m in (state.generator, state.discriminator) if m is not None]
    gradients = sum(nbytes(m.parameters()) for m in trained)  # fp32, as the parameters
    return {"weights": weights, "gradients": gradients, "adamw_states": 2 * gradients}


def saved_peak(amp: str, size: int, batch: int, device: torch.device) -> dict[str, Any]:
    """Peak bytes kept for backward during one training step, and their parts at the peak."""
    state = seed_state(amp, size, batch, device)
    exclude = {
        t.untyped_storage().data_ptr()
        for m in networks(state).values()
        for t in [*m.parameters(), *m.buffers()]
    }
    counter = SavedTensors(exclude)
    m = state.config.model
    reference = ("match" if m.reference_match else "palette") if m.reference else ""
    data = harness.random_batch(batch, size, device, m.hints, reference)
    with counter.labelled(networks(state)):
        train_step(state, data)
    return {
        "peak": counter.peak,
        "parts": counter.peak_by_part,
        "sources": counter.peak_by_source,
        "static": static_bytes(state),
    }


def scaled(probe: dict[str, Any], factor: float) -> dict[str, Any]:
    """A probe's peak with its activations multiplied by `factor` (more images or pixels)."""

    def scale(values: dict[str, int]) -> dict[str, float]:
        return {k: v * factor if k.endswith("activations") else v for k, v in values.items()}

    parts = scale(probe["parts"])
    return {
        "peak": sum(parts.values()),
        "parts": parts,
        "sources": scale(probe["sources"]),
        "static": probe["static"],
    }


def measured_peak(amp: str, size: int, batch: int, device: torch.device) -> dict[str, float]:
    """CUDA: memory allocated at rest after warm-up, and the peaks over one more step."""
    gc.collect()
    torch.cuda.empty_cache()  # so the reserved peak is this run's own
    state = seed_state(amp, size, batch, device)
    m = state.config.model
    reference = ("match" if m.reference_match else "palette") if m.reference else ""
    data = harness.random_batch(batch, size, device, m.hints, reference)
    for _ in range(2):  # the optimizers' states exist after the first step
        train_step(state, data)
    harness.sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    at_rest = torch.cuda.memory_allocated(device)
    train_step(state, data)
    harness.sync(device)
    result = {
        "at_rest": at_rest / GIB,
        "peak_allocated": torch.cuda.max_memory_allocated(device) / GIB,
        "peak_reserved": torch.cuda.max_memory_reserved(device) / GIB,
    }
    del state, data
    torch.cuda.empty_cache()
    return result


def estimate(args: argparse.Namespace, amp: str, device: torch.device) -> dict[str, Any]:
    """Static bytes + the saved-tensor peak counted at the probe size and scaled to the target
    (+ the count at full size and the measurement, on CUDA), in GiB."""
    probe = saved_peak(amp, args.probe_size, args.probe_batch, device)
    factor = args.batch * args.size**2 / (args.probe_batch * args.probe_size**2)
    peak = scaled(probe, factor)
    static = peak["static"]
    result: dict[str, Any] = {k: v / GIB for k, v in static.items()}
    result["saved_for_backward_peak"] = peak["peak"] / GIB
    result["saved_parts_at_peak"] = {k: v / GIB for k, v in peak["parts"].items()}
    result["saved_sources_at_peak"] = {k: v / GIB for k, v in peak["sources"].items() if v}
    result["estimate"] = sum(static.values()) / GIB + result["saved_for_backward_peak"]
    if device.type == "cuda":
        direct = saved_peak(amp, args.size, args.batch, device)
        result["saved_for_backward_peak_direct"] = direct["peak"] / GIB
        result["estimate_direct"] = (sum(static.values()) + direct["peak"]) / GIB
        result["measured"] = measured_peak(amp, args.size, args.batch, device)
    return result


def print_results(results: dict[str, Any], args: argparse.Namespace) -> None:
    """The estimate's parts per AMP mode, and the measurement beside it on CUDA."""
    header = ["amp", "weights", "grads", "AdamW", "saved peak", "estimate GiB"]
    cuda = any("measured" in r for r in results.values())
    if cuda:
        header += ["direct est.", "measured alloc", "measured reserved"]
    rows = []
    for amp, r in results.items():
        row = [amp, r["weights"], r["gradients"], r["adamw_states"]]
        row += [r["saved_for_backward_peak"], r["estimate"]]
        if cuda:
            m = r["measured"]
            row += [r["estimate_direct"], m["peak_allocated"], m["peak_reserved"]]
        rows.append(row)
    print(harness.table(header, rows))
    for amp, r in results.items():
        parts = sorted(r["saved_parts_at_peak"].items(), key=lambda kv: -kv[1])
        split = ", ".join(f"{k} {v:.2f}" for k, v in parts if v >= 0.005)
        print(f"{amp}: saved for backward at the peak, GiB: {split}")
        sources = sorted(r["saved_sources_at_peak"].items(), key=lambda kv: -kv[1])[:8]
        print(harness.table([f"{amp}: kept for backward at the peak, by line", "GiB"], sources))
    print(
        f"saved tensors counted at {args.probe_size}px batch {args.probe_batch}, activations "
        f"scaled linearly to {args.size}px batch {args.batch}; transient buffers not counted"
    )


def main() -> None:
    """Estimate (and on CUDA measure) each AMP mode; print; write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--amp", nargs="+", help="default: off bf16 (CPU), off bf16 fp16 (CUDA)")
    parser.add_argument("--probe-size", type=int, default=256, help="a multiple of 256 (depth 8)")
    parser.add_argument("--probe-batch", type=int, default=1)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--set", action="append", default=[], help="a config setting (repeat)")
    args = parser.parse_args()
    EXTRA.extend(args.set)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = harness.pick_device(args.device)
    modes = args.amp or (["off", "bf16", "fp16"] if device.type == "cuda" else ["off", "bf16"])
    results: dict[str, Any] = {}
    for amp in modes:
        results[amp] = estimate(args, amp, device)
        print(amp, {k: v for k, v in results[amp].items() if isinstance(v, float)}, flush=True)
    meta = harness.machine(device) | {
        "size": args.size,
        "batch": args.batch,
        "probe_size": args.probe_size,
        "probe_batch": args.probe_batch,
        "config": "configs/seed-anime512.yaml + loss.vgg_weights=random",
        "unit": "GiB",
    }
    print(f"\nseed recipe memory, {args.size}px batch {args.batch}: {harness.describe(meta)}")
    print_results(results, args)
    harness.write_json(args.json, results | {"meta": meta})


if __name__ == "__main__":
    main()
