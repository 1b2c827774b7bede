"""A run is never lost: re-runs, resumes from older epochs, kills at the worst moments, full
disks, unwritable run directories and checkpoints that do not fit their config."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch

import colorgan.checkpoint as checkpoint_module
from colorgan.cli import main
from colorgan.config import load_config, to_dict
from colorgan.models import build_generator
from tests.conftest import TINY, UNET, train_args, write_color_folder

REPO = Path(__file__).resolve().parents[1]
NO_VGG = ["--set", "loss.perceptual_weight=0", "--set", "train.keep_checkpoints=5"]
COMPARED = ("epoch", "step", "lr", "g_adv", "g_l1", "g_total", "d_real", "d_fake", "d_total",
            "val_l1", "val_psnr", "val_delta_e")  # fmt: skip


def _train(data: Path, run_dir: Path, *extra: str) -> int:
    return main(train_args(data, run_dir, *NO_VGG, *extra))


def _rows(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _epochs(run_dir: Path) -> list[int]:
    return [row["epoch"] for row in _rows(run_dir)]


def _state(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = torch.load(path, weights_only=True)
    return loaded


def _same_weights(a: Path, b: Path) -> None:
    """The same weights up to float noise across processes (one Adam step moves them ~2e-4)."""
    first, second = _state(a), _state(b)
    assert first["step"] == second["step"]
    for net in ("generator", "discriminator"):
        for key, value in first[net].items():
            assert torch.allclose(value.float(), second[net][key].float(), atol=2e-5), key


def _same_rows(a: Path, b: Path) -> None:
    for mine, theirs in zip(_rows(a), _rows(b), strict=True):
        for key in COMPARED:
            assert mine[key] == pytest.approx(theirs[key], rel=1e-5, abs=1e-7), key


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_color_folder(tmp_path_factory.mktemp("data"), 20)


@pytest.fixture(scope="module")
def straight(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three epochs without a stop: what every interrupted run must end up equal to."""
    run_dir = tmp_path_factory.mktemp("straight")
    assert _train(data, run_dir, "--set", "train.epochs=3") == 0
    return run_dir


def _killed_run(data: Path, run_dir: Path, patch: str) -> subprocess.CompletedProcess[str]:
    """`colorgan train` for 3 epochs in a child process that runs `patch` first (to SIGKILL
    or SIGTERM itself at a chosen moment)."""
    args = train_args(data, run_dir, *NO_VGG, "--set", "train.epochs=3")
    script = (
        textwrap.dedent(patch)
        + f"\nfrom colorgan.cli import main\nraise SystemExit(main({args!r}))\n"
    )
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip


def _resume(run_dir: Path) -> int:
    return main(["train", "--run-dir", str(run_dir), "--resume", "auto", "--quiet"])


# -- item 1: never destroy a run -------------------------------------------------------------


def test_training_into_a_run_dir_that_holds_a_run_is_refused(
    straight: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (straight / "checkpoints" / "last.pt").stat().st_mtime_ns
    rows = (straight / "metrics.jsonl").read_text()
    assert _train(data, straight, "--set", "train.epochs=1") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "already holds a run" in err
    assert "--resume auto" in err and "--run-dir" in err and "--overwrite" in err
    assert (straight / "checkpoints" / "last.pt").stat().st_mtime_ns == before
    assert (straight / "metrics.jsonl").read_text() == rows


def test_overwrite_starts_the_run_over(data: Path, tmp_path: Path) -> None:
    assert _train(data, tmp_path, "--set", "train.epochs=2") == 0
    (tmp_path / "notes.txt").write_text("mine")
    assert _train(data, tmp_path, "--set", "train.epochs=1", "--overwrite") == 0
    assert _epochs(tmp_path) == [1]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "best.pt",
        "epoch_001.pt",
        "last.pt",
    ]
    assert (tmp_path / "notes.txt").read_text() == "mine"  # only the run's own files go


