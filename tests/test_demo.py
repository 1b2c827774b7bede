"""The demo: procedural scenes, the time budget, and a tiny end-to-end run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from colorgan import demo
from colorgan.cli import main
from colorgan.config import load_config
from colorgan.data import is_grayscale
from colorgan.demo import (
    DEMO_SETTINGS,
    draw_scene,
    fit_budget,
    fit_folder,
    measure_step_seconds,
    run_demo,
    write_scenes,
)
from colorgan.scores import GRAY_KEYS, RESULT_KEYS

# One short epoch at 32 px: seconds on a slow CPU.
TINY = (
    "model.encoder=unet",
    "data.image_size=32",
    "model.depth=3",
    "model.base_channels=8",
    "model.disc_channels=8",
    "train.batch_size=8",
    "train.epochs=1",
    "train.val_images=8",
    "train.sample_images=4",
)


def test_scenes_are_seeded_colorful_and_sky_over_ground() -> None:
    first = np.asarray(draw_scene(np.random.default_rng(7), 64))
    again = np.asarray(draw_scene(np.random.default_rng(7), 64))
    other = np.asarray(draw_scene(np.random.default_rng(8), 64))
    assert first.shape == (64, 64, 3) and np.array_equal(first, again)
    assert not np.array_equal(first, other)
    rgb = first.astype(int)
    top_row, bottom_row = rgb[1], rgb[-2]
    assert (top_row[:, 2] > top_row[:, 0]).mean() > 0.5  # blue sky (or the sun's outline)
    assert (bottom_row[:, 1] > bottom_row[:, 2]).mean() > 0.5  # green hills or things on them


def test_write_scenes_replaces_earlier_ones(tmp_path: Path) -> None:
    folder = write_scenes(tmp_path / "scenes", 5, seed=1, size=32)
    write_scenes(folder, 3, seed=1, size=32)
    files = sorted(folder.glob("*.png"))
    assert [f.name for f in files] == ["scene_0000.png", "scene_0001.png", "scene_0002.png"]
    from PIL import Image

    assert not any(is_grayscale(Image.open(f).convert("RGB"), 4.0) for f in files)


def test_fit_budget_chooses_epochs_and_a_safety_limit() -> None:
    config = load_config(None, list(DEMO_SETTINGS))  # batch 16
    # 800 images: 50 steps of 0.5 s (+5% loading, + validation, + 1 s) is about 28 s an epoch
    fitted = fit_budget(config, n_train=800, n_val=64, seconds=180.0, step_seconds=0.5)
    assert fitted.train.epochs == 6
    assert fitted.train.max_minutes == pytest.approx(3.0)
    assert fit_budget(config, 800, 64, seconds=-5.0, step_seconds=0.5).train.epochs == 1


def test_measure_step_seconds_is_positive(color_folder: Path) -> None:
    config = load_config(None, [*DEMO_SETTINGS, *TINY])
    seconds = measure_step_seconds(config, sorted(color_folder.rglob("*.png")), steps=1)
    assert 0.0 < seconds < 60.0


def test_fit_folder_keeps_what_one_epoch_can_hold_and_splits_like_train() -> None:
    config = load_config(None, [*DEMO_SETTINGS, "data.val_fraction=0.2"])
    paths = [Path(f"img_{i:03d}.png") for i in range(100)]
    fitted, train_paths, val_paths = fit_folder(config, paths, budget_images=40.0)
    assert fitted.data.max_images == 50  # 40 training images + 10 held out
    assert len(train_paths) == 40 and len(val_paths) == 10
    assert set(train_paths + val_paths) == set(paths[:50])
    _, train_all, val_all = fit_folder(config, paths, budget_images=1e9)
    assert len(train_all) == 80 and len(val_all) == 20


@pytest.mark.parametrize(("load", "expected"), [(0.2, 4), (1.4, 3), (3.0, 1), (9.0, 1)])
def test_demo_trains_on_the_idle_cpu_threads(
    load: float, expected: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(demo.os, "getloadavg", lambda: (load, load, load))
    assert demo._idle_cpu_threads(4) == expected


def test_demo_writes_data_figure_metrics_and_run(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    for _ in range(2):  # a second demo replaces the first one's run
        result = run_demo(out, minutes=1.0, assignments=TINY, n_train=16, n_val=4, quiet=True)
    assert len(list((out / "data" / "train").glob("*.png"))) == 16
    assert len(list((out / "data" / "val").glob("*.png"))) == 4
    assert (out / "comparison.png").is_file()
    assert (out / "run" / "checkpoints" / "last.pt").is_file()
    assert len((out / "run" / "metrics.jsonl").read_text().splitlines()) == 1
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == result
    assert tuple(saved) == RESULT_KEYS and tuple(saved["baseline_gray"]) == GRAY_KEYS
    assert saved["n_images"] == 4


def test_demo_on_a_folder_evaluates_its_held_out_split(tmp_path: Path, color_folder: Path) -> None:
    out = tmp_path / "demo"
    assignments = [*TINY, "train.batch_size=4", "data.val_fraction=0.2"]
    result = run_demo(out, minutes=1.0, data=color_folder, assignments=assignments, quiet=True)
    assert result["n_images"] == 4  # 20 images, 20% held out
    assert not (out / "data").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--minutes", "0"], "--minutes must be from 0 to 10080"),
        (["--data", "missing"], "missing: no such folder"),
    ],
)
def test_demo_usage_errors_exit_2(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--out", str(tmp_path / "out"), *args]) == 2
    assert message in capsys.readouterr().err
