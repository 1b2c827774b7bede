"""model.decoder=separable: the Lite0 U-Net's decoder levels as 1x1 projections and
depthwise-separable 3x3 layers (generator.SeparableLevel) instead of two full 3x3 convs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from colorgan.card import Facts, model_card
from colorgan.checkpoint import save_checkpoint
from colorgan.config import from_dict, load_config, to_dict
from colorgan.errors import ConfigError
from colorgan.export import export_onnx
from colorgan.generator import Lite0UNet, SeparableLevel, build_generator
from colorgan.speed import fast_model
from tests.conftest import scramble_batchnorm

WIDTH = 8


def _lite0(stride: int, upsample: str = "bilinear", **switches: bool) -> Lite0UNet:
    torch.manual_seed(0)
    return Lite0UNet(
        WIDTH,
        pretrained=False,
        output_stride=stride,
        decoder="separable",
        upsample=upsample,
        **switches,
    )


@pytest.mark.parametrize("stride", [1, 2, 4])
def test_every_level_is_separable_and_the_output_is_ab_at_the_input_size(stride: int) -> None:
    generator = _lite0(stride).eval()
    assert all(isinstance(level, SeparableLevel) for level in generator.decoder)
    assert len(generator.decoder) == (3 if stride == 4 else 4)
    with torch.inference_mode():
        ab = generator(torch.rand(2, 1, 64, 96) * 2 - 1)
    assert ab.shape == (2, 2, 64, 96)
    assert float(ab.abs().max()) <= 1.0


def test_projecting_before_upsampling_is_projecting_the_upsampled_map() -> None:
    """The level's claim: its coarse-map projection, done before the 2x bilinear upsampling,
    gives what the same 1x1 conv gives on the upsampled map (the conv decoder's order)."""
    torch.manual_seed(0)
    level = SeparableLevel(12, 5, 6, "batch", 0.0).eval()
    x = torch.randn(2, 12, 8, 10)
    up = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
    before = F.interpolate(level.top(x), scale_factor=2.0, mode="bilinear", align_corners=False)
    assert torch.allclose(before, level.top(up), atol=1e-5)


@pytest.mark.parametrize("upsample", ["bilinear", "affine"])
def test_hints_reference_and_uncertainty_work_with_it(upsample: str) -> None:
    generator = _lite0(4, upsample, hints=True, reference=True, uncertainty=True).eval()
    l = torch.rand(1, 1, 64, 64) * 2 - 1
    hint_map = torch.zeros(1, 3, 64, 64)
    hint_map[:, 0, 20:24, 30:34] = 0.6
    hint_map[:, 2, 20:24, 30:34] = 1.0
    with torch.inference_mode():
        without, with_point = generator(l), generator(l, hint_map)
    assert without.shape == (1, 3, 64, 64)  # ab and the uncertainty
    assert not torch.equal(without[:, :2], with_point[:, :2])


@pytest.mark.parametrize("upsample", ["bilinear", "affine"])
def test_fast_model_folds_every_norm_and_keeps_the_outputs(upsample: str) -> None:
    generator = _lite0(4, upsample, hints=True)
    scramble_batchnorm(generator)
    generator.eval()
    fast = fast_model(generator)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    l = torch.rand(2, 1, 64, 64) * 2 - 1
    hints = torch.zeros(2, 3, 64, 64)
    hints[:, :, 10:14, 10:14] = 0.5
    with torch.inference_mode():
        assert torch.allclose(generator(l, hints), fast(l, hints), atol=1e-5)


def test_it_costs_a_fraction_of_the_conv_decoders_flops() -> None:
    """Counted, not timed: at stride 4 the separable decoder's multiply-adds (the whole model
    less the shared encoder) are under a fifth of the conv decoder's."""
    l = torch.rand(1, 1, 128, 128) * 2 - 1

    def flops(model: torch.nn.Module) -> int:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            model.eval()(l)
        return counter.get_total_flops()

    torch.manual_seed(0)
    conv = Lite0UNet(32, pretrained=False, output_stride=4)
    separable = Lite0UNet(32, pretrained=False, output_stride=4, decoder="separable")
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        conv.encoder.features(torch.rand(1, 3, 128, 128))
    encoder = counter.get_total_flops()
    assert flops(separable) - encoder < (flops(conv) - encoder) / 5


def test_the_config_key_defaults_to_conv_and_refuses_the_rest() -> None:
    saved = to_dict(load_config(None))
    del saved["model"]["decoder"]
    assert from_dict(saved).model.decoder == "conv"  # a checkpoint from before the key
    default = build_generator(from_dict(saved).model)
    assert not any(isinstance(m, SeparableLevel) for m in default.modules())
    with pytest.raises(ConfigError) as err:
        load_config(None, ["model.decoder=depthwise"])
    assert str(err.value).startswith("model.decoder") and "separable" in str(err.value)
    with pytest.raises(ConfigError, match=r"model\.decoder=separable needs model\.encoder"):
        load_config(None, ["model.encoder=unet", "model.decoder=separable"])
    unet = load_config(None, ["model.encoder=unet"]).model
    with pytest.raises(ValueError, match="efficientnet_lite0"):
        build_generator(dataclasses.replace(unet, decoder="separable"))


@pytest.mark.parametrize("upsample", ["guided", "affine"])
def test_a_separable_edge_aware_checkpoint_exports_to_onnx_and_matches(
    tmp_path: Path, upsample: str
) -> None:
    settings = ["model.output_stride=4", "model.decoder=separable", f"model.upsample={upsample}"]
    settings.append("model.hints=true")
    config = load_config(None, [*settings, "data.image_size=64", f"model.base_channels={WIDTH}"])
    torch.manual_seed(0)
    generator = build_generator(config.model)
    scramble_batchnorm(generator)
    checkpoint = tmp_path / "separable.pt"
    save_checkpoint({"config": to_dict(config), "generator": generator.state_dict()}, checkpoint)
    # export_onnx compares onnxruntime with torch at the working size and returns max |Δab|
    assert export_onnx(checkpoint, tmp_path / "separable.onnx") <= 1e-3


def test_the_model_card_names_the_decoder() -> None:
    def card(*settings: str) -> str:
        config = to_dict(load_config(None, list(settings)))
        return model_card(Facts(name="m", repo_id=None, config=config, ema=False, parameters=1))

    light = card("model.output_stride=4", "model.decoder=separable", "model.upsample=guided")
    assert "| separable; ab at stride 4, upsampled guided |" in light
    assert "| conv; ab at full resolution |" in card()
    assert "model.decoder" not in card("model.encoder=unet")  # pix2pix's: no such choice
