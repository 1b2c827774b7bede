"""Mixed precision, channels-last and torch.compile leave training correct (on CPU)."""

from __future__ import annotations

import pytest
import torch

from colorgan.batch import Batch
from colorgan.config import load_config
from colorgan.device import amp_dtype
from colorgan.state import build_state
from colorgan.train import train_step
from tests.conftest import SMALL_STEP

BASE = SMALL_STEP


def _losses(*extra: str, steps: int = 3) -> list[dict[str, float]]:
    config = load_config(None, [*BASE, *extra])
    state = build_state(config, torch.device("cpu"), steps_per_epoch=10)
    gen = torch.Generator().manual_seed(1)
    batch = Batch(
        l=torch.rand(4, 1, 32, 32, generator=gen) * 2 - 1,
        ab=(torch.rand(4, 2, 32, 32, generator=gen) - 0.5) * 0.6,
    )
    return [train_step(state, batch) for _ in range(steps)]


def _assert_close(a: list[dict[str, float]], b: list[dict[str, float]], rel: float) -> None:
    for step_a, step_b in zip(a, b, strict=True):
        for key in ("g_l1", "g_adv", "d_total", "g_total"):
            assert step_b[key] == pytest.approx(step_a[key], rel=rel), key


def test_amp_auto_is_off_on_cpu_and_bf16_on_request() -> None:
    assert amp_dtype("auto", torch.device("cpu")) is None
    assert amp_dtype("bf16", torch.device("cpu")) is torch.bfloat16
    assert amp_dtype("fp16", torch.device("cpu")) is torch.float16


def test_bf16_autocast_stays_close_to_fp32() -> None:
    _assert_close(_losses("train.amp=off"), _losses("train.amp=bf16"), rel=0.05)


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step")
def test_fp16_with_grad_scaler_runs_and_stays_close() -> None:
    _assert_close(_losses("train.amp=off"), _losses("train.amp=fp16"), rel=0.05)


def test_channels_last_matches_default_layout() -> None:
    _assert_close(_losses(), _losses("train.channels_last=true"), rel=1e-4)


def test_compile_smoke(monkeypatch: pytest.MonkeyPatch) -> None:
    # Dynamo traces the real networks and training step; the aot_eager backend skips inductor's
    # C++ code generation, which takes minutes on 2 CPU cores (inductor runs in the GPU benchmark).
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda m: real_compile(m, backend="aot_eager"))
    compiled = _losses("train.compile=true", steps=2)
    assert all(torch.isfinite(torch.tensor(list(s.values()))).all() for s in compiled)
    _assert_close(_losses(steps=2), compiled, rel=1e-3)
