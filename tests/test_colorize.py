"""Colorizer API and `colorgan colorize`: sizes, modes, luminance, files, folders, bad inputs."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

import colorgan
from colorgan.batch import Batch
from colorgan.cli import main
from colorgan.color import lab_in_gamut, rgb_to_l_ab
from colorgan.colorize import Colorizer, working_shape
from colorgan.jobs import name_outputs
from colorgan.tones import page_lightness
from tests.conftest import make_color_image, make_tiny_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny untrained checkpoint (32 px, depth 3) whose output is visibly colored."""
    return make_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt")


@pytest.fixture(scope="module")
def colorizer(checkpoint: Path) -> Colorizer:
    return Colorizer.from_checkpoint(checkpoint, device="cpu", batch_size=4)


def lab_l(image: Image.Image) -> np.ndarray:
    """Lab L in [0, 100] of an image's RGB (alpha ignored), (H, W)."""
    rgb = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)[None] / 255.0
    return ((rgb_to_l_ab(rgb)[0][0, 0] + 1.0) * 50.0).numpy()


def chroma(image: Image.Image) -> float:
    """Mean Lab chroma of an image."""
    rgb = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)[None] / 255.0
    return float(rgb_to_l_ab(rgb)[1].norm(dim=1).mean() * 110.0)


def with_checkerboard(image: Image.Image) -> Image.Image:
    """`image` with a 1-pixel checkerboard of lighter and darker pixels: detail no 32 px
    working image can carry."""
    array = np.array(image, dtype=np.int16)
    yy, xx = np.indices(array.shape[:2])
    array += np.where((yy + xx) % 2 == 0, 25, -25)[..., None].astype(np.int16)
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    """Run `colorgan ARGS` in-process; returns the exit status and the stderr lines."""
    code = main(args)
    return code, capsys.readouterr().err.splitlines()


# ---- the Python API ---------------------------------------------------------------------------


def test_from_checkpoint_rebuilds_the_model(colorizer: Colorizer) -> None:
    assert issubclass(colorgan.Colorizer, Colorizer)  # the public one adds colorize_video
    public = colorgan.Colorizer.from_checkpoint(colorizer.source, "cpu")
    assert isinstance(public, colorgan.Colorizer)
    assert colorizer.image_size == 32  # data.image_size from the checkpoint's config
    assert colorizer.multiple == 8  # 2**model.depth
    assert colorizer.device == torch.device("cpu")


@pytest.mark.parametrize(
    ("height", "width", "size", "multiple", "expected"),
    [
        (40, 48, 32, 8, (32, 40)),  # short side -> size, aspect kept, multiples of 8
        (1, 1, 32, 8, (32, 32)),  # tiny images are scaled up to the working size
        (2000, 1500, 256, 32, (352, 256)),
        (10, 1000, 32, 8, (32, 3200)),  # a strip: at the model's scale too (tiles.py)
    ],
)
def test_working_shape(
    height: int, width: int, size: int, multiple: int, expected: tuple[int, int]
) -> None:
    assert working_shape(height, width, size, multiple) == expected


@pytest.mark.parametrize("size", [(32, 32), (64, 48), (33, 17), (17, 61), (1, 1)])
def test_output_has_the_input_size(colorizer: Colorizer, size: tuple[int, int]) -> None:
    out = colorizer.colorize(make_color_image(3, (64, 64)).resize(size))
    assert out.size == size
    assert out.mode == "RGB"


def test_full_resolution_lightness_and_detail_are_kept(colorizer: Colorizer) -> None:
    image = with_checkerboard(make_color_image(5, (96, 72)))
    out = colorizer.colorize(image)
    delta = np.abs(lab_l(out) - lab_l(image))
    assert delta.mean() < 0.3  # 8-bit rounding only
    assert delta.max() < 1.0  # even the 1-pixel checkerboard, far finer than the 32 px model
    assert chroma(out) > 10.0  # and it is colored (the model's ab), not the gray input


