"""A reference image's colors (Zhang et al. 2017's "global hint"): the compact summary a
`model.reference` generator takes, how training simulates it from the truth, and the palette a
user is shown.

The summary is (B, REFERENCE_CHANNELS): the ab histogram of the reference on a coarse grid
(REFERENCE_BINS x REFERENCE_BINS cells over ab in [-1, 1], i.e. 13.75 Lab units a cell; each row
sums to 1), then a "given" flag (1: a reference, 0: none). All zeros is "no reference": automatic
colorization with the same network. A histogram holds no positions, so a reference need not be
aligned with the image, nor even the same picture: another page with the same character, or a
photo of the same room.

The generator takes it two ways. `ReferenceFilm`: a small MLP turns the summary into a scale and
a shift per channel of each decoder level (FiLM, Perez et al. 2018), zero-initialised. And
`PaletteHead`: each pixel picks among the reference's colors (attention of a query from the
stride-4 features over the histogram's cells, their shares as the prior), and a learned gate
says how much of the picked color replaces the generator's own. Both are multiplied by the
flag, so "no reference" is exactly the automatic network.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from colorgan.color import rgb_to_l_ab, uint8_to_float
from colorgan.errors import ColorganError

REFERENCE_BINS = 16  # cells per ab axis over [-1, 1] (ab / 110): 13.75 Lab units each
REFERENCE_CHANNELS = REFERENCE_BINS**2 + 1  # the histogram and the "given" flag
SUMMARY_SIDE = 256  # a reference image is reduced to at most this longer side first
FILM_HIDDEN = 128  # ReferenceFilm's hidden width
PALETTE_DIM = 16  # PaletteHead's query and key width
PALETTE_STRIDE = 4  # PaletteHead picks colors on the stride-4 features (chroma is low-frequency)
GATE_START = 0.0  # PaletteHead's gate starts at sigmoid(0) = 0.5 wherever a reference is given
NEARNESS_START = (
    0.02  # its temperature: a cell 0.14 (15 Lab units) from a pixel's ab is e^-1 less likely
)
ABSENT = -1e4  # PaletteHead's prior for the cells the reference lacks: never picked
PALETTE_SIZE = 8  # colors the web app shows for a reference


# the start of every refusal of a reference by a model without the input (CLI, API, evaluate)
NO_REFERENCE_INPUT = "trained without a reference input (model.reference=false)"


class ReferenceImageError(ColorganError):
    """A reference that cannot be used (a model without model.reference, a bad image)."""


def no_reference(batch_size: int, like: torch.Tensor) -> torch.Tensor:
    """The summary of "no reference" for `batch_size` images: zeros on `like`'s device/dtype."""
    return like.new_zeros(batch_size, REFERENCE_CHANNELS)


def _cells(ab: torch.Tensor) -> torch.Tensor:
    """Each pixel's histogram cell (B, H*W) for ab (B, 2, H, W) in about [-1, 1]."""
    index = ((ab.float().clamp(-1.0, 1.0) + 1.0) * (REFERENCE_BINS / 2)).long()
    index = index.clamp(0, REFERENCE_BINS - 1)
    return (index[:, 0] * REFERENCE_BINS + index[:, 1]).flatten(1)


def summarize(ab: torch.Tensor) -> torch.Tensor:
    """The summary (B, REFERENCE_CHANNELS) of ab (B, 2, H, W): each image's share of pixels in
    every cell, and the flag 1."""
    cells = _cells(ab)
    counts = torch.zeros(ab.shape[0], REFERENCE_BINS**2, device=ab.device)
    counts.scatter_add_(1, cells, torch.ones_like(cells, dtype=counts.dtype))
    shares = counts / counts.sum(dim=1, keepdim=True).clamp_min(1.0)
    return torch.cat([shares, torch.ones_like(shares[:, :1])], dim=1)


