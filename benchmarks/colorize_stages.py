"""What one image costs in `colorgan colorize` besides the model: decoding, its full-resolution
L, scaling L to the working size, joining the model's ab to L (with the gamut fit), encoding
the PNG (at the level colorize writes, and at Pillow's default 6), in ms of one torch thread.

    python benchmarks/colorize_stages.py --size 512 [--model CHECKPOINT] [--inputs FOLDER]

Inputs and model are colorize_throughput.py's: generated color scenes (no data needed), or with
--inputs the folder's images scaled to --size wide; the default generator with a random
decoder, or with --model a trained one, whose more saturated colors leave more pixels for the
gamut fit.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from colorize_throughput import _setup  # the same inputs and model

from colorgan.color import AB_SCALE, _outside, lab_to_rgb
from colorgan.colorize import PNG_LEVEL, Colorizer, join, lightness, resize_l
from colorgan.files import load_picture, to_image
from colorgan.request import NOTHING

CPU = torch.device("cpu")


def _median_ms(step: Callable[[int], object], count: int) -> float:
    step(0)  # warm up
    times = []
    for i in range(count):
        start = time.perf_counter()
        step(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="width of the images")
    parser.add_argument("--n", type=int, default=12, help="number of images")
    parser.add_argument("--model", type=Path, help="a checkpoint (default: random decoder)")
    parser.add_argument("--inputs", type=Path, help="a folder of images (default: generated)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        inputs, model = _setup(root, args.n, args.size, [], args.inputs, args.model)
        paths = sorted(inputs.glob("*.png"))
        colorizer = Colorizer.from_checkpoint(model, CPU, 1)
        pictures = [load_picture(path) for path in paths]
        ls = [lightness(p.rgb, CPU) for p in pictures]
        smalls = [
            resize_l(l, colorizer.working_shape(p)) for l, p in zip(ls, pictures, strict=True)
        ]
        abs_ = [colorizer.predict_batch(s, [NOTHING])[0].ab for s in smalls]
        images = [to_image(join(l, ab), None) for l, ab in zip(ls, abs_, strict=True)]
        outside = []
        for l, ab in zip(ls, abs_, strict=True):
            full = torch.nn.functional.interpolate(ab, size=l.shape[-2:], mode="bilinear")
            lab = torch.cat([(l + 1) * 50, full.clamp(-1, 1) * AB_SCALE], 1)
            outside.append(float(_outside(lab_to_rgb(lab, clip=False)).float().mean()))

        def png(level: int) -> Callable[[int], object]:
            return lambda i: images[i].save(io.BytesIO(), format="PNG", compress_level=level)

        stages: dict[str, Callable[[int], object]] = {
            "decode": lambda i: load_picture(paths[i]),
            "lightness": lambda i: lightness(pictures[i].rgb, CPU),
            "resize_l": lambda i: resize_l(ls[i], tuple(smalls[i].shape[-2:])),  # type: ignore[arg-type]
            "join": lambda i: join(ls[i], abs_[i]),
            f"png level {PNG_LEVEL}": png(PNG_LEVEL),
            "png level 6": png(6),
        }
        print(f"{args.n} images {args.size} px wide, {args.threads} thread(s); pixels outside "
              f"sRGB before the gamut fit: {100 * statistics.mean(outside):.1f} %")  # fmt: skip
        for name, step in stages.items():
            print(f"{name:>12}: {_median_ms(step, args.n):6.1f} ms")


if __name__ == "__main__":
    main()
