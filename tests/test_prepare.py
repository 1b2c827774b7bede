"""`colorgan prepare`: tree and sizes, same crops as the loader, EXIF, bad files, re-runs,
refusals."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from colorgan.cli import main
from colorgan.data import ColorImages
from colorgan.files import find_images
from colorgan.prepare import MANIFEST, Settings, prepare
from tests.conftest import make_color_image, write_color_folder


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, list[str]]:
    """Run `colorgan ARGS` in-process: exit status, stdout, stderr lines."""
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err.splitlines()


def test_tree_names_and_sizes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = write_color_folder(tmp_path / "src", 6, size=(60, 40))  # PNG and JPG, a sub-folder
    make_color_image(9, (20, 30)).save(src / "sub" / "small.png")  # short side below --size
    code, out, err = run_cli(["prepare", str(src), str(tmp_path / "dst"), "--size", "24"], capsys)
    assert code == 0 and err == []
    made = {
        p.relative_to(tmp_path / "dst"): Image.open(p).size for p in find_images(tmp_path / "dst")
    }
    names = {p.relative_to(src) for p in find_images(src)}
    assert set(made) == names  # same folders, names and formats (keep)
    assert made[Path("sub/small.png")] == (20, 30)  # never upscaled
    assert (src / "sub" / "small.png").read_bytes() == (tmp_path / "dst/sub/small.png").read_bytes()
    assert all(size == (36, 24) for name, size in made.items() if name.name != "small.png")
    assert "7 of 7 image(s)" in out and "6 resized" in out and "1 kept" in out


def test_formats_and_clashing_names(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    make_color_image(1, (64, 48)).save(src / "a.png")
    make_color_image(2, (64, 48)).save(src / "a.jpg")
    make_color_image(3, (64, 48)).save(src / "b.gif")
    summary = prepare(src, tmp_path / "jpg", Settings(32, "jpg", 90), workers=1, progress=False)
    assert summary.resized == 3
    assert sorted(p.name for p in find_images(tmp_path / "jpg")) == [
        "a_jpg.jpg",
        "a_png.jpg",
        "b.jpg",
    ]
    assert Image.open(tmp_path / "jpg" / "b.jpg").format == "JPEG"
    prepare(src, tmp_path / "keep", Settings(32), workers=1, progress=False)
    assert sorted(p.name for p in find_images(tmp_path / "keep")) == ["a.jpg", "a.png", "b.png"]


def test_prepared_png_gives_the_loaders_crops(tmp_path: Path) -> None:
    src = write_color_folder(tmp_path / "src", 4, size=(80, 56))
    prepare(src, tmp_path / "dst", Settings(32, "png"), workers=2, progress=False)  # a pool
    original = ColorImages(find_images(src), 32, train=True)
    prepared_paths = find_images(tmp_path / "dst")
    assert [p.stem for p in prepared_paths] == [p.stem for p in original.paths]
    prepared = ColorImages(prepared_paths, 32, train=True)
    for index in range(4):
        assert torch.equal(original.load(index, seed=index), prepared.load(index, seed=index))


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    make_color_image(4, (80, 48)).save(src / "r.jpg", exif=exif)
    prepare(src, tmp_path / "dst", Settings(24), workers=1, progress=False)
    out = Image.open(tmp_path / "dst" / "r.jpg")
    assert out.size == (24, 40)  # upright: portrait, short side 24
    assert out.getexif().get(0x0112) in (None, 1)


def test_broken_files_are_named_and_counted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write_color_folder(tmp_path / "src", 3, size=(48, 40))
    (src / "empty.png").write_bytes(b"")
    (src / "sub" / "noise.jpg").write_bytes(np.random.default_rng(0).bytes(400))
    dst = tmp_path / "dst"
    code, out, err = run_cli(["prepare", str(src), str(dst), "--size", "16", "--quiet"], capsys)
    assert code == 1 and out == ""
    assert len(err) == 2
    assert any("empty.png" in line for line in err) and any("noise.jpg" in line for line in err)
    assert len(find_images(dst)) == 3
    code, out, _ = run_cli(["prepare", str(src), str(dst), "--size", "16"], capsys)
    assert code == 1 and "3 of 5 image(s)" in out and "2 failed" in out


def test_rerun_skips_current_outputs_and_redoes_changed_ones(tmp_path: Path) -> None:
    src = write_color_folder(tmp_path / "src", 4, size=(48, 40))
    dst = tmp_path / "dst"
    assert prepare(src, dst, Settings(20), workers=1, progress=False).resized == 4
    again = prepare(src, dst, Settings(20), workers=1, progress=False)
    assert (again.up_to_date, again.resized) == (4, 0)
    touched = src / "img_001.JPG"
    os.utime(touched, (touched.stat().st_atime, touched.stat().st_mtime + 10))
    again = prepare(src, dst, Settings(20), workers=1, progress=False)
    assert (again.up_to_date, again.resized) == (3, 1)
    other = prepare(src, dst, Settings(16), workers=1, progress=False)  # new size: all redone
    assert other.resized == 4 and Image.open(dst / "img_001.JPG").size == (19, 16)
    assert '"size": 16' in (dst / MANIFEST).read_text()


@pytest.mark.parametrize("where", ["same", "inside", "around"])
def test_overlapping_folders_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    src = write_color_folder(tmp_path / "data" / "src", 2)
    dst = {"same": src, "inside": src / "small", "around": tmp_path / "data"}[where]
    code, _, err = run_cli(["prepare", str(src), str(dst), "--size", "16"], capsys)
    assert code == 2 and len(err) == 1 and "outside SRC" in err[0]
    assert not (src / "small").exists() and not (dst / MANIFEST).exists()


def test_bad_arguments_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write_color_folder(tmp_path / "src", 2)
    for args in (
        ["--size", "0"],
        ["--size", "8", "--quality", "0"],
        ["--size", "8", "--workers", "0"],
    ):
        code, _, err = run_cli(["prepare", str(src), str(tmp_path / "dst"), *args], capsys)
        assert code == 2 and len(err) == 1, args
    code, _, err = run_cli(
        ["prepare", str(tmp_path / "none"), str(tmp_path / "d"), "--size", "8"], capsys
    )
    assert code == 2 and "none: no such folder" in err[0]
    (tmp_path / "file").write_text("not a folder")
    code, _, err = run_cli(["prepare", str(src), str(tmp_path / "file"), "--size", "8"], capsys)
    assert code == 2 and len(err) == 1 and "cannot write to" in err[0]


def test_files_prepare_did_not_write_are_never_replaced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """DST already holds a user's own a.png (older or newer than the source): it is left byte
    for byte, named on stderr and counted as failed; prepare's own outputs are still replaced
    by a run with other settings."""
    src = tmp_path / "src"
    src.mkdir()
    for i, name in enumerate(("a.png", "b.png", "c.png")):
        make_color_image(i, (64, 48)).save(src / name)
    dst = tmp_path / "dst"
    dst.mkdir()
    make_color_image(7, (40, 30)).save(dst / "a.png")
    theirs = (dst / "a.png").read_bytes()
    os.utime(dst / "a.png", (1, 1))  # older than its source
    code, out, err = run_cli(["prepare", str(src), str(dst), "--size", "24"], capsys)
    assert code == 1 and (dst / "a.png").read_bytes() == theirs
    assert len(err) == 1 and "a.png exists and colorgan did not write it" in err[0]
    assert "2 of 3 image(s)" in out and "2 resized" in out and "1 failed" in out
    code, out, err = run_cli(["prepare", str(src), str(dst), "--size", "16"], capsys)
    assert code == 1 and (dst / "a.png").read_bytes() == theirs
    assert Image.open(dst / "b.png").size == (21, 16)  # its own output, replaced
