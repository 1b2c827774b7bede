"""Color points (model.hints): parsing, the hint map, the simulated user, both generators, the
Colorizer API, the CLI (--hints FILE|DIR), ONNX, evaluate --hints and training with resume."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from colorgan import Colorizer, Hint
from colorgan.batch import split_output
from colorgan.cli import main
from colorgan.config import load_config
from colorgan.errors import ColorganError
from colorgan.generator import Generator, Lite0UNet
from colorgan.hints import (
    HintError,
    HintSpread,
    draw_count,
    eval_points,
    hints_from_json,
    load_hints,
    parse_color,
    render,
    simulate,
)
from colorgan.models import build_generator
from tests.conftest import (
    make_hint_checkpoint,
    make_tiny_checkpoint,
    train_and_resume,
    write_color_folder,
)

BLUE = "#0000ff"


def test_colors_parse_and_bad_ones_are_named() -> None:
    assert parse_color("#3366ff") == (0x33, 0x66, 0xFF)
    assert parse_color("#36f") == (0x33, 0x66, 0xFF)
    assert parse_color([10, 20, 30]) == (10, 20, 30)
    for bad in ("#12345", "blue", [1, 2], [0, 0, 256], (True, 0, 0)):
        with pytest.raises(HintError, match="is not"):
            parse_color(bad)


def test_hints_json_errors_name_the_file_and_the_entry(tmp_path: Path) -> None:
    good = [{"x": 1, "y": 2, "color": "#ff0000"}, {"x": 3, "y": 4, "color": BLUE, "radius": 2}]
    assert hints_from_json(good, "f.json")[1] == Hint(3.0, 4.0, (0, 0, 255), 2.0)
    cases = [
        ({"x": 1}, "expected a JSON list"),
        ([{"x": 1, "y": 2}], "point 0: expected an object with x, y and color"),
        ([good[0], {"x": "a", "y": 2, "color": BLUE}], "point 1: 'x' must be a number"),
        ([{"x": 1, "y": 2, "color": "#zzzzzz"}], "point 0: color"),
        ([{"x": 1, "y": 2, "color": BLUE, "size": 3}], "point 0: unknown key 'size'"),
    ]
    for data, fragment in cases:
        with pytest.raises(HintError, match=fragment):
            hints_from_json(data, "f.json")
    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    with pytest.raises(HintError, match=f"{broken}: not valid JSON"):
        load_hints(broken)


def test_render_scales_points_to_the_working_size() -> None:
    hint_map = render([Hint(50, 10, BLUE, radius=10)], (40, 100), (32, 64))  # H, W
    mask = hint_map[2] > 0
    rows, cols = mask.nonzero(as_tuple=True)
    assert abs(float(cols.float().mean()) - 50 * 64 / 100) <= 1  # x scaled by w / W
    assert abs(float(rows.float().mean()) - 10 * 32 / 40) <= 1  # y scaled by h / H
    a, b = Hint(0, 0, BLUE).ab()
    assert b < -0.5 and torch.allclose(hint_map[:2, mask], torch.tensor([[a], [b]]))
    assert not hint_map[:, ~mask].any()  # nothing outside the point
    with pytest.raises(HintError, match=r"point 1 at \(100, 0\) is outside the 100x40 image"):
        render([Hint(5, 5, BLUE), Hint(100, 0, BLUE)], (40, 100), (32, 64))


def test_simulated_user_matches_zhang_et_al() -> None:
    gen = torch.Generator().manual_seed(0)
    counts = [draw_count(0.125, gen) for _ in range(4000)]
    assert 0.10 <= counts.count(0) / len(counts) <= 0.15  # P(no points) = 1/8
    assert 6.4 <= statistics.mean(counts) <= 7.6  # 7 on average
    ab = torch.rand(2, 64, 64) * 2 - 1
    for seed in range(50):
        hint_map = simulate(ab, 0.125, 9, torch.Generator().manual_seed(seed))
        count = draw_count(0.125, torch.Generator().manual_seed(seed))  # the same first draw
        mask = hint_map[2] > 0
        assert int(mask.sum()) <= count * 2 * 2  # squares of 1-2 px at 64 px (9 at 256)
        assert bool(mask.any()) == (count > 0)
    again = simulate(ab, 0.125, 9, torch.Generator().manual_seed(5))
    assert torch.equal(again, simulate(ab, 0.125, 9, torch.Generator().manual_seed(5)))


def test_eval_points_are_nested_and_hold_the_truths_mean() -> None:
    ab = torch.zeros(2, 64, 64)
    ab[0, :, 32:] = 0.5  # right half colored
    two, five = eval_points(ab, 2, seed=7), eval_points(ab, 5, seed=7)
    assert torch.equal(two[2] > 0, (two[2] > 0) & (five[2] > 0))  # 5 points = those 2 + 3 more
    mask = five[2] > 0
    assert set(five[0, mask].unique().tolist()) <= {0.0, 0.25, 0.5}  # means over the patches


@pytest.mark.parametrize("encoder", ["unet", "efficientnet_lite0"])
def test_both_generators_take_hints_and_zero_hints_mean_none(encoder: str) -> None:
    depth = 5 if encoder == "efficientnet_lite0" else 3
    model = load_config(None, [f"model.encoder={encoder}", f"model.depth={depth}",
                               "model.hints=true", "model.base_channels=8"]).model  # fmt: skip
    torch.manual_seed(0)
    generator = build_generator(model, pretrained=False).eval()
    l = torch.rand(2, 1, 32, 32) * 2 - 1
    hints = torch.zeros(2, 3, 32, 32)
    hints[:, :2, 8:12, 8:12], hints[:, 2, 8:12, 8:12] = 0.5, 1.0
    with torch.no_grad():
        plain, zeros, hinted = (
            generator(l),
            generator(l, torch.zeros_like(hints)),
            generator(l, hints),
        )
    assert torch.equal(plain, zeros)  # no points is the zero map: automatic colorization
    assert not torch.equal(plain, hinted)
    without = build_generator(load_config(None, [f"model.encoder={encoder}",
                                                 f"model.depth={depth}"]).model)  # fmt: skip
    with pytest.raises(ValueError, match=r"without model\.hints"):
        without(l, hints)


def _spread_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A 64x64 case: the generator's ab (a constant), flat L, one 2x2 point at (20, 20)."""
    ab = torch.full((1, 2, 64, 64), -0.1)
    l = torch.zeros(1, 1, 64, 64)
    hint_map = torch.zeros(1, 3, 64, 64)
    hint_map[:, 0, 20:22, 20:22], hint_map[:, 1, 20:22, 20:22] = 0.4, -0.3
    hint_map[:, 2, 20:22, 20:22] = 1.0
    return ab, l, hint_map


