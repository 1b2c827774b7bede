"""Shared fixtures: folders of generated color images (tests never use ../shared/data)."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from colorgan.checkpoint import save_checkpoint
from colorgan.config import load_config, to_dict
from colorgan.generator import MATCH_LEVEL, Lite0UNet
from colorgan.matching import MATCH_CHANNELS
from colorgan.models import build_generator

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny.yaml"
UNET = ["model.encoder=unet"]  # the from-scratch U-Net (the default is the Lite0 encoder)


def train_args(data: Path, run_dir: Path, *extra: str) -> list[str]:
    """`colorgan train` arguments: the tiny config, quiet, then `extra`."""
    return ["train", "--config", str(TINY), "--data", str(data), "--run-dir", str(run_dir),
            "--quiet", *extra]  # fmt: skip


# A small training step for unit tests of build_state/train_step: 32 px, tiny G and D, no VGG.
SMALL_STEP = [
    "model.encoder=unet",
    "data.image_size=32",
    "model.base_channels=8",
    "model.depth=5",
    "model.disc_channels=8",
    "model.disc_layers=2",
    "loss.perceptual_weight=0",
    "train.device=cpu",
]

# (maker, its arguments) -> the session's checkpoint and torch's RNG state after building it
_BUILT: dict[tuple[object, ...], tuple[Path, torch.Tensor]] = {}


def built_once(make: Callable[..., Path]) -> Callable[..., Path]:
    """A checkpoint maker whose checkpoint is built once per test session (the first call) and
    copied to each later call's path: the same bytes, without building a model again. The RNG
    is left as building leaves it (the makers seed it), so a test sees what it saw before."""

    @functools.wraps(make)
    def copy(path: Path, *args: Any, **kwargs: Any) -> Path:
        key = (make.__name__, args, tuple(sorted(kwargs.items())))
        if key not in _BUILT:
            folder = Path(tempfile.mkdtemp(prefix="colorgan-test-models-"))
            atexit.register(shutil.rmtree, folder, True)
            built = make(folder / path.name, *args, **kwargs)
            _BUILT[key] = (built, torch.random.get_rng_state())
        built, rng = _BUILT[key]
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(built, path)
        torch.random.set_rng_state(rng)
        return path

    return copy


AB_BIAS = (0.25, 0.35)  # the tiny model's colors: a clear orange cast, so outputs are not gray


@built_once
def make_tiny_checkpoint(path: Path, ab_bias: tuple[float, float] | None = AB_BIAS) -> Path:
    """An untrained 32 px checkpoint (width 8, depth 3), seeded; with `ab_bias` its output is
    visibly colored."""
    config = load_config(
        None, [*UNET, "data.image_size=32", "model.base_channels=8", "model.depth=3"]
    )
    torch.manual_seed(0)
    generator = build_generator(config.model)
    if ab_bias is not None:
        with torch.no_grad():
            generator.head[0].bias.copy_(torch.tensor(ab_bias))
    save_checkpoint({"config": to_dict(config), "generator": generator.state_dict()}, path)
    return path


@built_once
def make_hint_checkpoint(path: Path, encoder: str = "efficientnet_lite0") -> Path:
    """An untrained 32 px checkpoint that takes color points (model.hints), seeded; Lite0
    encoder by default (its encoder's hint branch starts at zero) or the from-scratch U-Net."""
    depth = 5 if encoder == "efficientnet_lite0" else 3
    settings = [f"model.encoder={encoder}", f"model.depth={depth}", "model.hints=true"]
    settings.append("model.output_stride=1")  # full resolution, as before the recipe's default
    config = load_config(None, [*settings, "data.image_size=32", "model.base_channels=8"])
    torch.manual_seed(0)
    generator = build_generator(config.model, pretrained=encoder == "efficientnet_lite0")
    save_checkpoint({"config": to_dict(config), "generator": generator.state_dict()}, path)
    return path


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models run faster on one thread, above all on a CPU the suite shares."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def scramble_batchnorm(model: torch.nn.Module) -> None:
    """BatchNorm statistics and scales far from the identity, so that folding them is tested."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            assert module.running_mean is not None and module.running_var is not None
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)


def make_color_image(seed: int, size: tuple[int, int] = (48, 40)) -> Image.Image:
    """A colorful RGB picture: a colored background with a few colored shapes."""
    rng = np.random.default_rng(seed)
    background = tuple(int(v) for v in rng.integers(40, 216, 3))
    image = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x0, y0 = int(rng.integers(0, size[0] // 2)), int(rng.integers(0, size[1] // 2))
        x1, y1 = x0 + int(rng.integers(8, size[0] // 2)), y0 + int(rng.integers(8, size[1] // 2))
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        draw.ellipse((x0, y0, x1, y1), fill=color, outline=(0, 0, 0))
    return image


def write_color_folder(root: Path, count: int, size: tuple[int, int] = (48, 40)) -> Path:
    """`count` color PNG/JPEG images under `root` (some in a sub-folder); returns `root`."""
    for i in range(count):
        folder = root / "sub" if i % 3 == 0 else root
        folder.mkdir(parents=True, exist_ok=True)
        suffix = ".JPG" if i % 2 else ".png"
        make_color_image(i, size).save(folder / f"img_{i:03d}{suffix}", quality=95)
    return root


@pytest.fixture
def color_folder(tmp_path: Path) -> Path:
    """A folder of 20 small generated color images."""
    return write_color_folder(tmp_path / "images", 20)


@built_once
def make_uncertainty_checkpoint(path: Path, caution: float = 0.25, hints: bool = False) -> Path:
    """An untrained 32 px checkpoint with model.uncertainty (from-scratch U-Net, width 8, depth
    3, the orange cast of AB_BIAS; with `hints`, model.hints too) whose uncertainty head is set
    by hand: the largest scale it gives where the image is light (l > 0.6), the smallest where
    it is dark (l < 0.4); its novelty is unfitted (a factor of 1). Its default caution is
    `caution`."""
    settings = [*UNET, "data.image_size=32", "model.base_channels=8", "model.depth=3"]
    settings += ["model.uncertainty=true", f"model.caution={caution}", f"model.hints={hints}"]
    config = load_config(None, settings)
    torch.manual_seed(0)
    generator = build_generator(config.model)
    # BatchNorm (fresh statistics: the identity in eval mode), conv 3x3 (16 -> 16), ReLU,
    # conv-T (16 -> 1)
    head = generator.uncertainty["head"].layers
    with torch.no_grad():
        generator.head[0].bias.copy_(torch.tensor(AB_BIAS))
        first = generator.down[0][0]  # its output (after a LeakyReLU) is the last skip: x[:, 8:]
        first.weight[0].zero_()
        first.weight[0, 0].fill_(1 / 16)  # channel 0: the mean of l over each 4x4 window
        first.bias[0] = 0.0
        for layer in (head[1], head[3]):
            layer.weight.zero_()
            layer.bias.zero_()
        head[1].weight[0, 8, 1, 1] = 1.0  # that mean, where it is positive
        # the centre 2x2 of the 4x4 kernel: one tap for every output pixel, borders too
        head[3].weight[0, 0, 1:3, 1:3] = 40.0  # 40 x the mean - 10: the scale is its sigmoid
        head[3].bias.fill_(-10.0)
    save_checkpoint({"config": to_dict(config), "generator": generator.state_dict()}, path)
    return path


@built_once
def make_reference_checkpoint(path: Path, encoder: str = "unet") -> Path:
    """An untrained 32 px checkpoint with model.reference (from-scratch U-Net, width 8, depth
    3, the orange cast of AB_BIAS; or the Lite0 encoder), seeded, whose FiLM output layers are
    set to random weights (they start at zero): a reference visibly changes its colors."""
    depth = 5 if encoder == "efficientnet_lite0" else 3
    settings = [f"model.encoder={encoder}", f"model.depth={depth}", "model.reference=true"]
    settings.append("model.output_stride=1")  # full resolution, as before the recipe's default
    config = load_config(None, [*settings, "data.image_size=32", "model.base_channels=8"])
    torch.manual_seed(0)
    generator = build_generator(config.model, pretrained=encoder == "efficientnet_lite0")
    assert generator.reference is not None
    with torch.no_grad():
        if encoder == "unet":
            generator.head[0].bias.copy_(torch.tensor(AB_BIAS))
        for layer in generator.reference.out:
            torch.nn.init.normal_(layer.weight, 0.0, 2.0)
    save_checkpoint({"config": to_dict(config), "generator": generator.state_dict()}, path)
    return path


@built_once
def make_exemplar_checkpoint(path: Path) -> Path:
    """An untrained 32 px checkpoint with model.reference and model.reference_match (the Lite0
    encoder with its ImageNet weights, width 8, the shipped output stride), seeded, whose FiLM
    output layers and the decoder's weights on the match's maps are random and large: the
    reference images visibly change its colors, place by place; the match's confidence is the
    similarity of the ImageNet features (randomly projected)."""
    config = load_config(
        None, ["model.reference=true", "model.base_channels=8", "data.image_size=32"]
    )
    torch.manual_seed(0)
    generator = build_generator(config.model, pretrained=True)
    assert isinstance(generator, Lite0UNet) and generator.reference is not None
    with torch.no_grad():
        for layer in generator.reference.out:
            torch.nn.init.normal_(layer.weight, 0.0, 2.0)
        reads = generator.decoder[MATCH_LEVEL][0].weight  # its input: ..., the match's maps
        torch.nn.init.normal_(reads[:, -MATCH_CHANNELS:], 0.0, 1.0)
    save_checkpoint({"config": to_dict(config), "generator": generator.state_dict()}, path)
    return path


def train_and_resume(tmp_path: Path, *settings: str) -> tuple[dict, dict]:
    """A 2-epoch tiny run on 20 generated images with `settings` (--set pairs), and the same
    run resumed from its epoch-1 checkpoint into another run dir: both last.pt dicts, after
    checking that every generator weight of the two agrees within 1e-6 at the same step."""
    from colorgan.cli import main

    data = write_color_folder(tmp_path / "data", 20)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(train_args(data, straight, *settings, "--set", "train.epochs=2")) == 0
    first = straight / "checkpoints" / "epoch_001.pt"
    assert main(["train", "--resume", str(first), "--run-dir", str(resumed), "--quiet"]) == 0
    a = torch.load(straight / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(resumed / "checkpoints" / "last.pt", weights_only=True)
    assert b["step"] == a["step"]
    for key, value in a["generator"].items():
        assert torch.allclose(value.float(), b["generator"][key].float(), atol=1e-6), key
    return a, b
