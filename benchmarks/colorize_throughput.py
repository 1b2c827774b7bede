"""Images per second of `colorgan colorize` on a folder: today's sequential path (decode, run,
encode one batch after another, unfolded model), the pipeline (decoding workers, full batches,
encoding processes, BatchNorm folded), and the model alone on the same batches (the bound).

    python benchmarks/colorize_throughput.py --n 48 --size 512 --json FILE

Inputs are generated color scenes of --size x --size pixels saved as PNG (no data needed), or
with --inputs FOLDER that folder's first --n images scaled to --size wide; the model is the
default generator (Lite0 U-Net, width 32) with its ImageNet encoder and a random decoder, or
the one `--set model.KEY=VALUE ...` describes (the recipes': --set model.output_stride=4
model.base_channels=16 model.upsample=affine), or a trained --model CHECKPOINT, working at
its training size (256; --working-size sets another). A trained model's colors on real images
cost more to finish (gamut fit, PNG) than a random decoder's on generated scenes
(benchmarks/colorize_stages.py). The three are measured in turns (--repeats rounds), so a
noisy machine hits all alike; the JSON holds each round and the medians. A model that takes
color points (model.hints) also runs the pipeline with 10 points per image where Zhang et al.'s
simulated user puts them (`pipeline_points`, and its speed against the pipeline without).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from points_cost import POINTS, user_points

from colorgan.batch import Batch
from colorgan.checkpoint import load_generator, save_checkpoint
from colorgan.colorize import Colorizer, _generator_predict, lightness, resize_l
from colorgan.config import load_config, to_dict
from colorgan.device import resolve_device
from colorgan.export import export_onnx
from colorgan.files import find_images, load_picture
from colorgan.hints import Hint
from colorgan.jobs import plan_jobs
from colorgan.models import build_generator, bytes_per_pixel
from colorgan.pipeline import DEFAULT_WORKERS, Output, colorize_folder
from colorgan.request import Request
from tests.conftest import make_color_image


def _setup(
    root: Path, n: int, size: int, settings: list[str], folder: Path | None, model: Path | None
) -> tuple[Path, Path]:
    """The inputs (generated scenes, or the folder's first n images scaled to `size` wide, as
    PNG) and the model (`model`, or a new one with `settings`: pretrained encoder, random
    decoder)."""
    inputs = root / "in"
    inputs.mkdir()
    sources = find_images(folder)[:n] if folder else []
    if folder and len(sources) < n:
        raise SystemExit(f"{folder}: {len(sources)} images, fewer than --n {n}")
    for i in range(n):
        if folder:
            with Image.open(sources[i]) as opened:
                image = opened.convert("RGB")
            image = image.resize((size, max(1, round(size * image.height / image.width))))
        else:
            image = make_color_image(i, (size, size))
        image.save(inputs / f"img{i:04d}.png")
    if model is not None:
        return inputs, model
    config = load_config(None, settings)
    torch.manual_seed(0)
    generator = build_generator(config.model, pretrained=True)
    model = root / "model.pt"
    save_checkpoint({"config": to_dict(config), "generator": generator.state_dict()}, model)
    return inputs, model


def _colorizers(model: Path, device: torch.device, batch: int) -> tuple[Colorizer, Colorizer]:
    """(today's: the model as trained, BatchNorm not folded; the pipeline's: folded)."""
    fast = Colorizer.from_checkpoint(model, device, batch)
    generator, _ = load_generator(model)
    generator.to(device)
    plain = Colorizer(
        _generator_predict(generator), fast.image_size, fast.multiple, device, batch,
        bytes_per_pixel=bytes_per_pixel(generator),
    )  # fmt: skip
    return plain, fast


def _sequential(plain: Colorizer, inputs: Path, out: Path, size: int | None) -> float:
    """The sequential path: the pipeline with --workers 0 (decode, model, encode in turn)."""
    jobs, _ = plan_jobs([inputs], out)
    start = time.perf_counter()
    written = colorize_folder(plain, jobs, Output(size=size, workers=0)).written
    return written / (time.perf_counter() - start)


def _pipeline(
    fast: Colorizer, inputs: Path, out: Path, workers: int, size: int | None,
    hints: dict[Path, list[Hint]] | None = None,
) -> float:  # fmt: skip
    jobs, _ = plan_jobs([inputs], out)
    requests = {source: Request(tuple(points)) for source, points in (hints or {}).items()}
    start = time.perf_counter()
    written = colorize_folder(fast, jobs, Output(size=size, workers=workers), requests).written
    return written / (time.perf_counter() - start)


def _user_points(inputs: Path) -> dict[Path, list[Hint]]:
    """POINTS points per input where Zhang et al.'s simulated user puts them, in its colors."""
    points = {}
    for path in find_images(inputs):
        with Image.open(path) as opened:
            points[path] = user_points(opened.convert("RGB"), POINTS)
    return points


