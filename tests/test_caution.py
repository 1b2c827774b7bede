"""Caution and the uncertainty map (model.uncertainty): Colorizer.colorize(caution=...),
colorize_with_uncertainty, `colorize --caution C --uncertainty-map` (re-runs, errors), the
serve endpoints, the ONNX export; and models without uncertainty working as before."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from starlette.testclient import TestClient

from colorgan.checkpoint import load_generator
from colorgan.cli import main
from colorgan.color import rgb_to_l_ab
from colorgan.colorize import Colorizer, join, lightness, resize_l, working_shape
from colorgan.errors import ColorganError, OnnxModelError
from colorgan.export import load_onnx
from colorgan.files import to_picture
from colorgan.hints import Hint
from colorgan.jobs import name_outputs, plan_jobs, run_key
from colorgan.pipeline import Output, colorize_folder
from colorgan.request import NOTHING, Capabilities, Request
from colorgan.serve import create_app
from tests.conftest import make_tiny_checkpoint, make_uncertainty_checkpoint

DEFAULT_CAUTION = 0.25  # the test model's model.caution (not the config's default)
SIZE = (64, 40)  # the test image: dark left half, light right half (width, height)
DARK, LIGHT = (slice(None), slice(0, 24)), (slice(None), slice(40, 64))  # rows, columns


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("caution") / "unsure.pt"
    return make_uncertainty_checkpoint(path, caution=DEFAULT_CAUTION)


@pytest.fixture(scope="module")
def plain_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("caution") / "plain.pt")


@pytest.fixture(scope="module")
def colorizer(checkpoint: Path) -> Colorizer:
    return Colorizer.from_checkpoint(checkpoint, device="cpu")


@pytest.fixture(scope="module")
def plain(plain_checkpoint: Path) -> Colorizer:
    return Colorizer.from_checkpoint(plain_checkpoint, device="cpu")


def split_image(size: tuple[int, int] = SIZE) -> Image.Image:
    """Gray: dark on the left (the model is sure there), light on the right (it is not)."""
    gray = np.full((size[1], size[0]), 40, dtype=np.uint8)
    gray[:, size[0] // 2 :] = 230
    return Image.fromarray(gray)


def lab(image: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """(Lab L, chroma |ab|) per pixel, in Lab units."""
    rgb = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)[None] / 255.0
    l, ab = rgb_to_l_ab(rgb)
    return ((l[0, 0] + 1) * 50).numpy(), (ab[0].norm(dim=0) * 110).numpy()


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def by_hand(path: Path, image: Image.Image) -> Image.Image:
    """The documented recipe with the plain generator, no caution: l at the working size ->
    the generator's ab -> upsampled onto the full-resolution L."""
    generator, config = load_generator(path)
    l_full = lightness(to_picture(image).rgb, torch.device("cpu"))
    shape = working_shape(image.height, image.width, config.data.image_size, generator.multiple)
    with torch.inference_mode():
        ab = generator.eval()(resize_l(l_full, shape))[:, :2]
    return Image.fromarray(join(l_full, ab).permute(1, 2, 0).numpy())


def test_caution_0_gives_the_models_own_colors(colorizer: Colorizer, checkpoint: Path) -> None:
    assert colorizer.capabilities == Capabilities(False, False, True, DEFAULT_CAUTION)
    image = split_image()
    none = colorizer.colorize(image, caution=0)
    assert np.abs(pixels(none) - pixels(by_hand(checkpoint, image))).max() <= 1
    assert lab(none)[1][LIGHT].min() > 8  # the model's colors are there, even where unsure


def test_caution_fades_where_unsure_and_keeps_where_sure(colorizer: Colorizer) -> None:
    image = split_image()
    l_in = lab(image)[0]
    outputs = {c: colorizer.colorize(image, caution=c) for c in (0.0, DEFAULT_CAUTION, 1.0)}
    chroma = {c: lab(out)[1] for c, out in outputs.items()}
    for c, out in outputs.items():
        assert np.abs(lab(out)[0] - l_in).max() < 1.0, c  # L is never touched
        assert np.abs(pixels(out)[DARK] - pixels(outputs[0.0])[DARK]).max() <= 1, c
    assert chroma[0.0][DARK].min() > 20  # sure (u tiny): the colors stay
    assert chroma[1.0][LIGHT].max() < 0.1 * chroma[0.0][LIGHT].min()  # unsure: about gray
    default = colorizer.colorize(image)  # None: the model's own model.caution
    assert np.array_equal(pixels(default), pixels(outputs[DEFAULT_CAUTION]))
    assert chroma[DEFAULT_CAUTION][LIGHT].max() < chroma[0.0][LIGHT].min()