def test_out_of_gamut_colors_keep_their_lightness() -> None:
    l = torch.linspace(-1.0, 1.0, 101).reshape(1, 1, 1, 101)  # L from 0 to 100
    ab = torch.tensor([0.6, -0.8]).reshape(1, 2, 1, 1).expand(1, 2, 1, 101)  # far outside sRGB
    rgb = lab_in_gamut(l, ab)
    assert rgb.min() >= 0.0 and rgb.max() <= 1.0
    lightness = (rgb_to_l_ab(rgb)[0] + 1.0) * 50.0
    assert torch.allclose(lightness, (l + 1.0) * 50.0, atol=0.05)
    assert rgb_to_l_ab(rgb)[1][..., 50].norm() > 0.3  # mid-gray keeps much of its color


def recording_colorizer(calls: list[tuple[int, ...]], batch_size: int = 8) -> Colorizer:
    """A Colorizer whose model records each l batch's shape and answers ab = l / 2."""

    def predict(batch: Batch) -> torch.Tensor:
        l = batch.l  # (B, 1, h, w) in [-1, 1]
        assert float(l.min()) >= -1.0 and float(l.max()) <= 1.0
        calls.append(tuple(l.shape))
        return (l / 2).expand(-1, 2, -1, -1)

    cpu = torch.device("cpu")
    return Colorizer(predict, image_size=32, multiple=8, device=cpu, batch_size=batch_size)


def test_size_sets_the_working_size() -> None:
    calls: list[tuple[int, ...]] = []
    colorizer = recording_colorizer(calls)
    image = make_color_image(1, (100, 50))
    assert colorizer.colorize(image).size == (100, 50)
    assert colorizer.colorize(image, size=64).size == (100, 50)
    assert calls == [(1, 1, 32, 64), (1, 1, 64, 128)]


def test_batches_group_equal_working_shapes() -> None:
    calls: list[tuple[int, ...]] = []
    colorizer = recording_colorizer(calls, batch_size=2)
    sizes = [(64, 48), (40, 40), (64, 48), (64, 48), (80, 80)]
    images = [make_color_image(i, size) for i, size in enumerate(sizes)]
    together = colorizer.colorize_batch(images)
    # 64x48 works at 32x40 (three images: a batch of two, then one); 40x40 and 80x80 at 32x32
    assert calls == [(2, 1, 32, 40), (1, 1, 32, 40), (2, 1, 32, 32)]
    for image, out in zip(images, together, strict=True):  # each result is its own image's
        assert np.array_equal(np.asarray(out), np.asarray(colorizer.colorize(image)))


def test_batch_matches_one_at_a_time(colorizer: Colorizer) -> None:
    images = [make_color_image(i, size) for i, size in enumerate([(48, 40), (48, 40), (30, 50)])]
    together = colorizer.colorize_batch(images)
    for image, out in zip(images, together, strict=True):
        alone = np.asarray(colorizer.colorize(image), dtype=np.int16)
        assert np.abs(np.asarray(out, dtype=np.int16) - alone).max() <= 1


def _alpha_ramp(size: tuple[int, int]) -> Image.Image:
    return Image.fromarray(np.tile(np.linspace(0, 255, size[0]).astype(np.uint8), (size[1], 1)))


