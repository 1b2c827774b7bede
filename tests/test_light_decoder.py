"""model.output_stride: the Lite0 U-Net predicting ab at stride 2 or 4, upsampled to the input."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from colorgan.config import from_dict, load_config, to_dict
from colorgan.errors import ConfigError
from colorgan.generator import Lite0UNet, build_generator, bytes_per_pixel

WIDTH = 8  # small decoder: fast, and every shape below is checked at this width


def _lite0(stride: int, hints: bool = False) -> Lite0UNet:
    torch.manual_seed(0)
    return Lite0UNet(WIDTH, pretrained=False, hints=hints, output_stride=stride)


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
    generator = _lite0(stride).train()
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
    default = Lite0UNet(WIDTH, pretrained=False)  # no output_stride given: today's
    assert all(torch.equal(v, state[k]) for k, v in default.state_dict().items())
    default.load_state_dict(state, strict=True)


def test_a_saved_config_without_the_key_is_stride_1() -> None:
    saved = to_dict(load_config(None))
    del saved["model"]["output_stride"]
    assert from_dict(saved).model.output_stride == 1
    assert build_generator(from_dict(saved).model).output_stride == 1  # type: ignore[union-attr]


def test_the_config_takes_1_2_4_and_refuses_the_rest() -> None:
    for stride in (1, 2, 4):
        assert load_config(None, [f"model.output_stride={stride}"]).model.output_stride == stride
    for bad, fragment in [(3, "use 1, 2 or 4"), (0, "out of range"), (8, "out of range")]:
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
