"""A reference bank: from many reference images, the few each picture uses.

A folder of references (a chapter's character sheets, a film's keyframes) is more than a
picture needs, and unrelated references only add wrong candidates to the match. So each picture
uses the BANK_TOP references whose gray images look most like its own gray: the cosine
similarity of the ImageNet EfficientNet-Lite0's pooled features (the packaged weights, the same
for every model and runtime), each reference described once however many pictures it serves.
"""

from __future__ import annotations

import threading

import torch
import torch.nn.functional as F

from colorgan.color import rgb_to_gray_rgb, uint8_to_float
from colorgan.lite0 import EfficientNetLite0, load_lite0, to_input

DESCRIPTOR_SIZE = 224  # Lite0's ImageNet training size
BANK_TOP = 3  # references a picture uses from a bank (more given: the closest these many)
_network: EfficientNetLite0 | None = None
_lock = threading.Lock()


def _lite0() -> EfficientNetLite0:
    """The packaged ImageNet Lite0, loaded once (thread-safe: decode workers share it)."""
    global _network
    with _lock:
        if _network is None:
            _network = load_lite0(pretrained=True, head=True).eval()
        return _network


def describe(rgb: torch.Tensor) -> torch.Tensor:
    """The normalised descriptor (1280,) of an image's gray: uint8 or [0, 1] RGB ((1,) 3, H, W)."""
    rgb = rgb[None] if rgb.ndim == 3 else rgb
    image = uint8_to_float(rgb) if rgb.dtype == torch.uint8 else rgb.float()
    gray = rgb_to_gray_rgb(image[:1].cpu())
    gray = F.interpolate(gray, size=(DESCRIPTOR_SIZE,) * 2, mode="bilinear", antialias=True)
    with torch.inference_mode():
        features = _lite0().pooled(to_input(gray))
    return F.normalize(features[0].float(), dim=0)


def closest(picture: torch.Tensor, references: torch.Tensor, top: int = BANK_TOP) -> list[int]:
    """The indices of the `top` references (descriptors (R, 1280)) closest to the `picture`'s
    descriptor (1280,), closest first."""
    similarity = references @ picture
    return similarity.argsort(descending=True)[:top].tolist()