MODES: dict[str, Callable[[Image.Image], Image.Image]] = {
    "L": lambda rgb: rgb.convert("L"),
    "LA": lambda rgb: Image.merge("LA", (rgb.convert("L"), _alpha_ramp(rgb.size))),
    "RGB": lambda rgb: rgb,
    "RGBA": lambda rgb: Image.merge("RGBA", (*rgb.split(), _alpha_ramp(rgb.size))),
    "P": lambda rgb: rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16),
    "CMYK": lambda rgb: rgb.convert("CMYK"),
    "1": lambda rgb: rgb.convert("1"),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_every_input_mode(colorizer: Colorizer, mode: str) -> None:
    image = MODES[mode](make_color_image(7, (50, 38)))
    out = colorizer.colorize(image)
    has_alpha = mode in ("LA", "RGBA")
    assert out.mode == ("RGBA" if has_alpha else "RGB")
    assert out.size == image.size
    # colorized from its own L; a 1-bit picture is a two-level page: its dithering smoothed
    # into the gray it stands for (tones.page_lightness), which can hold color
    own = torch.from_numpy(lab_l(image))[None, None] / 50.0 - 1.0
    if mode == "1":
        own = page_lightness(own)
    assert np.abs(lab_l(out) - (own[0, 0].numpy() + 1.0) * 50.0).mean() < 0.3
    assert chroma(out) > 10.0
    if has_alpha:
        assert np.array_equal(np.asarray(out.getchannel("A")), np.asarray(image.getchannel("A")))


def test_palette_transparency_becomes_alpha(colorizer: Colorizer) -> None:
    image = make_color_image(2, (40, 32)).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    image.info["transparency"] = 0
    out = colorizer.colorize(image)
    assert out.mode == "RGBA"
    expected = np.asarray(image) != 0
    assert np.array_equal(np.asarray(out.getchannel("A")) > 0, expected)


def test_16_bit_gray_is_scaled_not_clipped(colorizer: Colorizer) -> None:
    values = np.tile(np.linspace(0, 65535, 256).round().astype(np.uint16), (6, 1))
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    out = colorizer.colorize(image)
    lightness = lab_l(out).mean(axis=0)
    gray = torch.from_numpy(values[:1] / 65535.0).float().expand(1, 3, 1, 256)
    expected = ((rgb_to_l_ab(gray)[0] + 1.0) * 50.0)[0, 0, 0].numpy()
    assert lightness[0] < 1.0 and lightness[-1] > 99.0  # the full range, black to white
    assert np.abs(lightness - expected).max() < 1.0  # and every step in between
    assert chroma(out) > 5.0


