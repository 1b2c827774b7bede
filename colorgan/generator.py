"""The generators: U-Nets with skip connections, l (B, 1, H, W) in -> ab (B, 2, H, W) out.

`Generator` is the founding spec's (pix2pix's) U-Net, trained from scratch. `Lite0UNet` puts a
decoder on an ImageNet-pretrained EfficientNet-Lite0 encoder (`model.encoder=efficientnet_lite0`).

Each generator owns its quirks, so training needs no change for a new one: `multiple` (sides
must be multiples of it), `param_groups()` (the optimizer's groups; group 0 always trains) and
`freeze_encoder(frozen)` with `frozen_groups` (groups whose learning rate is held at 0). A new
generator is a class here, a branch in `models.build_generator` and a member of `ColorModel`;
what it takes is `batch.model_inputs` (see batch.py for shapes and ranges). No config here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from colorgan.hints import HINT_CHANNELS, HintSpread, no_points
from colorgan.lite0 import STEM_CHANNELS, TAP_CHANNELS, load_lite0, to_input
from colorgan.matching import MATCH_CHANNELS, ReferenceMatch, match_maps
from colorgan.reference import PALETTE_STRIDE, PaletteHead, ReferenceFilm, modulate
from colorgan.uncertainty import uncertainty_parts, with_uncertainty

Norm = str  # "batch" | "instance" | "none"
OUTPUT_STRIDES = (1, 2, 4)  # Lite0UNet's: where it predicts ab (1: at full resolution)
UPSAMPLES = ("bilinear", "affine")  # how Lite0UNet's ab at stride > 1 reaches full size
# Lite0UNet's reference: the summary's FiLM and palette (True is "palette"), and with "match"
# also the reference images matched place by place (matching.py)
REFERENCE_KINDS = ("palette", "match")


def norm_layer(kind: Norm, channels: int) -> nn.Module:
    """The normalisation layer `kind` names, for `channels` feature maps."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}: use batch, instance or none")


