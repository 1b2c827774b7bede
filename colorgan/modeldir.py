"""Model folders and MODEL.

A model folder (`colorgan export CHECKPOINT --model-dir DIR`) is what a person shares: the
generator alone in `model.safetensors` (EMA weights when the checkpoint has them), `config.json`
(`library_name`, `format_version`, which weights, and the resolved config: the architecture and
the working size), and a model card `README.md` in the Hub's format (card.py). It is written
into a hidden temporary folder beside DIR and renamed onto it. Loading one reads JSON and
safetensors only: nothing in the folder is imported, unpickled or run.

MODEL, wherever the CLI and the API take one, is resolved here: a training checkpoint (.pt), an
exported .onnx, a model folder, or `hf://owner/name[@revision]` (downloaded through
huggingface_hub into its cache, hub.py).
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

import safetensors.torch

from colorgan import hub
from colorgan.card import LIBRARY, Facts, load_evaluation, model_card
from colorgan.checkpoint import (
    check_finite,
    check_shapes,
    generator_from,
    load_checkpoint,
    load_generator,
    load_weights,
)
from colorgan.config import Config, from_dict, shown, to_dict
from colorgan.errors import CheckpointError, ConfigError, ModelFolderError
from colorgan.files import stale_temporary_of, temporary_prefix, write_error
from colorgan.generator import ColorModel
from colorgan.models import build_generator
from colorgan.request import Capabilities

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"
FILES = [CONFIG_FILE, WEIGHTS_FILE, CARD_FILE]  # all a model folder holds; the Hub's download
FOLDER_FORMAT = 1
MAX_CONFIG_BYTES = 2**20  # a config.json is about 2 KiB


@dataclass(frozen=True)
class ModelSource:
    """MODEL resolved to a file or folder on this machine."""

    kind: Literal["checkpoint", "onnx", "folder"]
    path: Path
    name: str  # as messages show it: the path, or hf://owner/name@<commit>
    revision: str | None = None  # the Hub commit the files are from (hf:// only)


def _version() -> str:
    try:
        return version("colorgan")
    except PackageNotFoundError:
        return "unknown"


def _read_config_json(path: Path, label: str) -> dict[str, Any]:
    """config.json as a dict; one line naming `label` otherwise."""
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ModelFolderError(f"{label}: {CONFIG_FILE} is over 1 MiB; not a colorgan one")
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ModelFolderError(
            f"{label}: cannot read {CONFIG_FILE} ({err.strerror or err})"
        ) from None
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError
        raise ModelFolderError(f"{label}: {CONFIG_FILE} is not JSON ({str(err)[:80]})") from None
    if not isinstance(raw, dict):
        raise ModelFolderError(f"{label}: {CONFIG_FILE} is not a JSON object")
    return raw


def read_model_dir(folder: Path, label: str | None = None) -> tuple[Config, dict[str, Any]]:
    """(the config, config.json) of a model folder, checked: both files there, config.json a
    colorgan one of a format this reads, its config valid (config.from_dict). ModelFolderError,
    one line naming what is missing or wrong, otherwise."""
    label = label or str(folder)
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (folder / name).is_file()]
    if missing:
        run = (
            "; for a training run, give its checkpoints/best.pt"
            if (folder / "checkpoints").is_dir()
            else ""
        )
        raise ModelFolderError(
            f"{label}: not a colorgan model (no {' and no '.join(missing)}){run}"
        )
    raw = _read_config_json(folder / CONFIG_FILE, label)
    if raw.get("library_name") != LIBRARY:
        raise ModelFolderError(
            f"{label}: {CONFIG_FILE} has library_name {shown(raw.get('library_name'))}, not "
            f"'{LIBRARY}': not a colorgan model"
        )
    fmt = raw.get("format_version")
    if type(fmt) is not int or fmt != FOLDER_FORMAT:
        raise ModelFolderError(
            f"{label}: {CONFIG_FILE} has format_version {shown(fmt)}; this colorgan reads "
            f"format {FOLDER_FORMAT}"
        )
    saved = raw.get("config")
    if not isinstance(saved, dict) or not isinstance(saved.get("model"), dict):
        raise ModelFolderError(f"{label}: {CONFIG_FILE} has no config object with a model section")
    try:
        config = from_dict(saved)
    except ConfigError as err:
        raise ModelFolderError(f"{label}: {CONFIG_FILE}: {err}") from None
    return config, raw


def load_folder(folder: Path, label: str | None = None) -> tuple[ColorModel, Config]:
    """The generator of a model folder (on the CPU, in eval mode) and its config: JSON and
    safetensors only, never code or pickles."""
    label = label or str(folder)
    config, _ = read_model_dir(folder, label)
    redo = f"Export the folder again from its checkpoint (its {CONFIG_FILE} must be the export's)"
    try:  # the shapes from the file's header first: a config may describe any network
        with safetensors.safe_open(folder / WEIGHTS_FILE, framework="pt") as header:
            shapes = {key: header.get_slice(key).get_shape() for key in header.keys()}  # noqa: SIM118
        check_shapes(config.model, shapes, f"{label}/{WEIGHTS_FILE}", redo)
        weights = safetensors.torch.load_file(folder / WEIGHTS_FILE, device="cpu")
    except CheckpointError:
        raise
    except Exception as err:  # safetensors' own errors for truncated or foreign files
        raise ModelFolderError(
            f"{label}: cannot read {WEIGHTS_FILE} ({type(err).__name__}: {str(err)[:120]})"
        ) from None
    generator = build_generator(config.model)
    load_weights(generator, weights, f"{label}/{WEIGHTS_FILE}", "generator weights", redo)
    check_finite(weights, f"{label}/{WEIGHTS_FILE}")
    generator.eval()
    return generator, config


def resolve_model(model: str | Path) -> ModelSource:
    """MODEL as a local file or folder: `hf://owner/name[@revision]` is downloaded (or found in
    the cache) and checked; a folder is checked as a model folder; a .onnx file is ONNX; any
    other path is a training checkpoint."""
    if hub.is_hub_name(model):
        snapshot = hub.download(hub.parse_hub_name(str(model)), FILES)
        read_model_dir(snapshot.folder, str(snapshot))
        return ModelSource("folder", snapshot.folder, str(snapshot), snapshot.commit)
    path = Path(model)
    if path.is_dir():
        read_model_dir(path)
        return ModelSource("folder", path, str(path))
    if path.suffix.lower() == ".onnx":
        return ModelSource("onnx", path, str(path))
    return ModelSource("checkpoint", path, str(path))


def load_model(source: ModelSource) -> tuple[ColorModel, Config]:
    """The generator (on the CPU, eval mode) and config of a checkpoint or model folder."""
    if source.kind == "onnx":
        raise ModelFolderError(
            f"{source.name}: an .onnx model runs in onnxruntime only; give the checkpoint or "
            f"model folder it was exported from"
        )
    if source.kind == "folder":
        return load_folder(source.path, source.name)
    return load_generator(source.path)


def _replaceable(out: Path) -> None:
    """Refuse `out` unless it is free, an empty folder, or a model folder holding nothing but
    a model folder's files (so a git clone, a run or anything else is never deleted)."""
    if not out.exists() and not out.is_symlink():
        return
    if out.is_symlink() or not out.is_dir():
        raise ModelFolderError(
            f"--model-dir {out}: exists and is not a folder (or is a link); give a new folder"
        )
    foreign = sorted(p.name for p in out.iterdir() if p.name not in FILES)
    if foreign:
        raise ModelFolderError(
            f"--model-dir {out}: holds {shown(foreign[0])}, and only a colorgan model folder "
            f"(nothing but {', '.join(FILES)}) is replaced; give a new or empty folder"
        )
    if any(out.iterdir()):
        try:
            read_model_dir(out)
        except ModelFolderError as err:
            raise ModelFolderError(
                f"--model-dir {out}: not replaced, it is no model folder this colorgan reads "
                f"({err}); give a new or empty folder"
            ) from None


