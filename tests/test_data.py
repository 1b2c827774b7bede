from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from colorgan.batch import to_batch
from colorgan.data import ColorImages, EpochSampler, scan_images, split_paths
from colorgan.errors import DataError
from colorgan.files import find_images, load_rgb
from tests.conftest import make_color_image, write_color_folder


def test_find_images_is_recursive_and_case_blind(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    names = [
        "x.PNG",
        "a/y.jpeg",
        "a/b/z.WebP",
        "a/b/w.tif",
        "notes.txt",
        "a/.hidden.png",
        "a/c.gif",
    ]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    found = [p.relative_to(tmp_path).as_posix() for p in find_images(tmp_path)]
    assert found == ["a/b/w.tif", "a/b/z.WebP", "a/c.gif", "a/y.jpeg", "x.PNG"]


def _modes(tmp_path: Path) -> dict[str, Path]:
    base = make_color_image(1, (40, 32))
    paths = {}
    rgba = base.convert("RGBA")
    rgba.putalpha(128)
    palette = base.convert("P", palette=Image.Palette.ADAPTIVE)
    for name, image, suffix in [
        ("rgba", rgba, ".png"),
        ("palette", palette, ".gif"),
        ("cmyk", base.convert("CMYK"), ".tif"),
        (
            "gray16",
            Image.fromarray((np.arange(40 * 32).reshape(32, 40) * 50).astype(np.uint16)),
            ".png",
        ),
    ]:
        paths[name] = tmp_path / f"{name}{suffix}"
        image.save(paths[name])
    return paths


def test_modes_become_8bit_rgb(tmp_path: Path) -> None:
    for name, path in _modes(tmp_path).items():
        image = load_rgb(path)
        assert image.mode == "RGB" and image.size == (40, 32), name
    gray16 = np.asarray(load_rgb(tmp_path / "gray16.png"))
    assert gray16.max() >= 245 and gray16.min() == 0  # scaled from 16 bits, not clipped at 255


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = make_color_image(2, (40, 24))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    image.save(tmp_path / "r.jpg", exif=exif)
    assert load_rgb(tmp_path / "r.jpg").size == (24, 40)


def test_scan_skips_broken_and_gray_files_and_names_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_color_folder(tmp_path, 5)
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "random.jpg").write_bytes(np.random.default_rng(0).bytes(500))
    good = (tmp_path / "img_001.JPG").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(good[: len(good) // 3])
    make_color_image(3).convert("L").convert("RGB").save(tmp_path / "gray.png")
    with caplog.at_level(logging.WARNING, logger="colorgan"):
        scan = scan_images(tmp_path, gray_threshold=4.0, quiet=True)
    assert len(scan.usable) == 5
    assert sorted(p.name for p in scan.unreadable) == ["empty.png", "random.jpg", "truncated.jpg"]
    assert [p.name for p in scan.grayscale] == ["gray.png"]
    for name in ("empty.png", "random.jpg", "truncated.jpg"):
        assert sum(name in r.getMessage() for r in caplog.records) == 1  # named, once


def test_folder_without_usable_images_is_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no image files found"):
        scan_images(tmp_path, 4.0, quiet=True)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"no usable color image among 1 file\(s\) \(1 unreadable"):
        scan_images(tmp_path, 4.0, quiet=True)
    with pytest.raises(DataError, match="missing: no such folder"):
        scan_images(tmp_path / "missing", 4.0, quiet=True)
    with pytest.raises(DataError, match=r"bad\.png: not a folder"):
        scan_images(tmp_path / "bad.png", 4.0, quiet=True)


def test_dataset_crops_and_never_crashes_on_a_file_that_broke(tmp_path: Path) -> None:
    root = write_color_folder(tmp_path, 4, size=(50, 30))
    paths = find_images(root)
    train_set = ColorImages(paths, 16, train=True)
    crop = train_set[(0, 123)]
    assert crop.shape == (3, 16, 16) and crop.dtype == torch.uint8
    assert torch.equal(train_set[(0, 123)], crop)  # the seed fixes the crop and flip
    paths[1].write_bytes(b"broken after the scan")
    assert train_set[(1, 5)].shape == (3, 16, 16)  # falls back to the next image
    val = ColorImages(paths, 16, train=False)
    assert torch.equal(val[(2, 1)], val[(2, 99)])  # center crop ignores the seed


def test_sampler_is_seeded_per_epoch_and_can_skip() -> None:
    sampler = EpochSampler(10, seed=3, shuffle=True)
    sampler.set_epoch(0)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert sorted(i for i, _ in first) == list(range(10))
    assert [i for i, _ in first] != [i for i, _ in second]
    sampler.set_epoch(0, skip=4)
    assert list(sampler) == first[4:] and len(sampler) == 6
    ranks = [list(EpochSampler(10, 3, True, rank=r, world_size=3)) for r in range(3)]
    assert all(len(r) == 4 for r in ranks)


def test_split_is_seeded_and_disjoint() -> None:
    paths = [Path(f"{i}.png") for i in range(20)]
    train, val = split_paths(paths, 0.25, seed=1)
    assert len(val) == 5 and not set(train) & set(val)
    assert split_paths(paths, 0.25, seed=1) == (train, val)
    assert split_paths(paths, 0.25, seed=2) != (train, val)


def test_to_batch_normalises() -> None:
    rgb = torch.tensor([[[[255]], [[255]], [[255]]], [[[0]], [[0]], [[0]]]], dtype=torch.uint8)
    batch = to_batch(rgb, torch.device("cpu"))
    assert batch.l.flatten().tolist() == pytest.approx([1.0, -1.0], abs=1e-3)
    assert batch.ab.abs().max() < 1e-3
