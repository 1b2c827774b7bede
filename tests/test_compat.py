"""Models written before the request/capability refactor (#32) still colorize pixel for pixel
the same: a U-Net checkpoint and model folder that take points, a reference and predict
uncertainty, with the outputs colorgan 94a4ed9 gave (experiments/compat_fixtures.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))

from compat_fixtures import check  # noqa: E402


def test_old_models_colorize_the_same() -> None:
    torch.set_num_threads(1)
    assert check(REPO / "tests" / "data" / "compat") == []
