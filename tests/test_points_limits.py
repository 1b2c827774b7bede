"""Color points and model files under a careless or hostile user: one bounded parser for every
hints input (serve's field, the CLI's files, the Python API), points refused in one line by a
model trained without them whatever runs it, a bad file in --hints DIR failing its image
alone, a tampered model folder refused before it allocates, and a memory estimate that counts
the points' spread."""

from __future__ import annotations

import json
import logging
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from starlette.testclient import TestClient
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map_only

from colorgan import Colorizer, Hint
from colorgan.batch import Batch
from colorgan.cli import main
from colorgan.errors import CheckpointError
from colorgan.hints import (
    MAX_POINTS,
    HintError,
    HintSpread,
    hints_from_text,
    parse_color,
    spread_bytes_per_pixel,
)
from colorgan.modeldir import load_folder
from colorgan.request import NOTHING
from colorgan.serve import create_app
from tests.conftest import make_hint_checkpoint, make_tiny_checkpoint, write_color_folder

BLUE = "#0000ff"


def _png(size: tuple[int, int] = (64, 48)) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.new("L", size, 128).save(buffer, format="PNG")
    return buffer.getvalue()


HOSTILE = [
    ("[" * 100_000 + "]" * 100_000, "nested too deep"),
    ('[{"x": ' + "9" * 400 + ', "y": 1, "color": "#00f"}]', "'x' must be a number of pixels"),
    ('[{"x": ' + "9" * 5001 + ', "y": 1, "color": "#00f"}]', "not a hints file"),
    ('[{"x": 1, "y": 1, "color": "#00f", "radius": 1e308}]', "'radius' must be a number"),
    ('[{"x": 1, "y": 1e999, "color": "#00f"}]', "'y' must be a number of pixels"),
    (json.dumps([{"x": 1, "y": 1, "color": BLUE}] * (MAX_POINTS + 1)), "points; at most"),
    ('[{"x": 1, "y": 1, "color": "0x1234"}]', "color '0x1234' is not"),
]


@pytest.mark.parametrize(("text", "reason"), HOSTILE)
def test_the_one_parser_refuses_unbounded_json_in_one_line(text: str, reason: str) -> None:
    with pytest.raises(HintError, match=reason) as caught:
        hints_from_text(text, "hints")
    assert "\n" not in str(caught.value)


@pytest.fixture(scope="module")
def hint_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_hint_checkpoint(tmp_path_factory.mktemp("hint") / "h.pt")


@pytest.mark.parametrize(("text", "reason"), HOSTILE)
def test_serve_answers_hostile_points_with_a_400_line(
    hint_model: Path, text: str, reason: str
) -> None:
    client = TestClient(create_app(Colorizer.from_checkpoint(hint_model, "cpu")))
    response = client.post(
        "/api/colorize", files={"image": ("a.png", _png())}, data={"hints": text}
    )
    assert response.status_code == 400
    assert reason in response.json()["error"]