def test_exif_orientation_is_applied(colorizer: Colorizer, tmp_path: Path) -> None:
    image = make_color_image(4, (60, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.png"
    image.save(path, exif=exif)
    with Image.open(path) as opened:
        out = colorizer.colorize(opened)
        upright = ImageOps.exif_transpose(opened)
    assert out.size == (40, 60)
    assert np.abs(lab_l(out) - lab_l(upright)).mean() < 0.3


@pytest.mark.parametrize(
    ("files", "side_by_side", "expected"),
    [
        (["a.png", "a.jpg", "b.png"], False, ["a_png.png", "a_jpg.png", "b.png"]),
        (["a.png", "a_side_by_side.png"], True, ["a.png", "a_side_by_side_2.png"]),
        (["b.png", "B.PNG"], False, ["b_png.png", "B_png_2.png"]),  # case-insensitive disks
    ],
)
def test_name_outputs_keeps_colliding_files_apart(
    tmp_path: Path, files: list[str], side_by_side: bool, expected: list[str]
) -> None:
    jobs = name_outputs(
        [(tmp_path / "in" / f, Path()) for f in files], tmp_path / "out", "png", side_by_side
    )
    assert [job.target.name for job in jobs] == expected
    written = [job.target for job in jobs] + [job.side_by_side for job in jobs if job.side_by_side]
    assert len({str(path).casefold() for path in written}) == len(written)


# ---- `colorgan colorize` ----------------------------------------------------------------------


def png_header(width: int, height: int) -> bytes:
    """The start of a PNG that claims `width` x `height` pixels: a fake decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def test_cli_folders_recursive_with_relative_paths(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photos = tmp_path / "photos"
    (photos / "sub" / "deeper").mkdir(parents=True)
    make_color_image(0, (40, 32)).save(photos / "a.png")
    make_color_image(1, (48, 40)).save(photos / "sub" / "b.jpg")
    make_color_image(2, (36, 52)).save(photos / "sub" / "deeper" / "c.webp")
    (photos / "notes.txt").write_text("not an image")
    single = tmp_path / "single.bmp"
    make_color_image(3, (33, 21)).save(single)
    out = tmp_path / "out"
    code, err = run_cli(
        ["colorize", str(checkpoint), str(photos), str(single), "--out", str(out)], capsys
    )
    assert (code, err) == (0, [])
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["a.png", "single.png", "sub/b.png", "sub/deeper/c.png"]
    with Image.open(out / "sub" / "deeper" / "c.png") as image:
        assert image.size == (36, 52)
        assert image.format == "PNG"


@pytest.mark.parametrize(
    ("fmt", "pil_format", "mode"),
    [("png", "PNG", "RGBA"), ("jpg", "JPEG", "RGB"), ("webp", "WEBP", "RGBA")],
)
def test_cli_format_and_side_by_side(
    checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    fmt: str,
    pil_format: str,
    mode: str,
) -> None:
    image = MODES["RGBA"](make_color_image(5, (40, 32)))  # alpha from 0 (left) to 255 (right)
    image.save(tmp_path / "x.png")
    out = tmp_path / "out"
    args = ["colorize", str(checkpoint), str(tmp_path / "x.png"), "--out", str(out)]
    code, _ = run_cli([*args, "--format", fmt, "--side-by-side"], capsys)
    assert code == 0
    with Image.open(out / f"x.{fmt}") as color, Image.open(out / f"x_side_by_side.{fmt}") as both:
        assert (color.format, color.mode, color.size) == (pil_format, mode, (40, 32))
        assert (both.format, both.size) == (pil_format, (80, 32))
        if fmt == "jpg":  # no alpha in JPEG: flattened onto white
            assert np.asarray(color)[:, 0].min() > 240
        else:
            assert np.array_equal(np.asarray(color.getchannel("A")), np.asarray(image)[..., 3])
        gray, right = both.crop((0, 0, 40, 32)), both.crop((40, 0, 80, 32))
        assert chroma(gray) < 2.0  # left: the input's L as gray
        assert chroma(right) > 10.0  # right: the colorized image
        assert np.abs(lab_l(gray) - lab_l(right)).mean() < 2.0


def test_cli_unicode_spaces_and_collisions(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photos = tmp_path / "my photos"
    photos.mkdir()
    make_color_image(0, (40, 32)).save(photos / "été 写真 1.png")
    make_color_image(1, (40, 32)).save(photos / "a.png")
    make_color_image(2, (48, 40)).save(photos / "a.jpg")
    out = tmp_path / "sortie ü"
    code, err = run_cli(["colorize", str(checkpoint), str(photos), "--out", str(out)], capsys)
    assert (code, err) == (0, [])
    assert sorted(p.name for p in out.iterdir()) == ["a_jpg.png", "a_png.png", "été 写真 1.png"]
    with Image.open(out / "a_jpg.png") as from_jpg, Image.open(out / "a_png.png") as from_png:
        assert (from_jpg.size, from_png.size) == ((48, 40), (40, 32))


def test_cli_never_overwrites_inputs(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_color_image(0, (40, 32)).save(tmp_path / "a.png")
    before = (tmp_path / "a.png").read_bytes()
    code, err = run_cli(
        ["colorize", str(checkpoint), str(tmp_path), "--out", str(tmp_path)], capsys
    )
    assert code == 2
    assert len(err) == 1 and "is the input folder" in err[0]  # said before any file
    assert (tmp_path / "a.png").read_bytes() == before


def test_cli_output_folder_inside_the_input_folder_is_not_reread(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_color_image(0, (40, 32)).save(tmp_path / "a.jpg")
    args = ["colorize", str(checkpoint), str(tmp_path), "--out", str(tmp_path / "colored")]
    for _ in range(2):
        assert run_cli(args, capsys)[0] == 0
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png")) == [
        "colored/a.png"
    ]


def test_cli_broken_inputs_are_named_and_skipped(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    make_color_image(0, (40, 32)).save(folder / "good.png")
    make_color_image(1, (40, 32)).save(folder / "whole.png")
    whole = (folder / "whole.png").read_bytes()
    bad = {
        "empty.png": b"",
        "truncated.png": whole[: len(whole) // 2],
        "random.jpg": np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "text.png": b"this is a text file, renamed\n",
        "bomb.png": png_header(12_000, 10_000),  # 120 megapixels claimed
    }
    for name, data in bad.items():
        (folder / name).write_bytes(data)
    (folder / "whole.png").unlink()
    missing = tmp_path / "missing.png"
    out = tmp_path / "out"
    code, err = run_cli(
        ["colorize", str(checkpoint), str(folder), str(missing), "--out", str(out)], capsys
    )
    assert code == 1
    assert len(err) == len(bad) + 1  # one line per bad input, nothing else
    for name in [*bad, missing.name]:
        assert sum(name in line for line in err) == 1, name
    assert any("bomb.png" in line and "--max-pixels" in line for line in err)
    assert not any("Traceback" in line for line in err)
    assert sorted(p.name for p in out.iterdir()) == ["good.png"]


def test_cli_max_pixels(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_color_image(0, (40, 32)).save(tmp_path / "a.png")
    args = ["colorize", str(checkpoint), str(tmp_path / "a.png"), "--out", str(tmp_path / "out")]
    code, err = run_cli([*args, "--max-pixels", "1000"], capsys)
    assert code == 1
    assert len(err) == 1 and "a.png" in err[0] and "1,280 pixels" in err[0]
    assert not (tmp_path / "out" / "a.png").exists()


@pytest.mark.parametrize(
    ("model", "extra", "message"),
    [
        ("missing.pt", [], "no such checkpoint"),
        ("junk.pt", [], "cannot read checkpoint"),
        ("model.onnx", [], "ONNX"),
        (None, ["--device", "nonsense"], "not a device"),
        (None, ["--batch-size", "0"], "--batch-size must be from 1 to 1024"),
        (None, ["--size", "0"], "--size"),
    ],
)
def test_cli_usage_errors_exit_2_without_traceback(
    checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    model: str | None,
    extra: list[str],
    message: str,
) -> None:
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    make_color_image(0, (40, 32)).save(tmp_path / "a.png")
    model_path = str(checkpoint if model is None else tmp_path / model)
    args = ["colorize", model_path, str(tmp_path / "a.png"), "--out", str(tmp_path / "out")]
    code, err = run_cli([*args, *extra], capsys)
    assert code == 2
    assert len(err) == 1 and err[0].startswith("colorgan: error:") and message in err[0]
    assert not (tmp_path / "out" / "a.png").exists()


def test_cli_help_and_bad_format(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["colorize", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in [
        "MODEL",
        "INPUT",
        "--out",
        "--size",
        "--device",
        "--batch-size",
        "--format",
        "--side-by-side",
        "--max-pixels",
    ]:
        assert option in text
    with pytest.raises(SystemExit) as exit_info:
        main(["colorize", "m.pt", "a.png", "--out", "o", "--format", "bmp"])
    assert exit_info.value.code == 2


@pytest.mark.slow
def test_console_script(checkpoint: Path, tmp_path: Path) -> None:
    make_color_image(0, (40, 32)).save(tmp_path / "a b.png")
    script = Path(sys.executable).parent / "colorgan"
    result = subprocess.run(
        [
            str(script),
            "colorize",
            str(checkpoint),
            str(tmp_path / "a b.png"),
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "colorized 1 of 1 image(s)" in result.stdout
    with Image.open(tmp_path / "out" / "a b.png") as image:
        assert image.size == (40, 32)
