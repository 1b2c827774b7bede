"""`colorgan export` and the ONNX backend: onnxruntime matches PyTorch; images match the .pt's."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from PIL import Image

from colorgan.batch import Batch, model_inputs
from colorgan.checkpoint import load_generator
from colorgan.cli import main
from colorgan.colorize import Colorizer
from colorgan.errors import ColorganError, OnnxModelError
from colorgan.export import load_onnx
from colorgan.reference import summarize
from tests.conftest import make_color_image, make_exemplar_checkpoint, make_tiny_checkpoint

CUDA_ONNX = "CUDAExecutionProvider" in onnxruntime.get_available_providers()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(tiny.pt, tiny.onnx), the .onnx written by `colorgan export`."""
    folder = tmp_path_factory.mktemp("export")
    checkpoint = make_tiny_checkpoint(folder / "tiny.pt")
    onnx_path = folder / "out" / "tiny.onnx"
    assert main(["export", str(checkpoint), "--onnx", str(onnx_path)]) == 0
    return checkpoint, onnx_path


def test_export_writes_one_file_atomically(
    models: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, onnx_path = models
    assert [p.name for p in onnx_path.parent.iterdir()] == ["tiny.onnx"]  # no temporary left
    assert onnx_path.stat().st_size > 10_000  # the weights are inside, not external data


@pytest.mark.parametrize("shape", [(1, 1, 32, 32), (3, 1, 48, 64), (2, 1, 8, 120)])
def test_onnxruntime_matches_pytorch(models: tuple[Path, Path], shape: tuple[int, ...]) -> None:
    checkpoint, onnx_path = models
    generator, _ = load_generator(checkpoint)
    l = torch.rand(shape, generator=torch.Generator().manual_seed(sum(shape))) * 2 - 1
    with torch.inference_mode():
        expected = generator(l)
    got = load_onnx(onnx_path, "cpu").predict(Batch(l=l))
    assert got.shape == expected.shape  # dynamic batch, height and width
    assert float((got - expected).abs().max()) <= 1e-3


def test_metadata_gives_the_working_size_and_multiple(models: tuple[Path, Path]) -> None:
    _, onnx_path = models
    colorizer = Colorizer.from_checkpoint(onnx_path, device="auto")  # dispatches on the suffix
    assert (colorizer.image_size, colorizer.multiple) == (32, 8)
    assert colorizer.device == torch.device("cpu")  # no GPU here
    assert Colorizer.from_onnx(onnx_path, "cpu").image_size == 32


def image_inputs() -> list[Image.Image]:
    """Gray, gray with alpha and color images of odd sizes."""
    gray = make_color_image(1, (70, 50)).convert("L")
    with_alpha = make_color_image(2, (33, 61)).convert("LA")
    return [gray, with_alpha, make_color_image(3, (40, 40))]


@pytest.mark.parametrize("size", [None, 48])
def test_onnx_and_pt_give_the_same_images(models: tuple[Path, Path], size: int | None) -> None:
    checkpoint, onnx_path = models
    by_pt = Colorizer.from_checkpoint(checkpoint, "cpu").colorize_batch(image_inputs(), size)
    by_onnx = Colorizer.from_checkpoint(onnx_path, "cpu").colorize_batch(image_inputs(), size)
    for a, b in zip(by_pt, by_onnx, strict=True):
        assert (a.mode, a.size) == (b.mode, b.size)
        diff = np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16))
        assert diff.max() <= 1


