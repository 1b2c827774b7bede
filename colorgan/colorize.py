"""Colorizer: images of any size and mode, full-resolution L kept; files, folders, bad inputs.

The model runs on the L channel at a working size: the image is scaled (aspect kept) so its
short side is about `size` pixels (default: the checkpoint's training size, the scale the model
learned at), with the long side capped at MAX_ASPECT * size, and each side rounded to a multiple
of 2**depth. The predicted ab is upsampled bilinearly to the input's own resolution and joined
with the input's own full-resolution L, so the output has the input's size, detail and Lab
lightness (up to 8-bit rounding: a color outside sRGB loses chroma, never lightness).

A model trained with model.uncertainty also says how sure it is of each pixel's color: `caution`
(0 to 1; default: the model's `model.caution`) fades its ab toward gray where it is unsure, at
the working size and before the upsampling (uncertainty.fade; L is never touched, a point's own
pixels keep its color), and `colorize_with_uncertainty` gives the map of where it is guessing.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm import tqdm

from colorgan.batch import Batch, Prediction, model_inputs, split_output
from colorgan.color import float_to_uint8, lab_in_gamut, rgb_to_l_ab, uint8_to_l
from colorgan.config import shown
from colorgan.device import check_fits, free_memory, resolve_device
from colorgan.errors import ColorganError, DataError, DoesNotFit, UnreadableImage
from colorgan.files import (
    DEFAULT_MAX_PIXELS,
    FORMATS,
    Picture,
    find_images,
    load_picture,
    mark_options,
    save_image,
    to_image,
    to_picture,
    written_by_colorgan,
)
from colorgan.generator import DEFAULT_BYTES_PER_PIXEL, bytes_per_pixel
from colorgan.hints import Hint, HintError, check_inside, load_hints, no_points, render
from colorgan.hub import PREFIX as HUB_PREFIX
from colorgan.modeldir import ModelSource, load_model, resolve_model
from colorgan.reference import NO_REFERENCE_INPUT, ReferenceImageError, from_image
from colorgan.speed import fast_model
from colorgan.uncertainty import fade, uncertainty_map

# The model as a function: Batch (l at the working size, + conditioning) -> the model's whole
# output, on the Colorizer's device: ab (B, 2, h, w) in [-1, 1], or with model.uncertainty
# (B, 3, h, w), ab and the uncertainty (see batch.split_output). A generator or an ONNX session.
Predict = Callable[[Batch], torch.Tensor]

DEFAULT_BATCH_SIZE = 8  # files read and run through the model together
MAX_BATCH_SIZE = 1024
MAX_ASPECT = 4  # the working image's long side is at most this many times the working size
_STRIP_PIXELS = 4_000_000  # full-resolution color math runs on row strips of about this size
# PNG at zlib level 3, not Pillow's 6: 3x faster to encode 512-px colorized photos and anime
# (27 against 82 ms, the largest cost of a folder run) for files 0.3 % larger (24 % on flat
# generated scenes); docs/PERFORMANCE.md
PNG_LEVEL = 3
_OPTIONS: dict[str, dict[str, Any]] = {
    "png": {"compress_level": PNG_LEVEL}, "jpg": {"quality": 95}, "webp": {"quality": 95},
}  # fmt: skip
_COLOR_BYTES_PER_PIXEL = 64  # per working pixel besides the model: l, hint map, ab, resizing
UNCERTAINTY_SUFFIX = ".uncertainty.png"  # <name>.uncertainty.png: the map beside <name>.<format>


log = logging.getLogger("colorgan")


def no_uncertainty(what: str) -> ColorganError:
    """The one line for `what` ("--caution", "--uncertainty-map") asked of a model without it."""
    return ColorganError(
        "this model does not predict how sure it is (model.uncertainty=false); "
        f"{what} needs one trained with --set model.uncertainty=true"
    )


def check_caution(caution: float, what: str = "caution") -> float:
    """`caution` as a float, or a ColorganError naming it unless it is a number from 0 to 1."""
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


def working_shape(height: int, width: int, size: int, multiple: int) -> tuple[int, int]:
    """The (h, w) the model runs at: short side about `size`, aspect kept, long side at most
    MAX_ASPECT * size, each side a multiple of `multiple`."""
    scale = min(size / min(height, width), MAX_ASPECT * size / max(height, width))

    def fit(side: int) -> int:
        return max(multiple, round(side * scale / multiple) * multiple)

    return fit(height), fit(width)


def _strips(height: int, width: int) -> list[slice]:
    """Row ranges of about _STRIP_PIXELS pixels each, covering `height` rows."""
    step = max(1, _STRIP_PIXELS // width)
    return [slice(top, top + step) for top in range(0, height, step)]


def lightness(rgb: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Picture.rgb (3, H, W) -> l (1, 1, H, W) in [-1, 1] on `device`, converted in strips."""
    parts = []
    for rows in _strips(*rgb.shape[-2:]):
        strip = rgb[:, rows].to(device)
        if strip.dtype == torch.uint8:
            parts.append(uint8_to_l(strip[None]))
        else:
            parts.append(rgb_to_l_ab(strip[None].float())[0])
    return torch.cat(parts, dim=2)