def test_hint_spread_without_points_is_the_generators_ab_exactly() -> None:
    ab, l, _ = _spread_case()
    ab = ab + torch.rand_like(ab) * 0.5
    with torch.no_grad():
        assert torch.equal(HintSpread()(ab, l, torch.zeros(1, 3, 64, 64)), ab)


def test_hint_spread_colors_around_a_point_and_nothing_beyond_its_reach() -> None:
    ab, l, hint_map = _spread_case()
    with torch.no_grad():
        out = HintSpread()(ab, l, hint_map)
    point = torch.tensor([0.4, -0.3])
    assert torch.allclose(out[0, :, 20, 20], point, atol=0.02)  # the point's own pixels
    near = out[0, :, 20, 26]  # 5 px away: moved toward the point's color
    assert (near - point).abs().sum() < 0.7 * (ab[0, :, 0, 0] - point).abs().sum()
    reach = 64 // 2  # the widest box's half-width: half the shorter side
    far = out[0, :, 21 + reach + 1 :, :]
    assert torch.equal(far, ab[0, :, 21 + reach + 1 :, :])  # beyond it: unchanged


def test_hint_spread_prefers_pixels_as_light_as_the_point() -> None:
    ab, l, hint_map = _spread_case()
    l[:, :, :, 32:] = 0.8  # the right half is much lighter than the point (at L 0)
    hint_map[:, :2, 20:22, 28:30], hint_map[:, 2, 20:22, 28:30] = 0.4, -0.3  # at 28-29 too
    with torch.no_grad():
        out = HintSpread()(ab, l, hint_map)
    moved = (out - ab).abs().sum(dim=1)[0]
    assert moved[20, 31] > 4 * moved[20, 33]  # same distance from the points, other lightness


def test_hint_spread_keeps_points_of_other_lightness_in_the_same_box_apart() -> None:
    """Dark hair and light skin side by side, a point on each, 8 px apart: a hair pixel 12 px
    below moves toward the hair point's color, not toward the mean of the two (the
    lightness-matched box); a skin pixel toward the skin point's."""
    ab, l, hint_map = _spread_case()  # the hair point: (0.4, -0.3) at rows 20-21, cols 20-21
    l[:, :, :, 26:] = 0.8  # skin from column 26 on
    hint_map[:, 0, 20:22, 28:30], hint_map[:, 1, 20:22, 28:30] = -0.4, 0.5
    hint_map[:, 2, 20:22, 28:30] = 1.0
    with torch.no_grad():
        out = HintSpread()(ab, l, hint_map)
    hair, skin = torch.tensor([0.4, -0.3]), torch.tensor([-0.4, 0.5])
    generator = ab[0, :, 0, 0]
    for pixel, own in ((out[0, :, 33, 22], hair), (out[0, :, 33, 28], skin)):
        moved, toward = pixel - generator, own - generator
        assert moved.norm() > 0.2 * toward.norm()  # it moved
        assert torch.dot(moved, toward) > 0.95 * moved.norm() * toward.norm()  # to its point


