"""`colorgan evaluate` end to end on generated images with a tiny checkpoint."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from colorgan import checkpoint
from colorgan.cli import main
from colorgan.evaluate import RESULT_KEYS, colorize_crops
from colorgan.metrics import METRIC_KEYS, PSNR_MAX
from tests.conftest import make_tiny_checkpoint


@pytest.fixture
def tiny_checkpoint(tmp_path: Path) -> Path:
    """An untrained 32 px generator saved as a colorgan checkpoint."""
    return make_tiny_checkpoint(tmp_path / "tiny.pt", ab_bias=None)


def run_evaluate(*args: str) -> int:
    return main(["evaluate", *args, "--quiet"])


def test_evaluate_writes_every_key_and_the_gray_baseline(
    tiny_checkpoint: Path, color_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results" / "eval.json"
    assert run_evaluate(str(tiny_checkpoint), "--data", str(color_folder), "--json", str(out)) == 0
    result = json.loads(out.read_text())
    assert tuple(result) == RESULT_KEYS
    assert result["n_images"] == 20
    assert tuple(result["baseline_gray"]) == METRIC_KEYS
    gray = result["baseline_gray"]
    assert gray["colorfulness"] < 1.0 < result["colorfulness_reference"]
    assert gray["delta_e"] > 0.0 and gray["psnr"] < PSNR_MAX
    printed = capsys.readouterr().out
    assert "delta_e" in printed and "gray" in printed and str(out) in printed


def test_evaluate_limit_size_and_skipped_files(
    tiny_checkpoint: Path, color_folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
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


def test_colorize_crops_gives_8_bit_images_and_a_gray_baseline(tiny_checkpoint: Path) -> None:
    generator, _ = checkpoint.load_generator(tiny_checkpoint)
    rgb = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    gray, fake = colorize_crops(generator, rgb, torch.device("cpu"))
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
    tiny_checkpoint: Path, color_folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "eval.json"
    args = ["--data", str(color_folder), "--json", str(out), "--limit", "2", "--fid"]
    assert run_evaluate(str(tiny_checkpoint), *args) == 0
    lines = [r.getMessage() for r in caplog.records if "FID" in r.getMessage()]
    assert len(lines) == 1 and "pip install torch-fidelity" in lines[0]
    assert "\n" not in lines[0]
    result = json.loads(out.read_text())
    assert "fid" not in result and "fid" not in result["baseline_gray"]
