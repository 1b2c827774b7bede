"""Suggested color points (suggest.py, Colorizer.suggest_points): where the model is unsure,
spread apart, after the points a user gave, each with the model's color there."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from colorgan import Colorizer, Hint
from colorgan.errors import ColorganError
from colorgan.hints import parse_color
from colorgan.suggest import suggest
from tests.conftest import make_tiny_checkpoint, make_uncertainty_checkpoint

SIZE = (64, 40)  # width, height: dark on the left (the model is sure), light on the right


def split_image() -> Image.Image:
    gray = np.full((SIZE[1], SIZE[0]), 40, dtype=np.uint8)
    gray[:, SIZE[0] // 2 :] = 230
    return Image.fromarray(gray)


@pytest.fixture(scope="module")
def unsure(tmp_path_factory: pytest.TempPathFactory) -> Colorizer:
    """A model.uncertainty + model.hints model, unsure where the image is light."""
    path = tmp_path_factory.mktemp("model") / "unsure.pt"
    return Colorizer.from_checkpoint(make_uncertainty_checkpoint(path, hints=True), "cpu")


def test_suggestions_go_where_the_model_is_unsure_and_carry_its_colors(unsure: Colorizer) -> None:
    image = split_image()
    points = unsure.suggest_points(image, 3)
    assert len(points) == 3 and all(isinstance(p, Hint) for p in points)
    assert all(p.x >= SIZE[0] // 2 for p in points), points  # the light half
    assert len({(p.x, p.y) for p in points}) == 3  # not the same place twice
    colored = np.asarray(unsure.colorize(image, caution=0).convert("RGB"), dtype=int)
    for point in points:  # the model's own color at that place, up to rounding and resizing
        here = colored[int(point.y), int(point.x)]
        assert np.abs(here - np.array(parse_color(point.color))).max() <= 3, (point, here)


def test_a_given_point_takes_its_place_out_of_the_suggestions(unsure: Colorizer) -> None:
    image = split_image()
    [first] = unsure.suggest_points(image, 1)
    given = Hint(first.x, first.y, "#3366ff")
    after = unsure.suggest_points(image, 3, hints=[given])
    reach = min(SIZE) / 8
    assert all(math.dist((p.x, p.y), (first.x, first.y)) > reach for p in after), after


def test_without_uncertainty_the_suggestions_spread_over_the_picture(tmp_path: Path) -> None:
    colorizer = Colorizer.from_checkpoint(make_tiny_checkpoint(tmp_path / "t.pt"), "cpu")
    image = Image.new("L", (64, 64), 128)  # one lightness band: only distance keeps them apart
    points = colorizer.suggest_points(image, 4)
    assert len(points) == 4
    closest = min(math.dist((a.x, a.y), (b.x, b.y)) for a in points for b in points if a != b)
    assert closest > 64 / 8, points


def test_nothing_left_to_gain_gives_fewer() -> None:
    l = torch.zeros(1, 1, 16, 16)
    ab = torch.zeros(1, 2, 16, 16)
    assert suggest(l, ab, torch.zeros(1, 1, 16, 16), None, 5, (16, 16)) == []
    unsure = torch.zeros(1, 1, 16, 16)
    unsure[..., 2, 3] = 1.0  # one unsure pixel: one suggestion there, then nothing to gain
    [point] = suggest(l, ab, unsure, None, 5, (32, 32))
    assert (point.x, point.y) == (7, 5)  # pixel (row 2, col 3) of 16 is about (7, 5) of 32


@pytest.mark.parametrize("n", [-1, 101, 2.5, True])
def test_a_bad_count_is_one_line(unsure: Colorizer, n: object) -> None:
    with pytest.raises(ColorganError, match="n must be a whole number from 0 to 100"):
        unsure.suggest_points(split_image(), n)  # type: ignore[arg-type]
    assert unsure.suggest_points(split_image(), 0) == []


# ---- colorize --suggest N


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, list[str]]:
    from colorgan.cli import main

    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err.splitlines()


def test_cli_writes_suggestions_a_user_can_give_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from colorgan.hints import load_hints

    model = make_uncertainty_checkpoint(tmp_path / "m.pt", hints=True)
    split_image().save(tmp_path / "a.png")
    out = tmp_path / "out"
    base = ["colorize", str(model), str(tmp_path / "a.png"), "--out", str(out), "--workers", "0"]
    code, _, err = _run([*base, "--suggest", "3"], capsys)
    assert code == 0 and err == []
    points = load_hints(out / "a.suggest.json")  # the hints-file format
    alone = Colorizer.from_checkpoint(model, "cpu").suggest_points(split_image(), 3)
    assert [(p.x, p.y) for p in points] == [(p.x, p.y) for p in alone]
    code, text, _ = _run([*base, "--suggest", "3"], capsys)
    assert code == 0 and "1 already complete" in text
    code, text, _ = _run([*base, "--suggest", "2"], capsys)  # another count: done again
    assert code == 0 and "colorized 1 of 1" in text and len(load_hints(out / "a.suggest.json")) == 2
    given = ["--hints", str(out / "a.suggest.json"), "--out", str(tmp_path / "again")]
    code, _, err = _run([*base[:3], *given, "--workers", "0"], capsys)  # the points given back
    assert code == 0 and err == []


def test_cli_never_replaces_someone_elses_suggest_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = make_uncertainty_checkpoint(tmp_path / "m.pt", hints=True)
    split_image().save(tmp_path / "a.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.suggest.json").write_text("my notes")
    args = ["colorize", str(model), str(tmp_path / "a.png"), "--out", str(out), "--suggest", "2"]
    code, _, err = _run(args, capsys)
    assert code == 1 and "a.suggest.json exists and colorgan did not write it" in err[0]
    assert (out / "a.suggest.json").read_text() == "my notes"
    code, _, err = _run([*args, "--suggest", "101"], capsys)
    assert code == 2 and "--suggest must be from 0 to 100" in err[0]


# ---- POST /api/suggest


def test_the_web_api_suggests_what_the_python_api_does(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    from colorgan.serve import create_app

    model = make_uncertainty_checkpoint(tmp_path / "m.pt", hints=True)
    colorizer = Colorizer.from_checkpoint(model, "cpu", batch_size=1)
    client = TestClient(create_app(colorizer))
    buffer = io.BytesIO()
    split_image().save(buffer, format="PNG")
    given = '[{"x": 50, "y": 10, "color": "#3366ff"}]'
    files = {"image": ("a.png", buffer.getvalue())}
    response = client.post("/api/suggest?n=3", files=files, data={"hints": given})
    assert response.status_code == 200, response.text
    points = response.json()["points"]
    expected = colorizer.suggest_points(split_image(), 3, hints=[Hint(50, 10, "#3366ff")])
    assert [(p["x"], p["y"]) for p in points] == [(p.x, p.y) for p in expected]
    assert all(set(p) == {"x", "y", "color"} for p in points)  # a hints file's entries
    assert len(client.post("/api/suggest", files=files).json()["points"]) == 5  # the default
    refused = client.post("/api/suggest?n=1000", files=files)
    assert refused.status_code == 400 and "n must be a whole number" in refused.json()["error"]


# ---- evaluate --hint-placement suggested


def test_suggested_test_points_follow_the_suggestions_with_the_truths_colors(
    tmp_path: Path,
) -> None:
    from colorgan.batch import to_batch
    from colorgan.checkpoint import load_generator
    from colorgan.evaluate import Scoring, _suggested_maps
    from tests.conftest import make_color_image

    generator, _ = load_generator(make_uncertainty_checkpoint(tmp_path / "m.pt", hints=True))
    crops = [np.array(make_color_image(i, (32, 32))) for i in (1, 2)]  # writable copies
    rgb = torch.stack([torch.from_numpy(crop).permute(2, 0, 1) for crop in crops])
    maps = _suggested_maps(generator.eval(), rgb, 3, Scoring(32, torch.device("cpu")), None)
    truth = to_batch(rgb, torch.device("cpu")).ab_real
    for count, hint_map in enumerate(maps):  # k points after k steps, each the truth's color
        placed = hint_map[:, 2] > 0
        assert placed.flatten(1).sum(1).tolist() == [count, count]
        assert torch.allclose(hint_map[:, :2][placed.unsqueeze(1).expand(-1, 2, -1, -1)],
                              truth[placed.unsqueeze(1).expand(-1, 2, -1, -1)])  # fmt: skip
    assert torch.equal(maps[2][:, 2] > 0, (maps[2][:, 2] > 0) & (maps[3][:, 2] > 0))  # kept


def test_evaluate_records_the_placement(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from colorgan.cli import main
    from tests.conftest import write_color_folder

    model = make_uncertainty_checkpoint(tmp_path / "m.pt", hints=True)
    data = write_color_folder(tmp_path / "data", 4, size=(32, 32))
    results = {}
    for placement in ("random", "suggested"):
        out = tmp_path / f"{placement}.json"
        args = ["evaluate", str(model), "--data", str(data), "--hints", "0,2", "--quiet"]
        assert main([*args, "--hint-placement", placement, "--json", str(out)]) == 0
        results[placement] = json.loads(out.read_text())
        assert results[placement]["hint_placement"] == placement
    random, suggested = results["random"]["by_hints"], results["suggested"]["by_hints"]
    assert random["0"] == suggested["0"]  # no points: the same
    assert random["2"]["delta_e"] != suggested["2"]["delta_e"]  # the points went elsewhere
    with pytest.raises(SystemExit) as refused:  # argparse's usage error
        main([*args, "--hint-placement", "best"])
    assert refused.value.code == 2
