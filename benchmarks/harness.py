"""What every benchmark shares: the device, timing, a description of the machine, JSON output.

The benchmarks import `colorgan` from the repository they sit in (not from whatever colorgan the
environment has installed), so a fresh clone measures its own code.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from colorgan.batch import Batch  # noqa: E402
from colorgan.checkpoint import save_checkpoint  # noqa: E402
from colorgan.config import DataConfig, load_config, to_dict  # noqa: E402
from colorgan.hints import simulate  # noqa: E402
from colorgan.models import build_generator  # noqa: E402
from colorgan.reference import summarize  # noqa: E402


def random_checkpoint(path: Path, size: int) -> Path:
    """A colorgan checkpoint with seeded random weights: U-Net width 64, depth 8, working size
    `size`."""
    config = load_config(
        None,
        [
            "model.encoder=unet",
            f"data.image_size={size}",
            "model.base_channels=64",
            "model.depth=8",
        ],
    )
    torch.manual_seed(0)
    generator = build_generator(config.model)
    save_checkpoint({"config": to_dict(config), "generator": generator.state_dict()}, path)
    return path


def random_batch(
    batch: int, size: int, device: torch.device, hints: bool = False, reference: str = ""
) -> Batch:
    """A fixed random training batch: l in [-1, 1], ab in [-0.5, 0.5]; with `hints` (a
    model.hints config), color points drawn by the data's simulated user (hints.simulate at
    data.hint_p and data.hint_max_patch's defaults: mean 7 points, none in 1 of 8); with
    `reference` "palette" each image's own summary, "match" also its own exemplar (one slot)."""
    gen = torch.Generator().manual_seed(0)
    l = torch.rand(batch, 1, size, size, generator=gen) * 2 - 1
    ab = torch.rand(batch, 2, size, size, generator=gen) - 0.5
    user = (DataConfig.hint_p, DataConfig.hint_max_patch)
    maps = torch.stack([simulate(a, *user, gen) for a in ab]) if hints else None
    given = {}
    if reference:
        given["reference"] = summarize(ab).to(device)
    if reference == "match":
        given["exemplar"] = torch.cat([l, ab, torch.ones_like(l)], dim=1)[:, None].to(device)
    hint_maps = None if maps is None else maps.to(device)
    return Batch(l=l.to(device), ab=ab.to(device), hints=hint_maps, **given)


def pick_device(name: str) -> torch.device:
    """'auto' -> cuda when present, else cpu; anything else as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def sync(device: torch.device) -> None:
    """Wait for queued device work, so a wall-clock reading covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds one call of `fn` takes, device work included."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def median_seconds(fn: Callable[[], Any], device: torch.device, warmup: int, runs: int) -> float:
    """Median seconds of `runs` calls of `fn` after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    return statistics.median(timed(fn, device) for _ in range(runs))


def cpu_model() -> str:
    """The CPU's model name (lscpu), or what platform knows."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        out = ""
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine(device: torch.device) -> dict[str, Any]:
    """Date, device, CPU, core and thread counts, load and library versions, for the JSON."""
    meta: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "device": str(device),
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    with contextlib.suppress(OSError):  # not on every platform
        meta["load_average_1min"] = os.getloadavg()[0]
    if device.type == "cuda":
        meta["gpu"] = torch.cuda.get_device_name(device)
        meta["cuda"] = torch.version.cuda
    return meta


def describe(meta: dict[str, Any]) -> str:
    """One line saying where the numbers come from."""
    where = meta.get("gpu") or f"{meta['cpu']} ({meta['torch_threads']} threads)"
    load = meta.get("load_average_1min")
    return f"{meta['date']}  {where}  torch {meta['torch']}" + (
        f"  load {load:.1f}" if load is not None else ""
    )


def write_json(path: Path | None, results: dict[str, Any]) -> None:
    """Write `results` to `path` (if given) as indented JSON."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}")


def table(header: list[str], rows: list[list[Any]]) -> str:
    """A plain-text table; floats printed with 3 significant-ish digits."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
        return str(value)

    text = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) for i, h in enumerate(header)]
    lines = [
        "  ".join(
            h.ljust(w) if i == 0 else h.rjust(w)
            for i, (h, w) in enumerate(zip(header, widths, strict=True))
        )
    ]
    for row in text:
        lines.append(
            "  ".join(
                v.ljust(w) if i == 0 else v.rjust(w)
                for i, (v, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    return "\n".join(lines)