def test_a_huge_radius_in_a_points_file_is_one_line_and_exit_2(
    hint_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "a.png"
    Image.new("L", (64, 48), 128).save(image)
    points = tmp_path / "a.json"
    points.write_text('[{"x": 1, "y": 1, "color": "#00f", "radius": 1e308}]')
    code = main(["colorize", str(hint_model), str(image), "--hints", str(points), "--out",
                 str(tmp_path / "out"), "--quiet"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "'radius' must be a number" in err[0]


def test_a_bad_file_in_a_hints_folder_fails_its_image_alone(
    hint_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    images = tmp_path / "in"
    images.mkdir()
    for name in ("a", "b", "c"):
        Image.new("L", (64, 48), 100).save(images / f"{name}.png")
    points = tmp_path / "points"
    points.mkdir()
    (points / "a.json").write_text(json.dumps([{"x": 3, "y": 4, "color": BLUE}]))
    (points / "b.json").write_text('[{"x": 1, "y": 1, "color": "#00f", "radius": 1e308}]')
    (points / "z.json").write_text("[]")  # matches no image
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="colorgan"):
        code = main(["colorize", str(hint_model), str(images), "--hints", str(points), "--out",
                     str(out), "--quiet", "--workers", "0"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "c.png"]
    assert "b.json" in err and "'radius' must be a number" in err
    assert any("z.json" in r.getMessage() and "match no input" in r.getMessage()
               for r in caplog.records)  # fmt: skip


def test_points_for_a_model_without_them_are_one_line_from_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = make_tiny_checkpoint(tmp_path / "t.pt")
    images = write_color_folder(tmp_path / "in", 2, size=(32, 32))
    points = tmp_path / "p.json"
    points.write_text(json.dumps([{"x": 1, "y": 1, "color": BLUE}]))
    code = main(["colorize", str(model), str(images), "--hints", str(points), "--out",
                 str(tmp_path / "out"), "--quiet"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "trained without color points" in err[0]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_runtime_without_points_refuses_them_instead_of_pasting_them() -> None:
    """A Colorizer over any runtime (an .onnx file's metadata says hints=False) refuses a
    hint map in predict_batch, the path the folder pipeline takes, rather than pasting it."""

    def predict(batch: Batch) -> torch.Tensor:
        return torch.zeros(batch.l.shape[0], 2, *batch.l.shape[2:])

    colorizer = Colorizer(predict, 32, 32, torch.device("cpu"))
    hint_map = torch.zeros(1, 3, 32, 32)
    hint_map[:, :, 4, 4] = 1.0
    with pytest.raises(HintError, match="trained without color points"):
        colorizer.predict_batch(torch.zeros(1, 1, 32, 32), [NOTHING], [{"hints": hint_map}])


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ((complex(1, 2), 0.0, BLUE), "'x' must be a number"),
        ((1.0, float("nan"), BLUE), "'y' must be a number"),
        ((1.0, 2.0, BLUE, -1.0), "radius must be >= 0"),
        ((1.0, 2.0, "0x1234"), "is not"),
        ((True, 2.0, BLUE), "'x' must be a number"),
    ],
)
def test_the_python_api_checks_a_hint_where_it_is_made(args: tuple[Any, ...], reason: str) -> None:
    with pytest.raises(HintError, match=reason):
        Hint(*args)


@pytest.mark.parametrize("bad", ["0x1234", "+12345", "12_345", "#0x12", " 12 34"])
def test_int_parsing_quirks_are_no_colors(bad: str) -> None:
    with pytest.raises(HintError, match="is not"):
        parse_color(bad)


class _LiveBytes(TorchDispatchMode):
    """The peak bytes of tensor storages alive at once among those made while active."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self.seen: set[int] = set()

    def __torch_dispatch__(
        self, func: Callable[..., Any], types: Any, args: Any = (), kwargs: Any = None
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        tree_map_only(torch.Tensor, self._track, out)
        return out

    def _track(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        key, size = storage.data_ptr(), storage.nbytes()
        if size and key not in self.seen:
            self.seen.add(key)
            self.live += size
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._free, key, size)
        return tensor

    def _free(self, key: int, size: int) -> None:
        self.live -= size
        self.seen.discard(key)


def test_live_bytes_counts_what_is_held() -> None:
    with _LiveBytes() as live:
        a = torch.ones(1000)  # 4000 bytes
        b = a + 1
        c = b * 2  # a, b and c held: 12000
        del b
        torch.ones(10)  # made and dropped
    assert live.peak == 12000 and live.live == 8000 and c.sum() > 0


@pytest.mark.parametrize(("stride", "side"), [(1, 96), (4, 192)])
def test_the_memory_estimate_covers_the_points_spread(stride: int, side: int) -> None:
    """What HintSpread holds at once in inference, measured, is within the estimate the
    memory pre-check adds for it (bytes_per_pixel), and not far below it."""
    ab, l = torch.rand(1, 2, side, side) - 0.5, torch.rand(1, 1, side, side) * 2 - 1
    hint_map = torch.zeros(1, 3, side, side)
    hint_map[:, :, 40:44, 40:44] = 0.5
    spread = HintSpread(stride).eval()
    with torch.inference_mode(), _LiveBytes() as live:
        spread(ab, l, hint_map)
    measured = live.peak / side**2
    assert 0.6 * spread_bytes_per_pixel(stride) < measured <= spread_bytes_per_pixel(stride)


def test_a_tampered_model_folder_is_refused_before_it_allocates(tmp_path: Path) -> None:
    """config.json rewritten to describe a 4096-px U-Net of width 1024 and depth 12: one line
    from the weights' own header, and nothing near that size made on the way."""
    checkpoint = make_tiny_checkpoint(tmp_path / "tiny.pt")
    folder = tmp_path / "tiny"
    assert main(["export", str(checkpoint), "--model-dir", str(folder)]) == 0
    config_file = folder / "config.json"
    raw = json.loads(config_file.read_text())
    raw["config"]["model"] |= {"base_channels": 1024, "depth": 12}
    raw["config"]["data"]["image_size"] = 4096
    config_file.write_text(json.dumps(raw))
    with _LiveBytes() as live, pytest.raises(CheckpointError, match="do not fit") as caught:
        load_folder(folder)
    assert "\n" not in str(caught.value) and str(folder) in str(caught.value)
    assert live.peak < 50_000_000  # the described network would need some 100 GB


def test_an_out_folder_that_is_the_input_folder_is_refused_up_front(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = make_tiny_checkpoint(tmp_path / "t.pt")
    images = write_color_folder(tmp_path / "in", 2, size=(32, 32))
    before = sorted(p.name for p in images.rglob("*"))
    code = main(["colorize", str(model), str(images), "--out", str(images), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "is the input folder" in err[0]
    assert sorted(p.name for p in images.rglob("*")) == before
    assert main(["colorize", str(model), str(images), "--out", str(images / "out"), "--quiet"]) == 0


@pytest.mark.parametrize(
    ("option", "value", "reason"),
    [
        ("--workers", str(10**30), "--workers must be from 0 to 64"),
        ("--workers", "65", "--workers must be from 0 to 64"),
        ("--batch-size", str(10**12), "--batch-size must be from 1 to 1024"),
    ],
)
def test_worker_and_batch_counts_are_bounded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str, reason: str
) -> None:
    model = make_tiny_checkpoint(tmp_path / "t.pt")
    images = write_color_folder(tmp_path / "in", 2, size=(32, 32))
    code = main(["colorize", str(model), str(images), "--out", str(tmp_path / "out"), option,
                 value, "--quiet"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and reason in err[0]


def test_more_workers_than_files_start_no_more_processes_than_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from colorgan import pipeline

    started: list[int] = []
    real = pipeline._finishers

    def counted(workers: int) -> Any:
        started.append(workers)
        return real(workers)

    monkeypatch.setattr(pipeline, "_finishers", counted)
    model = make_tiny_checkpoint(tmp_path / "t.pt")
    images = write_color_folder(tmp_path / "in", 2, size=(32, 32))
    out = tmp_path / "out"
    assert main(["colorize", str(model), str(images), "--out", str(out), "--workers", "64",
                 "--quiet"]) == 0  # fmt: skip
    assert started == [2] and len(list(out.rglob("*.png"))) == 2


@pytest.mark.parametrize("signum", [2, 15])  # SIGINT, SIGTERM
def test_a_signal_during_the_onnx_export_stops_the_run_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    signum: int,
) -> None:  # fmt: skip
    """The exporter catches Exception around its work; the signal arrives inside it. The run
    stops (exit 128 + signal) with one line instead of finishing or chaining tracebacks."""
    import os

    def exporter(*args: Any, **kwargs: Any) -> Any:
        try:
            os.kill(os.getpid(), signum)  # the handler raises here
            raise AssertionError("the signal handler did not run")
        except Exception:  # what torch.onnx's exporter does with errors inside it
            return None

    monkeypatch.setattr(torch.onnx, "export", exporter)
    model = make_tiny_checkpoint(tmp_path / "t.pt")
    images = write_color_folder(tmp_path / "in", 2, size=(32, 32))
    code = main(["colorize", str(model), str(images), "--out", str(tmp_path / "out"),
                 "--runtime", "onnx", "--quiet"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 128 + signum and len(err) == 1 and "stopped" in err[0]
    assert not list(tmp_path.glob("out/**/*.png"))  # stopped before any picture


def test_special_files_are_refused_instead_of_read_without_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """/dev/zero as --eval or a hints file, a FIFO as --reference or a config: one line each,
    at once (a FIFO would block its reader, /dev/zero never end)."""
    import os

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    model = make_tiny_checkpoint(tmp_path / "t.pt")
    hint_model = make_hint_checkpoint(tmp_path / "h.pt")
    image = tmp_path / "a.png"
    Image.new("L", (32, 32), 90).save(image)
    out = str(tmp_path / "out")
    runs = [
        (["export", str(model), "--model-dir", str(tmp_path / "m"), "--eval", "/dev/zero"],
         "not a regular file"),
        (["colorize", str(hint_model), str(image), "--hints", "/dev/zero", "--out", out],
         "not a regular file"),
        (["train", "--config", str(fifo), "--data", str(tmp_path)], "not a regular file"),
    ]  # fmt: skip
    for args, reason in runs:
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and reason in err[0], err
    with pytest.raises(Exception, match="not a regular file"):
        from colorgan.files import load_picture

        load_picture(fifo)


def test_a_model_folder_with_nan_weights_is_one_line_not_black_pictures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import safetensors.torch

    checkpoint = make_tiny_checkpoint(tmp_path / "tiny.pt")
    folder = tmp_path / "tiny"
    assert main(["export", str(checkpoint), "--model-dir", str(folder)]) == 0
    weights = safetensors.torch.load_file(folder / "model.safetensors")
    name = next(k for k, v in weights.items() if v.is_floating_point())
    weights[name][0] = float("nan")
    safetensors.torch.save_file(weights, folder / "model.safetensors")
    image = tmp_path / "a.png"
    Image.new("L", (32, 32), 90).save(image)
    capsys.readouterr()
    code = main(["colorize", str(folder), str(image), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and f"{name!r} holds NaN" in err[0]


def test_freeze_encoder_epochs_with_the_unet_encoder_is_refused() -> None:
    from colorgan.config import load_config
    from colorgan.errors import ConfigError

    with pytest.raises(ConfigError, match=r"freeze_encoder_epochs=2 needs model\.encoder"):
        load_config(None, ["model.encoder=unet", "model.freeze_encoder_epochs=2"])


def test_evaluate_json_to_an_unwritable_place_fails_before_the_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from colorgan import evaluate

    def never(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("evaluated before the --json path was checked")

    monkeypatch.setattr(evaluate, "evaluate_checkpoint", never)
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    model = make_tiny_checkpoint(tmp_path / "t.pt")
    code = main(["evaluate", str(model), "--data", str(tmp_path), "--json",
                 str(blocker / "eval.json")])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--json" in err[0] and "cannot write there" in err[0]


@pytest.mark.parametrize(
    "name",
    ["hf://a/b@main;rm", "hf://a/b@../../etc", "hf://a/b@-x", "hf://a/b@" + "x" * 200,
     "hf://a/b@ma in", "hf://a/b@refs/"],
)  # fmt: skip
def test_a_hub_revision_that_is_no_ref_name_is_refused(name: str) -> None:
    from colorgan.errors import HubError
    from colorgan.hub import parse_hub_name

    with pytest.raises(HubError, match="is no branch, tag or commit name"):
        parse_hub_name(name)
    assert parse_hub_name("hf://a/b@refs/pr/3").revision == "refs/pr/3"
    assert parse_hub_name("hf://a/b@v1.0").revision == "v1.0"


def test_a_run_dir_inside_the_data_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_color_folder(tmp_path / "data", 4, size=(32, 32))
    code = main(["train", "--data", str(data), "--run-dir", str(data / "runs" / "a"),
                 "--set", "data.image_size=32", "--quiet"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "is inside --data" in err[0]
    assert not (data / "runs").exists()


def test_a_corrupt_cached_onnx_export_is_made_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    monkeypatch.setenv("COLORGAN_CACHE", str(tmp_path / "cache"))
    model = make_tiny_checkpoint(tmp_path / "t.pt")
    images = write_color_folder(tmp_path / "in", 2, size=(32, 32))
    args = ["colorize", str(model), str(images), "--runtime", "onnx", "--quiet", "--out"]
    assert main([*args, str(tmp_path / "a")]) == 0
    [cached] = list((tmp_path / "cache" / "onnx").glob("*.onnx"))
    cached.write_bytes(b"half an onnx file")
    with caplog.at_level(logging.WARNING, logger="colorgan"):
        assert main([*args, str(tmp_path / "b")]) == 0
    assert any("exporting it again" in r.getMessage() for r in caplog.records)
    assert cached.stat().st_size > 1000 and len(list((tmp_path / "b").rglob("*.png"))) == 2


def test_export_onnx_never_replaces_a_file_it_did_not_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = make_tiny_checkpoint(tmp_path / "t.pt")
    theirs = tmp_path / "mine.onnx"
    theirs.write_bytes(b"somebody else's model")
    assert main(["export", str(model), "--onnx", str(theirs)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is no colorgan export: not replaced" in err[0]
    assert theirs.read_bytes() == b"somebody else's model"
    ours = tmp_path / "ours.onnx"
    assert main(["export", str(model), "--onnx", str(ours)]) == 0
    assert main(["export", str(model), "--onnx", str(ours)]) == 0  # its own: replaced


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--minutes", "1e308"], "--minutes must be from 0 to 10080"),
        (["--minutes", "nan"], "--minutes must be from 0 to 10080"),
        (["--out", "/proc/no/such"], "cannot make the folder"),
    ],
)
def test_demo_arguments_that_cannot_work_are_one_line(
    args: list[str], reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", *args, "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and reason in err[0]


def test_max_pixels_above_pillows_own_limit_is_honoured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pillow refuses images over twice its MAX_IMAGE_PIXELS by itself; --max-pixels above
    that must still decode them (here Pillow's limit is lowered to stand for its ~179 M)."""
    from colorgan.errors import UnreadableImage
    from colorgan.files import load_picture

    path = tmp_path / "big.png"
    Image.new("L", (100, 100), 50).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    assert load_picture(path, max_pixels=20_000).rgb.shape[1:] == (100, 100)
    with pytest.raises(UnreadableImage, match="over the limit of 5,000"):
        load_picture(path, max_pixels=5000)
    assert Image.MAX_IMAGE_PIXELS == 1000  # put back


def test_serve_answers_a_hints_field_over_the_limit_with_413(hint_model: Path) -> None:
    client = TestClient(create_app(Colorizer.from_checkpoint(hint_model, "cpu")))
    text = json.dumps([{"x": 1, "y": 1, "color": BLUE}] * 40_000)  # over 1 MB
    response = client.post(
        "/api/colorize", files={"image": ("a.png", _png())}, data={"hints": text}
    )
    assert response.status_code == 413 and "hints over the limit" in response.json()["error"]


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"image": [[0, 1], [2, 3]]}, "image must be a PIL image"),
        ({"reference": 42}, "reference must be a PIL image"),
        ({"hints": [(1, 2, "#fff")]}, "hints must be colorgan.Hint"),
        ({"size": "512"}, "working size must be a positive whole number"),
        ({"size": 0}, "working size must be a positive whole number"),
    ],
)
def test_the_python_api_names_a_wrong_argument_in_one_line(
    hint_model: Path, kwargs: dict[str, Any], reason: str
) -> None:
    from colorgan.errors import ColorganError

    colorizer = Colorizer.from_checkpoint(hint_model, "cpu")
    image = kwargs.pop("image", Image.new("L", (32, 32), 90))
    with pytest.raises(ColorganError, match=reason) as caught:
        colorizer.colorize(image, **kwargs)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--limit", "-1"], "--limit must be 0 (all) or more, got -1"),  # said --batch-size
        (["--batch-size", "0"], "--batch-size must be from 1 to 4096, got 0"),
    ],
)
def test_evaluate_names_the_option_that_is_wrong(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], reason: str
) -> None:
    model = make_tiny_checkpoint(tmp_path / "t.pt")
    data = write_color_folder(tmp_path / "in", 2, size=(32, 32))
    assert main(["evaluate", str(model), "--data", str(data), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and reason in err[0]