def reduce_image(image: Image.Image) -> torch.Tensor:
    """A reference image as uint8 RGB (1, 3, h, w), its longer side at most SUMMARY_SIDE
    (alpha flattened onto white, any mode converted)."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        flat = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(flat, rgba)
    image = image.convert("RGB")
    image.thumbnail((SUMMARY_SIDE, SUMMARY_SIDE), Image.Resampling.BILINEAR)
    data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    return data.view(image.height, image.width, 3).permute(2, 0, 1)[None]


def from_image(image: Image.Image) -> torch.Tensor:
    """The summary (1, REFERENCE_CHANNELS) of a reference image (see reduce_image)."""
    return from_rgb(reduce_image(image))


def from_rgb(rgb: torch.Tensor) -> torch.Tensor:
    """The summary (B, REFERENCE_CHANNELS) of uint8 RGB images (B, 3, h, w)."""
    return summarize(rgb_to_l_ab(uint8_to_float(rgb))[1])


def palette(image: Image.Image, count: int = PALETTE_SIZE) -> list[tuple[str, float]]:
    """The reference's `count` most common histogram cells as ("#rrggbb", share of pixels),
    each the mean RGB of its pixels, commonest first: what the summary holds, shown."""
    rgb = reduce_image(image)
    ab = rgb_to_l_ab(uint8_to_float(rgb))[1]
    cells = _cells(ab)[0]
    flat = rgb[0].flatten(1).double()  # (3, h*w)
    counts = torch.bincount(cells, minlength=REFERENCE_BINS**2)
    out = []
    for cell in counts.argsort(descending=True)[:count].tolist():
        if counts[cell] == 0:
            break
        mean = flat[:, cells == cell].mean(dim=1).round().long().tolist()
        share = float(counts[cell]) / cells.numel()
        out.append(("#{:02x}{:02x}{:02x}".format(*mean), share))
    return out


def simulate(ab: torch.Tensor, drop: float, min_side: float, gen: torch.Generator) -> torch.Tensor:
    """Training's reference (REFERENCE_CHANNELS,) from the truth ab (2, S, S), not aligned with
    it: with probability `drop` none (zeros); otherwise the summary of a random crop whose
    sides are `min_side` to 1 of the image's (at a random place), so the model learns to use
    colors whose places and shares differ from the image's."""
    if float(torch.rand((), generator=gen)) < drop:
        return torch.zeros(REFERENCE_CHANNELS)
    _, height, width = ab.shape
    fraction = min_side + (1.0 - min_side) * float(torch.rand((), generator=gen))
    h, w = max(1, round(height * fraction)), max(1, round(width * fraction))
    top = int(torch.randint(0, height - h + 1, (), generator=gen))
    left = int(torch.randint(0, width - w + 1, (), generator=gen))
    return summarize(ab[None, :, top : top + h, left : left + w])[0]


