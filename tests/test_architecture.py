"""The package's shape, as docs/ARCHITECTURE.md describes it: imports point down the layers, no
function is over ~60 lines, and training knows no generator class by name."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "colorgan"
# docs/ARCHITECTURE.md's layers, bottom first: a module imports only from lower layers (at
# module level and inside functions alike).
LAYERS = [
    {"errors", "color", "metrics", "ema", "inknet"},
    {"files", "batch", "connections", "device", "hub", "lite0", "matching", "overrides",
     "reference", "tones", "uncertainty", "uploads"},
    {"bank", "config", "ddp", "figures", "hints", "losses", "pairs", "set_distance", "speed",
     "videofile"},
    {"data", "generator", "request", "runlog", "scores", "suggest", "videoparts"},
    {"card", "discriminator", "models", "prepare", "protocols", "tiles"},
    {"state"},
    {"checkpoint"},
    {"modeldir", "run"},
    {"evaluate", "export"},
    {"colorize", "train"},
    {"demo", "jobs", "serve"},
    {"runtime", "video"},
    {"pipeline"},
    {"chapters", "videorun"},
    {"options"},
    {"cli"},
    {"__init__", "__main__"},
]  # fmt: skip
# The modules that hold networks: they take explicit arguments, never the config object.
NETWORKS = [
    "generator", "discriminator", "lite0", "matching", "reference", "uncertainty", "hints",
    "losses", "inknet",
]  # fmt: skip
MAX_MODULE_LINES = 500
MAX_PARAMETERS = 8  # besides self / cls
MAX_FUNCTION_LINES = 60


def _modules() -> list[Path]:
    return sorted(PACKAGE.glob("*.py"))


def _imports(path: Path) -> set[str]:
    """The colorgan modules `path` imports, at module level or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("colorgan"):
            parts = node.module.split(".")
            found |= {a.name for a in node.names} if len(parts) == 1 else {parts[1]}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("colorgan.")}
    return found


def test_every_module_has_a_layer() -> None:
    layered = set().union(*LAYERS)
    assert {p.stem for p in _modules()} == layered


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.stem)
def test_imports_point_down(path: Path) -> None:
    level = {name: i for i, layer in enumerate(LAYERS) for name in layer}
    upward = {m for m in _imports(path) - {path.stem} if level[m] >= level[path.stem]}
    assert not upward, f"{path.stem} (layer {level[path.stem]}) imports {sorted(upward)}"


def test_no_function_is_long() -> None:
    long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.stem}.{node.name}: {lines} lines")
    assert not long


def test_no_module_is_long() -> None:
    lengths = {p.stem: len(p.read_text(encoding="utf-8").splitlines()) for p in _modules()}
    assert {m: n for m, n in lengths.items() if n > MAX_MODULE_LINES} == {}


def test_no_function_takes_many_parameters() -> None:
    many = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args
                names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
                names += [a.arg for a in (args.vararg, args.kwarg) if a is not None]
                count = len([n for n in names if n not in ("self", "cls")])
                if count > MAX_PARAMETERS:
                    many.append(f"{path.stem}.{node.name}: {count} parameters")
    assert not many


@pytest.mark.parametrize("name", NETWORKS)
def test_networks_import_no_config(name: str) -> None:
    """Networks take explicit keyword arguments; models.py builds them from a config."""
    assert "config" not in _imports(PACKAGE / f"{name}.py")


@pytest.mark.parametrize("name", ["train", "run", "state", "checkpoint"])
def test_training_names_no_generator_class(name: str) -> None:
    """A new generator needs no change in training: it brings its own groups and freezing."""
    source = (PACKAGE / f"{name}.py").read_text(encoding="utf-8")
    for cls in ("Lite0UNet", "Generator(", "isinstance(state.generator"):
        assert cls not in source, f"{name}.py mentions {cls}"
