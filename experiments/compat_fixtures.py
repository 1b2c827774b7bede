"""Old models still colorize the same: write small checkpoints and model folders with one
version of colorgan, with the pixels that version colorizes from them, then check them with
another.

    # with the old code (a worktree of commit 94a4ed9, the last one before #32):
    python experiments/compat_fixtures.py write DIR [--lite0]
    # with the new code:
    python experiments/compat_fixtures.py check DIR

`write` builds seeded random-weight models that take color points, a reference and predict
uncertainty (a from-scratch U-Net; with --lite0 also the shipped recipe's Lite0 generator at
stride 4 with the affine upsampler), saves each as a training checkpoint and exports a model
folder of it, then colorizes one generated picture with nothing, three points, a reference, a
caution and all three, saving each output as PNG. `check` loads every model in DIR with the
running code and says whether each output is pixel for pixel the same. tests/test_compat.py
runs `check` on the U-Net fixtures committed under tests/data/compat (the Lite0 ones are 14 MB
each, so they are not committed).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from colorgan import Colorizer, Hint

MODELS = {
    "unet": ["model.encoder=unet", "model.depth=3", "model.base_channels=8"],
    "lite0": [
        "model.encoder=efficientnet_lite0",
        "model.depth=5",
        "model.base_channels=8",
        "model.output_stride=4",
        "model.upsample=affine",
    ],
}
CONDITIONS = ["model.hints=true", "model.reference=true", "model.uncertainty=true",
              "data.image_size=32", "model.caution=0.25"]  # fmt: skip
POINTS = [Hint(5, 6, "#3366ff"), Hint(30, 20, "#ff2200"), Hint(40, 35, "#22cc44", radius=2)]


def picture(seed: int, size: tuple[int, int] = (48, 40)) -> Image.Image:
    """A colorful generated picture (shapes on a colored background)."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", size, tuple(int(v) for v in rng.integers(40, 216, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(5):
        x0, y0 = int(rng.integers(0, size[0] // 2)), int(rng.integers(0, size[1] // 2))
        x1, y1 = x0 + int(rng.integers(8, size[0] // 2)), y0 + int(rng.integers(8, size[1] // 2))
        draw.ellipse((x0, y0, x1, y1), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return image


def requests() -> dict[str, dict]:
    """What each output is asked with (keyword arguments of `Colorizer.colorize`)."""
    reference = picture(7)
    return {
        "plain": {},
        "points": {"hints": POINTS},
        "reference": {"reference": reference},
        "caution": {"caution": 0.8},
        "all": {"hints": POINTS, "reference": reference, "caution": 0.5},
    }


def write(folder: Path, kinds: list[str]) -> None:
    from colorgan.checkpoint import save_checkpoint
    from colorgan.config import load_config, to_dict
    from colorgan.modeldir import export_model_dir
    from colorgan.models import build_generator

    folder.mkdir(parents=True, exist_ok=True)
    for kind in kinds:
        config = load_config(None, [*MODELS[kind], *CONDITIONS])
        torch.manual_seed(0)
        generator = build_generator(config.model, pretrained=kind == "lite0")
        with torch.no_grad():  # zero-initialised branches made visible
            for name, tensor in generator.state_dict().items():
                zero = tensor.is_floating_point() and tensor.numel() and not tensor.any()
                if zero and "running" not in name:
                    tensor.normal_(0.0, 0.3)
        path = folder / f"{kind}.pt"
        save_checkpoint({"config": to_dict(config), "generator": generator.state_dict()}, path)
        export_model_dir(path, folder / f"{kind}-folder")
    picture(1).save(folder / "input.png")
    for model in sorted(folder.glob("*.pt")) + sorted(folder.glob("*-folder")):
        colorizer = Colorizer.from_checkpoint(model, device="cpu")
        for name, kwargs in requests().items():
            out = colorizer.colorize(picture(1), **kwargs)
            out.save(folder / f"{model.name}.{name}.png")
    print(f"wrote {folder}")


def check(folder: Path) -> list[str]:
    """Every saved output that the running code colorizes differently: 'MODEL.REQUEST: why'."""
    differ = []
    image = Image.open(folder / "input.png").convert("RGB")
    for model in sorted(folder.glob("*.pt")) + sorted(folder.glob("*-folder")):
        colorizer = Colorizer.from_checkpoint(model, device="cpu")
        for name, kwargs in requests().items():
            want = np.asarray(Image.open(folder / f"{model.name}.{name}.png"))
            got = np.asarray(colorizer.colorize(image, **kwargs))
            if got.shape != want.shape:
                differ.append(f"{model.name}.{name}: shape {got.shape}, not {want.shape}")
            elif not np.array_equal(got, want):
                diff = np.abs(got.astype(int) - want.astype(int)).max()
                differ.append(f"{model.name}.{name}: max difference {diff}")
    return differ


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["write", "check"])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--lite0", action="store_true", help="also the Lite0 recipe generator")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.action == "write":
        write(args.folder, ["unet", "lite0"] if args.lite0 else ["unet"])
        return 0
    differ = check(args.folder)
    print(json.dumps({"folder": str(args.folder), "differ": differ}, indent=1))
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