def test_hint_spread_recomputed_in_backward_gives_the_same_gradients() -> None:
    """In training HintSpread keeps no tensors for backward and recomputes them (memory at
    512 px): its output and every gradient are those of the plain forward."""
    ab, l, hint_map = _spread_case()
    spread = HintSpread().train()
    with torch.no_grad():
        spread.net[2].weight.normal_(0.0, 0.3)  # a trained-looking MLP, not the zero start
    results = []
    for forward in (spread, spread._spread):  # checkpointed in training, then the plain one
        spread.zero_grad()
        given = (ab + 0.1).requires_grad_(True)
        out = forward(given, l, hint_map)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads = [p.grad.clone() for p in spread.parameters() if p.grad is not None]
        results.append((out.detach(), given.grad, grads))
    (out_a, ab_a, grads_a), (out_b, ab_b, grads_b) = results
    assert torch.equal(out_a, out_b) and torch.equal(ab_a, ab_b) and len(grads_a) == 4
    assert all(torch.equal(a, b) for a, b in zip(grads_a, grads_b, strict=True))
    assert grads_a[0].abs().sum() > 0  # the MLP did get a gradient


def test_hint_generators_give_their_own_ab_beside_in_training_only() -> None:
    """In training a model.hints generator also gives its ab before the spread, for
    g_l1_own; in eval (colorize, evaluate, export) only the spread ab."""
    generator = Generator(8, 3, hints=True)
    _, _, hint_map = _spread_case()
    l = torch.rand(1, 1, 64, 64) * 2 - 1
    with torch.no_grad():
        trained = split_output(generator.train()(l, hint_map))
        used = split_output(generator.eval()(l, hint_map))
    assert trained.own is not None and used.own is None
    assert trained.ab.shape == trained.own.shape == used.ab.shape == (1, 2, 64, 64)
    assert not torch.equal(trained.ab, trained.own)  # the point moved the spread ab only
    assert torch.equal(trained.own[:, :, 60:], trained.ab[:, :, 60:])  # beyond its reach


def test_lite0_hint_branch_leaves_the_imagenet_features_unchanged() -> None:
    generator = Lite0UNet(base_channels=8, hints=True).eval()
    rgb = torch.rand(1, 3, 32, 32)
    hints = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        alone = generator.encoder.features(rgb)
        joined = generator.encoder.features(rgb, stem_add=generator.hint_stem(hints))
    assert all(torch.equal(a, b) for a, b in zip(alone, joined, strict=True))
    assert isinstance(Generator(8, 3, hints=True).down[0][0], torch.nn.Conv2d)


def test_colorizer_puts_a_point_where_it_is_given(tmp_path: Path) -> None:
    colorizer = Colorizer.from_checkpoint(make_hint_checkpoint(tmp_path / "h.pt"), "cpu")
    image = Image.new("L", (96, 64), 140)
    plain = np.asarray(colorizer.colorize(image), dtype=int)
    hinted = np.asarray(colorizer.colorize(image, hints=[Hint(30, 20, BLUE, radius=3)]), dtype=int)
    r, g, b = hinted[20, 30]
    assert b > r + 40 and b > g + 40  # blue at the point
    assert np.array_equal(hinted[50:, 70:], plain[50:, 70:])  # far away: unchanged
    with pytest.raises(HintError, match="outside the 96x64 image"):
        colorizer.colorize(image, hints=[Hint(96, 0, BLUE)])


def test_a_model_without_hints_refuses_them_in_one_line(tmp_path: Path) -> None:
    colorizer = Colorizer.from_checkpoint(make_tiny_checkpoint(tmp_path / "t.pt"), "cpu")
    assert not colorizer.capabilities.hints
    with pytest.raises(ColorganError, match="trained without color points"):
        colorizer.colorize(Image.new("L", (32, 32)), hints=[Hint(1, 1, BLUE)])
    colorizer.colorize(Image.new("L", (32, 32)), hints=[])  # no points: as today


