"""What a user asks for one picture, and what a model can take: two values and one check.

A `Request` is everything a user gives besides the picture: color points, reference images,
a caution. `Capabilities` is what a model accepts, read once from wherever the model came from
(a checkpoint's or model folder's config, an ONNX file's metadata). `Capabilities.check` is
the one place that refuses a request a model cannot honour, with the one "trained without"
line; `Capabilities.resolve_caution` resolves the caution. The Colorizer, the folder runs, serve,
evaluate, export and the model card pass these values, never loose parameter lists.

A new user input (say, a second kind of hint) adds a field to `Request`, a row to `INPUTS`,
and a flag to `Capabilities`; see docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from colorgan import bank
from colorgan.bank import BANK_TOP
from colorgan.color import float_to_uint8
from colorgan.config import ModelConfig, shown
from colorgan.errors import ColorganError, DataError, UnreadableImage
from colorgan.files import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, find_images, load_picture, to_image
from colorgan.hints import Hint, HintError, check_inside, render
from colorgan.matching import EXEMPLAR_MULTIPLE, exemplar_side, exemplar_slot
from colorgan.reference import ReferenceImageError, from_image, reduce_image


@dataclass(frozen=True)
class Input:
    """One kind of user input a model must have been trained for."""

    key: str  # its model.* config key (and Capabilities field)
    name: str  # what it is, for the model card and a refusal that names no option
    lacks: str  # how a model without it is described: "this model {lacks}"
    error: type[ColorganError]  # the error class its refusals raise
    tag: str  # the model card's Hub tag for a model that takes it


# The model.* switches a user's request may need: the generator inputs (named as in
# batch.INPUT_NAMES) and the uncertainty output that a caution needs.
INPUTS = {
    "hints": Input("hints", "color points", "was trained without color points", HintError,
                   "color-hints"),
    "reference": Input("reference", "a reference image",
                       "was trained without a reference input", ReferenceImageError,
                       "color-reference"),
    "uncertainty": Input("uncertainty", "how sure it is (uncertainty)",
                         "does not predict how sure it is", ColorganError, "uncertainty"),
}  # fmt: skip


def check_caution(caution: object, what: str = "caution") -> float:
    """`caution` as a float, or a ColorganError naming `what` unless it is a number 0 to 1."""
    if isinstance(caution, bool) or not isinstance(caution, (int, float)):
        raise ColorganError(f"{what} must be a number from 0 to 1, got {shown(caution)}")
    if not (math.isfinite(caution) and 0.0 <= caution <= 1.0):
        raise ColorganError(
            f"{what} must be a number from 0 to 1 (0: the model's colors, 1: gray wherever it "
            f"is unsure), got {caution:g}"
        )
    return float(caution)


def parse_caution(text: str, what: str = "caution") -> float:
    """A caution given as text (--caution, a form field), checked (check_caution)."""
    try:
        value = float(text)
    except ValueError:
        raise ColorganError(f"{what} must be a number from 0 to 1, got {shown(text)}") from None
    return check_caution(value, what)


@dataclass(frozen=True, eq=False)
class Reference:
    """One or more reference images (PIL images, or files decoded on first use, each under
    `max_pixels`; a folder stands for the image files under it: a bank); their colors are
    summarized once, however many pictures use them (each image counts equally: the mean of
    their summaries)."""

    sources: tuple[Image.Image | Path, ...]
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if not self.sources:
            raise ReferenceImageError("reference: give at least one image")
        for source in self.sources:
            if not isinstance(source, (Image.Image, Path)):
                raise ReferenceImageError(
                    f"reference must be a PIL image (PIL.Image.open(path)), a path, or a list "
                    f"of them, got {shown(source)}"
                )

    def __str__(self) -> str:
        return ", ".join(str(s) if isinstance(s, Path) else "an image" for s in self.sources)

    @cached_property
    def expanded(self) -> tuple[Image.Image | Path, ...]:
        """The sources with each folder replaced by the image files under it (recursively,
        sorted, as colorize finds its inputs); a ReferenceImageError for a folder without any."""
        return tuple(item for source in self.sources for item in _expand(source))

    @cached_property
    def images(self) -> tuple[Image.Image, ...]:
        """The reference images; a file is decoded as colorize decodes its inputs (EXIF
        orientation, over `max_pixels` refused: a ReferenceImageError naming it) and kept
        only as the model uses it (`reduced`), so a bank of large files stays small."""
        given = self.expanded
        return tuple(_open(s, self.max_pixels) if isinstance(s, Path) else s for s in given)

    def read(self) -> None:
        """Decode and summarize the images now, and describe a bank's: once, before many
        pictures (a folder run's decoding workers) use them."""
        self.summary  # noqa: B018
        if len(self.expanded) > BANK_TOP:
            self.descriptors  # noqa: B018

    @cached_property
    def summary(self) -> torch.Tensor:
        """The summary a model takes (1, REFERENCE_CHANNELS) on the CPU (reference.py)."""
        summaries = [from_image(image) for image in self.images]
        return summaries[0] if len(summaries) == 1 else torch.cat(summaries).mean(0, True)

    @cached_property
    def descriptors(self) -> torch.Tensor:
        """Each image's bank descriptor (R, 1280) (bank.py), computed once."""
        return torch.stack([bank.describe(reduce_image(image)) for image in self.images])

    def closest(self, rgb: torch.Tensor) -> Reference:
        """The reference a picture (RGB (1, 3, H, W), uint8 or [0, 1]) uses: these images, or
        of a bank of more than BANK_TOP, the BANK_TOP closest to it (bank.py)."""
        if len(self.expanded) <= BANK_TOP:
            return self
        chosen = bank.closest(bank.describe(rgb), self.descriptors)
        return Reference(tuple(self.images[i] for i in chosen), self.max_pixels)

    def exemplar(self, side: int) -> torch.Tensor:
        """The exemplar input (1, R, 4, side, side) of these images (matching.py), on the CPU:
        made once per side, however many pictures of that working size use it."""
        if side not in self._exemplars:
            slots = [exemplar_slot(reduce_image(image)[0], side) for image in self.images]
            self._exemplars[side] = torch.stack(slots)[None]
        return self._exemplars[side]

    @cached_property
    def _exemplars(self) -> dict[int, torch.Tensor]:
        return {}

    @cached_property
    def digest(self) -> str:
        """The summary's identity (sha256 of its float32 bytes): the same colors, the same key."""
        data = self.summary.to(torch.float32).contiguous().numpy().tobytes()
        return hashlib.sha256(data).hexdigest()


def reduced(image: Image.Image) -> Image.Image:
    """A reference image as every use of it sees it (reference.reduce_image: RGB, alpha
    flattened onto white, its longer side at most SUMMARY_SIDE): the same summary, exemplar
    and bank descriptor as the image itself, in a fraction of the memory."""
    return to_image(reduce_image(image)[0], None)


def _expand(source: Image.Image | Path) -> list[Image.Image | Path]:
    """[source], or for a folder the image files under it; ReferenceImageError if none."""
    if not isinstance(source, Path) or not source.is_dir():
        return [source]
    try:
        found: list[Image.Image | Path] = list(find_images(source))
    except DataError as err:  # the folder itself cannot be listed
        raise ReferenceImageError(f"reference {err}") from None
    if not found:
        kinds = ", ".join(sorted(IMAGE_SUFFIXES))
        raise ReferenceImageError(
            f"reference {source}: a folder with no image files ({kinds}); "
            f"put reference images in it, or give image files"
        )
    return found


def _open(path: Path, max_pixels: int) -> Image.Image:
    """A reference file as an upright PIL image, `reduced`."""
    try:
        picture = load_picture(path, max_pixels)
    except UnreadableImage as err:
        raise ReferenceImageError(f"reference {path}: {err}") from None
    rgb = picture.rgb if picture.rgb.dtype == torch.uint8 else float_to_uint8(picture.rgb)
    return reduced(to_image(rgb, picture.alpha))


@dataclass(frozen=True)
class Request:
    """What a user asks for one picture: color points (pixels of the upright picture), a
    reference (its colors), and a caution (0 to 1; None: the model's default)."""

    points: tuple[Hint, ...] = ()
    reference: Reference | None = None
    caution: float | None = None

    def __post_init__(self) -> None:
        for point in self.points:
            if not isinstance(point, Hint):
                raise HintError(f"hints must be colorgan.Hint(x, y, color), got {shown(point)}")
        if self.caution is not None:
            object.__setattr__(self, "caution", check_caution(self.caution))

    @classmethod
    def of(
        cls,
        hints: Sequence[Hint] | None = None,
        reference: Image.Image | Path | Sequence[Image.Image | Path] | Reference | None = None,
        caution: float | None = None,
    ) -> Request:
        """A request from the public keyword API (`Colorizer.colorize(image, hints=...,
        reference=..., caution=...)`): `reference` one image (a file, a folder of them) or a
        list of them."""
        if hints is not None and not isinstance(hints, (list, tuple)):
            raise HintError(f"hints must be a list of colorgan.Hint, got {shown(hints)}")
        if reference is not None and not isinstance(reference, Reference):
            given = reference if isinstance(reference, (list, tuple)) else (reference,)
            reference = Reference(tuple(Path(g) if isinstance(g, str) else g for g in given))
        return cls(tuple(hints or ()), reference, caution)

    def with_points(self, points: Sequence[Hint] | None) -> Request:
        """The same request with these points (a folder run: each image its own)."""
        return dataclasses.replace(self, points=tuple(points or ()))

    def with_reference(self, reference: Reference | None) -> Request:
        """The same request with this reference (a folder run: one for every image)."""
        return dataclasses.replace(self, reference=reference)

    def asks(self) -> list[str]:
        """The INPUTS this request needs a model to have been trained for."""
        needs = ["hints"] if self.points else []
        needs += ["reference"] if self.reference is not None else []
        return needs + (["uncertainty"] if self.caution else [])

    def inputs(
        self, image_hw: tuple[int, int], working_hw: tuple[int, int]
    ) -> dict[str, torch.Tensor]:
        """The generator inputs this request gives (by batch.INPUT_NAMES) for a picture of
        `image_hw` run at `working_hw`, each (1, ...) on the CPU: the hint map (1, 3, h, w)
        and the reference summary (1, REFERENCE_CHANNELS). One not given is absent; a model
        that takes it then sees zeros, which mean "none" for every input."""
        given = {}
        if self.points:
            given["hints"] = render(self.points, image_hw, working_hw)[None]
        if self.reference is not None:
            given["reference"] = self.reference.summary
            side = exemplar_side(working_hw, EXEMPLAR_MULTIPLE)
            given["exemplar"] = self.reference.exemplar(side)
        return given

    def for_picture(self, rgb: torch.Tensor) -> Request:
        """This request as one picture (RGB (1, 3, H, W)) uses it: of a reference bank, the
        images closest to it (Reference.closest)."""
        if self.reference is None:
            return self
        return self.with_reference(self.reference.closest(rgb))

    def check_inside(self, image_hw: tuple[int, int]) -> None:
        """HintError naming the first point outside an image of `image_hw` (h, w) pixels."""
        check_inside(self.points, image_hw)

    def key(self, caution: float) -> list[object]:
        """What an output depends on from this request, for a folder run's re-run key, with the
        caution it was colorized with (resolved): no caution and no reference add nothing, so
        keys of runs from before they existed still match."""
        parts: list[object] = [[[h.x, h.y, h.color, h.radius] for h in self.points]]
        if caution:
            parts.append(caution)
        if self.reference is not None:
            parts.append({"reference": self.reference.digest})
        return parts


@dataclass(frozen=True)
class Capabilities:
    """What a model accepts: color points, a reference, and whether it predicts how sure it
    is (then `caution` is its default caution)."""

    hints: bool = False
    reference: bool = False
    uncertainty: bool = False
    caution: float = 0.0
    match: bool = False  # the reference also matched place by place (model.reference_match)

    @classmethod
    def of(cls, model: ModelConfig) -> Capabilities:
        """A model's, from its config (a checkpoint's or a model folder's)."""
        caution = model.caution if model.uncertainty else 0.0
        match = model.reference and model.reference_match
        takes = {name: bool(getattr(model, name)) for name in INPUTS}
        return cls(**takes, caution=caution, match=match)

    @classmethod
    def of_graph(cls, names: Sequence[str], uncertainty: bool, caution: float) -> Capabilities:
        """An exported model's, from its graph's input names and its metadata."""
        takes = {name: name in names for name in INPUTS if name != "uncertainty"}
        caution = caution if uncertainty else 0.0
        return cls(**takes, uncertainty=uncertainty, caution=caution, match="exemplar" in names)

    def refusal(self, name: str, what: str) -> ColorganError:
        """The one line for `what` (e.g. "--hints pts.json") asking for INPUTS[name] of a
        model trained without it."""
        given = INPUTS[name]
        return given.error(
            f"{what}: this model {given.lacks} (model.{given.key}=false); "
            f"drop {what}, or use a model trained with --set model.{given.key}=true"
        )

    def check(self, request: Request, what: dict[str, str] | None = None) -> None:
        """Refuse (refusal) the first input of `request` the model cannot take; `what` names
        each input as the user gave it (default: "color points", "reference", "caution")."""
        names = {"hints": "color points", "reference": "reference", "uncertainty": "caution"}
        names |= what or {}
        for name in request.asks():
            if not getattr(self, name):
                raise self.refusal(name, names[name])

    def need(self, name: str, what: str) -> None:
        """Refuse `what` (an option or output that needs INPUTS[name]) unless the model has it."""
        if not getattr(self, name):
            raise self.refusal(name, what)

    def resolve_caution(self, request: Request, what: str = "caution") -> float:
        """The caution to colorize `request` with: its own (checked against the model), or the
        model's default (0 for a model that does not predict its uncertainty)."""
        if request.caution is None:
            return self.caution
        if request.caution > 0.0:
            self.need("uncertainty", what)
        return request.caution

    def rows(self) -> list[tuple[str, bool]]:
        """(input, taken) for the model card."""
        return [(f"{given.name} (`model.{name}`)", getattr(self, name))
                for name, given in INPUTS.items()]  # fmt: skip

    def tags(self) -> list[str]:
        """The model card's Hub tags of what the model takes."""
        return [given.tag for name, given in INPUTS.items() if getattr(self, name)]

    def metadata(self) -> dict[str, Any]:
        """The capabilities as JSON-ready values (ONNX metadata, /api/info)."""
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        return json.dumps(self.metadata(), sort_keys=True)


PLAIN = Capabilities()  # a model that takes l alone and predicts ab alone
NOTHING = Request()  # a request for the model's own colors: no points, no reference
