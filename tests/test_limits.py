"""What colorize, evaluate and training refuse or skip, with one line each: sizes that cannot
fit in memory, files colorize did not write, folders that cannot be read."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import colorgan.colorize as colorize_module
import colorgan.device as device_module
import colorgan.pipeline as pipeline_module
from colorgan.cli import main
from colorgan.colorize import Colorizer
from colorgan.errors import DoesNotFit
from colorgan.files import find_images, written_by_colorgan
from tests.conftest import make_color_image, make_tiny_checkpoint, write_color_folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt")


def _inputs(root: Path) -> Path:
    root.mkdir(parents=True)
    for i in range(3):
        make_color_image(i).save(root / f"img{i}.png")
    return root


# -- sizes that cannot fit -------------------------------------------------------------------


def test_colorize_size_too_large_is_refused_before_allocating(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code = main(["colorize", str(checkpoint), str(_inputs(tmp_path / "in")), "--out", str(out),
                 "--size", "100000", "--device", "cpu"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "100000x100000" in err and "free" in err
    assert "TB" in err or "GB" in err  # the estimate is in the message
    assert not out.exists() or not any(out.iterdir())


def test_one_image_too_large_does_not_lose_the_rest_of_the_batch(
    checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    inputs = _inputs(tmp_path / "in")
    make_color_image(9, (400, 40)).save(inputs / "wide.png")  # tiles of 32x128; the rest 40x32
    colorizer = Colorizer.from_checkpoint(checkpoint, device="cpu")
    room = int(1600 * colorizer.bytes_per_pixel)  # room for 1,600 working pixels, not 2,048
    monkeypatch.setattr(device_module, "free_memory", lambda device: room)
    monkeypatch.setattr(colorize_module, "free_memory", lambda device: room)
    monkeypatch.setattr(pipeline_module, "free_memory", lambda device: room)
    code = main(["colorize", str(checkpoint), str(inputs), "--out", str(tmp_path / "out"),
                 "--device", "cpu", "--batch-size", "4"])  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err
    assert "wide.png" in err and "32x320" in err and "smaller --size" in err
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["img0.png", "img1.png", "img2.png"]


def test_a_batch_that_would_not_fit_runs_in_smaller_chunks(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    colorizer = Colorizer.from_checkpoint(checkpoint, device="cpu", batch_size=8)
    room = int(2.5 * 40 * 32 * colorizer.bytes_per_pixel)  # two 40x32 images at once
    monkeypatch.setattr(colorize_module, "free_memory", lambda device: room)
    sizes: list[int] = []
    predict = colorizer.predict
    colorizer.predict = lambda batch: (sizes.append(batch.l.shape[0]), predict(batch))[1]
    images = [make_color_image(i) for i in range(5)]
    assert len(colorizer.colorize_batch(images)) == 5
    assert sizes == [2, 2, 1]


def test_the_api_refuses_a_working_size_that_cannot_fit(checkpoint: Path) -> None:
    colorizer = Colorizer.from_checkpoint(checkpoint, device="cpu")
    with pytest.raises(DoesNotFit, match="smaller --size"):
        colorizer.colorize(make_color_image(0), size=200_000)


@pytest.mark.parametrize(("size", "message"), [("99968", "free"), ("0", "positive multiple")])
def test_evaluate_sizes_that_cannot_work_are_one_line(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], size: str, message: str
) -> None:
    data = write_color_folder(tmp_path / "data", 4)
    code = main(["evaluate", str(checkpoint), "--data", str(data), "--size", size,
                 "--device", "cpu", "--quiet"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err and size in err


# -- colorize never overwrites a file it did not write ----------------------------------------


@pytest.mark.parametrize("fmt", ["png", "jpg", "webp"])
def test_colorize_skips_a_file_it_did_not_write(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    inputs = _inputs(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    theirs = out / f"img1.{fmt}"
    theirs.write_bytes(b"someone else's file")
    args = ["colorize", str(checkpoint), str(inputs), "--out", str(out), "--format", fmt]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"img1.{fmt} exists and colorgan did not write it" in err and "--overwrite" in err
    assert theirs.read_bytes() == b"someone else's file"
    assert written_by_colorgan(out / f"img0.{fmt}") and written_by_colorgan(out / f"img2.{fmt}")
    # a re-run replaces colorize's own outputs, still not the other file
    assert main(args) == 1 and theirs.read_bytes() == b"someone else's file"
    # unless told to
    assert main([*args, "--overwrite"]) == 0
    assert written_by_colorgan(theirs)


def test_side_by_side_outputs_are_checked_too(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = _inputs(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    Image.new("RGB", (4, 4)).save(out / "img2_side_by_side.png")
    args = ["colorize", str(checkpoint), str(inputs), "--out", str(out), "--side-by-side"]
    assert main(args) == 1
    assert "img2_side_by_side.png exists" in capsys.readouterr().err
    assert not (out / "img2.png").exists() and (out / "img0_side_by_side.png").is_file()


# -- folders that cannot be read are named ----------------------------------------------------


def _unreadable(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Make listing `folder` fail as a folder without read permission does (root, which runs
    CI, ignores permission bits, so chmod cannot show it)."""
    real = os.scandir

    def scandir(path: Any = ".") -> Any:
        if Path(os.fsdecode(path)) == folder:
            raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


def test_an_unreadable_sub_folder_of_the_training_data_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    root = write_color_folder(tmp_path / "data", 9)  # img_000, img_003, img_006 are in sub/
    _unreadable(monkeypatch, root / "sub")
    found = find_images(root)
    assert len(found) == 6
    assert f"skipping unreadable folder {root / 'sub'}: Permission denied" in caplog.text


def test_an_unreadable_sub_folder_to_colorize_is_a_named_failure(
    checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = write_color_folder(tmp_path / "data", 6)
    _unreadable(monkeypatch, root / "sub")
    assert main(["colorize", str(checkpoint), str(root), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert f"{root / 'sub'}: cannot list folder (Permission denied)" in err
    assert len(list((tmp_path / "out").glob("*.png"))) == 4
