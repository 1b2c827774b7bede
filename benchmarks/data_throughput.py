"""Training-loader images/s at 512 px from 768x768 JPEG and PNG files, before and after
`colorgan prepare`.

The loader is training's own: colorgan.data.ColorImages (decode, EXIF, RGB, resize to short side
512, random crop and flip) + EpochSampler + DataLoader with --workers processes, batch 8,
pin_memory on CUDA. Images are counted after --warmup batches (worker start-up excluded), over
epochs as needed, as a run with persistent workers sees them (files in the page cache).

With --generate N (the default, N=64), N synthetic 768x768 photo-like images (smooth color
fields, shapes with edges, grain) are written as JPEG (quality 95) and as PNG to a temporary
folder; with --src DIR, that folder's images are used instead. Each set is then prepared to
--size with `colorgan prepare` (format kept) and loaded again.

    python benchmarks/data_throughput.py --generate 64 --workers 2 --json data.json
    python benchmarks/data_throughput.py --src /data/anime --workers 4
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import harness
import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import DataLoader

from colorgan.data import ColorImages, EpochSampler
from colorgan.files import find_images
from colorgan.prepare import Settings, prepare

SOURCE_SIZE = 768


def synthetic_image(seed: int, size: int = SOURCE_SIZE) -> Image.Image:
    """A photo-like RGB image: multi-scale smooth color noise, a few shapes with hard edges
    and outlines, and grain, so it compresses about as real pictures do."""
    rng = np.random.default_rng(seed)
    field = np.zeros((size, size, 3), np.float32)
    for cells, weight in ((3, 90.0), (12, 40.0), (48, 15.0)):
        grid = rng.uniform(-1, 1, (cells, cells, 3)).astype(np.float32)
        layers = [
            np.asarray(Image.fromarray(grid[..., c]).resize((size, size), Image.Resampling.BICUBIC))
            for c in range(3)
        ]
        field += weight * np.stack(layers, axis=-1)
    image = Image.fromarray(np.clip(field + 128, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = (int(v) for v in rng.integers(0, size - 64, 2))
        x1, y1 = x0 + int(rng.integers(32, size // 3)), y0 + int(rng.integers(32, size // 3))
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x0, y0, x1, y1), fill=color, outline=(20, 20, 20), width=3)
    grain = rng.normal(0, 6, (size, size, 3))
    return Image.fromarray(np.clip(np.asarray(image) + grain, 0, 255).astype(np.uint8))


def generate(folder: Path, count: int) -> dict[str, Path]:
    """`count` synthetic images as JPEG (quality 95) in folder/jpg and as PNG in folder/png."""
    sets = {"jpg": folder / "jpg", "png": folder / "png"}
    for path in sets.values():
        path.mkdir(parents=True)
    for i in range(count):
        image = synthetic_image(i)
        image.save(sets["jpg"] / f"img_{i:04d}.jpg", quality=95)
        image.save(sets["png"] / f"img_{i:04d}.png")
    return sets


def loader_rate(
    folder: Path, size: int, workers: int, count: int, warmup: int, device: torch.device
) -> float:
    """Images/s of training's loader over `folder` at `size`, `count` images after `warmup`
    batches, batch 8."""
    paths = find_images(folder)
    sampler = EpochSampler(len(paths), seed=0, shuffle=True)
    loader = DataLoader(
        ColorImages(paths, size, train=True),
        batch_size=8,
        sampler=sampler,
        drop_last=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )
    seen, batches, epoch, start = 0, 0, 0, time.perf_counter()
    while seen < count:
        sampler.set_epoch(epoch)
        for rgb in loader:
            batches += 1
            if batches <= warmup:
                start = time.perf_counter()
                continue
            seen += rgb.shape[0]
            if seen >= count:
                break
        epoch += 1
    return seen / (time.perf_counter() - start)


def folder_megabytes(folder: Path) -> float:
    """Mean file size under `folder`, MB."""
    sizes = [p.stat().st_size for p in find_images(folder)]
    return sum(sizes) / len(sizes) / 1e6


def measure_set(
    name: str, folder: Path, out: Path, args: argparse.Namespace, device: torch.device
) -> dict[str, Any]:
    """Loader rate on `folder`, then prepare it into `out` (timed) and the loader rate there."""
    raw = loader_rate(folder, args.size, args.workers, args.count, args.warmup, device)
    start = time.perf_counter()
    summary = prepare(
        folder, out, Settings(args.size), workers=args.prepare_workers, progress=False
    )
    prepare_seconds = time.perf_counter() - start
    prepared = loader_rate(out, args.size, args.workers, args.count, args.warmup, device)
    result = {
        "images": summary.total,
        "source_mb_per_image": folder_megabytes(folder),
        "prepared_mb_per_image": folder_megabytes(out),
        "loader_images_per_second": raw,
        "prepared_loader_images_per_second": prepared,
        "prepare_images_per_second": summary.total / prepare_seconds,
    }
    print(f"{name}: {result}", flush=True)
    return result


def main() -> None:
    """Generate or take the data, measure each set raw and prepared, print, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--src", type=Path, help="a folder of images (default: generate)")
    parser.add_argument("--generate", type=int, default=64, metavar="N", help="default 64")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--count", type=int, default=200, help="images timed per measurement")
    parser.add_argument("--warmup", type=int, default=2, help="batches before timing")
    parser.add_argument("--prepare-workers", type=int, help="default: CPU cores")
    parser.add_argument("--device", default="auto", help="pin_memory when this is CUDA")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    device = harness.pick_device(args.device)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.src is not None:
            sets = {args.src.name or "src": args.src}
        else:
            start = time.perf_counter()
            sets = generate(Path(tmp) / "raw", args.generate)
            print(
                f"generated {args.generate} {SOURCE_SIZE}px images as JPEG and PNG in "
                f"{time.perf_counter() - start:.0f} s",
                flush=True,
            )
        for name, folder in sets.items():
            results[name] = measure_set(name, folder, Path(tmp) / "prepared" / name, args, device)
    meta = harness.machine(device) | {
        "size": args.size,
        "workers": args.workers,
        "count": args.count,
        "source": str(args.src) if args.src else f"generated {args.generate} x {SOURCE_SIZE}px",
        "pin_memory": device.type == "cuda",
    }
    results["meta"] = meta
    print(f"\nloader at {args.size}px, {args.workers} workers: {harness.describe(meta)}")
    header = ["set", "MB/img", "loader img/s", "prepared MB/img", "prepared img/s", "prepare img/s"]
    keys = [
        "source_mb_per_image",
        "loader_images_per_second",
        "prepared_mb_per_image",
        "prepared_loader_images_per_second",
        "prepare_images_per_second",
    ]
    rows = [[name, *(r[k] for k in keys)] for name, r in results.items() if name != "meta"]
    print(harness.table(header, rows))
    harness.write_json(args.json, results)


if __name__ == "__main__":
    main()
