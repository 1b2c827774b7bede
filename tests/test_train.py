"""End-to-end training through the CLI on generated images: files, keys, resume, failures."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

import colorgan.train as train_module
from colorgan.checkpoint import checkpoint_dict, restore
from colorgan.cli import main
from colorgan.state import build_state
from tests.conftest import TINY, train_args, write_color_folder

REPO = Path(__file__).resolve().parents[1]
LOSS_KEYS = {
    *("g_adv", "g_l1", "g_l1_own", "g_perceptual", "g_nll", "g_total"),
    *("d_real", "d_fake", "d_total"),
}
ROW_KEYS = {"epoch", "step", "lr", "seconds", "images_per_second"} | LOSS_KEYS


def _train(data: Path, run_dir: Path, *extra: str) -> int:
    return main(train_args(data, run_dir, *extra))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_color_folder(tmp_path_factory.mktemp("data"), 20)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def run(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("run")
    with pytest.warns(UserWarning, match="untrained VGG16"):
        assert (
            _train(data, run_dir, "--set", "train.epochs=3", "--set", "train.keep_checkpoints=2")
            == 0
        )
    return run_dir


def test_run_directory_has_every_file(run: Path) -> None:
    for name in [
        "config.yaml",
        "metrics.jsonl",
        "train.log",
        "loss_curves.png",
        "samples/epoch_001.png",
        "samples/epoch_003.png",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
        "checkpoints/epoch_003.pt",
    ]:
        assert (run / name).is_file(), name
    assert not (run / "checkpoints" / "epoch_001.pt").exists()  # keep_checkpoints=2
    with Image.open(run / "samples" / "epoch_002.png") as grid:
        assert grid.width == 3 * 32  # gray | generated | truth


def test_metrics_jsonl_has_every_loss_each_epoch(run: Path) -> None:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for row in rows:
        assert row.keys() >= ROW_KEYS
        assert {"val_l1", "val_psnr", "val_delta_e", "val_colorfulness"} <= row.keys()
        assert all(isinstance(row[k], float) for k in LOSS_KEYS)
        assert row["g_l1_own"] == 0.0  # only a model.hints generator has an own ab beside
    assert rows[0]["step"] == 4  # 16 training images (4 held out; the broken file skipped) / 4
    assert rows[-1]["lr"] < rows[0]["lr"]  # cosine schedule


def test_train_log_holds_the_console_lines(run: Path) -> None:
    log = (run / "train.log").read_text()
    assert "1 unreadable skipped" in log and "broken.png" in log
    assert log.count("g_total") == 3 and "val_delta_e" in log


def test_checkpoint_is_plain_and_safe(run: Path) -> None:
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    for key in [
        "generator",
        "discriminator",
        "opt_g",
        "opt_d",
        "sched_g",
        "sched_d",
        "scaler",
        "rng",
        "config",
        "epoch",
        "step",
        "format_version",
    ]:
        assert key in state, key
    assert state["epoch"] == 3 and state["config"]["data"]["image_size"] == 32
    assert (run / "config.yaml").read_text().count("image_size: 32") == 1


def test_resume_equals_straight_run(run: Path, data: Path, tmp_path: Path) -> None:
    resumed = tmp_path / "resumed"
    code = main(
        [
            "train",
            "--resume",
            str(run / "checkpoints" / "epoch_002.pt"),
            "--run-dir",
            str(resumed),
            "--quiet",
        ]
    )
    assert code == 0
    straight = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    again = torch.load(resumed / "checkpoints" / "last.pt", weights_only=True)
    assert again["epoch"] == 3 and again["step"] == straight["step"]
    for net in ("generator", "discriminator"):
        for key, value in straight[net].items():
            assert torch.allclose(value.float(), again[net][key].float(), atol=1e-6), f"{net}.{key}"


def test_resume_auto_without_checkpoint_starts_fresh(
    data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.warns(UserWarning):
        assert _train(data, tmp_path, "--resume", "auto", "--set", "train.epochs=1") == 0
    assert "starting a new run" in caplog.text
    assert (tmp_path / "checkpoints" / "last.pt").is_file()


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = []
    real_l1 = train_module.l1_loss

    def poisoned(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return real_l1(a, b) * (float("nan") if len(calls) == 6 else 1.0)  # in epoch 2

    monkeypatch.setattr(train_module, "l1_loss", poisoned)
    with pytest.warns(UserWarning):
        assert _train(data, tmp_path, "--set", "train.epochs=3") == 1
    err = capsys.readouterr().err
    assert "non-finite at epoch 2" in err and "Traceback" not in err
    kept = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert kept["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in kept["generator"].values() if v.is_floating_point())


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "loss.vgg_weights=/no/such/vgg16.pth"], "no such file"),
        (["--set", "data.image_size=40"], "not a multiple of 2**model.depth"),
        (["--set", "train.batch_size=64"], "lower train.batch_size"),
    ],
)
def test_bad_setups_fail_before_training_with_one_line(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    assert _train(data, tmp_path / "run", *extra) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.count("\n") == 0
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_empty_folder_is_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert _train(tmp_path / "empty", tmp_path / "run") == 2
    assert "no image files found" in capsys.readouterr().err


@pytest.mark.slow
def test_sigterm_writes_resumable_checkpoint(data: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = [
        sys.executable,
        "-m",
        "colorgan",
        *train_args(data, run_dir, "--set", "train.epochs=30"),
    ]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    last = run_dir / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 120
    while not last.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    log = (run_dir / "train.log").read_text()
    assert "interrupted at epoch" in log and "--resume auto" in log
    state = torch.load(last, weights_only=True)
    assert state["epoch"] < 30
    # Resume continues where it stopped; finish quickly by shortening the run.
    code = main(
        [
            "train",
            "--run-dir",
            str(run_dir),
            "--resume",
            "auto",
            "--quiet",
            "--set",
            f"train.epochs={state['epoch'] + 1}",
        ]
    )
    assert code == 0
    assert torch.load(last, weights_only=True)["epoch"] == state["epoch"] + 1


def test_more_epochs_on_resume_stretch_the_cosine_schedule() -> None:
    from colorgan.config import load_config

    config = load_config(TINY, ["train.epochs=2", "loss.perceptual_weight=0"])
    state = build_state(config, torch.device("cpu"), steps_per_epoch=5)
    for _ in range(10):  # run the schedule to its end without training
        state.opt_g.step()
        state.sched_g.step()
    assert state.opt_g.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    saved = checkpoint_dict(state)
    longer = load_config(TINY, ["train.epochs=4", "loss.perceptual_weight=0"])
    resumed = build_state(longer, torch.device("cpu"), steps_per_epoch=5)
    restore(resumed, saved)
    # Half-way through the 4-epoch cosine: lr = 2e-4 * (1 + cos(pi / 2)) / 2 = 1e-4.
    assert resumed.opt_g.param_groups[0]["lr"] == pytest.approx(1e-4)
    resumed.opt_g.step()
    resumed.sched_g.step()
    expected = 2e-4 * (1 + math.cos(math.pi * 11 / 20)) / 2
    assert resumed.opt_g.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-6)


def test_validation_delta_e_equals_evaluate_on_the_same_images(data: Path, tmp_path: Path) -> None:
    """The ΔE00 that picks best.pt is `colorgan evaluate`'s ΔE00: one rendering path (8-bit
    gray in, 8-bit output) and one metric path."""
    val = write_color_folder(tmp_path / "val", 9, size=(44, 36))
    run_dir = tmp_path / "run"
    settings = ["--set", "train.epochs=1", "--set", "loss.perceptual_weight=0"]
    assert _train(data, run_dir, "--val-data", str(val), *settings) == 0
    row = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    out = tmp_path / "eval.json"
    checkpoint = run_dir / "checkpoints" / "last.pt"
    assert (
        main(["evaluate", str(checkpoint), "--data", str(val), "--json", str(out), "--quiet"]) == 0
    )
    result = json.loads(out.read_text())
    assert result["n_images"] == 9
    for key in ("delta_e", "psnr", "colorfulness"):
        assert row[f"val_{key}"] == pytest.approx(result[key], rel=1e-9, abs=1e-9), key
    assert row["val_delta_e"] != pytest.approx(result["baseline_gray"]["delta_e"])  # not gray