def test_resume_from_an_older_epoch_branches_into_a_new_run_dir(
    straight: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(straight, run_dir)
    before = {p.name: p.stat().st_mtime_ns for p in (run_dir / "checkpoints").iterdir()}
    rows = (run_dir / "metrics.jsonl").read_text()
    older = run_dir / "checkpoints" / "epoch_002.pt"
    assert main(["train", "--resume", str(older), "--quiet"]) == 0
    branch = tmp_path / "run-from-epoch002"
    assert "branches into" in caplog.text
    assert _epochs(branch) == [1, 2, 3]
    _same_weights(branch / "checkpoints" / "last.pt", straight / "checkpoints" / "last.pt")
    _same_rows(branch, straight)
    # the original run is untouched
    assert {p.name: p.stat().st_mtime_ns for p in (run_dir / "checkpoints").iterdir()} == before
    assert (run_dir / "metrics.jsonl").read_text() == rows


def test_resume_from_an_older_epoch_into_its_own_run_dir_is_refused(
    straight: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    older = straight / "checkpoints" / "epoch_001.pt"
    code = main(["train", "--resume", str(older), "--run-dir", str(straight), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "went further" in err and "epoch 3" in err


def test_resume_into_another_run_dir_holding_a_run_is_refused(
    straight: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _train(data, tmp_path, "--set", "train.epochs=1") == 0
    older = straight / "checkpoints" / "epoch_002.pt"
    assert main(["train", "--resume", str(older), "--run-dir", str(tmp_path), "--quiet"]) == 2
    assert "holds a run" in capsys.readouterr().err
    assert _epochs(tmp_path) == [1]


# -- item 3: where a run lives ---------------------------------------------------------------


def test_a_checkpoint_outside_checkpoints_needs_a_run_dir(
    straight: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loose = tmp_path / "my.pt"
    loose.write_bytes((straight / "checkpoints" / "epoch_002.pt").read_bytes())
    assert main(["train", "--resume", str(loose), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--run-dir" in err and "checkpoints/" in err
    assert not (tmp_path.parent / "checkpoints").exists()
    assert main(["train", "--resume", str(loose), "--run-dir", str(tmp_path / "r"), "--quiet"]) == 0
    assert _epochs(tmp_path / "r") == [1, 2, 3]


def test_a_relative_data_folder_is_stored_absolute(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(data.parent)
    run_dir = tmp_path / "run"
    assert main(train_args(Path(data.name), run_dir, *NO_VGG, "--set", "train.epochs=1")) == 0
    saved = _state(run_dir / "checkpoints" / "last.pt")
    assert saved["sources"]["data"] == str(data.resolve())
    monkeypatch.chdir(tmp_path)  # resuming elsewhere finds the data
    code = main(["train", "--run-dir", str(run_dir), "--resume", "auto", "--quiet",
                 "--set", "train.epochs=2"])  # fmt: skip
    assert code == 0 and _epochs(run_dir) == [1, 2]


# -- items 2 and 8: metrics.jsonl agrees with the checkpoints, whatever kills the run ---------


@pytest.mark.slow
def test_sigkill_while_writing_a_checkpoint_then_resume(
    straight: Path, data: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    patch = """
        import os, signal, torch
        import colorgan.checkpoint as checkpoint
        real_save = torch.save
        def dying_save(obj, f, *args, **kwargs):
            if obj.get("epoch") == 2:  # epoch 2's checkpoint: half written, then killed
                real_save(obj, f, *args, **kwargs)
                with open(f, "r+b") as handle:
                    handle.truncate(os.path.getsize(f) // 2)
                os.kill(os.getpid(), signal.SIGKILL)
            return real_save(obj, f, *args, **kwargs)
        checkpoint.torch.save = dying_save
    """
    result = _killed_run(data, run_dir, patch)
    assert result.returncode == -signal.SIGKILL, result.stderr
    left = list((run_dir / "checkpoints").glob(".*.tmp"))
    assert len(left) == 1 and left[0].stat().st_size > 0  # what a real kill leaves
    assert _state(run_dir / "checkpoints" / "last.pt")["epoch"] == 1
    assert _epochs(run_dir) == [1]
    users = run_dir / "checkpoints" / ".my.notes.tmp"  # a user's own hidden file: not ours
    users.write_text("mine")
    assert _resume(run_dir) == 0
    assert list((run_dir / "checkpoints").glob(".*.tmp")) == [users]
    assert _epochs(run_dir) == [1, 2, 3]
    _same_weights(run_dir / "checkpoints" / "last.pt", straight / "checkpoints" / "last.pt")
    _same_rows(run_dir, straight)


def test_sigkill_between_the_checkpoint_and_its_metrics_row_then_resume(
    straight: Path, data: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    patch = """
        import os, signal
        import colorgan.runlog as runlog
        real_write = runlog.EpochReport.write
        def dying_write(self, row, history, sample):
            if row["epoch"] == 2:  # the checkpoint of epoch 2 is saved; its row is not
                os.kill(os.getpid(), signal.SIGKILL)
            return real_write(self, row, history, sample)
        runlog.EpochReport.write = dying_write
    """
    result = _killed_run(data, run_dir, patch)
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert _state(run_dir / "checkpoints" / "last.pt")["epoch"] == 2
    assert _epochs(run_dir) == [1]
    assert _resume(run_dir) == 0
    assert _epochs(run_dir) == [1, 2, 3]  # not [1, 3]
    _same_weights(run_dir / "checkpoints" / "last.pt", straight / "checkpoints" / "last.pt")
    _same_rows(run_dir, straight)


@pytest.mark.slow
def test_sigterm_mid_epoch_keeps_the_whole_epoch_in_its_row(
    straight: Path, data: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    patch = """
        import os, signal
        import colorgan.train as train
        real_step = train.train_step
        def step(state, batch):
            if state.step == 5:  # epoch 2 (4 steps per epoch), after its first step
                os.kill(os.getpid(), signal.SIGTERM)
            return real_step(state, batch)
        train.train_step = step
    """
    result = _killed_run(data, run_dir, patch)
    assert result.returncode == 128 + signal.SIGTERM, result.stderr
    saved = _state(run_dir / "checkpoints" / "last.pt")
    assert saved["epoch"] == 1 and saved["epoch_items"] > 0 and saved["epoch_sums"]
    assert _resume(run_dir) == 0
    assert _epochs(run_dir) == [1, 2, 3]
    _same_rows(run_dir, straight)  # epoch 2's means cover its steps before the stop too


# -- item 4: run directories that cannot be written, full disks, weights that do not fit ------


@pytest.mark.parametrize("where", ["file", "proc"])
def test_unwritable_run_dirs_are_one_line(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    run_dir = tmp_path / "taken" if where == "file" else Path("/proc/colorgan-run")
    if where == "file":
        run_dir.write_text("a file")
    assert _train(data, run_dir) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(run_dir) in err and "Traceback" not in err


def test_a_read_only_run_dir_is_one_line(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)  # root ignores permission bits
    assert _train(data, tmp_path / "run") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot write there (Read-only file system)" in err


@pytest.mark.parametrize("raised", ["OSError", "RuntimeError"])
def test_a_full_disk_stops_the_run_and_keeps_the_last_good_checkpoint(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    raised: str,
) -> None:  # fmt: skip
    """torch.save on a full disk: an OSError, or (what its zip writer really raises, e.g. on
    a full tmpfs) a RuntimeError; one line either way."""
    real_save = torch.save
    real_usage = shutil.disk_usage

    def full_disk(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        if obj.get("epoch") == 2:
            with open(f, "wb") as handle:
                handle.write(b"x" * 1000)
            if raised == "OSError":
                raise OSError(errno.ENOSPC, "No space left on device")
            monkeypatch.setattr(shutil, "disk_usage", lambda p: real_usage(p)._replace(free=1000))
            raise RuntimeError("[enforce fail at inline_container.cc:858] . unexpected pos 64 vs 0")
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module.torch, "save", full_disk)
    assert _train(data, tmp_path, "--set", "train.epochs=3") == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "No space left on device" in err
    assert "MB needed" in err and "MB free" in err and "epoch_002.pt" in err
    assert _state(tmp_path / "checkpoints" / "last.pt")["epoch"] == 1  # still loadable
    assert not list((tmp_path / "checkpoints").glob(".*.tmp"))
    assert _epochs(tmp_path) == [1]


def _mismatched_checkpoint(path: Path) -> Path:
    """A checkpoint whose generator was built wider than its config says."""
    small = load_config(TINY, [*UNET, "loss.perceptual_weight=0"])
    wide = load_config(TINY, [*UNET, "loss.perceptual_weight=0", "model.base_channels=16"])
    generator = build_generator(wide.model)
    checkpoint_module.save_checkpoint(
        {"config": to_dict(small), "generator": generator.state_dict()}, path
    )
    return path


@pytest.mark.parametrize("command", ["colorize", "evaluate", "export", "serve"])
def test_weights_that_do_not_fit_their_config_are_one_line(
    tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    model = _mismatched_checkpoint(tmp_path / "model.pt")
    argv = {
        "colorize": ["colorize", str(model), str(data), "--out", str(tmp_path / "out")],
        "evaluate": ["evaluate", str(model), "--data", str(data)],
        "export": ["export", str(model), "--onnx", str(tmp_path / "m.onnx")],
        "serve": ["serve", str(model), "--port", "0"],
    }[command]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "do not fit" in err and str(model) in err
    assert "size mismatch" in err  # the first mismatch, named


def test_resuming_with_weights_that_do_not_fit_is_one_line(
    straight: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["train", "--resume", str(straight / "checkpoints" / "epoch_001.pt"),
                 "--run-dir", str(tmp_path / "r"), "--quiet",
                 "--set", "model.base_channels=16"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "do not fit" in err and "epoch_001.pt" in err
