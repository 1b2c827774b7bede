"""ONNX: export a checkpoint's generator (dynamic batch, height and width) and run it back with
onnxruntime as a Colorizer backend.

The file holds the generator only, traced through `batch.Generate`: its inputs are
`batch.INPUT_NAMES` (l (B, 1, H, W) in [-1, 1], hints with model.hints, reference (B, 257) with
model.reference, exemplar (B, R, 4, S, S) with model.reference_match: any number R of reference
slots, any square side S a multiple of 32), its output ab
(B, 2, H, W) in [-1, 1] (with model.uncertainty (B, 3, H, W): ab and the uncertainty), with H and
W any multiples of 2**depth, plus metadata_props naming the checkpoint's working size, depth and
(model.uncertainty) default caution, so an .onnx file alone rebuilds a Colorizer with the same
defaults as the .pt it came from. The graph compares every place of a picture with its
references at once (PyTorch does it in chunks of matching.QUERY_CHUNK, to bound the memory).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from colorgan.batch import INPUT_NAMES, Batch, Generate, model_inputs, split_output
from colorgan.device import resolve_device
from colorgan.errors import ColorganError, MissingDependency, OnnxModelError
from colorgan.files import atomic_write
from colorgan.generator import ColorModel
from colorgan.hints import HINT_CHANNELS, no_points
from colorgan.matching import EXEMPLAR_CHANNELS, EXEMPLAR_MULTIPLE
from colorgan.modeldir import load_model, resolve_model
from colorgan.reference import no_reference, summarize
from colorgan.request import PLAIN, Capabilities

OPSET = 18  # the torch.export-based exporter's own opset (17 is the floor the task sets)
META_IMAGE_SIZE = "colorgan.image_size"  # the training size: the default working size
META_DEPTH = "colorgan.depth"  # working sides are multiples of 2**depth
META_BASE_CHANNELS = "colorgan.base_channels"
META_FORMAT = "colorgan.format"
META_UNCERTAINTY = "colorgan.uncertainty"  # "true": the output's third channel (model.uncertainty)
META_CAUTION = "colorgan.caution"  # model.caution, the default caution (with uncertainty)
ONNX_FORMAT = "1"
# max |Δab| (ab / 110) between onnxruntime and PyTorch the export check accepts: 0.55 Lab units,
# a quarter of a just-noticeable difference; trained cpu-small models differ by 0.0024-0.0036
# (random ones by < 0.001), a wrong graph by far more
EXPORT_TOLERANCE = 5e-3
INSTALL_HINT = "pip install 'colorgan[onnx]'"


@dataclass(frozen=True)
class OnnxModel:
    """An exported generator loaded in onnxruntime, with the metadata a Colorizer needs."""

    # Batch -> the graph's output: ab (B, 2, h, w) in [-1, 1], + the uncertainty (B, 3, h, w)
    predict: Callable[[Batch], torch.Tensor]
    image_size: int
    multiple: int
    device: torch.device  # where the pre- and post-processing run
    provider: str  # the onnxruntime execution provider in use
    # from the graph's inputs (hints, reference) and metadata (uncertainty and its caution)
    capabilities: Capabilities = PLAIN


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise MissingDependency(
            f"running an .onnx model needs onnxruntime: {INSTALL_HINT}"
        ) from None
    return onnxruntime


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's log lines (torchvision, which we never use, is missing) and its
    deprecation warnings about torch internals: the command's output stays one line."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _onnx_program(generator: ColorModel, metadata: dict[str, str]) -> Any:
    """The generator as a torch.onnx.ONNXProgram with dynamic batch, height and width."""
    try:
        import onnxscript  # noqa: F401  (the exporter needs it; fail with the install hint)
    except ImportError:
        raise MissingDependency(
            f"exporting to ONNX needs onnx and onnxscript: {INSTALL_HINT}"
        ) from None
    m = generator.multiple
    side = 2 * m  # batch 2 (and 2 reference slots): a size-1 dim would be specialised
    example = _example(generator, 2, side, None)
    inputs = model_inputs(example)
    names = tuple(inputs)
    batch, h, w = torch.export.Dim("batch"), m * torch.export.Dim("h"), m * torch.export.Dim("w")
    slots, square = torch.export.Dim("slots"), EXEMPLAR_MULTIPLE * torch.export.Dim("side")
    # every image input shares batch, height and width; the reference summary only the batch;
    # the exemplar has its own slots and square side
    dims = {name: {0: batch} if name == "reference" else {0: batch, 2: h, 3: w} for name in names}
    if "exemplar" in dims:
        dims["exemplar"] = {0: batch, 1: slots, 3: square, 4: square}
    with _quiet_exporter():
        program = torch.onnx.export(
            Generate(generator, names),
            tuple(inputs.values()),
            dynamo=True,
            opset_version=OPSET,
            input_names=list(names),
            output_names=["ab_uncertainty" if generator.uncertainty is not None else "ab"],
            dynamic_shapes={"inputs": tuple(dims.values())},
            external_data=False,
            verbose=False,
        )
    if program is None:  # only the legacy exporter returns None
        raise RuntimeError("torch.onnx.export(dynamo=True) returned no program")
    program.model.metadata_props.update(metadata)
    return program


def _save_atomically(program: Any, path: Path) -> None:
    """Write the ONNX file so that a crash leaves the old file or the new one, whole."""
    atomic_write(path, lambda tmp: program.save(tmp, external_data=False), durable=True)


def export_onnx(checkpoint: str | Path, out: str | Path) -> float:
    """Export the generator of a checkpoint (or model folder, or hf://owner/name) to `out`
    (.onnx); returns the max |Δab| between onnxruntime and PyTorch on a random input at the
    working size (checked ≤ EXPORT_TOLERANCE; a file that fails the check is removed)."""
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise ColorganError(f"{out}: the ONNX file's name must end in .onnx")
    if (out.exists() or out.is_symlink()) and not _is_our_export(out):
        raise ColorganError(
            f"{out} exists and is no colorgan export: not replaced; remove it or give another name"
        )
    generator, config = load_model(resolve_model(checkpoint))
    metadata = {
        META_IMAGE_SIZE: str(config.data.image_size),
        META_DEPTH: str(config.model.depth),
        META_BASE_CHANNELS: str(config.model.base_channels),
        META_FORMAT: ONNX_FORMAT,
    }
    takes = Capabilities.of(config.model)
    if takes.uncertainty:  # points and a reference are the graph's inputs
        metadata |= {META_UNCERTAINTY: "true", META_CAUTION: repr(takes.caution)}
    program = _onnx_program(generator, metadata)
    try:
        _save_atomically(program, out)
    except OSError as err:
        raise ColorganError(f"cannot write {out}: {err.strerror or err}") from None
    try:
        return check_export(generator, out, config.data.image_size)
    except ColorganError:
        out.unlink(missing_ok=True)
        raise


def _is_our_export(path: Path) -> bool:
    """Whether `path` is a regular file holding a colorgan ONNX export (its metadata says so;
    the weights are not read)."""
    try:
        import onnx

        if not path.is_file() or path.is_symlink():
            return False
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception:  # not ONNX at all, or unreadable: not ours either way
        return False
    return any(prop.key == META_FORMAT for prop in model.metadata_props)


def _example(generator: ColorModel, batch: int, side: int, gen: torch.Generator | None) -> Batch:
    """A batch of every input `generator` takes at (side, side): zeros (to trace), or from
    `gen` random values, a patch of points and two references given but for a margin (to
    check that each input matters the same way in both)."""

    def draw(*shape: int) -> torch.Tensor:
        return torch.zeros(shape) if gen is None else torch.rand(shape, generator=gen)

    given = 0.0 if gen is None else 1.0
    l = draw(batch, 1, side, side) * 2 - 1
    hints = reference = exemplar = None
    if generator.hints:
        hints = torch.zeros(batch, HINT_CHANNELS, side, side)
        hints[:, :2, side // 4 : side // 2, side // 4 : side // 2] = 0.3
        hints[:, 2, side // 4 : side // 2, side // 4 : side // 2] = given
    if generator.reference is not None:
        reference = summarize(draw(batch, 2, 16, 16) * 1.2 - 0.6)
    if getattr(generator, "match", None) is not None:
        exemplar = draw(batch, 2, EXEMPLAR_CHANNELS, side, side) * 2 - 1
        exemplar[:, :, 3] = 0.0
        exemplar[:, :, 3, :, side // 8 :] = given
    return Batch(l=l, hints=hints, reference=reference, exemplar=exemplar)


def check_export(generator: ColorModel, path: Path, size: int) -> float:
    """Max |Δab| of the .onnx file against the generator on a random (1, 1, size, size) input
    (and random conditioning); raises if it is over EXPORT_TOLERANCE (or the uncertainty
    differs by more, relatively)."""
    side = max(generator.multiple, round(size / generator.multiple) * generator.multiple)
    example = _example(generator, 1, side, torch.Generator().manual_seed(0))
    with torch.inference_mode():
        inputs = model_inputs(example)
        expected = split_output(Generate(generator, tuple(inputs))(*inputs.values()))
    got = split_output(load_onnx(path, "cpu").predict(example))
    delta = float((got.ab - expected.ab).abs().max())
    if not delta <= EXPORT_TOLERANCE:
        raise ColorganError(f"{path}: onnxruntime differs from PyTorch by {delta:.2g} in ab")
    if expected.uncertainty is not None:  # > 0, unbounded: compared relative to its size
        u, u_onnx = expected.uncertainty, got.uncertainty
        off = float(((u_onnx - u).abs() / (1.0 + u)).max()) if u_onnx is not None else math.inf
        if not off <= EXPORT_TOLERANCE:
            raise ColorganError(f"{path}: onnxruntime differs from PyTorch by {off:.2g} in u")
    return delta


def _providers(onnxruntime: Any, device: str) -> list[Any]:
    """onnxruntime execution providers for 'auto' | 'cpu' | 'cuda' | 'cuda:N'."""
    cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    if device == "cpu" or (device == "auto" and not cuda):
        return ["CPUExecutionProvider"]
    if device != "auto" and device != "cuda" and not device.startswith("cuda:"):
        raise ColorganError(f"ONNX models run on auto, cpu, cuda or cuda:N, not {device!r}")
    if not cuda:
        raise ColorganError(
            f"device {device!r} asked for, but this onnxruntime has no CUDA provider "
            f"(pip install onnxruntime-gpu); use cpu"
        )
    index = device.partition(":")[2]
    if index and not index.isdigit():
        raise ColorganError(f"{device!r} is not a device; use auto, cpu, cuda or cuda:N")
    gpu = ("CUDAExecutionProvider", {"device_id": int(index or 0)})
    return [gpu, "CPUExecutionProvider"]


MAX_DEPTH = 12  # the most 2x downsamplings an export may declare (sides: multiples of 4096)
MAX_IMAGE_SIZE = 16384  # the largest training size an export may declare
_SHOWN = 60  # characters of a bad metadata value quoted in the error


def _not_colorgan(path: Path, key: str) -> OnnxModelError:
    return OnnxModelError(
        f"{path}: not a colorgan export (no {key} in its metadata); "
        f"make one with `colorgan export CHECKPOINT --onnx FILE`"
    )


def _bad_metadata(path: Path, key: str, value: str, expected: str) -> OnnxModelError:
    shown = value if len(value) <= _SHOWN else value[:_SHOWN] + "..."
    return OnnxModelError(
        f"{path}: bad metadata {key}={shown!r} (expected {expected}); "
        f"export the checkpoint again with `colorgan export CHECKPOINT --onnx FILE`"
    )


def _metadata_int(meta: dict[str, str], key: str, path: Path, low: int, high: int) -> int:
    """The metadata value `key`, a whole number (ASCII digits) from `low` to `high`."""
    if key not in meta:
        raise _not_colorgan(path, key)
    value = meta[key]
    number = int(value) if value.isascii() and value.isdigit() else None
    if number is None or not low <= number <= high:
        raise _bad_metadata(path, key, value, f"a whole number from {low} to {high}")
    return number


def _metadata(meta: dict[str, str], path: Path) -> tuple[int, int]:
    """(image_size, multiple) from an export's metadata, each checked; OnnxModelError naming the
    key and its value otherwise."""
    image_size = _metadata_int(meta, META_IMAGE_SIZE, path, 1, MAX_IMAGE_SIZE)
    depth = _metadata_int(meta, META_DEPTH, path, 1, MAX_DEPTH)
    if image_size % 2**depth:
        expected = f"a multiple of 2**{META_DEPTH}={2**depth}"
        raise _bad_metadata(path, META_IMAGE_SIZE, meta[META_IMAGE_SIZE], expected)
    fmt = meta.get(META_FORMAT, ONNX_FORMAT)
    if fmt != ONNX_FORMAT:
        raise _bad_metadata(path, META_FORMAT, fmt, f"{ONNX_FORMAT!r}, the format this reads")
    return image_size, 2**depth


def _metadata_uncertainty(meta: dict[str, str], path: Path) -> tuple[bool, float]:
    """(uncertainty, default caution) from an export's metadata: (False, 0.0) for one without
    the uncertainty channel (all exports from before it existed)."""
    flag = meta.get(META_UNCERTAINTY, "false")
    if flag not in ("true", "false"):
        raise _bad_metadata(path, META_UNCERTAINTY, flag, "true or false")
    if flag == "false":
        return False, 0.0
    if META_CAUTION not in meta:
        raise _not_colorgan(path, META_CAUTION)
    value = meta[META_CAUTION]
    try:
        caution = float(value) if value.isascii() else math.nan
    except ValueError:
        caution = math.nan
    if not 0.0 <= caution <= 1.0:  # NaN too
        raise _bad_metadata(path, META_CAUTION, value, "a number from 0 to 1")
    return True, caution


def _check_inputs(names: list[str], path: Path) -> None:
    """The graph's inputs must be colorgan's: `l`, then optionally `hints`, `reference` and
    `exemplar`."""
    if not names or names[0] != INPUT_NAMES[0] or not set(names) <= set(INPUT_NAMES):
        shown = ", ".join(names)[:_SHOWN]
        raise OnnxModelError(
            f"{path}: the graph's inputs ({shown}) are not a colorgan export's "
            f"({', '.join(INPUT_NAMES)})"
        )


def _session_predict(session: Any, device: torch.device) -> Callable[[Batch], torch.Tensor]:
    """An onnxruntime session as a Batch -> output function on torch tensors."""
    names = [node.name for node in session.get_inputs()]

    def predict(batch: Batch) -> torch.Tensor:
        inputs = model_inputs(batch)
        if "hints" in names and "hints" not in inputs:  # no points: the zero map
            inputs["hints"] = no_points(batch.l)
        if "reference" in names and "reference" not in inputs:  # no reference: zeros
            inputs["reference"] = no_reference(batch.l.shape[0], batch.l)
        if "exemplar" in names and "exemplar" not in inputs:  # no reference: an empty slot
            side = EXEMPLAR_MULTIPLE
            inputs["exemplar"] = batch.l.new_zeros(
                batch.l.shape[0], 1, EXEMPLAR_CHANNELS, side, side
            )
        feed = {
            name: inputs[name].detach().to("cpu", torch.float32).contiguous().numpy()
            for name in names
        }
        return torch.from_numpy(session.run(None, feed)[0]).to(device)  # (B, 2 or 3, h, w)

    return predict


def load_onnx(path: str | Path, device: str = "auto") -> OnnxModel:
    """An exported .onnx generator in onnxruntime (CUDA provider when asked or 'auto' finds one)."""
    onnxruntime = _import_onnxruntime()
    path = Path(path)
    if not path.is_file():
        raise OnnxModelError(f"{path}: no such ONNX file")
    providers = _providers(onnxruntime, device)
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings would break the one-line reports
    # its threads sleep between runs instead of spinning: in a folder run the decoding and
    # encoding processes need those cores (21.4 against 18.9 images/s, docs/journal/performance.md)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=providers)
    except Exception as err:
        detail = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise OnnxModelError(f"{path}: cannot load the ONNX model ({detail})") from None
    meta = session.get_modelmeta().custom_metadata_map
    image_size, multiple = _metadata(meta, path)
    uncertainty, caution = _metadata_uncertainty(meta, path)
    inputs = [node.name for node in session.get_inputs()]
    _check_inputs(inputs, path)
    channels = session.get_outputs()[0].shape[1]  # 2 or 3 (an int: the exporter fixes it)
    if isinstance(channels, int) and channels != (3 if uncertainty else 2):
        raise OnnxModelError(
            f"{path}: its output has {channels} channels but its metadata says "
            f"{META_UNCERTAINTY}={str(uncertainty).lower()}; export the checkpoint again"
        )
    provider = session.get_providers()[0]
    torch_device = torch.device("cpu")
    if provider == "CUDAExecutionProvider" and torch.cuda.is_available():
        # pre- and post-processing beside the model, on its GPU, when this torch has CUDA too
        torch_device = resolve_device("cuda" if device == "auto" else device)
    predict = _session_predict(session, torch_device)
    capabilities = Capabilities.of_graph(inputs, uncertainty, caution)
    return OnnxModel(predict, image_size, multiple, torch_device, provider, capabilities)