def init_weights(module: nn.Module) -> None:
    """pix2pix's initialisation: conv weights ~ N(0, 0.02), norm scales ~ N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def _down(c_in: int, c_out: int, norm: Norm, outer: bool, inner: bool) -> nn.Sequential:
    use_norm = not (outer or inner)
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 4, stride=2, padding=1, bias=not use_norm or norm == "none"),
        norm_layer(norm, c_out) if use_norm else nn.Identity(),
        nn.ReLU(inplace=True) if inner else nn.LeakyReLU(0.2, inplace=True),
    )


def _up(c_in: int, c_out: int, norm: Norm, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=norm == "none"),
        norm_layer(norm, c_out),
        nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
        nn.ReLU(inplace=True),
    )


class Generator(nn.Module):
    """U-Net: `depth` stride-2 convs down, `depth` transposed convs up, skips at every level."""

    def __init__(
        self,
        base_channels: int = 64,
        depth: int = 8,
        norm: Norm = "batch",
        dropout: float = 0.0,
        hints: bool = False,
        uncertainty: bool = False,
        reference: bool = False,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.depth = depth
        self.hints = hints  # the hint map is joined to l at the input (Zhang et al. 2017)
        in_channels = 1 + (HINT_CHANNELS if hints else 0)  # l (and the hint map)
        channels = [base_channels * min(2**i, 8) for i in range(depth)]
        c_in = [in_channels, *channels[:-1]]
        self.down = nn.ModuleList(
            _down(c_in[i], channels[i], norm, i == 0, i == depth - 1) for i in range(depth)
        )
        # up[k] maps level depth-1-k to level depth-2-k (from the level and its skip but for the
        # innermost); only the three innermost get dropout.
        joined = [c * (1 if i == depth - 1 else 2) for i, c in enumerate(channels)]
        drops = [dropout if depth - 1 - i < 3 else 0.0 for i in range(depth)]
        self.up = nn.ModuleList(
            _up(joined[i], channels[i - 1], norm, drops[i]) for i in range(depth - 1, 0, -1)
        )
        last = channels[0] * (2 if depth > 1 else 1)  # the head's input: the last up and skip
        self.head = nn.Sequential(nn.ConvTranspose2d(last, 2, 4, 2, 1), nn.Tanh())
        init_weights(self)
        # model.uncertainty (uncertainty.py): built last, from its own random stream
        styled = channels[min(NOVELTY_LEVEL, depth - 1)]
        self.uncertainty = uncertainty_parts(last, 2, styled) if uncertainty else None
        # model.reference (reference.py): scales and shifts every up block's output, and picks
        # colors on the stride-4 one's (the innermost's for depth 2; the last skip for depth 1)
        widths = [channels[i - 1] for i in range(depth - 1, 0, -1)]
        self.reference = ReferenceFilm(widths) if reference else None
        self.palette_block = max(depth - 3, 0)  # the up block whose output the palette reads
        tapped = widths[self.palette_block] if widths else channels[0]
        tapped_stride = 2 ** (depth - 1 - self.palette_block) if depth > 1 else 2
        self.palette = PaletteHead(tapped, tapped_stride) if reference else None
        self.spread = HintSpread() if hints else None  # spreads the points over the output

    @property
    def multiple(self) -> int:
        """Height and width must be multiples of this."""
        return 2**self.depth

    frozen_groups: tuple[int, ...] = ()  # trained from scratch: nothing is ever held

    def param_groups(self) -> list[list[nn.Parameter]]:
        """The optimizer's parameter groups: one."""
        return [list(self.parameters())]

    def freeze_encoder(self, frozen: bool) -> None:
        """No pretrained encoder to hold (model.freeze_encoder_epochs has no effect)."""

    def forward(
        self,
        l: torch.Tensor,
        hints: torch.Tensor | None = None,
        reference: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """l: (B, 1, H, W) in [-1, 1] (+ hints (B, 3, H, W), see hints.py; + reference
        (B, REFERENCE_CHANNELS), see reference.py) -> ab: (B, 2, H, W) in [-1, 1]."""
        _check_size(l, self.multiple)
        films = _films(self.reference, l, reference)
        skips = []
        hint_map = _hint_map(l, hints) if self.hints else None
        x = _no_hints(l, hints) if hint_map is None else torch.cat([l, hint_map], dim=1)
        for block in self.down:
            x = block(x)
            skips.append(x)
        styled = skips[min(NOVELTY_LEVEL, self.depth - 1)]  # for model.uncertainty's novelty
        skips.pop()  # the innermost output is x itself
        tapped = x
        for index, block in enumerate(self.up):
            x = block(x)
            if films:
                x = modulate(x, films[index])
            if index == self.palette_block:
                tapped = x
            x = torch.cat([x, skips.pop()], dim=1)
        ab = self.head(x)
        if self.palette is not None and reference is not None:
            ab = self.palette(tapped, ab, reference)
        given = hint_map if hints is not None else None
        return _outputs(self.spread, self.uncertainty, self.training, ab, l, given, x, styled)


MATCH_LEVEL = 2  # Lite0UNet's decoder level (stride 4) that reads the reference match
PALETTE_LEVEL = 2  # Lite0UNet's decoder level (stride 4) whose output the palette head reads
NOVELTY_LEVEL = 2  # the features whose style `Novelty` measures: stride 8 (2**(level + 1))


def _outputs(
    spread: HintSpread | None,
    uncertainty: nn.ModuleDict | None,
    training: bool,
    ab: torch.Tensor,
    l: torch.Tensor,
    hint_map: torch.Tensor | None,
    last: torch.Tensor,
    styled: torch.Tensor,
) -> torch.Tensor:
    """A generator's output tensor (batch.split_output) from its `ab`: spread toward the points
    of `hint_map` (None: not given, ab unchanged, as with no points); with model.uncertainty
    its u (`with_uncertainty` on `last` and `styled`); with a spread in `training`, the
    generator's own ab before it as two more channels, whose L1 term (train.g_step) keeps it
    learning where the points take over (with no points it is all the model has)."""
    own = None
    if spread is not None and hint_map is not None:
        ab, own = spread(ab, l, hint_map), ab
    out = ab if uncertainty is None else with_uncertainty(uncertainty, ab, last, styled)
    return out if own is None or not training else torch.cat([out, own], dim=1)


def _hint_map(l: torch.Tensor, hints: torch.Tensor | None) -> torch.Tensor:
    """The hint map to use: `hints`, or no points (zeros) when None."""
    return no_points(l) if hints is None else hints.to(l.dtype)


def _pooled(hint_map: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The hint map at `like`'s (coarser) resolution: each cell's mean hinted ab and whether
    it holds any point, so a coarse decoder level can spread a point over its region."""
    factor = hint_map.shape[-1] // like.shape[-1]
    mask = F.avg_pool2d(hint_map[:, 2:], factor)
    ab = F.avg_pool2d(hint_map[:, :2] * hint_map[:, 2:], factor) / mask.clamp_min(1e-6)
    given = (mask > 0).to(hint_map.dtype)
    return torch.cat([ab * given, given], dim=1)


def _films(
    film: ReferenceFilm | None, l: torch.Tensor, reference: torch.Tensor | None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each modulated level's (gamma, beta) from the reference summary (none given: no
    reference, which leaves every level as it is); [] for a generator without model.reference
    (a given reference is then a programming error)."""
    if film is None and reference is not None:
        raise ValueError("this generator was built without model.reference; it takes none")
    return [] if film is None or reference is None else film(reference.to(l.dtype))


def _no_hints(l: torch.Tensor, hints: torch.Tensor | None) -> torch.Tensor:
    """`l`, for a generator without a hint input (given hints are a programming error)."""
    if hints is not None:
        raise ValueError("this generator was built without model.hints; it takes no hint map")
    return l


def _check_size(l: torch.Tensor, multiple: int) -> None:
    height, width = l.shape[-2:]
    if height % multiple or width % multiple:
        raise ValueError(
            f"input size {height}x{width} is not a multiple of 2**depth={multiple}; "
            f"resize or pad it, or use a model with a smaller depth"
        )


def _conv_block(c_in: int, c_out: int, norm: Norm, dropout: float = 0.0) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=norm == "none"),
        norm_layer(norm, c_out),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=norm == "none"),
        norm_layer(norm, c_out),
        nn.ReLU(inplace=True),
    )


