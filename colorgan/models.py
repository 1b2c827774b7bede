"""From a model config to a generator: `build_generator` (the one place a config becomes a
network, which takes plain keyword arguments) and `bytes_per_pixel`, its inference memory."""

from __future__ import annotations

import torch
from torch import nn

from colorgan.config import ModelConfig
from colorgan.generator import ColorModel, Generator, Lite0UNet
from colorgan.hints import spread_bytes_per_pixel
from colorgan.lite0 import load_lite0

# What inference at a working size holds at once, per pixel per image, as a multiple of the
# largest single activation: its input, its output and the skip tensors waiting for the decoder.
PEAK_ACTIVATIONS = 4
DEFAULT_BYTES_PER_PIXEL = 512.0  # the full-resolution Lite0 U-Net (width 32): 4 x 128 bytes


def build_generator(model: ModelConfig, pretrained: bool = False) -> ColorModel:
    """The generator a model config describes; `pretrained` loads the Lite0 encoder's ImageNet
    weights (for a fresh run; a checkpoint brings its own)."""
    if model.encoder == "efficientnet_lite0":
        generator = Lite0UNet(
            model.base_channels,
            model.norm,
            model.dropout,
            hints=model.hints,
            output_stride=model.output_stride,
            uncertainty=model.uncertainty,
            reference="match" if model.reference and model.reference_match else model.reference,
            upsample=model.upsample,
        )
        if pretrained:  # read on a forked random stream: the rest is drawn as without
            with torch.random.fork_rng(devices=[]):
                weights = load_lite0(pretrained=True, head=False).state_dict()
            generator.encoder.load_state_dict(weights)
        return generator
    if model.output_stride != 1:
        raise ValueError("model.output_stride other than 1 needs model.encoder=efficientnet_lite0")
    return Generator(
        base_channels=model.base_channels,
        depth=model.depth,
        norm=model.norm,
        dropout=model.dropout,
        hints=model.hints,
        uncertainty=model.uncertainty,
        reference=model.reference,
    )


@torch.inference_mode()
def bytes_per_pixel(model: ColorModel) -> float:
    """A rough estimate of inference memory per working pixel of one image (float32): the
    largest activation of one forward at a small size, times PEAK_ACTIVATIONS, or what the
    points' spread holds after it, if more. Good for refusing sizes that cannot fit; a size that
    passes may still be tight."""
    largest = 0

    def hook(module: nn.Module, args: object, output: object) -> None:
        nonlocal largest
        if isinstance(output, torch.Tensor):
            largest = max(largest, output.numel() * 4)  # float32, whatever the model's dtype

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    side = 2 * model.multiple
    param = next(model.parameters())
    training = model.training
    model.eval()  # BatchNorm statistics stay as they are
    try:
        model(torch.zeros(1, 1, side, side, device=param.device, dtype=param.dtype))
    finally:
        for handle in handles:
            handle.remove()
        model.train(training)
    spread = model.spread  # its tensors are no module's output; it runs after the network
    extra = 0.0 if spread is None else spread_bytes_per_pixel(spread.stride)
    return max(PEAK_ACTIVATIONS * largest / side**2, extra)
