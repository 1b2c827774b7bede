"""What one image costs in `colorgan colorize` besides the model: decoding, its full-resolution
L, scaling L to the working size, joining the model's ab to L (with the gamut fit), encoding
the PNG (at the level colorize writes, and at Pillow's default 6), in ms of one torch thread.

    python benchmarks/colorize_stages.py --size 512 [--model CHECKPOINT] [--inputs FOLDER]

Without --inputs the images are generated color scenes (no data needed); with it, the folder's
images scaled to --size wide. Without --model the ab is the model's-to-be of
colorize_throughput.py (the default generator, random decoder); with it, a trained one's, whose
more saturated colors leave more pixels for the gamut fit.
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
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from colorgan.checkpoint import save_checkpoint
from colorgan.color import AB_SCALE, _outside, lab_to_rgb
from colorgan.colorize import PNG_LEVEL, Colorizer, join, lightness, resize_l
from colorgan.config import load_config, to_dict
from colorgan.files import find_images, load_picture, to_image
from colorgan.generator import build_generator
from tests.conftest import make_color_image

CPU = torch.device("cpu")


def _images(folder: Path | None, size: int, count: int, root: Path) -> list[Path]:
    """`count` PNG files of `size` px wide: generated scenes, or the folder's images scaled."""
    paths = []
    sources = find_images(folder)[:count] if folder else [None] * count
    for i, source in enumerate(sources):
        if source is None:
            image = make_color_image(i, (size, size))
        else:
            with Image.open(source) as opened:
                image = opened.convert("RGB")
            image = image.resize((size, max(1, round(size * image.height / image.width))))
        paths.append(root / f"img{i:03d}.png")
        image.save(paths[-1])
    return paths


def _colorizer(model: Path | None, root: Path) -> Colorizer:
    if model is None:
        config = load_config(None, [])
        torch.manual_seed(0)
        generator = build_generator(config.model, pretrained=True)
        model = root / "model.pt"
        save_checkpoint({"config": to_dict(config), "generator": generator.state_dict()}, model)
    return Colorizer.from_checkpoint(model, CPU, 1)


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
        paths = _images(args.inputs, args.size, args.n, root)
        colorizer = _colorizer(args.model, root)
        pictures = [load_picture(path) for path in paths]
        ls = [lightness(p.rgb, CPU) for p in pictures]
        smalls = [
            resize_l(l, colorizer.working_shape(p)) for l, p in zip(ls, pictures, strict=True)
        ]
        abs_ = [colorizer.predict_maps(s, [None])[0].ab for s in smalls]
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
