"""Colorizer: images of any size and mode, full-resolution L kept; files, folders, bad inputs.

The model runs on the L channel at a working size: the image is scaled (aspect kept) so its
short side is about `size` pixels (default: the checkpoint's training size, the scale the model
learned at), each side rounded to a multiple of 2**depth; a tall strip runs at that scale in
overlapping tiles (tiles.py). The predicted ab is upsampled bilinearly to the input's own
resolution and joined with its own full-resolution L, so the output has the input's size, detail
and Lab lightness (up to 8-bit rounding: a color outside sRGB loses chroma, never lightness).

A model trained with model.uncertainty also says how sure it is of each pixel's color: `caution`
(0 to 1; default: the model's `model.caution`) fades its ab toward gray where it is unsure, at
the working size and before the upsampling (uncertainty.fade; L is never touched, a point's own
pixels keep its color), and `colorize_with_uncertainty` gives the map of where it is guessing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from colorgan.batch import Batch, Prediction, model_inputs, split_output
from colorgan.color import float_to_uint8, lab_in_gamut, rgb_to_l_ab, uint8_to_l
from colorgan.config import shown
from colorgan.device import check_fits, free_memory, resolve_device
from colorgan.errors import ColorganError
from colorgan.files import Picture, to_image, to_picture
from colorgan.generator import Lite0UNet
from colorgan.hints import Hint
from colorgan.hub import PREFIX as HUB_PREFIX
from colorgan.matching import confidence_map, stack_exemplars
from colorgan.modeldir import ModelSource, load_model, resolve_model
from colorgan.models import DEFAULT_BYTES_PER_PIXEL, bytes_per_pixel
from colorgan.reference import ReferenceImageError
from colorgan.request import INPUTS, NOTHING, PLAIN, Capabilities, Request, check_caution
from colorgan.speed import fast_model
from colorgan.suggest import MAX_SUGGESTIONS, suggest
from colorgan.tiles import is_tall, model_shape, predict_tiled
from colorgan.tones import colored_lightness
from colorgan.uncertainty import fade, uncertainty_map

# The model as a function: Batch (l at the working size, + conditioning) -> the model's whole
# output, on the Colorizer's device: ab (B, 2, h, w) in [-1, 1], or with model.uncertainty
# (B, 3, h, w), ab and the uncertainty (see batch.split_output). A generator or an ONNX session.
Predict = Callable[[Batch], torch.Tensor]

DEFAULT_BATCH_SIZE = 8  # files read and run through the model together
MAX_BATCH_SIZE = 1024
_STRIP_PIXELS = 4_000_000  # full-resolution color math runs on row strips of about this size
# PNG at zlib level 3, not Pillow's 6: 3x faster to encode 512-px colorized photos and anime
# (27 against 82 ms, the largest cost of a folder run) for files 0.3 % larger (24 % on flat
# generated scenes); docs/journal/performance.md
PNG_LEVEL = 3
_COLOR_BYTES_PER_PIXEL = 64  # per working pixel besides the model: l, hint map, ab, resizing
UNCERTAINTY_SUFFIX = ".uncertainty.png"  # <name>.uncertainty.png: the map beside <name>.<format>


log = logging.getLogger("colorgan")


def working_shape(height: int, width: int, size: int, multiple: int) -> tuple[int, int]:
    """The (h, w) the model runs at: short side about `size`, aspect kept, each side a
    multiple of `multiple` (a tall one in tiles: tiles.predict_tiled)."""
    scale = size / min(height, width)

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
    -> sRGB (3, H, W) uint8 on the CPU with the same Lab L (up to 8-bit rounding); a toned
    manga page's tones smoothed into their gray, its ink kept (tones.colored_lightness)."""
    l = colored_lightness(l)
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
        capabilities: Capabilities = PLAIN,
        bytes_per_pixel: float = DEFAULT_BYTES_PER_PIXEL,
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
        check_caution(capabilities.caution, "the model's caution")
        self.capabilities = capabilities  # what the model takes (points, a reference, ...)
        # inference memory per working pixel of one image (an estimate; see check_shape)
        self.bytes_per_pixel = bytes_per_pixel + _COLOR_BYTES_PER_PIXEL
        self.source = ""  # what it was loaded from: a path, or hf://owner/name@<commit>
        self.revision: str | None = None  # the Hub commit of a model from the Hub
        self.generator: nn.Module | None = None  # the network itself (PyTorch), uncompiled

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
                Capabilities.of(config.model),
                bytes_per_pixel(generator),
            )
            colorizer.generator = getattr(fast, "_orig_mod", fast)  # torch.compile's module
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
            model.capabilities,
        )  # fmt: skip
        colorizer.source = str(path)
        return colorizer

    def working_shape(self, picture: Picture, size: int | None = None) -> tuple[int, int]:
        """The (h, w) the model sees `picture` at, for working size `size` (default: the
        training size)."""
        size = self.image_size if size is None else size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ColorganError(
                f"working size must be a positive whole number of pixels, got {shown(size)}"
            )
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

    def colorize(
        self,
        image: Image.Image,
        size: int | None = None,
        hints: Sequence[Hint] | None = None,
        caution: float | None = None,
        reference: Image.Image | Path | Sequence[Image.Image | Path] | None = None,
    ) -> Image.Image:
        """A color version of `image` at its own (upright) size; RGBA if it had alpha. `hints`:
        color points in pixels of the upright image (a model trained with model.hints).
        `caution` (0 to 1, a model trained with model.uncertainty; None: the model's default)
        fades the colors toward gray where the model is unsure. `reference`: an image (or a
        list of them) whose colors to use (a model trained with model.reference): the same
        character on another page, a color photo of the same place."""
        request = Request.of(hints, reference, caution)
        return self.colorize_batch([image], size, request)[0]

    @torch.inference_mode()
    def colorize_with_uncertainty(
        self,
        image: Image.Image,
        size: int | None = None,
        hints: Sequence[Hint] | None = None,
        caution: float | None = None,
        reference: Image.Image | Path | Sequence[Image.Image | Path] | None = None,
    ) -> tuple[Image.Image, Image.Image]:
        """`colorize`'s image and, from the same run of the model, the map of how sure it is at
        the image's size: grayscale ('L'), black where sure, white where it is guessing (a mean
        |ab error| of uncertainty.MAP_FULL_SCALE Lab units or more). Needs model.uncertainty."""
        self.capabilities.need("uncertainty", "the uncertainty map")
        picture = to_picture(_image(image))
        request = Request.of(hints, reference, caution)
        [(l, prediction)] = self.predict_pictures([picture], size, [request])
        assert prediction.uncertainty is not None
        colored = to_image(join(l, prediction.ab), picture.alpha)
        return colored, uncertainty_image(prediction.uncertainty, (l.shape[2], l.shape[3]))

    def suggest_points(
        self,
        image: Image.Image,
        n: int,
        hints: Sequence[Hint] | None = None,
        reference: Image.Image | Path | Sequence[Image.Image | Path] | None = None,
        size: int | None = None,
    ) -> list[Hint]:
        """The `n` places where one more color point would help most (suggest.py: where the
        model is least sure, and a point would reach the most of it; spread apart), each with
        the model's current color there, in pixels of the upright image; after the `hints`
        already given. Without model.uncertainty every pixel counts the same."""
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_SUGGESTIONS:
            raise ColorganError(f"n must be a whole number from 0 to {MAX_SUGGESTIONS}, got {n!r}")
        picture = to_picture(_image(image))
        request = Request.of(hints, reference, caution=0.0)  # the model's own colors
        [(l, prediction)] = self.predict_pictures([picture], size, [request])
        return suggestions(l, prediction, request, n)

    def reference_match(
        self,
        image: Image.Image,
        reference: Image.Image | Path | Sequence[Image.Image | Path],
        size: int | None = None,
    ) -> Image.Image:
        """Where `image` matches its `reference` images (one, a list, a folder: a bank), as a
        model trained with model.reference_match sees it: a grayscale ('L') map at the image's
        size, white where a place looks like some place of the references (cosine similarity
        of their features 1), black where nothing does (0 or less). PyTorch models only."""
        return self.match_map(to_picture(_image(image)), Request.of(reference=reference), size)

    @torch.inference_mode()
    def match_map(self, picture: Picture, request: Request, size: int | None = None) -> Image.Image:
        """`reference_match` of a decoded picture, for the reference of its Request."""
        generator = self.match_network()
        if request.reference is None:
            raise ReferenceImageError("the match map needs a reference: give one or more images")
        shape = self.working_shape(picture, size)
        self.check_shape(shape)
        l = lightness(picture.rgb, self.device)  # (1, 1, H, W) in [-1, 1]
        given = request.for_picture(picture.rgb).inputs((l.shape[2], l.shape[3]), shape)
        exemplar = given["exemplar"].to(self.device)
        confidence = generator.match_confidence(resize_l(l, shape), exemplar)
        full = F.interpolate(confidence, size=l.shape[2:], mode="bilinear", align_corners=False)
        return Image.fromarray(confidence_map(full)[0, 0].cpu().numpy())  # 2-D uint8: 'L'

    def match_network(self) -> Lite0UNet:
        """The generator that draws the match map, or why there is none (one line)."""
        if not self.capabilities.match:
            raise ReferenceImageError(
                "the match map: this model was trained without model.reference_match (it does "
                "not match its references place by place); use a model trained with it"
            )
        if not isinstance(self.generator, Lite0UNet):
            raise ColorganError(
                f"the match map: {self.source or 'this model'} is an ONNX graph, which gives "
                f"colors alone; use the checkpoint or model folder it was exported from"
            )
        return self.generator

    def colorize_batch(
        self,
        images: Sequence[Image.Image],
        size: int | None = None,
        request: Request | Sequence[Request] = NOTHING,
    ) -> list[Image.Image]:
        """`colorize` for many images, with one Request for all or one each; equal working
        shapes share model batches."""
        pictures = [to_picture(_image(image)) for image in images]
        requests = [request] * len(images) if isinstance(request, Request) else list(request)
        predicted = self.predict_pictures(pictures, size, requests)
        return [
            to_image(join(l, prediction.ab), p.alpha)
            for (l, prediction), p in zip(predicted, pictures, strict=True)
        ]

    @torch.inference_mode()
    def predict_pictures(
        self,
        pictures: Sequence[Picture],
        size: int | None = None,
        requests: Sequence[Request] | None = None,
    ) -> list[tuple[torch.Tensor, Prediction]]:
        """Each picture's full-resolution l (1, 1, H, W) in [-1, 1] and the model's Prediction
        at its working size for its Request (see predict_batch)."""
        requests = [Request()] * len(pictures) if requests is None else requests
        if len(requests) != len(pictures):
            raise ColorganError(f"{len(requests)} requests for {len(pictures)} images")
        for request in requests:
            self.capabilities.check(request)
        shapes = [self.working_shape(p, size) for p in pictures]
        l_full = [lightness(p.rgb, self.device) for p in pictures]  # (1, 1, H, W) in [-1, 1]
        given = [
            r.for_picture(p.rgb).inputs((l.shape[2], l.shape[3]), shape)
            for r, p, l, shape in zip(requests, pictures, l_full, shapes, strict=True)
        ]  # the hint map and reference of each picture, where given
        predicted: dict[int, Prediction] = {}
        for shape in dict.fromkeys(shapes):
            self.check_shape(model_shape(shape))
            same = [i for i, s in enumerate(shapes) if s == shape]
            step = self.chunk(shape)
            for start in range(0, len(same), step):
                chunk = same[start : start + step]
                l_small = torch.cat([resize_l(l_full[i], shape) for i in chunk])
                found = self.predict_batch(
                    l_small, [requests[i] for i in chunk], [given[i] for i in chunk]
                )
                predicted.update(zip(chunk, found, strict=True))
        return [(l, predicted[i]) for i, l in enumerate(l_full)]

    def predict_batch(
        self,
        l_small: torch.Tensor,
        requests: Sequence[Request],
        given: Sequence[dict[str, torch.Tensor]] | None = None,
    ) -> list[Prediction]:
        """The model's Prediction for each l of `l_small` (B, 1, h, w) in [-1, 1] and its
        Request, whose inputs at this working size (Request.inputs; None: l alone) are
        `given`: ab (1, 2, h, w) faded by the request's caution, then a point's own pixels get
        its color, and there the uncertainty (1, 1, h, w) is 0 (the user's color is no guess)."""
        if is_tall(l_small.shape[-2:]):  # a strip: at this scale, in overlapping tiles
            given = given or [{}] * len(requests)
            return predict_tiled(self.predict_batch, l_small, requests, given, self.chunk)
        cautions = [self.capabilities.resolve_caution(r) for r in requests]
        batch = Batch(l=l_small, **self._inputs(l_small, given or [{}] * len(requests)))
        prediction = split_output(self.predict(batch))
        ab, uncertainty = prediction.ab, prediction.uncertainty
        if any(cautions):  # at the working size, before `join`
            if uncertainty is None:
                raise self.capabilities.refusal("uncertainty", "caution")
            faded = zip(ab.split(1), uncertainty.split(1), cautions, strict=True)
            ab = torch.cat([fade(a, u, c) for a, u, c in faded])
        if batch.hints is not None:
            points = batch.hints[:, 2:] > 0
            ab = torch.where(points, batch.hints[:, :2], ab)
            if uncertainty is not None:
                uncertainty = torch.where(points, torch.zeros_like(uncertainty), uncertainty)
        if uncertainty is None:
            return [Prediction(a) for a in ab.split(1)]
        return [Prediction(a, u) for a, u in zip(ab.split(1), uncertainty.split(1), strict=True)]

    def _inputs(
        self, l_small: torch.Tensor, given: Sequence[dict[str, torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        """The batch's inputs by name, each stacked on the device, zeros ("none") for the
        pictures that lack it; refused (one line) where the model does not take it."""
        stacked = {}
        for name in dict.fromkeys(name for inputs in given for name in inputs):
            if name == "exemplar":
                if self.capabilities.match:  # else the reference's summary alone
                    stacked[name] = stack_exemplars(given).to(l_small.device)
                continue
            self.capabilities.need(name, INPUTS[name].name)  # an ONNX model would ignore it
            like = next(inputs[name] for inputs in given if name in inputs)
            rows = [inputs.get(name, torch.zeros_like(like)) for inputs in given]
            stacked[name] = torch.cat(rows).to(l_small.device)
        return stacked


def suggestions(l: torch.Tensor, prediction: Prediction, request: Request, n: int) -> list[Hint]:
    """The `n` points suggest.py suggests for a picture from its full-resolution l (1, 1, H, W)
    and the model's Prediction at the working size for `request`, after the request's points."""
    shape = (prediction.ab.shape[2], prediction.ab.shape[3])
    image_hw = (l.shape[2], l.shape[3])
    hint_map = request.inputs(image_hw, shape).get("hints")
    return suggest(resize_l(l, shape), prediction.ab, prediction.uncertainty, hint_map, n, image_hw)


def _image(image: object) -> Image.Image:
    """`image` if it is a PIL image, else a ColorganError saying what to give."""
    if not isinstance(image, Image.Image):
        raise ColorganError(f"image must be a PIL image (PIL.Image.open(path)), got {shown(image)}")
    return image
