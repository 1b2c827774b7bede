"""`colorgan colorize --reference IMAGE|DIR`: one reference read once and applied to every input,
in every path colorize has (sequential, pipelined, torchrun ranks, ONNX models), part of each
output's key, and one-line usage errors (exit 2) before any image is processed; a folder of
references (a bank): its images, of which each input uses the closest three."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from colorgan import bank
from colorgan.cli import main
from colorgan.colorize import Colorizer
from colorgan.jobs import plan_jobs, run_key
from colorgan.pipeline import Output, colorize_folder
from colorgan.reference import ReferenceImageError
from colorgan.request import NOTHING, Reference, Request
from tests.conftest import (
    make_color_image,
    make_reference_checkpoint,
    make_tiny_checkpoint,
    write_color_folder,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_reference_checkpoint(tmp_path_factory.mktemp("model") / "reference.pt")


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained without model.reference."""
    return make_tiny_checkpoint(tmp_path_factory.mktemp("plain") / "tiny.pt")


@pytest.fixture
def hero(tmp_path: Path) -> Path:
    """A reference image (its colors unlike the inputs' own)."""
    path = tmp_path / "refs" / "hero.png"
    path.parent.mkdir(exist_ok=True)
    make_color_image(101, (64, 56)).save(path)
    return path


@pytest.fixture
def villain(tmp_path: Path) -> Path:
    """Another reference, with other colors."""
    path = tmp_path / "refs" / "villain.png"
    path.parent.mkdir(exist_ok=True)
    make_color_image(202, (50, 70)).convert("P", palette=Image.Palette.ADAPTIVE).save(path)
    return path


def _colorize(
    model: Path, inputs: Path, out: Path, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, str, list[str]]:
    """`colorgan colorize MODEL INPUTS --out OUT` in-process (torch, on the CPU, no decoding
    processes unless `extra` asks): the exit status, stdout and the stderr lines."""
    args = ["colorize", str(model), str(inputs), "--out", str(out), "--device", "cpu",
            "--runtime", "torch", "--workers", "0", *extra]  # fmt: skip
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err.splitlines()


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).astype(int)


def _outputs(out: Path) -> list[Path]:
    return sorted(p.relative_to(out) for p in out.rglob("*.png"))


