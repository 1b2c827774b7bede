"""Local reference colors: the picture matched to its reference images, place by place.

A histogram (reference.py) can say "red and silver" but not "red robe, silver hair". So a
`model.reference` generator (with `model.reference_match`, the default since config version 3)
also takes the reference images themselves, the `exemplar` input:

    exemplar (B, R, 4, H', W')   R reference slots, each Lab L, a, b in [-1, 1] and a "given"
                                 channel (1 on the reference's pixels, 0 on padding and on an
                                 empty slot); all zeros: no reference

and, as Deep Exemplar-based Colorization (He et al. 2018) does with a VGG, matches features of
the gray picture against features of each reference's gray (its L alone, so the match cannot
use color): the generator's own encoder features at strides 8 and 16, projected to MATCH_DIM and
normalised, compared by cosine similarity at stride 8 over every position of every given slot.
A softmax over those (a learned temperature) gathers the references' ab pooled to stride 8 —
the colors where the picture corresponds — and the best similarity is the match's confidence.
`ReferenceMatch` gives both, with the "given" flag, as MATCH_CHANNELS maps at stride 8 that the
decoder's last level reads beside its skip: where nothing matches well it learns to keep its own
colors. The references' side is the working size's (`exemplar_side`), so their features are at
the scale the picture's are.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from colorgan.color import rgb_to_l_ab, uint8_to_float

MATCH_DIM = 64  # the matched features' width
MATCH_STRIDE = 8  # where the picture and the references are compared
MATCH_CHANNELS = 4  # the decoder's extra maps: matched ab (2), confidence, given
EXEMPLAR_CHANNELS = 4  # an exemplar slot: L, a, b, given
EXEMPLAR_MULTIPLE = 32  # the exemplar side's multiple: Lite0's (five 2x downsamplings)
TEMPERATURE_START = 0.05  # the softmax's temperature over cosine similarities, learned
EMPTY = -1e4  # the similarity of a position that is not part of a given reference
GATE_SLOPE, GATE_BIAS = 8.0, -6.0  # the blend's start: sigmoid(8 * confidence - 6), 0.88 at 1
QUERY_CHUNK = 4096  # queries compared at once (bounds the similarity matrix's memory)


class ReferenceMatch(nn.Module):
    """Features of a picture and of its references -> the references' colors where they
    correspond, with a confidence (see the module docstring)."""

    def __init__(self, channels_8: int, channels_16: int, width: int) -> None:
        super().__init__()
        self.project = nn.Conv2d(channels_8 + channels_16, MATCH_DIM, 1)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(TEMPERATURE_START)))
        # blend: how much of the matched colors replaces the generator's, from the decoder's
        # `width` features at stride 4 and the match maps; it starts as the confidence alone
        self.gate = nn.Conv2d(width + MATCH_CHANNELS, 1, 1)
        with torch.no_grad():
            self.gate.weight.zero_()
            self.gate.weight[0, width + 2] = GATE_SLOPE
            self.gate.bias.fill_(GATE_BIAS)  # type: ignore[union-attr]

    def blend(
        self, features: torch.Tensor, matched: torch.Tensor, ab: torch.Tensor
    ) -> torch.Tensor:
        """`ab` (B, 2, H, W) moved toward the matched colors (`matched`, forward's maps) where
        the gate, from the decoder's `features` (B, width, h, w) and the maps, says so: an
        explicit path for "where it matches, take the reference's color"; no reference (the
        given flag 0): `ab` unchanged."""
        maps = F.interpolate(matched.to(features.dtype), size=features.shape[-2:], mode="bilinear")
        gate = torch.sigmoid(self.gate(torch.cat([features, maps], dim=1))) * maps[:, 3:4]
        gate = F.interpolate(gate, size=ab.shape[-2:], mode="bilinear").to(ab.dtype)
        colors = F.interpolate(maps[:, :2], size=ab.shape[-2:], mode="bilinear").to(ab.dtype)
        return ab + gate * (colors - ab)

    def embed(self, stride_8: torch.Tensor, stride_16: torch.Tensor) -> torch.Tensor:
        """Normalised match features (N, MATCH_DIM, h, w) at stride 8."""
        up = F.interpolate(
            stride_16, size=stride_8.shape[-2:], mode="bilinear", align_corners=False
        )
        return F.normalize(self.project(torch.cat([stride_8, up], dim=1)), dim=1)

    def forward(
        self, picture: torch.Tensor, references: torch.Tensor, exemplar: torch.Tensor
    ) -> torch.Tensor:
        """`picture` (B, D, h, w) and `references` (B * R, D, h', w') from `embed`, and the
        `exemplar` (B, R, 4, H', W') -> (B, MATCH_CHANNELS, h, w): matched ab, confidence (the
        best cosine similarity, 0 without a reference) and the "given" flag."""
        b, r = exemplar.shape[:2]
        hr, wr = references.shape[-2:]
        pooled = F.adaptive_avg_pool2d(exemplar.flatten(0, 1).float(), (hr, wr))  # (B*R, 4, hr, wr)
        given = pooled[:, 3:4] > 0.5
        # each given position's ab, as the mean over its given pixels
        ab = pooled[:, 1:3] / pooled[:, 3:4].clamp_min(1e-6)
        keys = (
            references.float()
            .reshape(b, r, -1, hr * wr)
            .permute(0, 1, 3, 2)
            .reshape(b, -1, MATCH_DIM)
        )
        values = ab.reshape(b, r, 2, hr * wr).permute(0, 1, 3, 2).reshape(b, -1, 2)
        valid = given.reshape(b, -1)  # (B, R*hr*wr)
        h, w = picture.shape[-2:]
        queries = picture.float().flatten(2).transpose(1, 2)  # (B, h*w, D)
        temperature = self.log_temperature.float().exp()
        matched, best = [], []
        # an exported graph compares every query at once: a loop's slices would be fixed there
        chunks = [queries] if torch.compiler.is_exporting() else queries.split(QUERY_CHUNK, 1)
        for chunk in chunks:
            similarity = chunk @ keys.transpose(1, 2)
            similarity = similarity.masked_fill(~valid[:, None], EMPTY)
            weights = torch.softmax(similarity / temperature, dim=-1)
            matched.append(weights @ values)
            best.append(similarity.amax(dim=-1))
        any_given = valid.any(dim=1).to(queries.dtype)[:, None, None, None]  # (B, 1, 1, 1)
        colors = torch.cat(matched, dim=1).transpose(1, 2).reshape(b, 2, h, w)
        confidence = torch.cat(best, dim=1).reshape(b, 1, h, w)
        flag = any_given.expand(b, 1, h, w)
        return torch.cat([colors, confidence, flag], dim=1) * any_given


def confidence_map(confidence: torch.Tensor) -> torch.Tensor:
    """The match's confidence (B, 1, h, w), a cosine similarity, as a grayscale map, uint8:
    black where nothing of the references is alike (0 or less), white where some place of
    them is the same (1)."""
    return (confidence.float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)


def exemplar_side(working_hw: tuple[int, int], multiple: int) -> int:
    """The square side references are brought to for a picture run at `working_hw`: its
    shorter side, a multiple of `multiple` (the generator's), at least one multiple."""
    return max(multiple, min(working_hw) // multiple * multiple)


def exemplar_slot(rgb: torch.Tensor, side: int) -> torch.Tensor:
    """One exemplar slot (4, side, side) from a reference image (3, h, w) uint8 or float in
    [0, 1]: fitted inside the square keeping its aspect (bilinear), centred, the rest padding
    (given 0)."""
    image = uint8_to_float(rgb) if rgb.dtype == torch.uint8 else rgb.float()
    h, w = image.shape[-2:]
    scale = side / max(h, w)
    fh, fw = max(1, round(h * scale)), max(1, round(w * scale))
    fitted = F.interpolate(image[None], size=(fh, fw), mode="bilinear", align_corners=False)
    l, ab = rgb_to_l_ab(fitted.clamp(0.0, 1.0))
    slot = torch.zeros(EXEMPLAR_CHANNELS, side, side)
    top, left = (side - fh) // 2, (side - fw) // 2
    slot[:, top : top + fh, left : left + fw] = torch.cat([l, ab, torch.ones_like(l)], dim=1)[0]
    return slot


def stack_exemplars(given: Sequence[Mapping[str, torch.Tensor]]) -> torch.Tensor:
    """The pictures' exemplar inputs (each (1, R_i, 4, S, S), or absent) as one batch input
    (B, max R_i, 4, S, S): empty slots (zeros) where a picture has fewer references or none."""
    like = next(inputs["exemplar"] for inputs in given if "exemplar" in inputs)
    most = max(inputs["exemplar"].shape[1] for inputs in given if "exemplar" in inputs)
    rows = []
    for inputs in given:
        row = inputs.get("exemplar", like[:, :0])
        rows.append(F.pad(row, (0, 0, 0, 0, 0, 0, 0, most - row.shape[1])))
    return torch.cat(rows)


def match_maps(
    match: ReferenceMatch | None,
    encode: Callable[[torch.Tensor], list[torch.Tensor]],
    feats: list[torch.Tensor],
    exemplar: torch.Tensor | None,
) -> torch.Tensor | None:
    """A generator's reference match (B, MATCH_CHANNELS, H/8, W/8): the picture's encoder
    features `feats` (strides 2 to 32) against the `exemplar`'s references, whose L (scaled to
    [0, 1]) `encode` turns into theirs (no reference: zeros); None for a generator without
    `match`. No gradient flows through the references' encoder pass (the encoder and the
    projection still learn from the picture's side, and the projection from both): a training
    step then costs one encoder pass more, not two."""
    if match is None:
        if exemplar is not None:
            raise ValueError("this generator was built without model.reference_match")
        return None
    stride_8 = feats[2]
    if exemplar is None:
        b, _, h, w = stride_8.shape
        return stride_8.new_zeros(b, MATCH_CHANNELS, h, w)
    gray = exemplar[:, :, :1].flatten(0, 1).to(stride_8.dtype)  # (B*R, 1, H', W')
    with torch.no_grad():  # training learns the match through the picture's features alone
        theirs = encode((gray + 1.0) * 0.5)
    picture = match.embed(feats[2], feats[3])
    return match(picture, match.embed(theirs[2], theirs[3]), exemplar)