def _ab_head(channels: int, upsample: str) -> nn.Sequential:
    """Lite0UNet's last layer: a 1x1 conv to ab in [-1, 1] (tanh), or for `upsample` "affine"
    to the per-cell b (2 channels) and a (2) of `affine_upsample`."""
    if upsample == "affine":
        return nn.Sequential(nn.Conv2d(channels, 4, 1))
    return nn.Sequential(nn.Conv2d(channels, 2, 1), nn.Tanh())


def _decoder_levels(
    widths: list[int], extra: int, pooled_l: int, matched: int, norm: Norm, dropout: float
) -> nn.ModuleList:
    """Lite0UNet's decoder levels from stride 16 down, one per width: each joins the coarser
    output, its skip, `extra` hint channels, (the last) `pooled_l` channels of L and (level
    MATCH_LEVEL) `matched` channels of the reference match; the first two get `dropout`."""
    skips = list(reversed(TAP_CHANNELS[:-1]))  # stride 16, 8, 4, 2
    c_in = TAP_CHANNELS[-1]
    blocks: list[nn.Module] = []
    for i, (skip, width) in enumerate(zip(skips, widths, strict=False)):
        joined = skip + extra + (pooled_l if i == len(widths) - 1 else 0)
        joined += matched if i == MATCH_LEVEL else 0
        blocks.append(_conv_block(c_in + joined, width, norm, dropout if i < 2 else 0.0))
        c_in = width
    return nn.ModuleList(blocks)


