"""A generator made fast for inference: BatchNorm folded into the convolution before it, eval
mode, no gradients; channels-last and torch.compile on request. The outputs are those of the
unfolded model up to float rounding."""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn

from colorgan.errors import ColorganError
from colorgan.lite0 import EfficientNetLite0, MBConv

_Conv = nn.Conv2d | nn.ConvTranspose2d


def _fold(conv: _Conv, bn: nn.BatchNorm2d) -> None:
    """Fold `bn` (in eval mode: its running statistics) into `conv`, in place."""
    assert bn.running_mean is not None and bn.running_var is not None
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias.detach() - bn.running_mean * scale
    with torch.no_grad():
        if isinstance(conv, nn.ConvTranspose2d):  # weight (in, out / groups, k, k)
            if conv.groups != 1:
                raise ValueError("grouped transposed convs are not folded")
            conv.weight.mul_(scale.view(1, -1, 1, 1))
        else:  # weight (out, in / groups, k, k)
            conv.weight.mul_(scale.view(-1, 1, 1, 1))
        bias = conv.bias.detach() * scale if conv.bias is not None else torch.zeros_like(shift)
        conv.bias = nn.Parameter(bias + shift)


# The conv -> BatchNorm pairs of EfficientNet-Lite0's own modules (attribute names).
_KNOWN_PAIRS: dict[type[nn.Module], tuple[tuple[str, str], ...]] = {
    MBConv: (("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2")),
    EfficientNetLite0: (("_conv_stem", "_bn0"), ("_conv_head", "_bn1")),
}


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every BatchNorm2d that directly follows a conv (inside nn.Sequential, or in Lite0's
    known modules) into that conv and replace it by nn.Identity; in place, for a model in eval
    mode. Returns how many were folded."""
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode")
    folded = 0
    for module in list(model.modules()):
        if isinstance(module, nn.Sequential):
            names = list(module._modules)
            for first, second in itertools.pairwise(names):
                conv, bn = module._modules[first], module._modules[second]
                if isinstance(conv, _Conv) and _foldable(bn):
                    _fold(conv, bn)  # type: ignore[arg-type]
                    module._modules[second] = nn.Identity()
                    folded += 1
        for conv_name, bn_name in _KNOWN_PAIRS.get(type(module), ()):
            layer, norm = getattr(module, conv_name, None), getattr(module, bn_name, None)
            if isinstance(layer, _Conv) and _foldable(norm):
                _fold(layer, norm)  # type: ignore[arg-type]
                setattr(module, bn_name, nn.Identity())
                folded += 1
    return folded


def _foldable(module: object) -> bool:
    return (
        isinstance(module, nn.BatchNorm2d)
        and module.track_running_stats
        and module.running_mean is not None
        and module.affine
    )


def fast_model(
    model: nn.Module, channels_last: bool = False, compile_model: bool = False
) -> nn.Module:
    """A copy of `model` for inference: eval mode, BatchNorm folded, no gradients;
    `channels_last` memory layout and `torch.compile` when asked."""
    fast = copy.deepcopy(model).eval()
    fold_batchnorm(fast)
    fast.requires_grad_(False)
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if compile_model:
        try:
            fast = torch.compile(fast, dynamic=True)  # type: ignore[assignment]
        except Exception as err:  # no compiler toolchain, an unsupported platform
            raise ColorganError(f"--compile failed ({type(err).__name__}: {err})") from None
    return fast
