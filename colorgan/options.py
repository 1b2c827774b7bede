"""The command line's options that several commands share (defined once, with defaults
taken from the modules that own them), and `colorgan colorize`'s."""

from __future__ import annotations

import argparse
from pathlib import Path

from colorgan import colorize, files, jobs, runtime
from colorgan.bank import BANK_TOP
from colorgan.device import DEVICE_CHOICES

MODEL_HELP = (
    "a training checkpoint (.pt), an exported .onnx, a model folder (export --model-dir) or "
    "hf://owner/name[@revision] on the Hugging Face Hub"
)
GENERATOR_HELP = (
    "a training checkpoint (.pt), a model folder (export --model-dir) or hf://owner/name[@revision]"
)


def set_option(p: argparse.ArgumentParser, set_help: str) -> None:
    p.add_argument(
        "--set",
        dest="assignments",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help=set_help,
    )


def quiet_option(p: argparse.ArgumentParser, what: str = "no progress bars") -> None:
    p.add_argument("--quiet", action="store_true", help=what)


def device_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help=DEVICE_CHOICES)


def model_argument(p: argparse.ArgumentParser, name: str = "model", what: str = MODEL_HELP) -> None:
    p.add_argument(name, metavar=name.upper(), help=what)  # a str: hf:// is no path


def max_pixels_option(p: argparse.ArgumentParser, default: int) -> None:
    p.add_argument(
        "--max-pixels",
        type=int,
        default=default,
        metavar="N",
        help=f"refuse images with more pixels than this before decoding (default {default})",
    )


def colorize_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "colorize",
        help="colorize image files and folders with a trained model",
        description="Colorize images of any size and mode (gray, color, 16-bit, with alpha, "
        "EXIF-rotated). The model runs on the image's L channel scaled so its short side is "
        "--size pixels; the predicted colors are upsampled onto the image's own full-resolution "
        "L, so each output has the input's size, detail and lightness. Writes "
        "DIR/<sub-folders>/<name>.<format> (a.png and a.jpg in one folder become a_png and "
        "a_jpg); inputs are never overwritten. A file that cannot be read is named on stderr "
        "and skipped; the exit status is then 1.",
    )
    model_argument(p)
    p.add_argument(
        "inputs",
        metavar="INPUT",
        type=Path,
        nargs="+",
        help="image files and folders; folders are searched recursively for image files and "
        "their sub-folders are kept under --out; a video file becomes --out/<name> (same "
        "container); a .cbz/.zip chapter becomes --out/<name>.cbz, its pages in order under "
        "their names, other members kept",
    )
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    p.add_argument(
        "--size",
        type=int,
        metavar="N",
        help="working size: the short side the model sees, in pixels "
        "(default: the checkpoint's data.image_size); outputs keep the input's size",
    )
    device_option(p)
    p.add_argument(
        "--batch-size",
        type=int,
        default=colorize.DEFAULT_BATCH_SIZE,
        metavar="N",
        help=f"files read and run through the model together (default "
        f"{colorize.DEFAULT_BATCH_SIZE})",
    )
    p.add_argument(
        "--format",
        choices=["png", "jpg", "webp"],
        default="png",
        help="output format (default png); jpg has no alpha, so transparent images are "
        "flattened onto white (png and webp keep alpha)",
    )
    p.add_argument(
        "--side-by-side",
        action="store_true",
        help="also write <name>_side_by_side.<format>: gray | color",
    )
    max_pixels_option(p, files.DEFAULT_MAX_PIXELS)
    _hints_option(p)
    _reference_option(p)
    _caution_options(p)
    _pipeline_options(p)
    quiet_option(p, "no progress bar or summary")


def _caution_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--caution",
        metavar="C",
        help="for a model trained with model.uncertainty: 0 keeps its colors, 1 fades them "
        "toward gray wherever it is unsure of them (lightness never changes); default: the "
        "model's model.caution",
    )
    p.add_argument(
        "--uncertainty-map",
        action="store_true",
        help="also write <name>.uncertainty.png (model.uncertainty): a grayscale map at the "
        "image's size, black where the model is sure of its colors, white where it is guessing",
    )
    p.add_argument(
        "--suggest",
        type=int,
        default=0,
        metavar="N",
        help="also write <name>.suggest.json: the N places where one more color point would "
        "help most (where the model is least sure, with model.uncertainty), each with the "
        "model's color there, as a --hints file to edit and give back",
    )


def _pipeline_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--workers",
        type=int,
        default=jobs.DEFAULT_WORKERS,
        metavar="N",
        help="processes decoding the inputs while the model runs, and as many encoding the "
        f"outputs (default {jobs.DEFAULT_WORKERS}; 0: all in this process)",
    )
    p.add_argument(
        "--independent-frames",
        action="store_true",
        help="a video's frames each colored alone (for comparison); by default a model that "
        "takes references colors each frame with the previous one and its shot's first",
    )
    p.add_argument(
        "--recolor",
        action="store_true",
        help="a chapter's (.cbz/.zip) pages already in color are colorized too; by default they "
        "are copied as they are (image files and folders are always colorized)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the model first (slow to start; for long runs on a GPU)",
    )
    p.add_argument(
        "--runtime",
        choices=runtime.RUNTIMES,
        default="auto",
        help="torch, or onnx: the model exported once to ONNX (cached) and run in onnxruntime, "
        "about 3x faster on a CPU (needs the onnx extra). auto (default): onnx on a CPU for "
        f"{runtime.ONNX_MIN_IMAGES} images or more, or when the export is cached; else torch",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace files in --out that colorize did not write (by default such a file is "
        "left alone, named, and the exit status is 1). Its own earlier outputs are skipped when "
        "complete for the same model, size, format, points, caution and reference, and replaced "
        "otherwise",
    )


def _hints_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--hints",
        type=Path,
        metavar="FILE|DIR",
        help='color points for a model trained with model.hints: a JSON list of {"x": 120, '
        '"y": 40, "color": "#3366ff"} ("radius" optional; x, y in pixels of the upright image) '
        "for every input, or a folder with one such file per image at the same relative path "
        "(a/b.png -> a/b.json)",
    )


def _reference_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--reference",
        type=Path,
        nargs="+",
        action="extend",
        metavar="IMAGE|DIR",
        help="for a model trained with model.reference: an image whose colors every input "
        "gets (the same character on another page, a color photo of the same place; read once, "
        "need not match the inputs' size or framing); several count equally. A folder gives "
        "the images under it (recursively): a bank, of which each input uses the "
        f"{BANK_TOP} that look most like it when it holds more",
    )
