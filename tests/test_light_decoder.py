"""model.output_stride: the Lite0 U-Net predicting ab at stride 2 or 4 (4: the default),
upsampled to the input bilinearly or by the learned affine model of L (the default)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from colorgan.config import from_dict, load_config, to_dict
from colorgan.errors import ConfigError
from colorgan.generator import Lite0UNet, affine_upsample
from colorgan.models import build_generator, bytes_per_pixel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

from stride_oracle import fitted_affine

WIDTH = 8  # small decoder: fast, and every shape below is checked at this width


def _lite0(stride: int, hints: bool = False) -> Lite0UNet:
    torch.manual_seed(0)
    return Lite0UNet(WIDTH, hints=hints, output_stride=stride)


@pytest.mark.parametrize("stride", [1, 2, 4])
def test_output_is_ab_at_the_input_size_in_range(stride: int) -> None:
    generator = _lite0(stride).eval()
    with torch.inference_mode():
        ab = generator(torch.rand(2, 1, 64, 96) * 2 - 1)
    assert ab.shape == (2, 2, 64, 96)
    assert float(ab.abs().max()) <= 1.0


@pytest.mark.parametrize("stride", [2, 4])
def test_ab_is_predicted_at_the_stride_and_upsampled(stride: int) -> None:
    generator = _lite0(stride).eval()
    coarse: list[torch.Tensor] = []
    generator.head.register_forward_hook(lambda module, args, out: coarse.append(out))
    with torch.inference_mode():
        ab = generator(torch.rand(1, 1, 64, 96) * 2 - 1)
    assert coarse[0].shape == (1, 2, 64 // stride, 96 // stride)
    upsampled = F.interpolate(coarse[0], scale_factor=float(stride), mode="bilinear")
    assert torch.equal(ab, upsampled)
    assert not hasattr(generator, "full")  # no full-resolution layer
    last = generator.decoder[-1][0]  # its upsampled input, the skip and L pooled to its stride
    if stride == 2:
        assert (len(generator.decoder), last.in_channels) == (4, 2 * WIDTH + 16 + 1)
    else:
        assert (len(generator.decoder), last.in_channels) == (3, 4 * WIDTH + 24 + 1)


@pytest.mark.parametrize("stride", [1, 2, 4])
def test_hints_are_taken_and_move_the_output(stride: int) -> None:
    generator = _lite0(stride, hints=True).eval()
    l = torch.rand(1, 1, 64, 64) * 2 - 1
    hint_map = torch.zeros(1, 3, 64, 64)
    hint_map[:, 0, 20:24, 30:34] = 0.6  # a red-ish point: a, b, mask
    hint_map[:, 2, 20:24, 30:34] = 1.0
    with torch.inference_mode():
        without, with_point = generator(l), generator(l, hint_map)
    assert with_point.shape == (1, 2, 64, 64)
    assert not torch.equal(without, with_point)


@pytest.mark.parametrize("stride", [1, 2, 4])
def test_gradient_reaches_encoder_and_decoder(stride: int) -> None:
    torch.manual_seed(0)
    generator = Lite0UNet(WIDTH, output_stride=stride).train()
    generator(torch.rand(2, 1, 64, 64) * 2 - 1).square().mean().backward()
    missing = [n for n, p in generator.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing


def test_stride_1_keeps_todays_weights_so_old_checkpoints_load() -> None:
    """Stride 1 is the decoder from before the key existed: the same tensors, names and shapes
    (and the same initial values for a seed), so a checkpoint saved then loads strictly."""
    state = _lite0(1).state_dict()
    convs = {k: tuple(v.shape) for k, v in state.items() if v.dim() == 4}
    decoder = {k: s for k, s in convs.items() if not k.startswith("encoder.")}
    assert decoder == {
        "decoder.0.0.weight": (8 * WIDTH, 320 + 112, 3, 3),
        "decoder.0.4.weight": (8 * WIDTH, 8 * WIDTH, 3, 3),
        "decoder.1.0.weight": (4 * WIDTH, 8 * WIDTH + 40, 3, 3),
        "decoder.1.4.weight": (4 * WIDTH, 4 * WIDTH, 3, 3),
        "decoder.2.0.weight": (2 * WIDTH, 4 * WIDTH + 24, 3, 3),
        "decoder.2.4.weight": (2 * WIDTH, 2 * WIDTH, 3, 3),
        "decoder.3.0.weight": (WIDTH, 2 * WIDTH + 16, 3, 3),
        "decoder.3.4.weight": (WIDTH, WIDTH, 3, 3),
        "full.0.weight": (WIDTH, WIDTH + 1, 3, 3),
        "head.0.weight": (2, WIDTH, 1, 1),
    }
    prefixes = {k.split(".")[0] for k in state}
    assert prefixes == {"encoder", "decoder", "full", "head"}
    torch.manual_seed(0)
    default = Lite0UNet(WIDTH)  # no output_stride given: the network's default is 1
    assert all(torch.equal(v, state[k]) for k, v in default.state_dict().items())
    default.load_state_dict(state, strict=True)


def test_a_saved_config_without_the_key_is_stride_1() -> None:
    saved = to_dict(load_config(None))
    del saved["version"], saved["model"]["output_stride"]  # a checkpoint from before the key
    assert from_dict(saved).model.output_stride == 1
    assert build_generator(from_dict(saved).model).output_stride == 1  # type: ignore[union-attr]


def test_the_config_takes_1_2_4_and_refuses_the_rest() -> None:
    for stride in (1, 2, 4):
        assert load_config(None, [f"model.output_stride={stride}"]).model.output_stride == stride
    assert load_config(None, ["model.output_stride=0"]).model.output_stride == 4  # the encoder's
    for bad, fragment in [(3, "use 1, 2 or 4"), (-1, "out of range"), (8, "out of range")]:
        with pytest.raises(ConfigError) as err:
            load_config(None, [f"model.output_stride={bad}"])
        message = str(err.value)
        assert message.startswith(f"model.output_stride={bad}") and fragment in message
        assert "\n" not in message


def test_the_unet_encoder_refuses_a_coarse_output() -> None:
    with pytest.raises(ConfigError, match=r"needs model\.encoder=efficientnet_lite0"):
        load_config(None, ["model.encoder=unet", "model.output_stride=2"])
    unet = load_config(None, ["model.encoder=unet"]).model
    with pytest.raises(ValueError, match="efficientnet_lite0"):
        build_generator(dataclasses.replace(unet, output_stride=4))


@pytest.mark.parametrize("stride", [2, 4])
def test_build_generator_and_memory_estimate_follow_the_key(stride: int) -> None:
    config = load_config(None, [f"model.output_stride={stride}", f"model.base_channels={WIDTH}"])
    generator = build_generator(config.model)
    assert isinstance(generator, Lite0UNet) and generator.output_stride == stride
    assert bytes_per_pixel(generator) > 0


def _step(side: int = 32, edge: int = 14) -> tuple[torch.Tensor, torch.Tensor]:
    """L with a vertical step at column `edge` (not on a 4-pixel cell boundary) and the ab that
    follows it: -0.4 left of the step, 0.4 right of it, in both channels."""
    l = torch.full((1, 1, side, side), -0.5)
    l[..., edge:] = 0.5
    return l, torch.where(l > 0, 0.4, -0.4).expand(1, 2, side, side)


def test_affine_upsampling_with_no_slope_is_the_cells_color_upsampled() -> None:
    coarse = torch.cat([torch.rand(2, 2, 8, 12) * 2 - 1, torch.zeros(2, 2, 8, 12)], dim=1)
    l = torch.rand(2, 1, 32, 48) * 2 - 1  # a = 0: the lightness does not matter
    bilinear = F.interpolate(coarse[:, :2], scale_factor=4.0, mode="bilinear")
    assert torch.allclose(affine_upsample(coarse, l, 4), torch.tanh(bilinear), atol=1e-6)


def test_affine_upsampling_can_put_the_color_edge_on_the_lightness_edge() -> None:
    l, truth = _step()
    coefficients = fitted_affine(truth, l, 4)
    affine = affine_upsample(coefficients, l, 4)
    bilinear = F.interpolate(F.avg_pool2d(truth, 4), scale_factor=4.0, mode="bilinear")
    assert affine.shape == truth.shape
    affine_error = float((affine - truth).abs().mean())
    assert affine_error < float((bilinear - truth).abs().mean()) / 3
    assert bool((affine[..., :14] < 0).all()) and bool((affine[..., 14:] > 0).all())
    half = affine_upsample(coefficients.bfloat16(), l.bfloat16(), 4)
    assert half.dtype == torch.bfloat16 and bool(half.isfinite().all())


def test_an_affine_generator_starts_as_its_cells_colors_upsampled() -> None:
    torch.manual_seed(0)
    generator = Lite0UNet(WIDTH, output_stride=4, upsample="affine").eval()
    coarse: list[torch.Tensor] = []
    generator.head.register_forward_hook(lambda module, args, out: coarse.append(out))
    with torch.inference_mode():
        ab = generator(torch.rand(1, 1, 64, 96) * 2 - 1)
    assert coarse[0].shape == (1, 4, 16, 24)  # b and a per cell
    assert not coarse[0][:, 2:].any()  # the slope starts at 0
    upsampled = F.interpolate(coarse[0][:, :2], scale_factor=4.0, mode="bilinear")
    assert torch.allclose(ab, torch.tanh(upsampled), atol=1e-6)


@pytest.mark.parametrize("stride", [2, 4])
def test_an_affine_generator_outputs_ab_and_trains(stride: int) -> None:
    torch.manual_seed(0)
    generator = Lite0UNet(WIDTH, output_stride=stride, upsample="affine")
    with torch.inference_mode():
        ab = generator.eval()(torch.rand(2, 1, 64, 96) * 2 - 1)
    assert ab.shape == (2, 2, 64, 96) and float(ab.abs().max()) <= 1.0
    generator.train()(torch.rand(2, 1, 64, 64) * 2 - 1).square().mean().backward()
    missing = [n for n, p in generator.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing


def test_affine_upsampling_is_the_default_and_needs_a_coarse_output() -> None:
    assert load_config(None).model.upsample == "affine"
    saved = to_dict(load_config(None))
    del saved["version"], saved["model"]["upsample"]  # a checkpoint from before the key
    assert from_dict(saved).model.upsample == "bilinear"
    full = load_config(None, ["model.output_stride=1"]).model  # nothing to upsample at 1
    assert (full.output_stride, full.upsample) == (1, "bilinear")
    with pytest.raises(ConfigError, match=r"model\.upsample"):
        load_config(None, ["model.output_stride=4", "model.upsample=nearest"])
    with pytest.raises(ValueError, match="upsample"):
        Lite0UNet(WIDTH, upsample="affine")  # at output_stride 1