def _remove_stale(out: Path) -> None:
    """Temporaries an interrupted export left beside `out`."""
    for stale in out.parent.glob(f"{glob.escape(temporary_prefix(out.name))}*.tmp"):
        if stale_temporary_of(stale) == out.name and stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)


def _sync(folder: Path) -> None:
    for path in folder.iterdir():
        with open(path, "rb+") as handle:
            os.fsync(handle.fileno())


def write_model_dir(out: Path, write: Callable[[Path], None], needed: int | None = None) -> None:
    """Call `write(tmp)` on a hidden temporary folder beside `out`, then rename it onto `out`
    (an old model folder there is renamed aside first, then deleted): a crash or a full disk
    leaves the old folder or the new one, whole. One line (ModelFolderError) when `out` may
    not be replaced or cannot be written."""
    _replaceable(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(out)
        tmp = Path(
            tempfile.mkdtemp(prefix=temporary_prefix(out.name), suffix=".tmp", dir=out.parent)
        )
    except OSError as err:
        raise ModelFolderError(f"--model-dir {out}: {write_error(err)}") from None
    try:
        write(tmp)
        _sync(tmp)
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp's 0700 would hide the model from other users
        _swap(tmp, out)
    except OSError as err:
        if err.filename and str(err.filename).startswith(str(tmp)):
            err.filename = str(out / Path(err.filename).name)  # the file meant, not its temporary
        raise ModelFolderError(write_error(err, needed)) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _swap(tmp: Path, out: Path) -> None:
    """Rename `tmp` onto `out`; an existing `out` goes aside first and is deleted after."""
    if not out.exists():
        os.rename(tmp, out)
        return
    aside = Path(tempfile.mkdtemp(prefix=temporary_prefix(out.name), suffix=".tmp", dir=out.parent))
    os.rename(out, aside / out.name)
    try:
        os.rename(tmp, out)
    except OSError:
        os.rename(aside / out.name, out)  # put the old one back
        aside.rmdir()
        raise
    shutil.rmtree(aside, ignore_errors=True)


def folder_facts(saved: dict[str, Any], generator: ColorModel, config: Config, name: str) -> Facts:
    """What a checkpoint dict knows about its model, for the card (no evaluation, no repo)."""
    epoch, step, best = saved.get("epoch"), saved.get("step"), saved.get("best")
    return Facts(
        name=name,
        repo_id=None,
        config=to_dict(config),
        ema=saved.get("generator_ema") is not None,
        parameters=sum(p.numel() for p in generator.parameters()),
        epoch=int(epoch) if epoch is not None else None,
        step=int(step) if step is not None else None,
        sources=dict(saved.get("sources") or {}),
        history=list(saved.get("history") or []),
        best=float(best) if best is not None else None,
        takes=Capabilities.of(config.model),
    )


def export_model_dir(
    checkpoint: str | Path,
    out: Path,
    evaluation: Path | None = None,
    repo_id: str | None = None,
) -> Path:
    """Write the model folder of a training checkpoint to `out` atomically: model.safetensors
    (EMA weights when present), config.json and the card README.md (with `evaluation`, a
    `colorgan evaluate --json` file, beside the gray baseline; `repo_id`: the Hub name the card
    tells people to load). Returns `out`."""
    result = load_evaluation(evaluation) if evaluation is not None else None
    if repo_id is not None:
        hub.check_repo_id(repo_id, "--push")
    if (
        hub.is_hub_name(checkpoint)
        or Path(checkpoint).is_dir()
        or str(checkpoint).endswith(".onnx")
    ):
        raise ModelFolderError(
            f"{checkpoint}: --model-dir is made from a training checkpoint (.pt), which knows "
            f"how the model was trained; a model folder can simply be copied"
        )
    _replaceable(out)  # before the work: a refused folder is said at once
    saved = load_checkpoint(checkpoint)
    generator, config = generator_from(saved, str(checkpoint))
    name = repo_id.split("/")[1] if repo_id else out.resolve().name
    facts = replace(
        folder_facts(saved, generator, config, name), repo_id=repo_id, evaluation=result
    )
    tensors = {k: v.detach().contiguous().clone() for k, v in generator.state_dict().items()}
    meta = {
        "library_name": LIBRARY,
        "format_version": FOLDER_FORMAT,
        "colorgan_version": _version(),
        "weights": "generator_ema" if facts.ema else "generator",
        "config": to_dict(config),
    }

    contents = {
        WEIGHTS_FILE: safetensors.torch.save(tensors, metadata={"format": "pt"}),
        CONFIG_FILE: (json.dumps(meta, indent=2) + "\n").encode("utf-8"),
        CARD_FILE: model_card(facts).encode("utf-8"),
    }

    def write(folder: Path) -> None:
        for name, data in contents.items():
            try:
                (folder / name).write_bytes(data)
            except OSError as err:  # a failed write() names no file: say which, and the room
                err.filename = err.filename or str(folder / name)
                raise

    write_model_dir(out, write, needed=sum(len(data) for data in contents.values()))
    return out
