"""The package's shape, as docs/ARCHITECTURE.md describes it: imports point down the layers, no
function is over ~60 lines, and training knows no generator class by name."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "colorgan"
# docs/ARCHITECTURE.md's layers, bottom first: a module imports only from lower layers.
LAYERS = [
    {"errors"},
    {"color", "metrics", "ema", "files"},
    {"config", "device", "lite0", "hints", "hub", "card", "uncertainty", "reference"},
    {"generator", "losses", "set_distance", "batch", "ddp", "figures", "speed"},
    {"discriminator", "data", "runlog"},
    {"state"},
    {"checkpoint"},
    {"modeldir"},
    {"evaluate", "colorize", "export", "prepare", "run"},
    {"train", "serve", "pipeline"},
    {"demo", "cli"},
    {"__init__", "__main__"},
]
MAX_FUNCTION_LINES = 60


def _modules() -> list[Path]:
    return sorted(PACKAGE.glob("*.py"))


def _imports(path: Path) -> set[str]:
    """The colorgan modules `path` imports at module level."""
    found: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
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
    upward = {m for m in _imports(path) if level[m] >= level[path.stem]}
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


@pytest.mark.parametrize("name", ["train", "run", "state", "checkpoint"])
def test_training_names_no_generator_class(name: str) -> None:
    """A new generator needs no change in training: it brings its own groups and freezing."""
    source = (PACKAGE / f"{name}.py").read_text(encoding="utf-8")
    for cls in ("Lite0UNet", "Generator(", "isinstance(state.generator"):
        assert cls not in source, f"{name}.py mentions {cls}"
