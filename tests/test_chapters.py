"""Chapters (.cbz/.zip) through `colorgan colorize`, pages already in color, and tall strips
colored in tiles at the model's scale (chapters.py, tiles.py)."""

from __future__ import annotations

import io
import itertools
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from colorgan.batch import Prediction
from colorgan.cli import main
from colorgan.colorize import Colorizer
from colorgan.files import to_picture
from colorgan.request import NOTHING
from colorgan.tiles import MAX_ASPECT, predict_tiled, tile_starts, tile_weights
from tests.conftest import make_color_image, make_reference_checkpoint, make_tiny_checkpoint

COMIC_INFO = b'<?xml version="1.0"?>\n<ComicInfo><Title>Test</Title></ComicInfo>\n'
# the archive's own order (not sorted): the output keeps it
GRAY_PAGES = {"p02.png": "PNG", "p01.jpg": "JPEG", "p10.png": "PNG"}
COLOR_PAGE = "p03.png"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt")


def encoded(image: Image.Image, kind: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=kind)
    return buffer.getvalue()


def gray_page(seed: int) -> Image.Image:
    return ImageOps.grayscale(make_color_image(seed, (40, 56))).convert("RGB")


def write_chapter(path: Path, broken: bool = False) -> Path:
    """A small chapter: ComicInfo.xml, three gray pages (png, jpg), one color page, a macOS
    resource fork, and with `broken` a page whose bytes are no image."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("ComicInfo.xml", COMIC_INFO)
        for i, (name, kind) in enumerate(GRAY_PAGES.items()):
            archive.writestr(name, encoded(gray_page(i), kind))
        archive.writestr(COLOR_PAGE, encoded(make_color_image(7, (40, 56)), "PNG"))
        archive.writestr("__MACOSX/._p01.jpg", b"\x00\x05\x16\x07 a resource fork")
        if broken:
            archive.writestr("p04.png", b"\x89PNG\r\n\x1a\n not a picture")
    return path


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def chroma(data: bytes) -> float:
    """Mean YCbCr chroma of an encoded picture."""
    ycc = np.asarray(Image.open(io.BytesIO(data)).convert("YCbCr"), dtype=np.float32)
    return float(np.hypot(ycc[..., 1] - 128.0, ycc[..., 2] - 128.0).mean())


def colorize(checkpoint: Path, *args: str) -> int:
    return main(["colorize", str(checkpoint), *args, "--device", "cpu", "--workers", "0"])


def test_chapter_keeps_order_names_members_and_color_pages(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write_chapter(tmp_path / "ch1.zip")
    assert colorize(checkpoint, str(src), "--out", str(tmp_path / "out")) == 0
    before, after = members(src), members(tmp_path / "out" / "ch1.cbz")
    assert list(after) == list(before)  # the same members, in the same order
    assert after["ComicInfo.xml"] == COMIC_INFO
    assert after["__MACOSX/._p01.jpg"] == before["__MACOSX/._p01.jpg"]  # no page: no failure
    assert after[COLOR_PAGE] == before[COLOR_PAGE]  # left byte for byte
    for name, kind in GRAY_PAGES.items():
        page = Image.open(io.BytesIO(after[name]))
        assert page.format == kind and page.size == (40, 56)
        assert chroma(after[name]) > 3 * chroma(before[name]) + 2  # colored
    out = capsys.readouterr().out
    assert "3 page(s) colored, 1 page(s) already in color, left as they are; --recolor" in out


def test_recolor_colors_the_color_pages_too(checkpoint: Path, tmp_path: Path) -> None:
    src = write_chapter(tmp_path / "ch1.cbz")
    assert colorize(checkpoint, str(src), "--out", str(tmp_path / "out"), "--recolor") == 0
    after = members(tmp_path / "out" / "ch1.cbz")
    assert after[COLOR_PAGE] != members(src)[COLOR_PAGE]
    assert Image.open(io.BytesIO(after[COLOR_PAGE])).size == (40, 56)


def test_a_page_that_cannot_be_decoded_is_named_and_copied(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write_chapter(tmp_path / "ch1.cbz", broken=True)
    assert colorize(checkpoint, str(src), "--out", str(tmp_path / "out"), "--quiet") == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "ch1.cbz: page p04.png" in err[0] and "copied as it is" in err[0]
    before, after = members(src), members(tmp_path / "out" / "ch1.cbz")
    assert list(after) == list(before) and after["p04.png"] == before["p04.png"]
    assert all(after[name] != before[name] for name in GRAY_PAGES)  # the others colored
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]


def test_a_written_chapter_is_skipped_unless_overwrite(checkpoint: Path, tmp_path: Path) -> None:
    src, out = write_chapter(tmp_path / "ch1.cbz"), tmp_path / "out"
    out.mkdir()
    (out / "ch1.cbz").write_bytes(b"earlier")
    assert colorize(checkpoint, str(src), "--out", str(out), "--quiet") == 0
    assert (out / "ch1.cbz").read_bytes() == b"earlier"
    assert colorize(checkpoint, str(src), "--out", str(out), "--quiet", "--overwrite") == 0
    assert list(members(out / "ch1.cbz")) == list(members(src))


def test_a_color_cover_as_the_reference_of_a_whole_chapter(tmp_path: Path) -> None:
    model = make_reference_checkpoint(tmp_path / "reference.pt")
    src, cover = write_chapter(tmp_path / "ch1.cbz"), tmp_path / "cover.png"
    make_color_image(11, (40, 56)).save(cover)
    plain, given = tmp_path / "plain", tmp_path / "given"
    assert colorize(model, str(src), "--out", str(plain), "--quiet") == 0
    assert colorize(model, str(src), "--out", str(given), "--quiet", "--reference", str(cover)) == 0
    without, with_cover = members(plain / "ch1.cbz"), members(given / "ch1.cbz")
    assert all(with_cover[name] != without[name] for name in GRAY_PAGES)  # the cover counts


# ---- tall strips ------------------------------------------------------------------------------


def strip(height: int, width: int) -> Image.Image:
    """A gray strip with shapes all along it."""
    tall = Image.new("RGB", (width, height))
    for top in range(0, height, 40):
        tall.paste(make_color_image(top, (width, 40)), (0, top))
    return ImageOps.grayscale(tall)


@pytest.mark.parametrize(
    ("length", "tile", "overlap"), [(536, 128, 32), (129, 128, 32), (4000, 512, 128)]
)
def test_tiles_cover_the_side_with_the_overlap(length: int, tile: int, overlap: int) -> None:
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] + tile == length
    assert all(b - a <= tile - overlap for a, b in itertools.pairwise(starts))
    total = torch.zeros(length)
    for start, weight in zip(starts, tile_weights(starts, tile), strict=True):
        total[start : start + tile] += weight
    assert total.min() > 0.5  # every row has weight; the ramps of two neighbours sum to ~1


def test_tiles_fade_into_each_other_over_the_overlap() -> None:
    """A model whose colors differ by tile (each tile one flat color: the worst seam) gives a
    linear ramp across each overlap, never a step."""
    seen: list[torch.Tensor] = []

    def flat(l: torch.Tensor, requests: object, given: object) -> list[Prediction]:
        found = []
        for tile in l.split(1):
            seen.append(tile)
            found.append(Prediction(torch.full((1, 2, *tile.shape[-2:]), len(seen) / 10.0)))
        return found

    l_small = torch.zeros(1, 1, 32, 600)  # wide works as tall does
    [blended] = predict_tiled(flat, l_small, [NOTHING], [{}], lambda shape: 2)
    assert blended.ab.shape == (1, 2, 32, 600) and len(seen) == len(tile_starts(600, 128, 32))
    assert all(t.shape == (1, 1, 32, 128) for t in seen)
    row = blended.ab[0, 0, 0]
    step = (row[1:] - row[:-1]).abs().max()
    assert step <= 0.1 / 32 * 1.1  # the 0.1 between two tiles spread over >= 32 columns
    assert row[0] == pytest.approx(0.1) and row[-1] == pytest.approx(len(seen) / 10.0)


def test_a_tall_strip_is_colored_at_the_model_scale_without_seams(checkpoint: Path) -> None:
    colorizer = Colorizer.from_checkpoint(checkpoint, device="cpu")
    image = strip(1200, 40)  # 30 short sides: squashed, it would be 4 short sides
    assert colorizer.colorize(image).size == image.size
    [(_, prediction)] = colorizer.predict_pictures([to_picture(image)])
    ab = prediction.ab[0]  # (2, h, w) at the working size
    h, w = ab.shape[1:]
    assert (h, w) == (960, 32)  # the model's own scale: 32 px across, 7.5 tiles long
    jump = (ab[:, 1:] - ab[:, :-1]).abs().mean(dim=(0, 2))  # between rows r and r + 1
    tile = MAX_ASPECT * w
    starts = tile_starts(h, tile, w)
    edges = {s - 1 for s in starts[1:]} | {s + tile - 1 for s in starts[:-1]}
    inside = torch.tensor([r not in edges for r in range(h - 1)])
    assert jump[sorted(edges)].max() <= 2 * torch.quantile(jump[inside], 0.99) + 1e-3


def test_a_tall_file_through_the_folder_pipeline_keeps_its_size(
    checkpoint: Path, tmp_path: Path
) -> None:
    strip(600, 24).save(tmp_path / "strip.png")
    assert colorize(checkpoint, str(tmp_path / "strip.png"), "--out", str(tmp_path / "o")) == 0
    assert Image.open(tmp_path / "o" / "strip.png").size == (24, 600)