def test_a_reference_colors_every_image_of_a_folder(
    checkpoint: Path, hero: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = write_color_folder(tmp_path / "pages", 4)
    assert _colorize(checkpoint, inputs, tmp_path / "none", capsys)[0] == 0
    code, _, err = _colorize(checkpoint, inputs, tmp_path / "ref", capsys, "--reference", str(hero))
    assert code == 0, err
    names = _outputs(tmp_path / "ref")
    assert len(names) == 4 and names == _outputs(tmp_path / "none")
    colorizer = Colorizer.from_checkpoint(checkpoint, device="cpu")
    with Image.open(hero) as reference:
        reference.load()
    jobs, _ = plan_jobs([inputs], tmp_path / "ref")
    for job in jobs:
        with_ref = _pixels(job.target)
        without = _pixels(tmp_path / "none" / job.target.relative_to(tmp_path / "ref"))
        assert np.abs(with_ref - without).mean() > 2.0, job.target  # the reference shows
        with Image.open(job.source) as image:  # ... and it is hero's, on every image
            expected = np.asarray(colorizer.colorize(image, reference=reference)).astype(int)
        assert np.abs(with_ref - expected).max() <= 1, job.target


def test_the_same_reference_skips_and_another_or_none_colorizes_again(
    checkpoint: Path,
    hero: Path,
    villain: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    inputs = write_color_folder(tmp_path / "pages", 3)
    out = tmp_path / "out"

    def run(*extra: str) -> tuple[int, int]:
        code, text, err = _colorize(checkpoint, inputs, out, capsys, *extra)
        assert code == 0, err
        found = re.search(r"colorized (\d+) of 3 image\(s\)(?:.*; (\d+) already complete)?", text)
        assert found is not None, text
        return int(found.group(1)), int(found.group(2) or 0)

    assert run("--reference", str(hero)) == (3, 0)
    first = {p: _pixels(out / p) for p in _outputs(out)}
    assert run("--reference", str(hero)) == (0, 3)  # same reference: skipped
    copy = tmp_path / "elsewhere" / "same colors.png"
    copy.parent.mkdir()
    shutil.copy(hero, copy)
    assert run("--reference", str(copy)) == (0, 3)  # the same colors under another name
    assert run("--reference", str(villain)) == (3, 0)  # another reference: all again
    assert all(np.abs(_pixels(out / p) - first[p]).mean() > 0.5 for p in first)  # its colors
    assert run() == (3, 0)  # no reference: all again
    assert run() == (0, 3)
    assert run("--reference", str(hero)) == (3, 0)
    for name, pixels in first.items():  # hero's colors back, as the first time
        assert np.abs(_pixels(out / name) - pixels).max() <= 1, name
    assert run("--reference", str(hero), str(villain)) == (3, 0)  # both: other colors again
    assert run("--reference", str(hero), "--reference", str(villain)) == (0, 3)  # the same two


def test_the_reference_is_part_of_the_key(checkpoint: Path, hero: Path, villain: Path) -> None:
    a, b = Reference((hero,)), Reference((villain,))
    assert a.summary.shape == (1, 257)
    assert a.digest == Reference((hero,)).digest != b.digest
    legacy = json.dumps(["m", None, "png", [], 0.25], sort_keys=True)
    legacy_key = hashlib.sha256(legacy.encode()).hexdigest()[:16]
    assert run_key("m", None, "png", NOTHING, 0.25) == legacy_key  # no reference: the old key
    with_a, with_b = NOTHING.with_reference(a), NOTHING.with_reference(b)
    assert run_key("m", None, "png", with_a, 0.25) != legacy_key
    assert run_key("m", None, "png", with_a, 0.0) != run_key("m", None, "png", with_b, 0.0)


@pytest.mark.parametrize("mode", ["RGBA", "I;16", "L"])
def test_any_mode_of_reference_image_works(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], mode: str
) -> None:
    image = make_color_image(7, (40, 48))
    if mode == "RGBA":
        image = image.convert("RGBA")
        image.putalpha(128)
    elif mode == "I;16":
        gray = np.asarray(image.convert("L"), dtype=np.uint16) * 257
        image = Image.fromarray(gray)
        assert image.mode.startswith("I;16")
    else:
        image = image.convert("L")
    reference = tmp_path / f"ref-{mode.replace(';', '')}.png"
    image.save(reference)
    make_color_image(0).save(tmp_path / "a.png")
    code, _, err = _colorize(
        checkpoint, tmp_path / "a.png", tmp_path / "out", capsys, "--reference", str(reference)
    )
    assert code == 0, err
    assert (tmp_path / "out" / "a.png").is_file()


@pytest.mark.parametrize(
    ("name", "extra", "reason"),
    [
        ("missing.png", [], "no such file"),
        ("notes.png", [], "not an image"),
        ("big.png", ["--max-pixels", "2000"], "over the limit"),
        ("folder", [], "a folder with no image files"),
    ],
)
def test_a_bad_reference_file_is_one_line_and_exit_2(
    checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    extra: list[str],
    reason: str,
) -> None:
    (tmp_path / "notes.png").write_text("not an image")
    make_color_image(3, (80, 60)).save(tmp_path / "big.png")  # 4800 pixels
    (tmp_path / "folder" / "sub").mkdir(parents=True)
    (tmp_path / "folder" / "sub" / "notes.txt").write_text("no image here")
    inputs = write_color_folder(tmp_path / "pages", 2, (40, 40))  # 1600 pixels each
    path = tmp_path / name
    code, _, err = _colorize(
        checkpoint, inputs, tmp_path / "out", capsys, "--reference", str(path), *extra
    )
    assert code == 2
    assert len(err) == 1 and err[0].startswith("colorgan: error:"), err
    assert f"reference {path}: " in err[0] and reason in err[0], err[0]
    assert not (tmp_path / "out").exists() or not _outputs(tmp_path / "out")


def test_a_model_without_model_reference_is_one_line_and_exit_2(
    plain: Path, hero: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = write_color_folder(tmp_path / "pages", 2)
    for reference in (hero, tmp_path / "missing.png"):  # the model is what is said first
        code, _, err = _colorize(
            plain, inputs, tmp_path / "out", capsys, "--reference", str(reference)
        )
        assert code == 2
        assert len(err) == 1 and err[0].startswith("colorgan: error:"), err
        assert f"--reference {reference}" in err[0] and "model.reference=false" in err[0]
        assert not (tmp_path / "out").exists() or not _outputs(tmp_path / "out")
    colorizer = Colorizer.from_checkpoint(plain, device="cpu")
    jobs, _ = plan_jobs([inputs], tmp_path / "api")
    asked = {job.source: Request().with_reference(Reference((hero,))) for job in jobs}
    with pytest.raises(ReferenceImageError, match=r"model\.reference=false"):
        colorize_folder(colorizer, jobs, Output(workers=0), asked)


def test_the_pipeline_gives_the_sequential_images_with_a_reference(
    checkpoint: Path, hero: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = write_color_folder(tmp_path / "pages", 5)
    colorizer = Colorizer.from_checkpoint(checkpoint, device="cpu", batch_size=2)
    jobs, _ = plan_jobs([inputs], tmp_path / "seq")
    asked = {job.source: Request().with_reference(Reference((hero,))) for job in jobs}
    assert not colorize_folder(colorizer, jobs, Output(workers=0), asked).failures
    code, _, err = _colorize(
        checkpoint, inputs, tmp_path / "pipe", capsys, "--reference", str(hero),
        "--workers", "2", "--batch-size", "2",
    )  # fmt: skip
    assert code == 0, err
    assert _outputs(tmp_path / "pipe") == _outputs(tmp_path / "seq")
    for name in _outputs(tmp_path / "seq"):
        difference = np.abs(_pixels(tmp_path / "pipe" / name) - _pixels(tmp_path / "seq" / name))
        assert difference.max() <= 1, name


@pytest.mark.slow
def test_an_onnx_model_takes_the_reference(
    checkpoint: Path, hero: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from colorgan.export import export_onnx

    onnx = tmp_path / "reference.onnx"
    export_onnx(checkpoint, onnx)
    inputs = write_color_folder(tmp_path / "pages", 2)
    for model, out in ((checkpoint, "torch"), (onnx, "onnx")):
        code, _, err = _colorize(model, inputs, tmp_path / out, capsys, "--reference", str(hero))
        assert code == 0, err
    assert _colorize(onnx, inputs, tmp_path / "onnx-none", capsys)[0] == 0
    for name in _outputs(tmp_path / "torch"):
        onnx_pixels = _pixels(tmp_path / "onnx" / name)
        assert np.abs(onnx_pixels - _pixels(tmp_path / "torch" / name)).max() <= 1, name
        assert np.abs(onnx_pixels - _pixels(tmp_path / "onnx-none" / name)).mean() > 2.0, name


@pytest.mark.slow
def test_every_torchrun_rank_uses_the_reference(
    checkpoint: Path, hero: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = write_color_folder(tmp_path / "pages", 4)
    code, _, err = _colorize(checkpoint, inputs, tmp_path / "one", capsys, "--reference", str(hero))
    assert code == 0, err
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
            "2", "-m", "colorgan", "colorize", str(checkpoint), str(inputs), "--out",
            str(tmp_path / "ranks"), "--device", "cpu", "--workers", "0", "--runtime", "torch",
            "--reference", str(hero)]  # fmt: skip
    result = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r"\(ranks: [1-9]\d* \+ [1-9]\d*\)", result.stdout), result.stdout
    assert _outputs(tmp_path / "ranks") == _outputs(tmp_path / "one")
    for name in _outputs(tmp_path / "one"):
        difference = np.abs(_pixels(tmp_path / "ranks" / name) - _pixels(tmp_path / "one" / name))
        assert difference.max() <= 1, name


# ---------------------------------------------------------------- a folder of references


def test_a_folder_is_the_images_under_it(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    refs = tmp_path / "refs"
    (refs / "b").mkdir(parents=True)
    make_color_image(101, (64, 56)).save(refs / "b" / "hero.png")
    make_color_image(202, (50, 70)).save(refs / "villain.JPG", quality=95)
    (refs / "notes.txt").write_text("not a reference")
    (refs / ".hidden.png").write_bytes(b"not even an image")
    reference = Reference((refs,))
    assert reference.expanded == (refs / "b" / "hero.png", refs / "villain.JPG")  # sorted
    inputs = write_color_folder(tmp_path / "pages", 3)
    out = tmp_path / "out"
    code, text, err = _colorize(checkpoint, inputs, out, capsys, "--reference", str(refs))
    assert code == 0, err
    assert "colorized 3 of 3" in text
    files = [str(refs / "b" / "hero.png"), str(refs / "villain.JPG")]
    # the same two images given one by one: the same outputs, so the run skips them all
    code, text, err = _colorize(checkpoint, inputs, out, capsys, "--reference", *files)
    assert code == 0 and "3 already complete" in text, (text, err)
    colorizer = Colorizer.from_checkpoint(checkpoint, device="cpu")
    image = make_color_image(5, (40, 32))
    by_folder = colorizer.colorize(image, reference=str(refs))  # the API takes a folder too
    by_files = colorizer.colorize(image, reference=[Path(f) for f in files])
    assert np.array_equal(np.asarray(by_folder), np.asarray(by_files))
    alone = colorizer.colorize(image, reference=Path(files[0]))
    assert not np.array_equal(np.asarray(by_folder), np.asarray(alone))


def test_a_bank_gives_each_image_its_three_closest_references(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    refs = tmp_path / "bank"
    refs.mkdir()
    for seed in range(5):
        make_color_image(300 + seed, (48, 48)).save(refs / f"ref_{seed}.png")
    inputs = write_color_folder(tmp_path / "pages", 2)
    code, _, err = _colorize(checkpoint, inputs, tmp_path / "out", capsys, "--reference", str(refs))
    assert code == 0, err
    colorizer = Colorizer.from_checkpoint(checkpoint, device="cpu")
    paths = sorted(refs.iterdir())
    descriptors = torch.stack([bank.describe(_rgb(path)) for path in paths])
    jobs, _ = plan_jobs([inputs], tmp_path / "out")
    for job in jobs:
        closest = bank.closest(bank.describe(_rgb(job.source)), descriptors)
        assert len(closest) == bank.BANK_TOP
        with Image.open(job.source) as image:
            expected = colorizer.colorize(image, reference=[paths[i] for i in closest])
            left_out = [path for i, path in enumerate(paths) if i not in closest]
            others = colorizer.colorize(image, reference=left_out)
        got = _pixels(job.target)
        assert np.abs(got - np.asarray(expected).astype(int)).max() <= 1
        assert np.abs(got - np.asarray(others).astype(int)).mean() > 0.5  # not the others'


def _rgb(path: Path) -> torch.Tensor:
    with Image.open(path) as image:
        return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)