class Lite0UNet(nn.Module):
    """A U-Net on a pretrained EfficientNet-Lite0 encoder.

    L is rescaled to [0, 1], repeated to three channels and ImageNet-normalised for the encoder,
    whose features at strides 2, 4, 8, 16 and 32 are the skips. With `hints`, the hint map enters
    the encoder's stem through a zero-initialised conv and every decoder level (pooled to its
    resolution) and the full-resolution layer. Each decoder level upsamples
    bilinearly, joins the skip and applies two 3x3 conv-norm-ReLU layers; widths are
    8, 4, 2, 1 x `base_channels` from stride 16 to 2, and a last full-resolution layer also sees
    L itself. Always 5 downsamplings (`depth`), so sides are multiples of 32.

    `output_stride` 2 or 4 (`model.output_stride`; 4 is the shipped recipe) predicts ab at that
    stride instead, since chroma is low-frequency (colorize re-attaches it to the full-resolution
    L anyway): the full-resolution layer goes, and for 4 also the stride-2 level; the last level
    kept also sees L average-pooled to its resolution, and its ab is upsampled bilinearly to the
    input size, or with `upsample` "affine" (`model.upsample`) by a color and a slope against
    L's detail learned per cell (`affine_upsample`). The encoder starts random:
    `models.build_generator(pretrained=True)` loads its ImageNet weights.
    """

    depth = 5

    def __init__(
        self,
        base_channels: int = 32,
        norm: Norm = "batch",
        dropout: float = 0.0,
        hints: bool = False,
        output_stride: int = 1,
        uncertainty: bool = False,
        reference: bool | str = False,
        upsample: str = "bilinear",
    ) -> None:
        super().__init__()
        if output_stride not in OUTPUT_STRIDES or reference not in (False, True, *REFERENCE_KINDS):
            raise ValueError(f"output_stride {output_stride} or reference {reference!r}")
        if upsample not in UPSAMPLES or (upsample != "bilinear" and output_stride == 1):
            raise ValueError(f"upsample {upsample!r} at output_stride {output_stride}")
        self.upsample = upsample
        self.encoder = load_lite0(pretrained=False, head=False)
        self.hints = hints
        self.output_stride = output_stride
        extra = HINT_CHANNELS if hints else 0  # every decoder level also sees the hints
        levels = 3 if output_stride == 4 else 4  # stride 4 ends at the stride-4 level
        widths = [8 * base_channels, 4 * base_channels, 2 * base_channels, base_channels]
        pooled_l = 0 if output_stride == 1 else 1  # the last level's L, pooled to its stride
        matched = MATCH_CHANNELS if reference == "match" else 0
        self.decoder = _decoder_levels(widths[:levels], extra, pooled_l, matched, norm, dropout)
        c_in = widths[levels - 1]
        parts: list[nn.Module] = [self.decoder]
        if output_stride == 1:
            self.full = nn.Sequential(
                nn.Conv2d(c_in + 1 + extra, base_channels, 3, padding=1, bias=norm == "none"),
                norm_layer(norm, base_channels),
                nn.ReLU(inplace=True),
            )
            parts.append(self.full)
            c_in = base_channels
        self.head = head = _ab_head(c_in, upsample)
        for part in (*parts, head):
            init_weights(part)  # the encoder keeps its ImageNet weights
        if upsample == "affine" and isinstance(conv := head[0], nn.Conv2d):
            nn.init.zeros_(conv.weight[2:])  # the slope a starts at 0: the cell's color upsampled
        if hints:  # into the encoder's stem, zero-initialised: ImageNet features start unchanged
            self.hint_stem = nn.Conv2d(HINT_CHANNELS, STEM_CHANNELS, 3, stride=2, padding=1)
            nn.init.zeros_(self.hint_stem.weight)
            nn.init.zeros_(self.hint_stem.bias)  # type: ignore[arg-type]
        # model.uncertainty (uncertainty.py): built last, from its own random stream
        self.uncertainty = (
            uncertainty_parts(c_in, 1, TAP_CHANNELS[NOVELTY_LEVEL]) if uncertainty else None
        )
        # model.reference (reference.py): scales and shifts every decoder level's output
        modulated = widths[:levels] + ([base_channels] if output_stride == 1 else [])
        self.reference = ReferenceFilm(modulated) if reference else None
        # and picks colors on the stride-4 level's output (decoder level 2)
        self.palette = PaletteHead(widths[PALETTE_LEVEL], PALETTE_STRIDE) if reference else None
        # model.reference_match (matching.py): the references' colors where the picture matches
        width = widths[MATCH_LEVEL]
        self.match = ReferenceMatch(TAP_CHANNELS[2], TAP_CHANNELS[3], width) if matched else None
        # spreads the points over the output, its boxes summed where the colors are made
        self.spread = HintSpread(output_stride) if hints else None
        self.frozen_groups: tuple[int, ...] = ()

    @property
    def multiple(self) -> int:
        """Height and width must be multiples of this."""
        return 2**self.depth

    def param_groups(self) -> list[list[nn.Parameter]]:
        """[decoder, encoder]: the encoder's own group, so its learning rate can be held at 0
        while model.freeze_encoder_epochs lasts."""
        encoder = list(self.encoder.parameters())
        ids = {id(p) for p in encoder}
        return [[p for p in self.parameters() if id(p) not in ids], encoder]

    def freeze_encoder(self, frozen: bool) -> None:
        """Hold the pretrained encoder fixed (or release it): its group's learning rate is 0
        and, in training mode, its BatchNorm keeps the ImageNet statistics."""
        self.frozen_groups = (1,) if frozen else ()
        if self.training:
            self.train()

    def train(self, mode: bool = True) -> Lite0UNet:
        super().train(mode)
        if mode and self.frozen_groups:
            self.encoder.eval()
        return self

    def forward(
        self,
        l: torch.Tensor,
        hints: torch.Tensor | None = None,
        reference: torch.Tensor | None = None,
        exemplar: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """l: (B, 1, H, W) in [-1, 1] (+ hints (B, 3, H, W), see hints.py; + reference
        (B, REFERENCE_CHANNELS), see reference.py; + exemplar (B, R, 4, H', W'), see
        matching.py) -> ab: (B, 2, H, W) in [-1, 1]."""
        _check_size(l, self.multiple)
        films = _films(self.reference, l, reference)
        hint_map = _hint_map(l, hints) if self.hints else None
        feats = self._features(_no_hints(l, hints) if hint_map is None else l, hint_map)
        styled = feats[NOVELTY_LEVEL]
        matched = match_maps(self.match, self._encode_reference, feats, exemplar)
        outputs = self._decode(feats, l, hint_map, films, matched)
        x = outputs[-1]
        if self.output_stride > 1:  # ab at the output stride, upsampled to the input's size
            ab = self._full_size(self.head(x), l)
        else:
            x = _upsample(x, 2.0)
            last = [x, l] if hint_map is None else [x, l, hint_map]
            x = self.full(torch.cat(last, dim=1))
            if films:
                x = modulate(x, films[-1])
            ab = self.head(x)
        if self.palette is not None and reference is not None:
            ab = self.palette(outputs[PALETTE_LEVEL], ab, reference)
        if self.match is not None and matched is not None:
            ab = self.match.blend(outputs[MATCH_LEVEL], matched, ab)
        given = hint_map if hints is not None else None
        return _outputs(self.spread, self.uncertainty, self.training, ab, l, given, x, styled)

    def _decode(
        self,
        feats: list[torch.Tensor],
        l: torch.Tensor,
        hint_map: torch.Tensor | None,
        films: list[tuple[torch.Tensor, torch.Tensor]],
        matched: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """The decoder levels' outputs (stride 16 down) on the encoder's features `feats`
        (stride 2 to 32; the coarsest is the start): each joins the upsampled map, its skip
        and the pooled hint map; the last one also L pooled to its stride when the output
        stride is over 1. With a reference, each level's output is scaled and shifted by its
        `films` entry."""
        x = feats.pop()
        outputs = []
        for index, block in enumerate(self.decoder):
            skip = feats.pop()
            joined = [skip] if hint_map is None else [skip, _pooled(hint_map, skip)]
            if self.output_stride > 1 and index == len(self.decoder) - 1:
                joined.append(F.avg_pool2d(l, self.output_stride))
            if matched is not None and index == MATCH_LEVEL:
                joined.append(_upsample(matched.to(skip.dtype), 2.0))
            x = block(torch.cat([_upsample(x, 2.0), *joined], dim=1))
            if films:
                x = modulate(x, films[index])
            outputs.append(x)
        return outputs

    def match_confidence(self, l: torch.Tensor, exemplar: torch.Tensor) -> torch.Tensor:
        """The match's confidence (B, 1, H/8, W/8) in [-1, 1] for l (B, 1, H, W) (no points)
        and its `exemplar` (matching.py): the encoder and the match alone."""
        _check_size(l, self.multiple)
        feats = self._features(l, no_points(l) if self.hints else None, upto=4)
        matched = match_maps(self.match, self._encode_reference, feats, exemplar)
        assert matched is not None  # an exemplar is given: a generator without a match raised
        return matched[:, 2:3]

    def _features(
        self, l: torch.Tensor, hint_map: torch.Tensor | None, upto: int = 5
    ) -> list[torch.Tensor]:
        """The encoder's features of l (strides 2 to 32, the first `upto`); the hint map (of
        a model.hints generator) enters its stem."""
        rgb = to_input((l + 1.0) * 0.5)
        stem_add = None if hint_map is None else self.hint_stem(hint_map)
        return self.encoder.features(rgb, upto, stem_add)

    def _encode_reference(self, gray: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's features (strides 2 to 16) of a reference's L scaled to [0, 1]."""
        return self.encoder.features(to_input(gray), upto=4)

    def _full_size(self, coarse: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
        """The head's output at the output stride brought to l's size as `upsample` says."""
        if self.upsample == "affine":
            return affine_upsample(coarse, l, self.output_stride)
        return _upsample(coarse, float(self.output_stride))


def affine_upsample(coefficients: torch.Tensor, l: torch.Tensor, stride: int) -> torch.Tensor:
    """ab at l's (B, 1, H, W) size from `coefficients` (B, 4, H/stride, W/stride), a local
    affine color model learned per cell (as HDRNet's, Gharbi et al. 2017, on L alone): channels
    0-1 are the cell's ab b and 2-3 its slope a against the lightness detail, both upsampled
    bilinearly, ab = tanh(b + a * (L - L smoothed)), the smooth L being L average-pooled to the
    stride and upsampled the same way. With a = 0 that is the cell's color upsampled
    bilinearly; where a cell holds two regions of different lightness, a line through their
    (detail, ab) pairs puts each color on its own side of the lightness edge, which a
    bilinear blur spreads over `stride` pixels. What a and b can reach on the true colors:
    experiments/stride_oracle.py."""
    detail = lightness_detail(l, stride).to(coefficients.dtype)
    coefficients = _upsample(coefficients, float(stride))
    return torch.tanh(coefficients[:, :2] + coefficients[:, 2:] * detail)


def lightness_detail(l: torch.Tensor, stride: int) -> torch.Tensor:
    """L less its smooth version: L average-pooled to `stride` and upsampled bilinearly."""
    return l - _upsample(F.avg_pool2d(l, stride), float(stride))


def _upsample(x: torch.Tensor, factor: float) -> torch.Tensor:
    """`x` resized by `factor` (bilinear, half-pixel centres: what the decoder levels use)."""
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


ColorModel = Generator | Lite0UNet  # either generator: same input, output and `multiple`