def test_cli_colorize_takes_an_onnx_model(
    models: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint, onnx_path = models
    make_color_image(4, (45, 30)).convert("L").save(tmp_path / "a.png")
    for model, out in ((onnx_path, "onnx"), (checkpoint, "pt")):
        args = ["colorize", str(model), str(tmp_path / "a.png"), "--out", str(tmp_path / out)]
        assert main([*args, "--quiet"]) == 0
    by_onnx = np.asarray(Image.open(tmp_path / "onnx" / "a.png"), dtype=np.int16)
    by_pt = np.asarray(Image.open(tmp_path / "pt" / "a.png"), dtype=np.int16)
    assert by_onnx.shape == (30, 45, 3) and np.abs(by_onnx - by_pt).max() <= 1


def test_missing_onnxruntime_is_one_clear_line(
    models: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, onnx_path = models
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    make_color_image(0, (20, 20)).save(tmp_path / "a.png")
    code = main(["colorize", str(onnx_path), str(tmp_path / "a.png"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.splitlines()
    assert code == 2
    assert err == ["colorgan: error: running an .onnx model needs onnxruntime: "
                   "pip install 'colorgan[onnx]'"]  # fmt: skip


def test_missing_onnxscript_is_one_clear_line(
    models: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    checkpoint, _ = models
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    code = main(["export", str(checkpoint), "--onnx", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 1 and "pip install 'colorgan[onnx]'" in err[0]
    assert not (tmp_path / "m.onnx").exists()


def foreign_onnx(path: Path) -> Path:
    """A valid ONNX model that is not a colorgan export (no metadata): y = x."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 1, "h", "w"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 1, "h", "w"])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.mark.parametrize(
    ("make", "device", "message"),
    [
        (lambda p: p.write_bytes(b"not onnx"), "cpu", "cannot load the ONNX model"),
        (foreign_onnx, "cpu", "not a colorgan export"),
        (lambda p: None, "cpu", "no such ONNX file"),
        (foreign_onnx, "mps", "ONNX models run on auto, cpu, cuda or cuda:N"),
        pytest.param(
            foreign_onnx,
            "cuda",
            "no CUDA provider",
            marks=pytest.mark.skipif(CUDA_ONNX, reason="onnxruntime-gpu has the CUDA provider"),
        ),
    ],
)
def test_bad_onnx_models_are_usage_errors(
    tmp_path: Path, make: Callable[[Path], object], device: str, message: str
) -> None:
    path = tmp_path / "model.onnx"
    make(path)
    with pytest.raises(ColorganError, match=message):
        Colorizer.from_checkpoint(path, device)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.pt", "--onnx", "m.onnx"], "no such checkpoint"),
        (["tiny.pt", "--onnx", "m.bin"], "must end in .onnx"),
    ],
)
def test_export_usage_errors_exit_2(
    models: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(models[0].parent)
    code = main(["export", *args])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 1 and message in err[0]


def edited_onnx(source: Path, out: Path, changes: dict[str, str | None]) -> Path:
    """A copy of an export with its metadata_props edited (None: the key removed)."""
    import onnx

    model = onnx.load(source)
    props = {p.key: p.value for p in model.metadata_props}
    for key, value in changes.items():
        if value is None:
            props.pop(key, None)
        else:
            props[key] = value
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, out)
    return out


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"colorgan.depth": "-3"}, "colorgan.depth='-3' (expected a whole number from 1 to 12)"),
        ({"colorgan.depth": "0"}, "colorgan.depth='0'"),
        ({"colorgan.depth": "13"}, "colorgan.depth='13'"),
        ({"colorgan.depth": "²"}, "colorgan.depth='²'"),
        ({"colorgan.depth": "3.0"}, "colorgan.depth='3.0'"),
        ({"colorgan.image_size": "0"}, "colorgan.image_size='0' (expected a whole number from 1"),
        ({"colorgan.image_size": "abc"}, "colorgan.image_size='abc'"),
        ({"colorgan.image_size": "36"}, "colorgan.image_size='36' (expected a multiple of "
                                        "2**colorgan.depth=8)"),
        ({"colorgan.image_size": "9" * 200}, "colorgan.image_size='" + "9" * 60 + "...'"),
        ({"colorgan.format": "2"}, "colorgan.format='2'"),
        ({"colorgan.depth": None}, "not a colorgan export (no colorgan.depth in its metadata)"),
    ],
)  # fmt: skip
def test_edited_metadata_is_one_line_naming_the_key(
    models: tuple[Path, Path], tmp_path: Path, changes: dict[str, str | None], message: str
) -> None:
    path = edited_onnx(models[1], tmp_path / "edited.onnx", changes)
    with pytest.raises(OnnxModelError) as caught:
        load_onnx(path, "cpu")
    text = str(caught.value)
    assert message in text and text.startswith(f"{path}: ") and "\n" not in text
    assert "9" * 61 not in text  # a long value is cut short


def test_edited_metadata_is_a_usage_error_in_colorize(
    models: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = edited_onnx(models[1], tmp_path / "edited.onnx", {"colorgan.depth": "-3"})
    make_color_image(0, (20, 20)).save(tmp_path / "a.png")
    code = main(["colorize", str(path), str(tmp_path / "a.png"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 1 and "colorgan.depth='-3'" in err[0]


def test_an_export_whose_inputs_are_not_colorgans_is_refused(tmp_path: Path) -> None:
    path = edited_onnx(
        foreign_onnx(tmp_path / "x.onnx"),
        tmp_path / "y.onnx",
        {"colorgan.image_size": "32", "colorgan.depth": "3"},
    )
    with pytest.raises(OnnxModelError, match=r"the graph's inputs \(x\) are not a colorgan"):
        load_onnx(path, "cpu")


@pytest.mark.slow
def test_a_match_model_exports_any_number_of_references(tmp_path: Path) -> None:
    """model.reference_match: the `exemplar` input (B, R, 4, S, S) with R and S dynamic."""
    checkpoint = make_exemplar_checkpoint(tmp_path / "match.pt")
    onnx_path = tmp_path / "match.onnx"
    assert main(["export", str(checkpoint), "--onnx", str(onnx_path)]) == 0
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    shapes = {node.name: node.shape for node in session.get_inputs()}
    assert list(shapes) == ["l", "reference", "exemplar"]
    batch, slots, channels, height, width = shapes["exemplar"]
    assert channels == 4 and all(isinstance(d, str) for d in (batch, slots, height, width))
    generator, _ = load_generator(checkpoint)
    model = load_onnx(onnx_path, "cpu")
    assert model.capabilities.match
    gen = torch.Generator().manual_seed(3)
    l = torch.rand(2, 1, 32, 64, generator=gen) * 2 - 1
    summary = summarize(torch.rand(2, 2, 16, 16, generator=gen) - 0.5)
    without = model.predict(Batch(l=l, reference=summary))
    for count, side in ((1, 32), (2, 64)):
        exemplar = torch.rand(2, count, 4, side, side, generator=gen) * 2 - 1
        exemplar[:, :, 3] = 1.0
        exemplar[1, -1] = 0.0  # the second picture has one reference fewer (none, for 1)
        given = Batch(l=l, reference=summary, exemplar=exemplar)
        with torch.inference_mode():
            expected = generator(**model_inputs(given))
        got = model.predict(given)
        assert float((got - expected).abs().max()) <= 1e-3
        assert float((got[0] - without[0]).abs().max()) > 0.05  # the references are used
    image = make_color_image(5, (70, 50)).convert("L")
    references = [make_color_image(7), make_color_image(8, (30, 50))]
    by_pt, by_onnx = (Colorizer.from_checkpoint(path, "cpu") for path in (checkpoint, onnx_path))
    for given_references in (references[:1], references):
        a = by_pt.colorize(image, reference=given_references)
        b = by_onnx.colorize(image, reference=given_references)
        diff = np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16))
        assert diff.max() <= 1
    with pytest.raises(ColorganError, match="is an ONNX graph"):
        by_onnx.reference_match(image, references)