def test_one_run_of_the_model_gives_the_image_and_its_map(
    colorizer: Colorizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    predict = colorizer.predict
    monkeypatch.setattr(colorizer, "predict", lambda batch: calls.append(1) or predict(batch))
    image = split_image((70, 45))
    colored, guess = colorizer.colorize_with_uncertainty(image, caution=1.0)
    assert len(calls) == 1
    assert guess.mode == "L" and guess.size == colored.size == (70, 45)
    level = np.asarray(guess)
    assert level[:, :25].max() < 15 and level[:, 45:].min() > 245  # black: sure; white: guessing
    assert np.array_equal(pixels(colored), pixels(colorizer.colorize(image, caution=1.0)))


def test_a_point_keeps_its_color_and_is_no_guess(tmp_path: Path) -> None:
    path = make_uncertainty_checkpoint(tmp_path / "hints.pt", hints=True)
    colorizer = Colorizer.from_checkpoint(path, device="cpu")
    image = split_image()
    point = [Hint(52, 20, "#2050ff", radius=4)]
    colored, guess = colorizer.colorize_with_uncertainty(image, hints=point, caution=1.0)
    rgb = torch.from_numpy(pixels(colored)[20, 52] / 255.0).float().view(1, 3, 1, 1)
    a, b = (rgb_to_l_ab(rgb)[1].flatten() * 110).tolist()
    assert b < -8 and a > 0  # the user's #2050ff (as light as sRGB holds it there): not faded
    # beside it, where the point's color spreads: a guess, faded at caution 1
    unfaded = colorizer.colorize(image, hints=point, caution=0.0)
    assert lab(unfaded)[1][:, 40:46].max() > 10
    assert lab(colored)[1][:, 40:46].max() < 0.25 * lab(unfaded)[1][:, 40:46].max()
    assert np.asarray(guess)[20, 52] < 40 and np.asarray(guess)[5, 58] > 245


@pytest.mark.parametrize("caution", [1.5, -0.1, float("nan"), float("inf")])
def test_a_caution_outside_0_to_1_is_an_error_naming_it(
    colorizer: Colorizer, caution: float
) -> None:
    with pytest.raises(ColorganError, match=f"caution must be a number from 0 to 1.*{caution:g}"):
        colorizer.colorize(split_image(), caution=caution)


def test_a_model_without_uncertainty_works_as_before(
    plain: Colorizer, plain_checkpoint: Path
) -> None:
    assert not plain.capabilities.uncertainty
    assert plain.capabilities.resolve_caution(NOTHING) == 0.0
    image = split_image()
    out = plain.colorize(image)
    assert np.abs(pixels(out) - pixels(by_hand(plain_checkpoint, image))).max() <= 1
    assert np.array_equal(pixels(plain.colorize(image, caution=0)), pixels(out))
    with pytest.raises(ColorganError, match=r"does not predict how sure it is.*uncertainty=true"):
        plain.colorize(image, caution=0.5)
    with pytest.raises(ColorganError, match="does not predict how sure it is"):
        plain.colorize_with_uncertainty(image)
    # caution 0 keeps the run key of the runs before caution existed: their outputs are skipped
    old = json.dumps(["m", None, "png", []], sort_keys=True)
    assert run_key("m", None, "png", NOTHING, 0.0) == hashlib.sha256(old.encode()).hexdigest()[:16]
    assert run_key("m", None, "png", NOTHING, 0.5) != run_key("m", None, "png", NOTHING, 0.0)


# ---- colorize --caution C --uncertainty-map ----


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, list[str]]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err.splitlines()