class ReferenceFilm(nn.Module):
    """The summary -> a per-channel scale and shift for feature maps of each of `widths`
    channels: x * (1 + gamma) + beta. Zero-initialised output layers and the flag as a factor:
    with no reference (or before training) every level is left as it is."""

    def __init__(self, widths: Sequence[int], hidden: int = FILM_HIDDEN) -> None:
        super().__init__()
        self.widths = list(widths)
        # Its own random stream: building it leaves the global generator as it was, so
        # everything drawn after it (the discriminator, the data order) is what it was without.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(torch.initial_seed() + 2)
            self.embed = nn.Sequential(
                nn.Linear(REFERENCE_CHANNELS, hidden),
                nn.ReLU(inplace=True),
                nn.Linear(hidden, hidden),
                nn.ReLU(inplace=True),
            )
            layers = [nn.Linear(hidden, 2 * width) for width in self.widths]
        for layer in layers:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.out = nn.ModuleList(layers)

    def forward(self, reference: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(gamma, beta), each (B, C, 1, 1), for every level, from the summary (B, CHANNELS)."""
        given = reference[:, -1:]
        hidden = self.embed(reference)
        films = []
        for layer in self.out:
            gamma, beta = (layer(hidden) * given).chunk(2, dim=1)
            films.append((gamma[:, :, None, None], beta[:, :, None, None]))
        return films


def modulate(x: torch.Tensor, film: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Feature maps `x` (B, C, H, W) scaled and shifted by one level's (gamma, beta)."""
    gamma, beta = film
    return x * (1.0 + gamma.to(x.dtype)) + beta.to(x.dtype)


def _cell_centers() -> torch.Tensor:
    """The ab (in [-1, 1]) at the center of every histogram cell, (REFERENCE_BINS**2, 2), in
    `_cells`' order."""
    centers = (torch.arange(REFERENCE_BINS) + 0.5) * (2.0 / REFERENCE_BINS) - 1.0
    a, b = torch.meshgrid(centers, centers, indexing="ij")
    return torch.stack([a.flatten(), b.flatten()], dim=1)


class PaletteHead(nn.Module):
    """Per pixel, a color picked from the reference: the histogram's cells are scored by how
    near each is to the generator's own ab there (a learned temperature: it starts by snapping
    each pixel to the nearest colors the reference has), plus a query from the features
    (`channels`, at `stride` of the output) against a learned key per cell, plus the log of the
    reference's share of each cell (colors it lacks are never picked); their softmax
    gives the picked ab. A gate from the same features blends it into the generator's ab.
    Both are upsampled to the output's size. Computed in float32 (under autocast too)."""

    def __init__(self, channels: int, stride: int, dim: int = PALETTE_DIM) -> None:
        super().__init__()
        self.stride = stride
        # its own random stream, as ReferenceFilm's
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(torch.initial_seed() + 3)
            self.query = nn.Conv2d(channels, dim, 1)
            self.keys = nn.Parameter(torch.randn(REFERENCE_BINS**2, dim) * 0.1)
            self.gate = nn.Conv2d(channels, 1, 1)
        nn.init.zeros_(self.gate.weight)
        nn.init.constant_(self.gate.bias, GATE_START)  # type: ignore[arg-type]
        self.log_temperature = nn.Parameter(torch.tensor(math.log(NEARNESS_START)))
        self.register_buffer("centers", _cell_centers(), persistent=False)
        self.scale = dim**-0.5

    def forward(
        self, features: torch.Tensor, ab: torch.Tensor, reference: torch.Tensor
    ) -> torch.Tensor:
        """`ab` (B, 2, H, W) moved toward the colors picked from `reference` (B, CHANNELS)
        where the gate (from `features` (B, C, h, w)) says so; unchanged without a reference."""
        with torch.autocast(features.device.type, enabled=False):
            features, reference = features.float(), reference.float()
            shares = reference[:, :-1, None, None]  # (B, K, 1, 1)
            prior = torch.where(shares > 0, shares.clamp_min(1e-12).log(), ABSENT)
            query = self.query(features)  # (B, D, h, w)
            logits = torch.einsum("bdhw,kd->bkhw", query, self.keys.float()) * self.scale
            own = F.avg_pool2d(ab.float(), self.stride) if self.stride > 1 else ab.float()
            centers = self.centers
            assert isinstance(centers, torch.Tensor)
            near = (own[:, None] - centers[None, :, :, None, None]).square().sum(dim=2)
            weights = (logits + prior - near / self.log_temperature.exp()).softmax(dim=1)
            picked = torch.einsum("bkhw,kc->bchw", weights, centers)
            gate = torch.sigmoid(self.gate(features)) * reference[:, -1:, None, None]
        if picked.shape[-2:] != ab.shape[-2:]:
            size = ab.shape[-2:]
            picked = F.interpolate(picked, size=size, mode="bilinear", align_corners=False)
            gate = F.interpolate(gate, size=size, mode="bilinear", align_corners=False)
        return ab + gate.to(ab.dtype) * (picked.to(ab.dtype) - ab)
