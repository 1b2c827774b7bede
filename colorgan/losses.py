"""Losses: adversarial (vanilla | lsgan | hinge), L1 on ab, and perceptual (VGG16 or
EfficientNet-Lite0 features)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from colorgan.color import l_ab_to_rgb
from colorgan.errors import WeightsError
from colorgan.lite0 import IMAGENET_MEAN, IMAGENET_STD, Lite0Features

VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
# torchvision's vgg16().features, up to relu4_3: "M" is a 2x2 max-pool.
_VGG16_LAYOUT: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512]
_VGG16_TAPS = (3, 8, 15, 22)  # indices in `features` of relu1_2, relu2_2, relu3_3, relu4_3


def d_losses(
    real: torch.Tensor, fake: torch.Tensor, mode: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Discriminator losses on real and fake patch logits (any shape): (loss_real, loss_fake)."""
    if mode == "vanilla":
        return (
            F.binary_cross_entropy_with_logits(real, torch.ones_like(real)),
            F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)),
        )
    if mode == "lsgan":
        return F.mse_loss(real, torch.ones_like(real)), F.mse_loss(fake, torch.zeros_like(fake))
    if mode == "hinge":
        return F.relu(1.0 - real).mean(), F.relu(1.0 + fake).mean()
    raise ValueError(f"unknown gan mode {mode!r}")


def g_adversarial_loss(fake: torch.Tensor, mode: str) -> torch.Tensor:
    """Generator's adversarial loss on the discriminator's logits for its output."""
    if mode == "vanilla":
        return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
    if mode == "lsgan":
        return F.mse_loss(fake, torch.ones_like(fake))
    if mode == "hinge":
        return -fake.mean()
    raise ValueError(f"unknown gan mode {mode!r}")


def l1_loss(ab_fake: torch.Tensor, ab_real: torch.Tensor) -> torch.Tensor:
    """Mean absolute error on normalised ab, in float32."""
    return F.l1_loss(ab_fake.float(), ab_real.float())


class VGG16Features(nn.Module):
    """torchvision's VGG16 `features` up to relu4_3, with the same parameter names.

    The official ImageNet state dict loads into it (its `classifier.*` and later `features.*`
    entries are not needed and are dropped).
    """

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for item in _VGG16_LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                assert isinstance(item, int)
                layers += [nn.Conv2d(c_in, item, 3, padding=1), nn.ReLU(inplace=True)]
                c_in = item
        self.features = nn.Sequential(*layers)
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, rgb: torch.Tensor) -> list[torch.Tensor]:
        """rgb: (B, 3, H, W) in [0, 1] -> activations at relu1_2, relu2_2, relu3_3, relu4_3."""
        x = (rgb - self.mean) / self.std
        taps = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in _VGG16_TAPS:
                taps.append(x)
        return taps

    def load_torchvision_state(self, state: dict[str, torch.Tensor], source: str) -> None:
        """Load a torchvision VGG16 state dict (whole model or `features` only)."""
        own = self.state_dict()
        wanted = {k: v for k, v in state.items() if k in own and k.startswith("features.")}
        missing = sorted(k for k in own if k.startswith("features.") and k not in wanted)
        if missing:
            raise WeightsError(
                f"{source} is not a torchvision VGG16 state dict (missing {missing[0]}); "
                f"use the official file {VGG16_URL}"
            )
        self.load_state_dict({**own, **wanted})


def load_vgg16(weights: str) -> VGG16Features:
    """A frozen VGG16 feature extractor; `weights` is "torchvision", a file path, or "random"."""
    vgg = VGG16Features()
    if weights == "random":
        warnings.warn(
            "loss.vgg_weights=random: the perceptual loss uses an untrained VGG16 (for tests only)",
            stacklevel=2,
        )
    elif weights == "torchvision":
        try:
            state = torch.hub.load_state_dict_from_url(
                VGG16_URL, progress=True, check_hash=True, map_location="cpu", weights_only=True
            )
        except Exception as err:  # network, disk or hash failures all end the same way
            cache = Path(torch.hub.get_dir()) / "checkpoints"
            raise WeightsError(
                f"cannot get VGG16 weights from {VGG16_URL} ({type(err).__name__}: {err}); "
                f"put that file in {cache}, or set loss.vgg_weights=/path/to/vgg16.pth, "
                f"or loss.perceptual_weight=0"
            ) from None
        vgg.load_torchvision_state(state, VGG16_URL)
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsError(
                f"loss.vgg_weights={weights}: no such file; give the path of torchvision's "
                f"vgg16-397923af.pth, or 'torchvision' to download it"
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise WeightsError(f"cannot load VGG16 weights from {path}: {err}") from None
        vgg.load_torchvision_state(state, str(path))
    vgg.eval()
    vgg.requires_grad_(False)
    return vgg


def load_perceptual(network: str, vgg_weights: str) -> nn.Module:
    """The frozen network `loss.perceptual_network` names: RGB in [0, 1] -> feature maps."""
    if network == "efficientnet_lite0":
        return Lite0Features()
    return load_vgg16(vgg_weights)


def perceptual_loss(
    net: nn.Module, l: torch.Tensor, ab_fake: torch.Tensor, ab_real: torch.Tensor
) -> torch.Tensor:
    """Mean L1 between the feature maps `net` (VGG16 or Lite0) gives for the RGB rebuilt from
    (l, ab_fake) and from (l, ab_real)."""
    # Recomputed in the backward pass rather than keeping its fp32 intermediates.
    rgb_fake = checkpoint(l_ab_to_rgb, l, ab_fake, use_reentrant=False)
    assert isinstance(rgb_fake, torch.Tensor)
    with torch.no_grad():
        targets = net(l_ab_to_rgb(l, ab_real))
    feats = net(rgb_fake)
    # |f - t| in the features' own dtype, averaged in fp32: F.l1_loss (autocast runs it in fp32)
    # would keep fp32 copies of every feature map for backward, about 1.5 GiB at 512 px, batch 8.
    # Identical in fp32; under bf16 the difference is rounded to bf16 (loss value ~0.2% apart).
    losses = [(f - t).abs().mean(dtype=torch.float32) for f, t in zip(feats, targets, strict=True)]
    return torch.stack(losses).mean()
