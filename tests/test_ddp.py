"""Two CPU processes under torchrun (gloo): one epoch, rank-0-only files, single-process resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from colorgan.cli import main
from colorgan.ddp import Dist, any_rank, launched_by_torchrun, mean_over_ranks
from tests.conftest import train_args, write_color_folder

REPO = Path(__file__).resolve().parents[1]


def test_single_process_helpers_are_no_ops() -> None:
    values = torch.tensor([1.0, 2.0])
    assert torch.equal(mean_over_ranks(values, Dist()), values)
    assert any_rank(True, Dist(), torch.device("cpu")) is True


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra",
    [
        [],
        # the pretrained-encoder U-Net with its two optimizer groups, unfrozen mid-run, and EMA
        ["--set", "model.encoder=efficientnet_lite0", "--set", "model.depth=5",
         "--set", "model.freeze_encoder_epochs=1", "--set", "train.ema_decay=0.9"],
    ],
    ids=["unet", "lite0"],
)  # fmt: skip
def test_torchrun_two_cpu_processes(tmp_path: Path, extra: list[str]) -> None:
    data = write_color_folder(tmp_path / "data", 20)
    run_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        env.pop(key, None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "colorgan",
        *train_args(data, run_dir, "--set", "train.epochs=2", *extra),
    ]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    log = (run_dir / "train.log").read_text()
    assert "training on cpu x2" in log
    assert log.count("epoch   1") == 1  # one writer: rank 0
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    # 16 training images, batch 4 per rank, 2 ranks: 2 steps per epoch.
    assert [r["step"] for r in rows] == [2, 4]
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in state["generator"])

    # The DDP checkpoint resumes in a single process.
    with pytest.warns(UserWarning, match="untrained VGG16"):
        code = main(
            [
                "train",
                "--resume",
                str(run_dir / "checkpoints" / "last.pt"),
                "--run-dir",
                str(tmp_path / "single"),
                "--quiet",
                "--set",
                "train.epochs=3",
            ]
        )
    assert code == 0
    resumed = torch.load(tmp_path / "single" / "checkpoints" / "last.pt", weights_only=True)
    assert resumed["epoch"] == 3
    assert resumed["sched_g"]["T_max"] == 12  # stretched to 3 epochs x 4 single-process steps


def test_not_under_torchrun_here() -> None:
    assert launched_by_torchrun() == all(
        k in os.environ for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE")
    )