def test_cli_hints_file_and_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = make_hint_checkpoint(tmp_path / "h.pt")
    images = tmp_path / "in"
    (images / "a").mkdir(parents=True)
    for name in ("a/one.png", "two.png"):
        Image.new("L", (64, 48), 120).save(images / name)
    hints = tmp_path / "hints"
    (hints / "a").mkdir(parents=True)
    (hints / "a" / "one.json").write_text(json.dumps([{"x": 10, "y": 10, "color": BLUE}]))
    out = tmp_path / "out"
    assert main(["colorize", str(model), str(images), "--hints", str(hints), "--out", str(out),
                 "--quiet"]) == 0  # fmt: skip
    one = np.asarray(Image.open(out / "a" / "one.png"), dtype=int)
    two = np.asarray(Image.open(out / "two.png"), dtype=int)
    assert one[10, 10, 2] > one[10, 10, 0] + 40  # the hinted image is blue at its point
    assert abs(two[10, 10, 2] - two[10, 10, 0]) < 20  # the other got no points
    single = tmp_path / "one.json"
    single.write_text(json.dumps([{"x": 5, "y": 5, "color": "#ff0000"}]))
    assert main(["colorize", str(model), str(images / "two.png"), "--hints", str(single),
                 "--out", str(tmp_path / "o2"), "--quiet"]) == 0  # fmt: skip
    red = np.asarray(Image.open(tmp_path / "o2" / "two.png"), dtype=int)
    assert red[5, 5, 0] > red[5, 5, 2] + 40
    single.write_text(json.dumps([{"x": 5, "y": 5, "color": "#ff00"}]))
    capsys.readouterr()
    code = main(["colorize", str(model), str(images), "--hints", str(single), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and f"{single}: point 0: color" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_onnx_with_hints_matches_pytorch_within_one_level(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    model = make_hint_checkpoint(tmp_path / "h.pt", encoder="unet")
    onnx_path = tmp_path / "h.onnx"
    assert main(["export", str(model), "--onnx", str(onnx_path)]) == 0
    image = Image.new("RGB", (80, 56), (90, 120, 150))
    points = [Hint(20, 20, BLUE), Hint(60, 40, "#ffcc00", radius=4)]
    by_pt = np.asarray(Colorizer.from_checkpoint(model, "cpu").colorize(image, hints=points))
    onnx = Colorizer.from_checkpoint(onnx_path, "cpu")
    assert onnx.capabilities.hints
    by_onnx = np.asarray(onnx.colorize(image, hints=points))
    assert np.abs(by_pt.astype(int) - by_onnx.astype(int)).max() <= 1


def test_evaluate_by_hints(tmp_path: Path) -> None:
    data = write_color_folder(tmp_path / "data", 6, size=(40, 40))
    out = tmp_path / "e.json"
    model = make_hint_checkpoint(tmp_path / "h.pt")
    assert main(["evaluate", str(model), "--data", str(data), "--hints", "0,2,5",
                 "--json", str(out), "--quiet"]) == 0  # fmt: skip
    result = json.loads(out.read_text())
    assert list(result["by_hints"]) == ["0", "2", "5"]
    assert result["by_hints"]["0"]["hint_fidelity"] is None
    assert result["by_hints"]["0"]["delta_e"] == pytest.approx(result["delta_e"])
    for count in ("2", "5"):
        row = result["by_hints"][count]
        assert {"psnr", "ssim", "delta_e", "colorfulness", "hint_fidelity"} <= row.keys()
        assert row["hint_fidelity"] > 0
    again = tmp_path / "again.json"  # fixed test points: the same numbers on a second run
    assert main(["evaluate", str(model), "--data", str(data), "--hints", "0,2,5",
                 "--json", str(again), "--quiet"]) == 0  # fmt: skip
    assert json.loads(again.read_text())["by_hints"] == result["by_hints"]
    plain = make_tiny_checkpoint(tmp_path / "t.pt")
    assert main(["evaluate", str(plain), "--data", str(data), "--hints", "2"]) == 2
    assert main(["evaluate", str(model), "--data", str(data), "--hints", "two"]) == 2


def test_training_with_hints_resumes_exactly(tmp_path: Path) -> None:
    """The simulated points are drawn per sample from the crop's seed: a resumed run sees the
    same points, so it ends with the same weights."""
    a, _ = train_and_resume(
        tmp_path, "--set", "model.hints=true", "--set", "loss.perceptual_weight=0"
    )
    assert a["config"]["model"]["hints"] is True
    rows = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").open()]
    assert all(row["g_l1_own"] > 0 for row in rows)  # the generator's own ab is trained too
