"""Color points ("hints", Zhang et al. 2017): a user's `Hint`s, their JSON files, the hint map a
generator takes, and the points training and evaluation draw from the truth.

The hint map is (B, 3, H, W) at the working size: channels 0-1 the hinted ab (in [-1, 1], as
`batch.ab`), channel 2 the mask (1 where a point is, else 0). All zeros is "no points": automatic
colorization with the same network.
"""

from __future__ import annotations

import json
import math
import string
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from colorgan.color import rgb_to_l_ab
from colorgan.errors import ColorganError
from colorgan.files import read_bounded

HINT_CHANNELS = 3  # a, b, mask
REFERENCE_SIDE = 256  # patch sizes are given at this working size and scaled with it
EVAL_PATCH = 6  # evaluate's test points: 6x6 patches at 256 px (scaled)
MAX_HINT_FILE_BYTES = 1_000_000  # a hints file or serve's hints field, at most
MAX_POINTS = 10_000  # points in one request: each is a loop step when rendering
MAX_PIXELS_AWAY = 1e7  # x, y and radius, in pixels, at most: no picture is as large


class HintError(ColorganError):
    """A hint or hints file that cannot be used."""


Color = str | tuple[int, int, int] | list[int]
HEX_DIGITS = frozenset(string.hexdigits)


@dataclass(frozen=True)
class Hint:
    """A color point: `x`, `y` in pixels of the image as given (after EXIF rotation), `color` an
    RGB hex string ("#3366ff", "#36f") or (r, g, b) in 0-255; `radius` in image pixels (None: a
    patch of about EVAL_PATCH working-size pixels)."""

    x: float
    y: float
    color: Color
    radius: float | None = None

    def __post_init__(self) -> None:
        """HintError (one line) for a coordinate, radius or color that is none."""
        _pixels(self.x, "x")
        _pixels(self.y, "y")
        if self.radius is not None and _pixels(self.radius, "radius") < 0:
            raise HintError(f"radius must be >= 0, got {self.radius:g}")
        parse_color(self.color)

    def ab(self) -> tuple[float, float]:
        """The color's Lab ab, scaled like `batch.ab` (in about [-1, 1])."""
        r, g, b = parse_color(self.color)
        rgb = torch.tensor([r, g, b], dtype=torch.float32).view(1, 3, 1, 1) / 255.0
        ab = rgb_to_l_ab(rgb)[1].flatten()
        return float(ab[0]), float(ab[1])


def no_points(l: torch.Tensor) -> torch.Tensor:
    """The hint map of "no points" for l (B, 1, H, W): zeros (B, 3, H, W) like `l`."""
    return l.new_zeros(l.shape[0], HINT_CHANNELS, *l.shape[2:])


def parse_color(color: object) -> tuple[int, int, int]:
    """'#rrggbb', '#rgb' or (r, g, b) in 0-255 -> (r, g, b); HintError otherwise."""
    if isinstance(color, str):
        text = color.strip().removeprefix("#")
        if len(text) == 3:
            text = "".join(c * 2 for c in text)
        if len(text) == 6 and all(c in HEX_DIGITS for c in text):  # int() takes 0x.., +.., _
            value = int(text, 16)
            return (value >> 16) & 255, (value >> 8) & 255, value & 255
    elif isinstance(color, (tuple, list)) and len(color) == 3 and all(_channel(c) for c in color):
        return int(color[0]), int(color[1]), int(color[2])
    shown = repr(color)[:40]
    raise HintError(f"color {shown} is not '#rrggbb', '#rgb' or [r, g, b] in 0-255")