def test_cli_writes_the_map_and_re_runs_follow_the_caution(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    split_image().save(tmp_path / "a.png")
    split_image((50, 30)).save(tmp_path / "b.jpg")
    out = tmp_path / "out"
    base = ["colorize", str(checkpoint), str(tmp_path / "a.png"), str(tmp_path / "b.jpg"),
            "--out", str(out), "--workers", "0"]  # fmt: skip
    code, _, err = run_cli([*base, "--caution", "1", "--uncertainty-map"], capsys)
    assert code == 0 and err == []
    assert sorted(p.name for p in out.iterdir()) == [
        "a.png", "a.uncertainty.png", "b.png", "b.uncertainty.png",
    ]  # fmt: skip
    with Image.open(out / "b.uncertainty.png") as guess:
        assert guess.mode == "L" and guess.size == (50, 30)
    with Image.open(out / "a.png") as faded:
        assert lab(faded)[1][LIGHT].max() < 1.5
    code, text, _ = run_cli([*base, "--caution", "1", "--uncertainty-map"], capsys)
    assert code == 0 and "2 already complete, skipped" in text
    code, text, _ = run_cli([*base, "--caution", "0", "--uncertainty-map"], capsys)
    assert code == 0 and "colorized 2 of 2" in text and "skipped" not in text
    with Image.open(out / "a.png") as colored:
        assert lab(colored)[1][LIGHT].min() > 8
    code, text, _ = run_cli([*base, "--caution", "0"], capsys)  # the map is not needed now
    assert "2 already complete" in text
    code, text, _ = run_cli(base, capsys)  # no --caution: the model's 0.25, not 0
    assert "colorized 2 of 2" in text and "skipped" not in text


def test_the_pipeline_writes_the_maps_that_colorizing_one_picture_gives(
    colorizer: Colorizer, tmp_path: Path
) -> None:
    (tmp_path / "in").mkdir()
    for i, size in enumerate([(64, 40), (40, 64), (64, 40)]):
        split_image(size).save(tmp_path / "in" / f"{i}.png")
    jobs, _ = plan_jobs([tmp_path / "in"], tmp_path / "pipe", uncertainty_map=True)
    asked = {job.source: Request(caution=0.5) for job in jobs}
    summary = colorize_folder(colorizer, jobs, Output(workers=0), asked)
    assert summary.written == 3 and not summary.failures
    for job in jobs:
        with Image.open(job.source) as image:
            color, guess = colorizer.colorize_with_uncertainty(image, caution=0.5)
        assert job.uncertainty is not None
        assert np.array_equal(pixels(Image.open(job.target)), pixels(color))
        assert np.array_equal(pixels(Image.open(job.uncertainty)), pixels(guess))


def test_a_map_path_holding_someone_elses_file_is_not_replaced(
    colorizer: Colorizer, tmp_path: Path
) -> None:
    split_image().save(tmp_path / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.uncertainty.png").write_bytes(b"mine")
    jobs, _ = plan_jobs([tmp_path / "a.png"], out, uncertainty_map=True)
    summary = colorize_folder(colorizer, jobs, Output(workers=0))
    assert "colorgan did not write it" in summary.failures[0].reason
    assert (out / "a.uncertainty.png").read_bytes() == b"mine"


def test_map_names_never_clash(tmp_path: Path) -> None:
    sources = [(tmp_path / "a.png", Path()), (tmp_path / "a.uncertainty.jpg", Path())]
    jobs = name_outputs(sources, tmp_path / "out", "png", False, uncertainty_map=True)
    written = [path.name for job in jobs for path in job.outputs]
    assert written == [
        "a.png", "a.uncertainty.png", "a.uncertainty_2.png", "a.uncertainty_2.uncertainty.png",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("plain_model", "extra", "message"),
    [
        (False, ["--caution", "1.5"], "--caution must be a number from 0 to 1"),
        (False, ["--caution", "-1"], "got -1"),
        (False, ["--caution", "nan"], "got nan"),
        (False, ["--caution", "abc"], "--caution must be a number from 0 to 1, got 'abc'"),
        (True, ["--caution", "0.5"], "does not predict how sure it is (model.uncertainty=false)"),
        (True, ["--uncertainty-map"], "--uncertainty-map: this model does not predict"),
    ],
)
def test_cli_caution_errors_exit_2_with_one_line(
    checkpoint: Path,
    plain_checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    plain_model: bool,
    extra: list[str],
    message: str,
) -> None:
    split_image().save(tmp_path / "a.png")
    model = plain_checkpoint if plain_model else checkpoint
    args = ["colorize", str(model), str(tmp_path / "a.png"), "--out", str(tmp_path / "out")]
    code, _, err = run_cli([*args, *extra], capsys)
    assert code == 2
    assert len(err) == 1 and err[0].startswith("colorgan: error: ") and message in err[0]
    assert not (tmp_path / "out" / "a.png").exists()


# ---- serve ----


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def answer(response: object) -> Image.Image:
    assert response.status_code == 200, response.text  # type: ignore[attr-defined]
    return Image.open(io.BytesIO(response.content))  # type: ignore[attr-defined]


def test_serve_takes_a_caution_and_gives_the_map(colorizer: Colorizer) -> None:
    client = TestClient(create_app(colorizer))
    info = client.get("/api/info").json()
    assert (info["uncertainty"], info["caution"]) == (True, DEFAULT_CAUTION)
    image = split_image()
    files = {"image": ("a.png", png(image))}
    for caution in (0.0, 1.0):
        result = answer(client.post("/api/colorize", files=files, data={"caution": str(caution)}))
        assert np.array_equal(pixels(result), pixels(colorizer.colorize(image, caution=caution)))
    by_query = answer(client.post("/api/colorize?caution=0", content=png(image)))
    assert np.array_equal(pixels(by_query), pixels(colorizer.colorize(image, caution=0)))
    default = answer(client.post("/api/colorize", content=png(image)))
    assert np.array_equal(pixels(default), pixels(colorizer.colorize(image)))
    guess = answer(client.post("/api/uncertainty", files=files))
    assert guess.mode == "L" and guess.size == SIZE
    assert np.array_equal(
        np.asarray(guess), np.asarray(colorizer.colorize_with_uncertainty(image)[1])
    )


@pytest.mark.parametrize(
    ("query", "caution", "reason"),
    [
        ("", "2", "caution must be a number from 0 to 1"),
        ("", "half", "caution must be a number from 0 to 1, got 'half'"),
        ("?caution=0.5", "0.5", "caution given twice"),
    ],
)
def test_serve_refuses_a_bad_caution(
    colorizer: Colorizer, query: str, caution: str, reason: str
) -> None:
    client = TestClient(create_app(colorizer))
    files = {"image": ("a.png", png(split_image()))}
    response = client.post(f"/api/colorize{query}", files=files, data={"caution": caution})
    assert response.status_code == 400
    assert reason in response.json()["error"]


def test_serve_without_uncertainty_says_so(plain: Colorizer) -> None:
    client = TestClient(create_app(plain))
    info = client.get("/api/info").json()
    assert (info["uncertainty"], info["caution"]) == (False, None)
    files = {"image": ("a.png", png(split_image()))}
    for route, data in (("colorize", {"caution": "0.5"}), ("uncertainty", {})):
        response = client.post(f"/api/{route}", files=files, data=data)
        assert response.status_code == 400
        assert "does not predict how sure it is" in response.json()["error"]
    ok = answer(client.post("/api/colorize", files=files, data={"caution": "0"}))
    assert np.array_equal(pixels(ok), pixels(plain.colorize(split_image())))


# ---- ONNX ----


@pytest.fixture(scope="module")
def onnx_model(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("caution") / "unsure.onnx"
    assert main(["export", str(checkpoint), "--onnx", str(path)]) == 0
    return path


def test_onnx_and_pt_give_the_same_faded_images_and_maps(
    colorizer: Colorizer, onnx_model: Path
) -> None:
    by_onnx = Colorizer.from_checkpoint(onnx_model, device="cpu")
    assert by_onnx.capabilities == Capabilities(False, False, True, DEFAULT_CAUTION)
    images = [split_image(), split_image((33, 61)).convert("LA")]
    for caution in (None, 0.0, 0.6, 1.0):
        for a, b in zip(
            colorizer.colorize_batch(images, request=Request(caution=caution)),
            by_onnx.colorize_batch(images, request=Request(caution=caution)),
            strict=True,
        ):
            assert (a.mode, a.size) == (b.mode, b.size)
            assert np.abs(pixels(a) - pixels(b)).max() <= 1, caution
    maps = [c.colorize_with_uncertainty(images[0], caution=1.0)[1] for c in (colorizer, by_onnx)]
    assert np.abs(pixels(maps[0]) - pixels(maps[1])).max() <= 1


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"colorgan.caution": "2"}, "colorgan.caution='2' (expected a number from 0 to 1)"),
        ({"colorgan.caution": "nan"}, "colorgan.caution='nan'"),
        ({"colorgan.caution": None}, "no colorgan.caution in its metadata"),
        ({"colorgan.uncertainty": "yes"}, "colorgan.uncertainty='yes' (expected true or false)"),
        (
            {"colorgan.uncertainty": None, "colorgan.caution": None},
            "its output has 3 channels but its metadata says colorgan.uncertainty=false",
        ),
    ],
)
def test_bad_caution_metadata_is_one_line(
    onnx_model: Path, tmp_path: Path, changes: dict[str, str | None], message: str
) -> None:
    from tests.test_export import edited_onnx

    path = edited_onnx(onnx_model, tmp_path / "edited.onnx", changes)
    with pytest.raises(OnnxModelError) as caught:
        load_onnx(path, "cpu")
    assert message in str(caught.value) and "\n" not in str(caught.value)