def _model_only(fast: Colorizer, inputs: Path, device: torch.device, size: int | None) -> float:
    """The folded model alone on the same working-size batches (decoded beforehand)."""
    files = sorted(inputs.glob("*.png"))
    shapes: dict[tuple[int, int], list[torch.Tensor]] = {}  # batches of one shape, as the pipeline
    for path in files:
        picture = load_picture(path)
        shape = fast.working_shape(picture, size)
        l_small = resize_l(lightness(picture.rgb, torch.device("cpu")), shape)
        shapes.setdefault(shape, []).append(l_small)
    step = fast.batch_size
    batches = [
        torch.cat(smalls[i : i + step]).to(device)
        for smalls in shapes.values()
        for i in range(0, len(smalls), step)
    ]
    start = time.perf_counter()
    for l_small in batches:
        fast.predict(Batch(l=l_small))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return len(files) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=48, help="number of input images")
    parser.add_argument("--size", type=int, default=512, help="side of the input images")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides of the model"
    )
    parser.add_argument(
        "--onnx", action="store_true", help="also the pipeline and the model on onnxruntime"
    )
    parser.add_argument("--inputs", type=Path, help="a folder of images (default: generated)")
    parser.add_argument("--model", type=Path, help="a checkpoint (default: a new model)")
    parser.add_argument(
        "--working-size", type=int, help="colorize's --size (default: the model's training size)"
    )
    args = parser.parse_args()
    device = resolve_device(args.device)
    rounds: dict[str, list[float]] = {"sequential": [], "pipeline": [], "model_only": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        inputs, model = _setup(root, args.n, args.size, args.set, args.inputs, args.model)
        plain, fast = _colorizers(model, device, args.batch_size)
        onnx = None
        if args.onnx:
            export_onnx(model, root / "model.onnx")
            onnx = Colorizer.from_onnx(root / "model.onnx", str(device), args.batch_size)
            rounds |= {"pipeline_onnx": [], "model_only_onnx": []}
        size, workers = args.working_size, args.workers
        points = _user_points(inputs) if fast.hints else None
        if points is not None:
            rounds["pipeline_points"] = []
        for r in range(args.repeats):
            rounds["sequential"].append(_sequential(plain, inputs, root / f"seq{r}", size))
            rounds["pipeline"].append(_pipeline(fast, inputs, root / f"pipe{r}", workers, size))
            rounds["model_only"].append(_model_only(fast, inputs, device, size))
            if points is not None:  # a model that takes points: the pipeline with them too
                out = root / f"points{r}"
                rounds["pipeline_points"].append(
                    _pipeline(fast, inputs, out, workers, size, points)
                )
            if onnx is not None:
                out = root / f"onnx{r}"
                rounds["pipeline_onnx"].append(_pipeline(onnx, inputs, out, workers, size))
                rounds["model_only_onnx"].append(_model_only(onnx, inputs, device, size))
            print({k: round(v[-1], 2) for k, v in rounds.items()}, flush=True)
    result: dict[str, Any] = {
        name: {"images_per_second": statistics.median(values), "rounds": values}
        for name, values in rounds.items()
    }
    seq_ips = result["sequential"]["images_per_second"]
    result["pipeline"]["speedup_over_sequential"] = (
        result["pipeline"]["images_per_second"] / seq_ips
    )
    result["pipeline"]["fraction_of_model_only"] = (
        result["pipeline"]["images_per_second"] / result["model_only"]["images_per_second"]
    )
    if "pipeline_points" in result:
        result["pipeline_points"]["speed_against_no_points"] = (
            result["pipeline_points"]["images_per_second"] / result["pipeline"]["images_per_second"]
        )
    result["setup"] = {
        "n": args.n, "size": args.size, "batch_size": args.batch_size, "workers": args.workers,
        "device": str(device), "threads": torch.get_num_threads(), "repeats": args.repeats,
        "inputs": str(args.inputs or "generated"), "model": str(args.model or args.set),
        "working_size": args.working_size,
    }  # fmt: skip
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