def _channel(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 255


def _pixels(value: object, key: str) -> float:
    """`value` as a number of pixels: a finite int or float of at most MAX_PIXELS_AWAY in size
    (a 400-digit integer, 1e308 or NaN is no picture's); HintError naming `key` otherwise."""
    if (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and abs(value) <= MAX_PIXELS_AWAY  # False for NaN; a huge int is compared exactly
    ):
        return float(value)
    shown = repr(value)[:40]
    raise HintError(f"{key!r} must be a number of pixels up to {MAX_PIXELS_AWAY:g}, got {shown}")


def hints_from_json(data: object, where: str) -> list[Hint]:
    """A JSON list of {"x", "y", "color"[, "radius"]} -> Hints; HintError naming `where` and the
    entry otherwise."""
    if not isinstance(data, list):
        raise HintError(f'{where}: expected a JSON list of points like {{"x", "y", "color"}}')
    if len(data) > MAX_POINTS:
        raise HintError(f"{where}: {len(data):,} points; at most {MAX_POINTS:,} are taken")
    hints = []
    for index, entry in enumerate(data):
        at = f"{where}: point {index}"
        if not isinstance(entry, dict) or not {"x", "y", "color"} <= entry.keys():
            raise HintError(f"{at}: expected an object with x, y and color")
        unknown = set(entry) - {"x", "y", "color", "radius"}
        if unknown:
            raise HintError(f"{at}: unknown key {sorted(unknown)[0]!r} (x, y, color, radius)")
        try:
            radius = None if entry.get("radius") is None else _pixels(entry["radius"], "radius")
            x, y = _pixels(entry["x"], "x"), _pixels(entry["y"], "y")
            hints.append(Hint(x, y, parse_color(entry["color"]), radius))  # checks the radius
        except HintError as err:
            raise HintError(f"{at}: {err}") from None
    return hints


def hints_to_text(hints: Sequence[Hint]) -> str:
    """Points as a hints file's JSON, one point a line (what load_hints reads back)."""
    entries = []
    for hint in hints:
        entry: dict[str, Any] = {
            "x": hint.x,
            "y": hint.y,
            "color": "#{:02x}{:02x}{:02x}".format(*parse_color(hint.color)),
        }
        if hint.radius is not None:
            entry["radius"] = hint.radius
        entries.append(json.dumps(entry))
    return "[\n" + ",\n".join(f"  {e}" for e in entries) + ("\n]\n" if entries else "]\n")


def hints_from_text(text: str, where: str) -> list[Hint]:
    """The points of a hints file's text (at most MAX_HINT_FILE_BYTES); HintError naming
    `where` (and the entry) otherwise."""
    if len(text) > MAX_HINT_FILE_BYTES:  # characters: at least as many bytes
        raise HintError(f"{where}: over {MAX_HINT_FILE_BYTES:,} bytes; not a hints file")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise HintError(f"{where}: not valid JSON ({str(err).splitlines()[0][:80]})") from None
    except (RecursionError, ValueError) as err:  # nested too deep; an integer of 4300+ digits
        reason = "nested too deep" if isinstance(err, RecursionError) else str(err)[:80]
        raise HintError(f"{where}: not a hints file ({reason})") from None
    return hints_from_json(data, where)


def load_hints(path: Path) -> list[Hint]:
    """The points of a hints file; HintError with the file and the entry otherwise."""
    try:
        data = read_bounded(path, MAX_HINT_FILE_BYTES)
        if len(data) > MAX_HINT_FILE_BYTES:
            raise HintError(f"{path}: over {MAX_HINT_FILE_BYTES:,} bytes; not a hints file")
        text = data.decode("utf-8")
    except OSError as err:
        raise HintError(f"{path}: cannot read hints ({err.strerror or err})") from None
    except UnicodeDecodeError as err:
        raise HintError(f"{path}: not valid JSON ({str(err).splitlines()[0][:80]})") from None
    return hints_from_text(text, str(path))


def hints_to_json(hints: Sequence[Hint]) -> list[dict[str, Any]]:
    """Hints as the JSON list `load_hints` reads."""
    out = []
    for h in hints:
        r, g, b = parse_color(h.color)
        entry: dict[str, Any] = {"x": h.x, "y": h.y, "color": f"#{r:02x}{g:02x}{b:02x}"}
        if h.radius is not None:
            entry["radius"] = h.radius
        out.append(entry)
    return out


def check_inside(hints: Sequence[Hint], image_hw: tuple[int, int]) -> None:
    """HintError naming the first point outside an image of `image_hw` pixels."""
    height, width = image_hw
    for index, hint in enumerate(hints):
        if not (0 <= hint.x < width and 0 <= hint.y < height):
            raise HintError(
                f"point {index} at ({hint.x:g}, {hint.y:g}) is outside the {width}x{height} image"
            )


def render(
    hints: Sequence[Hint], image_hw: tuple[int, int], working_hw: tuple[int, int]
) -> torch.Tensor:
    """The hint map (3, h, w) of points given on an image of `image_hw`, at `working_hw`.
    A point outside the image is a HintError naming it."""
    check_inside(hints, image_hw)
    (height, width), (h, w) = image_hw, working_hw
    out = torch.zeros(HINT_CHANNELS, h, w)
    default_half = (patch_side(EVAL_PATCH, min(h, w)) - 1) / 2
    for hint in hints:
        cx, cy = hint.x * w / width, hint.y * h / height
        half = default_half if hint.radius is None else hint.radius * w / width
        left, right = _span(cx, half, w)
        top, bottom = _span(cy, half, h)
        a, b = hint.ab()
        out[0, top:bottom, left:right] = a
        out[1, top:bottom, left:right] = b
        out[2, top:bottom, left:right] = 1.0
    return out


def _span(center: float, half: float, size: int) -> tuple[int, int]:
    """Pixel range [start, end) of a patch of half-width `half` around `center`, at least one
    pixel, inside [0, size)."""
    start = max(0, min(size - 1, math.floor(center - half)))
    end = max(start + 1, min(size, math.floor(center + half) + 1))
    return start, end


def patch_side(max_patch: int, side: int) -> int:
    """A patch size given at REFERENCE_SIDE, scaled to a working `side`, at least 1 px."""
    return max(1, round(max_patch * side / REFERENCE_SIDE))


def draw_points(
    ab: torch.Tensor, count: int, sides: Sequence[int], gen: torch.Generator
) -> torch.Tensor:
    """A hint map (3, S, S) of `count` square patches of the given `sides` (cycled), each
    holding the truth's mean ab over it, at positions drawn around the center (normal,
    σ = S/4, clipped): Zhang et al.'s simulated user. `ab`: the truth (2, S, S)."""
    _, height, width = ab.shape
    out = torch.zeros(HINT_CHANNELS, height, width)
    for i in range(count):
        side = min(sides[i % len(sides)], height, width)
        centre = torch.randn(2, generator=gen) * torch.tensor([height, width]) / 4.0
        top = int((centre[0] + height / 2 - side / 2).round().clamp(0, height - side))
        left = int((centre[1] + width / 2 - side / 2).round().clamp(0, width - side))
        place_patch(out, ab, top, left, side)
    return out


def place_patch(hint_map: torch.Tensor, ab: torch.Tensor, top: int, left: int, side: int) -> None:
    """Put a simulated user's point into `hint_map` (3, S, S), in place: the `side` x `side`
    patch at (top, left) gets the truth's mean ab over it (`ab`: (2, S, S)) and the mask."""
    rows, cols = slice(top, top + side), slice(left, left + side)
    hint_map[:2, rows, cols] = ab[:, rows, cols].mean(dim=(1, 2))[:, None, None]
    hint_map[2, rows, cols] = 1.0


def draw_count(p: float, gen: torch.Generator, most: int = 64) -> int:
    """A geometric number of points: P(n) = p (1 - p)^n, at most `most`."""
    count = 0
    while float(torch.rand((), generator=gen)) >= p and count < most:
        count += 1
    return count


def simulate(ab: torch.Tensor, p: float, max_patch: int, gen: torch.Generator) -> torch.Tensor:
    """Training's simulated user: a geometric number of points (P(0) = p; mean (1 - p) / p),
    each a square of 1..max_patch px at 256 px (scaled with the crop). `ab`: (2, S, S)."""
    count = draw_count(p, gen)
    side = ab.shape[-1]
    top = patch_side(max_patch, side)
    sides = [int(torch.randint(1, top + 1, (), generator=gen)) for _ in range(count)]
    return draw_points(ab, count, sides or [1], gen) if count else torch.zeros(3, *ab.shape[1:])


def eval_points(ab: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    """Evaluate's points: `count` EVAL_PATCH patches (scaled) drawn with `seed`, the first
    `count` of one fixed sequence, so 5 points are the 2 points plus 3 more."""
    gen = torch.Generator().manual_seed(seed)
    return draw_points(ab, count, [patch_side(EVAL_PATCH, ab.shape[-1])], gen)


# HintSpread: how a generator with model.hints spreads its points (see the class)
# the boxes a point spreads over: half-widths of the shorter side / (2 * n), finest first;
# the widest reaches half the shorter side: a point moves nothing farther than that from it
SPREAD_BOXES = (32, 16, 8, 4, 2, 1)
# each box is offered twice: all its points, and its points of about the pixel's lightness
# (a bilateral grid: the points splatted into SPREAD_LEVELS lightness bins with tent weights,
# read back at the pixel's own lightness), so hair and skin points in one box stay apart
SPREAD_LEVELS = 12
SPREAD_LIGHTNESS = 0.2  # its start: a box whose points' L differs by this costs e^-0.5
SPREAD_COARSER = math.log(2.0)  # its start: each larger box is half as likely
SPREAD_POINT = 4.0  # its start: at a point's own pixels, the point's color wins (e^4 : 1)
SPREAD_OWN = -2.0  # its start: the generator's own ab against a box whose points match L
SPREAD_ALIKE = 1.0  # its start: a box's points of the pixel's lightness against all of them
SPREAD_HIDDEN = 16
SPREAD_ABSENT = -1e4  # a candidate without any point in reach: never picked
SPREAD_HELD = 1e-3  # a candidate's points must weigh this many hinted pixels to be in reach
# the most bytes HintSpread holds at once in inference, per cell of its grid (its 13 candidates
# and the box sums behind them, float32) and per pixel (its input and output ab, the change
# upsampled): measured 2214 and 16 (tests/test_points_limits.py keeps them above what it
# measures)
SPREAD_BYTES_PER_CELL = 2400
SPREAD_BYTES_PER_PIXEL = 32


class HintSpread(nn.Module):
    """Spreads a hint map's points over the image (model.hints), so that the network does not
    have to learn propagation from scratch (Zhang et al. needed ImageNet-scale training).

    Each pixel picks among candidates: the generator's own ab, the point at the pixel itself,
    and, for each box size of SPREAD_BOXES, the mean color of the points in the box around it
    (normalised convolution) and the mean color of those of them about as light as the pixel
    (a bilateral grid over lightness). Their logits start as a fixed rule (a smaller box, a
    box whose points' lightness matches the pixel's, and the lightness-matched mean are more
    likely) plus a learned per-pixel term (a 1x1 MLP, zero-initialised) of what each
    candidate offers: how much of its box is hinted, its lightness difference, its distance
    to the generator's ab. A candidate with no point in reach is never picked, so with no
    points the output is the generator's ab exactly. Computed in float32 (under autocast
    too); the candidates are no function of any weight, so they hold no autograd graph.

    `stride` (the generator's output stride, where its colors are made): the whole choice is
    made on a grid of stride x stride cells, each holding its pixels' sums, and what it changed
    is brought back to full size bilinearly; the generator's own detail inside a cell stays.
    About 1/stride^2 of the full-resolution cost, and no recompute in backward."""

    def __init__(self, stride: int = 1) -> None:
        super().__init__()
        self.stride = stride
        count = 1 + 2 * len(SPREAD_BOXES)  # the point itself, then all / alike per box
        with torch.random.fork_rng(devices=[]):  # its own random stream: other parts unchanged
            torch.manual_seed(torch.initial_seed() + 4)
            self.net = self._net(count)
        nn.init.zeros_(self.net[2].weight)  # type: ignore[arg-type]
        nn.init.zeros_(self.net[2].bias)  # type: ignore[arg-type]
        boxes = [-SPREAD_COARSER * i for i in range(len(SPREAD_BOXES))]
        start = [SPREAD_OWN, SPREAD_POINT] + boxes + [b + SPREAD_ALIKE for b in boxes]
        self.register_buffer("start", torch.tensor(start).view(1, -1, 1, 1), persistent=False)

    @staticmethod
    def _net(count: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(3 * count + 1, SPREAD_HIDDEN, 1),
            nn.ReLU(),
            nn.Conv2d(SPREAD_HIDDEN, count + 1, 1),
        )

    def forward(self, ab: torch.Tensor, l: torch.Tensor, hint_map: torch.Tensor) -> torch.Tensor:
        """`ab` (B, 2, H, W), the generator's, moved toward the points of `hint_map`
        (B, 3, H, W) near each pixel of lightness `l` (B, 1, H, W). At stride 1 in training it
        is recomputed in backward instead of keeping its float32 full-resolution tensors (about
        1 GiB at 512 px, batch 8; docs/journal/performance.md)."""
        if self.stride > 1:
            own = F.avg_pool2d(ab, self.stride)
            moved = self._spread(own, l, hint_map) - own  # (B, 2, H / stride, W / stride)
            return ab + F.interpolate(moved, ab.shape[-2:], mode="bilinear", align_corners=False)
        if self.training and torch.is_grad_enabled():
            out = checkpoint(self._spread, ab, l, hint_map, use_reentrant=False)
            assert isinstance(out, torch.Tensor)
            return out
        return self._spread(ab, l, hint_map)

    def _spread(self, ab: torch.Tensor, l: torch.Tensor, hint_map: torch.Tensor) -> torch.Tensor:
        """`ab` at the grid of cells (B, 2, h, w) moved; `l` and `hint_map` at full size."""
        with torch.autocast(ab.device.type, enabled=False):
            own, l, hint_map = ab.float(), l.float(), hint_map.float()
            with torch.no_grad():  # (B, K, 2|1|1, h, w)
                colors, cover, lightness = spread_candidates(hint_map, l, self.stride)
            if self.stride > 1:
                l = F.avg_pool2d(l, self.stride)  # each cell's mean lightness
            differ = l[:, None] - lightness
            distance = (colors - own[:, None]).abs().sum(dim=2, keepdim=True)
            offered = torch.cat([cover.clamp_min(1e-4).log() / 4.0, differ, distance], dim=2)
            features = torch.cat([offered.flatten(1, 2), l], dim=1)
            rule = -differ.square().squeeze(2) / (2 * SPREAD_LIGHTNESS**2)
            present = torch.where(cover.squeeze(2) > 0, rule, SPREAD_ABSENT)
            start = self.start
            assert isinstance(start, torch.Tensor)
            logits = self.net(features) + start + F.pad(present, (0, 0, 0, 0, 1, 0))
            weights = logits.softmax(dim=1)  # (B, 1 + K, h, w)
            picked = (weights[:, 1:, None] * colors).sum(dim=1)
            out = weights[:, :1] * own + picked
        return out.to(ab.dtype)


def spread_bytes_per_pixel(stride: int) -> float:
    """What HintSpread at `stride` holds at once in inference, per working pixel (float32)."""
    return SPREAD_BYTES_PER_CELL / stride**2 + (SPREAD_BYTES_PER_PIXEL if stride > 1 else 0)


def spread_candidates(
    hint_map: torch.Tensor, l: torch.Tensor, stride: int = 1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """HintSpread's candidates for each cell of a grid at `stride` (1: each pixel; H and W its
    multiples) from `hint_map` and `l` (B, 3|1, H, W): the points in the cell itself, then
    for each n of SPREAD_BOXES the points in the box of half-width (shorter side) / (2n)
    around it (in whole cells), then for each n those of them weighted by how close their
    lightness is to the cell's mean (a bilateral grid; a cell's points count at their mean
    lightness). Box sums from cumulative sums: any image size, in ONNX too. Returns their mean
    ab (B, K, 2, h, w), the (weighted) share of hinted pixels in the box (B, K, 1, h, w; 0:
    none in reach) and the points' mean lightness (B, K, 1, h, w)."""
    mask = hint_map[:, 2:]
    stacked = torch.cat([hint_map[:, :2] * mask, l * mask, mask], dim=1)  # (B, 4, H, W)
    if stride > 1:  # each cell's sums of its pixels, and its mean lightness
        stacked = F.avg_pool2d(stacked, stride) * float(stride * stride)
        l = F.avg_pool2d(l, stride)
    points_l = stacked[:, 2:3] / stacked[:, 3:].clamp_min(SPREAD_HELD)  # at stride 1: l
    binned = (lightness_bins(points_l)[:, :, None] * stacked[:, None]).flatten(1, 2)
    bins = lightness_bins(l)  # (B, SPREAD_LEVELS, h, w)
    side = torch.sym_min(*stacked.shape[-2:])
    lowest = 1 if stride == 1 else 0  # a box of half-width 0 cells is the cell itself
    halves = [torch.sym_max(side // (2 * n), lowest) for n in SPREAD_BOXES]  # ascending
    boxed = _box_sums(torch.cat([stacked, binned], dim=1), halves)
    plain, alike = [stacked], []
    for summed in boxed:
        plain.append(summed[:, :4].clone())  # not a view: the box's other sums go
        levels = summed[:, 4:].unflatten(1, (SPREAD_LEVELS, 4))
        alike.append((levels * bins[:, :, None]).sum(dim=1))  # read at the cell's L
    areas = [float(stride * stride)] + [float((2 * h + 1) ** 2 * stride * stride) for h in halves]
    sums = torch.stack(plain + alike, dim=1)  # (B, K, 4, h, w)
    # a box sum is a difference of cumulative sums: where no point is in reach it is zero only
    # up to float rounding, so a candidate needs SPREAD_HELD hinted pixels' weight to count
    held = sums[:, :, 3:]
    held = torch.where(held > SPREAD_HELD, held, 0.0)
    area = torch.tensor(areas + areas[1:], device=held.device).view(1, -1, 1, 1, 1)
    weight = held.clamp_min(SPREAD_HELD)
    return sums[:, :, :2] / weight, held / area, sums[:, :, 2:3] / weight


def lightness_bins(l: torch.Tensor) -> torch.Tensor:
    """Tent weights (B, SPREAD_LEVELS, H, W) of each pixel's L (in [-1, 1]) over SPREAD_LEVELS
    evenly spaced lightness levels: they sum to 1 at every pixel."""
    step = 2.0 / (SPREAD_LEVELS - 1)
    levels = torch.linspace(-1.0, 1.0, SPREAD_LEVELS, device=l.device).view(1, -1, 1, 1)
    return (1.0 - (l.clamp(-1.0, 1.0) - levels).abs() / step).clamp_min(0.0)


def _box_sums(x: torch.Tensor, halves: Sequence[int]) -> Iterator[torch.Tensor]:
    """x (B, C, H, W) summed over the box [i - h, i + h] x [j - h, j + h] around each pixel,
    clipped to the image, for each h of `halves` (ascending), one at a time (a box's sums can
    be dropped before the next is made): differences of slices of cumulative sums (slices, not
    a gather: an index_select along a spatial dim cost 25x as much on CPU), the one along H
    shared by every box."""
    rows = _prefix(x, 2, halves[-1])
    for h in halves:
        yield _window(_prefix(_window(rows, 2, h, halves[-1]), 3, h), 3, h, h)


def _prefix(x: torch.Tensor, dim: int, most: int) -> torch.Tensor:
    """x's cumulative sum along `dim`, padded for windows of half-width up to `most`: `most` + 1
    zeros before it, `most` copies of its total after."""
    totals = x.cumsum(dim)
    before, after = list(x.shape), list(x.shape)
    before[dim], after[dim] = most + 1, most
    last = totals.narrow(dim, x.shape[dim] - 1, 1).expand(after)
    return torch.cat([x.new_zeros(before), totals, last], dim=dim)


def _window(prefix: torch.Tensor, dim: int, half: int, most: int) -> torch.Tensor:
    """The sums over [i - half, i + half] along `dim` from `_prefix(x, dim, most)`."""
    size = prefix.shape[dim] - 2 * most - 1
    return prefix.narrow(dim, most + half + 1, size) - prefix.narrow(dim, most - half, size)