def resize_l(l: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """l (1, 1, H, W) -> (1, 1, h, w), bilinear and antialiased; still in [-1, 1]."""
    return F.interpolate(l, size=shape, mode="bilinear", antialias=True).clamp(-1.0, 1.0)


def join(l: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """Full-res l (1, 1, H, W) in [-1, 1] + ab (1, 2, h, w) in [-1, 1], upsampled bilinearly
    -> sRGB (3, H, W) uint8 on the CPU with the same Lab L (up to 8-bit rounding)."""
    height, width = l.shape[-2:]
    ab_full = F.interpolate(ab, size=(height, width), mode="bilinear", align_corners=False)
    parts = [
        float_to_uint8(lab_in_gamut(l[..., rows, :], ab_full[..., rows, :])).cpu()
        for rows in _strips(height, width)
    ]
    return torch.cat(parts, dim=2)[0]


def uncertainty_image(uncertainty: torch.Tensor, shape: tuple[int, int]) -> Image.Image:
    """The uncertainty (1, 1, h, w) > 0 at the working size -> its map (uncertainty_map:
    black where the model is sure, white where it is guessing) upsampled bilinearly to
    `shape` (H, W), as a grayscale ('L') image."""
    full = F.interpolate(uncertainty.float(), size=shape, mode="bilinear", align_corners=False)
    level = uncertainty_map(full)[0, 0].cpu().numpy()  # (H, W) uint8
    return Image.fromarray(level)  # 2-D uint8: mode 'L'


def gray_image(picture: Picture) -> Image.Image:
    """The picture as the model sees it: its Lab L as gray, alpha kept."""
    l = lightness(picture.rgb, torch.device("cpu"))
    return to_image(join(l, torch.zeros(1, 2, 1, 1)), picture.alpha)


def _generator_predict(generator: nn.Module, channels_last: bool = False) -> Predict:
    """The generator as a gradient-free Predict: Batch -> its whole output, in float32."""

    def predict(batch: Batch) -> torch.Tensor:
        if channels_last:  # the image inputs; the reference summary is (B, C)
            batch = batch.map(
                lambda t: t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t
            )
        with torch.inference_mode():
            output = generator(**model_inputs(batch))
            assert isinstance(output, torch.Tensor)
            return output.float()  # (B, 2, h, w) in [-1, 1], or (B, 3, h, w) with uncertainty

    return predict


class Colorizer:
    """Colorizes images of any size with a model that maps l to ab at a working size."""

    def __init__(
        self,
        predict: Predict,
        image_size: int,
        multiple: int,
        device: torch.device,
        batch_size: int = DEFAULT_BATCH_SIZE,
        hints: bool = False,
        bytes_per_pixel: float = DEFAULT_BYTES_PER_PIXEL,
        uncertainty: bool = False,
        caution: float = 0.0,
        reference: bool = False,
    ) -> None:
        if not 1 <= batch_size <= MAX_BATCH_SIZE:  # a batch's files are held at once
            raise ColorganError(
                f"--batch-size must be from 1 to {MAX_BATCH_SIZE} files, got {batch_size}"
            )
        self.predict = predict
        self.image_size = image_size  # default working size: the training size
        self.multiple = multiple  # working sides are multiples of this (2**depth)
        self.device = device
        self.batch_size = batch_size
        self.hints = hints  # the model takes color points (model.hints)
        self.uncertainty = uncertainty  # the model says how sure it is (model.uncertainty)
        self.caution = check_caution(caution, "the model's caution")  # its default caution
        self.reference = reference  # the model takes a reference image's colors
        # inference memory per working pixel of one image (an estimate; see check_shape)
        self.bytes_per_pixel = bytes_per_pixel + _COLOR_BYTES_PER_PIXEL
        self.source = ""  # what it was loaded from: a path, or hf://owner/name@<commit>
        self.revision: str | None = None  # the Hub commit of a model from the Hub

    @classmethod
    def from_source(
        cls,
        source: ModelSource,
        device: str | torch.device = "auto",
        batch_size: int = DEFAULT_BATCH_SIZE,
        compile_model: bool = False,
    ) -> Colorizer:
        """A Colorizer for a resolved MODEL (modeldir.resolve_model). A generator runs as
        speed.fast_model makes it: BatchNorm folded, channels-last on CUDA, torch.compile
        with `compile_model`."""
        if source.kind == "onnx":
            colorizer = cls.from_onnx(source.path, str(device), batch_size)
        else:
            target = device if isinstance(device, torch.device) else resolve_device(device)
            generator, config = load_model(source)
            generator.to(target)
            layout = target.type == "cuda"  # channels-last: faster on GPUs, slower on CPUs
            fast = fast_model(generator, channels_last=layout, compile_model=compile_model)
            colorizer = cls(
                _generator_predict(fast, layout),
                config.data.image_size,
                generator.multiple,
                target,
                batch_size,
                hints=config.model.hints,
                bytes_per_pixel=bytes_per_pixel(generator),
                uncertainty=config.model.uncertainty,
                caution=config.model.caution,
                reference=config.model.reference,
            )
        colorizer.source, colorizer.revision = source.name, source.revision
        return colorizer

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str | torch.device = "auto",
        batch_size: int = DEFAULT_BATCH_SIZE,
        compile_model: bool = False,
    ) -> Colorizer:
        """A Colorizer for MODEL ('auto': cuda, mps, cpu): a training checkpoint (its generator
        rebuilt from it alone), a model folder (`export --model-dir`), `hf://owner/name[@rev]`
        (see from_pretrained), or an exported .onnx file, run in onnxruntime (see from_onnx)."""
        return cls.from_source(resolve_model(path), device, batch_size, compile_model)

    @classmethod
    def from_pretrained(
        cls,
        name: str | Path,
        revision: str | None = None,
        device: str | torch.device = "auto",
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> Colorizer:
        """A shared model: a model folder on this machine, or "owner/name" on the Hugging Face
        Hub at `revision` (a branch, tag or commit; default: the main branch), downloaded into
        huggingface_hub's cache (HF_HUB_OFFLINE=1: the cache alone). `.revision` is then the
        commit its files are from."""
        if Path(name).is_dir():
            if revision is not None:
                raise ColorganError(f"{name}: a folder on this machine has no revision")
            return cls.from_checkpoint(name, device, batch_size)
        text = str(name).removeprefix(HUB_PREFIX)
        if "@" in text and revision is not None:
            raise ColorganError(f"{name}: give the revision once (in the name or as revision=)")
        model = HUB_PREFIX + text + (f"@{revision}" if revision else "")
        return cls.from_checkpoint(model, device, batch_size)

    @classmethod
    def from_onnx(
        cls, path: str | Path, device: str = "auto", batch_size: int = DEFAULT_BATCH_SIZE
    ) -> Colorizer:
        """A generator exported by `colorgan export`, run by onnxruntime ('auto': CUDA, cpu)."""
        from colorgan.export import load_onnx  # onnxruntime is optional: imported on use

        model = load_onnx(path, device)
        colorizer = cls(
            model.predict, model.image_size, model.multiple, model.device, batch_size,
            model.hints, uncertainty=model.uncertainty, caution=model.caution,
            reference=model.reference,
        )  # fmt: skip
        colorizer.source = str(path)
        return colorizer

    def working_shape(self, picture: Picture, size: int | None = None) -> tuple[int, int]:
        """The (h, w) the model sees `picture` at, for working size `size` (default: the
        training size)."""
        size = self.image_size if size is None else size
        return working_shape(picture.rgb.shape[1], picture.rgb.shape[2], size, self.multiple)

    def check_shape(self, shape: tuple[int, int]) -> None:
        """DoesNotFit, before anything is allocated, if one image at working shape (h, w)
        needs more memory than the device has free (an estimate)."""
        height, width = shape
        check_fits(
            height * width * self.bytes_per_pixel,
            self.device,
            f"colorizing at a working size of {height}x{width}",
            "use a smaller --size",
        )

    def chunk(self, shape: tuple[int, int]) -> int:
        """How many images of working shape `shape` run together: the batch size, or fewer
        where the batch would not fit in memory."""
        free = free_memory(self.device)
        if free is None:
            return self.batch_size
        per_image = shape[0] * shape[1] * self.bytes_per_pixel
        return max(1, min(self.batch_size, int(free // per_image)))

    def resolve_caution(self, caution: float | None, what: str = "caution") -> float:
        """The caution to colorize with: `caution` checked (0 to 1; above 0 only for a model
        that predicts its uncertainty), or for None the model's default (no fading without)."""
        if caution is None:
            return self.caution if self.uncertainty else 0.0
        caution = check_caution(caution, what)
        if caution > 0.0 and not self.uncertainty:
            raise no_uncertainty(what)
        return caution

    def summarize(self, reference: Image.Image | None) -> torch.Tensor | None:
        """A reference image's colors as the model takes them (reference.from_image, (1, 257)
        on the model's device); None for None. ReferenceImageError for a model trained without
        model.reference."""
        if reference is None:
            return None
        if not isinstance(reference, Image.Image):
            raise ReferenceImageError(
                f"reference must be a PIL image (PIL.Image.open(path)), got {shown(reference)}"
            )
        if not self.reference:
            raise ReferenceImageError(
                f"this model was {NO_REFERENCE_INPUT}; train one with --set model.reference=true"
            )
        return from_image(reference).to(self.device)

    def colorize(
        self,
        image: Image.Image,
        size: int | None = None,
        hints: Sequence[Hint] | None = None,
        caution: float | None = None,
        reference: Image.Image | None = None,
    ) -> Image.Image:
        """A color version of `image` at its own (upright) size; RGBA if it had alpha. `hints`:
        color points in pixels of the upright image (a model trained with model.hints).
        `caution` (0 to 1, a model trained with model.uncertainty; None: the model's default)
        fades the colors toward gray where the model is unsure. `reference`: an image whose
        colors to use (a model trained with model.reference): the same character on another
        page, a color photo of the same place."""
        hint_lists = None if hints is None else [hints]
        return self.colorize_batch([image], size, hint_lists, caution, reference)[0]

    @torch.inference_mode()
    def colorize_with_uncertainty(
        self,
        image: Image.Image,
        size: int | None = None,
        hints: Sequence[Hint] | None = None,
        caution: float | None = None,
        reference: Image.Image | None = None,
    ) -> tuple[Image.Image, Image.Image]:
        """`colorize`'s image and, from the same run of the model, the map of how sure it is at
        the image's size: grayscale ('L'), black where sure, white where it is guessing (a mean
        |ab error| of uncertainty.MAP_FULL_SCALE Lab units or more). Needs model.uncertainty."""
        if not self.uncertainty:
            raise no_uncertainty("the uncertainty map")
        picture = to_picture(image)
        hint_lists = None if hints is None else [hints]
        summary = self.summarize(reference)
        [(l, prediction)] = self.predict_pictures([picture], size, hint_lists, caution, summary)
        assert prediction.uncertainty is not None
        colored = to_image(join(l, prediction.ab), picture.alpha)
        return colored, uncertainty_image(prediction.uncertainty, (l.shape[2], l.shape[3]))

    def colorize_batch(
        self,
        images: Sequence[Image.Image],
        size: int | None = None,
        hints: Sequence[Sequence[Hint] | None] | None = None,
        caution: float | None = None,
        reference: Image.Image | None = None,
    ) -> list[Image.Image]:
        """`colorize` for many images (with one list of hints each, or None; one reference for
        all); equal working shapes share model batches."""
        for image in images:
            if not isinstance(image, Image.Image):
                raise ColorganError(
                    f"image must be a PIL image (PIL.Image.open(path)), got {shown(image)}"
                )
        pictures = [to_picture(image) for image in images]
        colored = self.colorize_pictures(pictures, size, hints, caution, self.summarize(reference))
        return [to_image(rgb, p.alpha) for rgb, p in zip(colored, pictures, strict=True)]

    @torch.inference_mode()
    def colorize_pictures(
        self,
        pictures: Sequence[Picture],
        size: int | None = None,
        hints: Sequence[Sequence[Hint] | None] | None = None,
        caution: float | None = None,
        reference: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """Each picture's colors, (3, H, W) uint8 at its own size, its L kept. A point's own
        pixels get its color; the model spreads it. `reference`: a summary (`summarize`)."""
        predicted = self.predict_pictures(pictures, size, hints, caution, reference)
        return [join(l, prediction.ab) for l, prediction in predicted]

    @torch.inference_mode()
    def predict_pictures(
        self,
        pictures: Sequence[Picture],
        size: int | None = None,
        hints: Sequence[Sequence[Hint] | None] | None = None,
        caution: float | None = None,
        reference: torch.Tensor | None = None,
    ) -> list[tuple[torch.Tensor, Prediction]]:
        """Each picture's full-resolution l (1, 1, H, W) in [-1, 1] and the model's Prediction
        at its working size (see predict_maps: faded by `caution`, points kept, one reference
        summary (1, 257) for all)."""
        caution = self.resolve_caution(caution)
        size = self.image_size if size is None else size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ColorganError(
                f"working size must be a positive whole number of pixels, got {shown(size)}"
            )
        l_full = [lightness(p.rgb, self.device) for p in pictures]  # (1, 1, H, W) in [-1, 1]
        shapes = [working_shape(l.shape[2], l.shape[3], size, self.multiple) for l in l_full]
        maps = self._hint_maps(l_full, shapes, hints)  # (1, 3, h, w) per picture, or None
        predicted: dict[int, Prediction] = {}
        for shape in dict.fromkeys(shapes):
            self.check_shape(shape)
            same = [i for i, s in enumerate(shapes) if s == shape]
            step = self.chunk(shape)
            for start in range(0, len(same), step):
                chunk = same[start : start + step]
                l_small = torch.cat([resize_l(l_full[i], shape) for i in chunk])
                chunk_maps = [maps[i] for i in chunk]
                found = self.predict_maps(l_small, chunk_maps, caution, reference)
                predicted.update(zip(chunk, found, strict=True))
        return [(l, predicted[i]) for i, l in enumerate(l_full)]

    def _hint_maps(
        self,
        l_full: Sequence[torch.Tensor],
        shapes: Sequence[tuple[int, int]],
        hints: Sequence[Sequence[Hint] | None] | None,
    ) -> list[torch.Tensor | None]:
        """Each picture's hint map at its working shape (None: no points)."""
        if hints is None or not any(hints):
            return [None] * len(l_full)
        if len(hints) != len(l_full):
            raise ColorganError(f"{len(hints)} hint lists for {len(l_full)} images")
        self.check_points()
        for points in hints:
            for point in points or ():
                if not isinstance(point, Hint):
                    raise HintError(f"hints must be colorgan.Hint(x, y, color), got {shown(point)}")
        return [
            render(h, (l.shape[2], l.shape[3]), shape)[None].to(self.device) if h else None
            for h, l, shape in zip(hints, l_full, shapes, strict=True)
        ]

    def check_points(self, what: str = "color points") -> None:
        """HintError (one line, naming `what`) unless the model takes color points."""
        if not self.hints:
            raise HintError(
                f"{what}: this model was trained without color points (model.hints=false); "
                "drop them, or train one with --set model.hints=true"
            )

    def predict_maps(
        self,
        l_small: torch.Tensor,
        maps: Sequence[torch.Tensor | None],
        caution: float = 0.0,
        reference: torch.Tensor | None = None,
    ) -> list[Prediction]:
        """The model's Prediction for each l of `l_small` (B, 1, h, w) in [-1, 1], with its
        hint map (1, 3, h, w) or None, and the `reference` summary (1, 257) or None for all:
        ab (1, 2, h, w) faded by `caution` (resolve_caution's), then a point's own pixels get
        its color, and there the uncertainty (1, 1, h, w) is 0 (the user's color is no guess)."""
        hint_maps = None
        if any(m is not None for m in maps):
            self.check_points()  # an ONNX model without them would only paste the points
            zeros = no_points(l_small[:1])
            hint_maps = torch.cat([m if m is not None else zeros for m in maps])
        if reference is not None:
            reference = reference.to(l_small.device).expand(l_small.shape[0], -1)
        batch = Batch(l=l_small, hints=hint_maps, reference=reference)
        prediction = split_output(self.predict(batch))
        ab, uncertainty = prediction.ab, prediction.uncertainty
        if caution > 0.0:
            if uncertainty is None:
                raise no_uncertainty("caution")
            ab = fade(ab, uncertainty, caution)  # at the working size, before `join`
        if hint_maps is not None:
            points = hint_maps[:, 2:] > 0
            ab = torch.where(points, hint_maps[:, :2], ab)
            if uncertainty is not None:
                uncertainty = torch.where(points, torch.zeros_like(uncertainty), uncertainty)
        if uncertainty is None:
            return [Prediction(a) for a in ab.split(1)]
        return [Prediction(a, u) for a, u in zip(ab.split(1), uncertainty.split(1), strict=True)]


def load_colorizer(
    path: str | Path,
    device: str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
    compile_model: bool = False,
) -> Colorizer:
    """A Colorizer for MODEL: a training checkpoint (.pt), an exported .onnx file, a model
    folder or hf://owner/name[@revision]."""
    return Colorizer.from_checkpoint(path, device, batch_size, compile_model)


@dataclass(frozen=True)
class Job:
    """One input file and where its results go."""

    source: Path
    target: Path  # <out>/<relative folder>/<stem>.<format>
    side_by_side: Path | None  # <out>/<relative folder>/<stem>_side_by_side.<format>
    relative: Path = Path()  # the source's path inside its input folder (its name for a file)
    uncertainty: Path | None = None  # <out>/<relative folder>/<stem>.uncertainty.png: the map

    @property
    def outputs(self) -> tuple[Path, ...]:
        """Every file the job writes."""
        return tuple(p for p in (self.target, self.side_by_side, self.uncertainty) if p)


@dataclass(frozen=True)
class Failure:
    """An input that could not be colorized, and why (one line)."""

    path: Path
    reason: str


def find_inputs(inputs: Sequence[Path], out: Path) -> tuple[list[tuple[Path, Path]], list[Failure]]:
    """(file, folder relative to `out`) for each input file and each image file under an input
    folder (recursively; an `out` inside that folder is skipped), each file once; and the
    inputs that do not exist or hold no images."""
    found: list[tuple[Path, Path]] = []
    failures: list[Failure] = []
    seen: set[Path] = set()
    for given in inputs:
        if given.is_dir():
            if given.resolve() == out.resolve():  # a second run would colorize the first's
                raise ColorganError(
                    f"--out {out} is the input folder {given}: its outputs would be inputs of "
                    "the next run; give another --out (a sub-folder works)"
                )
            # an output folder inside the input folder holds earlier results, not inputs
            skipped = out.resolve() if given.resolve() in out.resolve().parents else None

            def unlisted(folder: Path, err: OSError) -> None:
                failures.append(Failure(folder, f"cannot list folder ({err.strerror or err})"))

            try:
                listed = find_images(given, on_error=unlisted)
            except (OSError, DataError) as err:
                failures.append(Failure(given, f"cannot list folder ({err})"))
                continue
            files = [p for p in listed if skipped not in p.resolve().parents]
            if not files:
                failures.append(Failure(given, "no image files in this folder"))
            pairs = [(p, p.parent.relative_to(given)) for p in files]
        elif given.is_file():
            pairs = [(given, Path())]
        else:
            failures.append(Failure(given, "no such file or folder"))
            continue
        for path, relative in pairs:
            if path.resolve() not in seen:
                seen.add(path.resolve())
                found.append((path, relative))
    return found, failures


def _key(path: Path) -> str:
    return os.path.normpath(path).casefold()  # clashes on case-insensitive disks count too


def name_outputs(
    sources: Sequence[tuple[Path, Path]],
    out: Path,
    fmt: str,
    side_by_side: bool,
    uncertainty_map: bool = False,
) -> list[Job]:
    """Output paths for (file, relative folder) pairs (with `uncertainty_map`, also
    <name>.uncertainty.png). Files whose outputs would clash (a.png and a.jpg in one folder)
    get their own suffix in the name (a_png.png, a_jpg.png); a clash still left gets _2, _3,
    ... Raises if an output would overwrite an input."""
    bases = [out / relative / path.stem for path, relative in sources]
    counts = Counter(_key(base) for base in bases)
    taken: set[str] = set()
    jobs = []
    for (path, relative), base in zip(sources, bases, strict=True):
        if counts[_key(base)] > 1 and path.suffix:
            base = base.with_name(f"{base.name}_{path.suffix[1:].lower()}")
        name, number = base.name, 1
        while True:
            target = base.with_name(f"{name}.{fmt}")
            pair = base.with_name(f"{name}_side_by_side.{fmt}") if side_by_side else None
            guess = base.with_name(name + UNCERTAINTY_SUFFIX) if uncertainty_map else None
            keys = {_key(p) for p in (target, pair, guess) if p is not None}
            if not keys & taken:
                break
            number += 1
            name = f"{base.name}_{number}"
        taken |= keys
        jobs.append(Job(path, target, pair, relative / path.name, guess))
    inputs = {path.resolve(): path for path, _ in sources}
    for job in jobs:
        for written in job.outputs:
            if written.resolve() in inputs:
                raise ColorganError(
                    f"{written} would overwrite the input {inputs[written.resolve()]}; "
                    f"choose another --out folder or --format"
                )
    return jobs


def plan_jobs(
    inputs: Sequence[Path],
    out: Path,
    fmt: str = "png",
    side_by_side: bool = False,
    uncertainty_map: bool = False,
) -> tuple[list[Job], list[Failure]]:
    """The jobs for files and folders given on the command line, and the inputs that failed."""
    if fmt not in FORMATS:
        raise ColorganError(f"unknown format {fmt!r}: use {', '.join(FORMATS)}")
    if out.exists() and not out.is_dir():
        raise ColorganError(f"{out}: exists and is not a folder; give an output folder")
    sources, failures = find_inputs(inputs, out)
    return name_outputs(sources, out, fmt, side_by_side, uncertainty_map), failures


def side_by_side_image(gray: Image.Image, color: Image.Image) -> Image.Image:
    """gray | color, side by side."""
    both = Image.new(color.mode, (gray.width + color.width, max(gray.height, color.height)))
    both.paste(gray, (0, 0))
    both.paste(color, (gray.width, 0))
    return both


def save_results(
    job: Job,
    picture: Picture,
    rgb: torch.Tensor,
    fmt: str,
    key: str = "",
    uncertainty: torch.Tensor | None = None,
) -> None:
    """Write the colorized image (and gray | color, and the uncertainty map, if asked) for one
    job, tagged as colorgan's with `key` (so a re-run knows it may replace them, or skip them
    when the key matches). `uncertainty`: the model's (1, 1, h, w), for the map."""
    kind = FORMATS[fmt]
    options = _OPTIONS[fmt] | mark_options(kind, key)
    color = to_image(rgb, picture.alpha)  # rgb: (3, H, W) uint8
    save_image(color, job.target, kind, **options)
    if job.side_by_side is not None:
        pair = side_by_side_image(gray_image(picture), color)
        save_image(pair, job.side_by_side, kind, **options)
    if job.uncertainty is not None:
        if uncertainty is None:
            raise no_uncertainty("--uncertainty-map")
        guess = uncertainty_image(uncertainty, (rgb.shape[1], rgb.shape[2]))
        save_image(guess, job.uncertainty, "PNG", **_OPTIONS["png"], **mark_options("PNG", key))


def foreign_output(job: Job) -> Path | None:
    """An output path of `job` that holds a file colorize did not write (None if none):
    colorize never replaces such a file unless told to overwrite."""
    for path in job.outputs:
        if path.exists() and not written_by_colorgan(path):
            return path
    return None


def hints_for_jobs(
    jobs: Sequence[Job], hints: Path | None
) -> tuple[dict[Path, list[Hint]], list[Failure]]:
    """Each job's color points from `--hints`: a JSON file for every input (a bad one is a
    HintError naming it and the entry), or a folder with one JSON per image at the same
    relative path (a/b.png -> a/b.json; images without one get none; a bad one fails its image
    alone, returned as a Failure; files that match no image are named in a warning)."""
    if hints is None:
        return {}, []
    if not hints.exists():
        raise HintError(f"--hints {hints}: no such file or folder")
    if not hints.is_dir():  # a file: read bounded, regular files only
        points = load_hints(hints)
        return {job.source: points for job in jobs}, []
    found, failures, used = {}, [], set()
    for job in jobs:
        path = hints / job.relative.with_suffix(".json")
        if path.is_file():
            used.add(path)
            try:
                found[job.source] = load_hints(path)
            except HintError as err:
                failures.append(Failure(job.source, str(err)))
    unmatched = sorted(set(hints.rglob("*.json")) - used)
    if unmatched:
        log.warning(
            "--hints %s: %d file(s) match no input image (e.g. %s); they were not used",
            hints, len(unmatched), unmatched[0],
        )  # fmt: skip
    return found, failures


def check_reference(colorizer: Colorizer, reference: object, what: str = "--reference") -> None:
    """A ReferenceImageError (one line, naming `what`) if a reference is given (not None) to a
    model trained without model.reference."""
    if reference is not None and not colorizer.reference:
        raise ReferenceImageError(
            f"{what}: this model was {NO_REFERENCE_INPUT}; drop it, or train one with "
            "--set model.reference=true"
        )


def read_reference(
    colorizer: Colorizer, path: Path | None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> torch.Tensor | None:
    """`--reference IMAGE`: the file decoded once as colorize decodes its inputs (EXIF
    orientation, over `max_pixels` refused before decoding) and summarized once (the
    Colorizer's summarize: (1, 257) on its device), for every input; None for no file. A
    ReferenceImageError naming the file for a model without model.reference (checked first)
    or a file that cannot be read."""
    if path is None:
        return None
    check_reference(colorizer, path, f"--reference {path}")
    try:
        picture = load_picture(path, max_pixels)
    except UnreadableImage as err:
        raise ReferenceImageError(f"--reference {path}: {err}") from None
    rgb = picture.rgb if picture.rgb.dtype == torch.uint8 else float_to_uint8(picture.rgb)
    return colorizer.summarize(to_image(rgb, picture.alpha))


def _load(
    jobs: Sequence[Job],
    max_pixels: int,
    hints: dict[Path, list[Hint]],
    fits: Callable[[Picture], None],
    fail: Callable[[Path, str], None],
) -> list[tuple[Job, Picture, list[Hint] | None]]:
    """The jobs' pictures (and points); a file that cannot be read, whose points fall outside
    it, or that `fits` refuses (too large to colorize), goes to `fail`."""
    loaded = []
    for job in jobs:
        try:
            picture = load_picture(job.source, max_pixels)
            points = hints.get(job.source)
            if points:
                check_inside(points, (picture.rgb.shape[1], picture.rgb.shape[2]))
            fits(picture)
            loaded.append((job, picture, points))
        except (UnreadableImage, HintError, DoesNotFit) as err:
            fail(job.source, str(err))
    return loaded


def refusal(job: Job, overwrite: bool) -> str | None:
    """Why `job` must not be written (an output path holds a file colorize did not write),
    or None; always None with `overwrite`."""
    foreign = None if overwrite else foreign_output(job)
    if foreign is None:
        return None
    return f"{foreign} exists and colorgan did not write it: skipped (--overwrite replaces it)"


def _not_foreign(
    jobs: Sequence[Job], overwrite: bool, fail: Callable[[Path, str], None]
) -> list[Job]:
    """The jobs whose outputs are free or colorize's own; the others go to `fail`."""
    kept = []
    for job in jobs:
        if (reason := refusal(job, overwrite)) is None:
            kept.append(job)
        else:
            fail(job.source, reason)
    return kept


def colorize_files(
    colorizer: Colorizer,
    jobs: Sequence[Job],
    fmt: str = "png",
    size: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    on_failure: Callable[[Failure], None] | None = None,
    progress: bool = False,
    hints: dict[Path, list[Hint]] | None = None,
    overwrite: bool = False,
    caution: float | None = None,
    reference: torch.Tensor | None = None,
) -> list[Failure]:
    """Colorize each job's file (with its points from `hints`, see hints_for_jobs, `caution`,
    see Colorizer.resolve_caution, and one `reference` summary (1, 257) for all, see
    read_reference), `colorizer.batch_size` files at a time. Files that cannot be read or
    written, too large to colorize, or whose output path holds a file colorize did not write
    (unless `overwrite`) are passed to `on_failure`, skipped and returned; the rest go on."""
    caution = colorizer.resolve_caution(caution, "--caution")
    check_uncertainty_maps(colorizer, jobs)
    check_reference(colorizer, reference)
    if max_pixels < 1:
        raise ColorganError(f"--max-pixels must be positive, got {max_pixels}")
    if size is not None and size < 1:
        raise ColorganError(f"--size must be a positive number of pixels, got {size}")
    if size is not None:
        colorizer.check_shape((size, size))  # the least any image needs at this size
    failures: list[Failure] = []

    def fail(path: Path, reason: str) -> None:
        failures.append(Failure(path, reason))
        if on_failure is not None:
            on_failure(failures[-1])

    def fits(picture: Picture) -> None:
        colorizer.check_shape(colorizer.working_shape(picture, size))

    bar_off = None if progress else True  # None: shown on a terminal only
    with tqdm(total=len(jobs), desc="colorizing", unit="img", disable=bar_off) as bar:
        for start in range(0, len(jobs), colorizer.batch_size):
            chunk = _not_foreign(jobs[start : start + colorizer.batch_size], overwrite, fail)
            loaded = _load(chunk, max_pixels, hints or {}, fits, fail)
            bar.update(min(len(jobs) - start, colorizer.batch_size) - len(loaded))
            pictures = [picture for _, picture, _ in loaded]
            points = [p for _, _, p in loaded]
            predicted = colorizer.predict_pictures(pictures, size, points, caution, reference)
            for (job, picture, _), (l, prediction) in zip(loaded, predicted, strict=True):
                try:
                    rgb = join(l, prediction.ab)
                    save_results(job, picture, rgb, fmt, uncertainty=prediction.uncertainty)
                except OSError as err:
                    fail(job.source, f"cannot write {job.target} ({err.strerror or err})")
                bar.update()
    return failures


def check_uncertainty_maps(colorizer: Colorizer, jobs: Sequence[Job]) -> None:
    """A ColorganError if `jobs` ask for uncertainty maps (--uncertainty-map) of a model that
    does not predict its uncertainty."""
    if not colorizer.uncertainty and any(job.uncertainty is not None for job in jobs):
        raise no_uncertainty("--uncertainty-map")
