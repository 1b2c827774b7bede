"""A reference image's colors (model.reference): the summary and palette, training's simulated
reference, both generators' zero-initialised FiLM, training with resume, the Colorizer API, ONNX
and evaluate --reference."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from colorgan import Colorizer, evaluate
from colorgan.checkpoint import load_generator, save_checkpoint
from colorgan.cli import main
from colorgan.color import rgb_to_l_ab, uint8_to_float
from colorgan.config import load_config
from colorgan.data import ColorImages
from colorgan.errors import ColorganError
from colorgan.files import find_images
from colorgan.generator import Generator, Lite0UNet
from colorgan.models import build_generator
from colorgan.protocols import protocol
from colorgan.reference import (
    GATE_START,
    REFERENCE_BINS,
    REFERENCE_CHANNELS,
    ReferenceImageError,
    from_image,
    palette,
    simulate,
    summarize,
)
from colorgan.request import NOTHING, Reference, Request
from tests.conftest import (
    make_color_image,
    make_reference_checkpoint,
    make_tiny_checkpoint,
    train_and_resume,
    write_color_folder,
)

RED, BLUE = (200, 30, 30), (30, 60, 200)


def _cell(a: float, b: float) -> int:
    """The histogram cell of one ab value (ab / 110 in [-1, 1])."""
    return int((a + 1) * REFERENCE_BINS / 2) * REFERENCE_BINS + int((b + 1) * REFERENCE_BINS / 2)


def _ab_of(rgb: tuple[int, int, int]) -> tuple[float, float]:
    pixel = torch.tensor(rgb, dtype=torch.uint8).view(1, 3, 1, 1)
    ab = rgb_to_l_ab(uint8_to_float(pixel))[1]
    return float(ab[0, 0, 0, 0]), float(ab[0, 1, 0, 0])


def _crop_ab(rgb: torch.Tensor) -> torch.Tensor:
    """uint8 (3, S, S) -> its ab (2, S, S), as data.ColorImages computes it."""
    return rgb_to_l_ab(uint8_to_float(rgb[None]))[1][0]


def _cells_of(summary: torch.Tensor) -> set[int]:
    return set(summary[:-1].nonzero().flatten().tolist())


# ---------------------------------------------------------------- the summary and the palette


def test_summary_rows_are_shares_with_the_flag_and_one_color_fills_its_cell() -> None:
    ab = torch.rand(3, 2, 20, 24, generator=torch.Generator().manual_seed(0)) * 2.4 - 1.2
    summary = summarize(ab)  # values beyond [-1, 1] are clamped into the edge cells
    assert summary.shape == (3, REFERENCE_CHANNELS) == (3, REFERENCE_BINS**2 + 1)
    assert torch.allclose(summary[:, :-1].sum(dim=1), torch.ones(3))
    assert (summary[:, :-1] >= 0).all() and torch.equal(summary[:, -1], torch.ones(3))
    assert len(_cells_of(summary[0])) > 20  # random colors spread over many cells
    constant = torch.empty(1, 2, 8, 8)
    constant[:, 0], constant[:, 1] = 0.3, -0.5
    assert summarize(constant)[0, _cell(0.3, -0.5)] == 1.0
    image = Image.new("RGB", (40, 30), RED)
    summary = from_image(image)[0]
    assert summary.shape == (REFERENCE_CHANNELS,) and summary[-1] == 1.0
    assert summary[_cell(*_ab_of(RED))] == 1.0 and _cells_of(summary) == {_cell(*_ab_of(RED))}


def test_from_image_takes_any_mode_and_flattens_alpha_onto_white() -> None:
    picture = make_color_image(3, (48, 40))
    expected = from_image(picture)
    white = from_image(Image.new("RGB", (20, 20), (255, 255, 255)))
    assert not torch.equal(expected, white)
    assert torch.equal(from_image(picture.convert("RGBA")), expected)  # opaque: the same colors
    clear = Image.new("RGBA", (20, 20), (*RED, 0))  # red, but fully transparent: white
    assert torch.equal(from_image(clear), white)
    gray = picture.convert("L")
    assert torch.equal(from_image(gray), from_image(gray.convert("RGB")))
    assert from_image(gray)[0, -1] == 1.0 and from_image(gray.convert("LA")).shape == (1, 257)
    indexed = picture.convert("P")
    assert torch.equal(from_image(indexed), from_image(indexed.convert("RGB")))
    transparent = Image.new("P", (20, 20), 0)
    transparent.putpalette([*RED, *BLUE])
    transparent.info["transparency"] = 0  # index 0 (every pixel) is transparent
    assert torch.equal(from_image(transparent), white)
    for summary in (expected, from_image(indexed), from_image(gray)):
        assert float(summary[0, :-1].sum()) == pytest.approx(1.0)


def test_palette_gives_the_dominant_colors_and_their_shares() -> None:
    image = Image.new("RGB", (300, 120), BLUE)  # thumbnailed to 256 px: edges blend a little
    image.paste(Image.new("RGB", (225, 120), RED))  # 3/4 red, 1/4 blue
    colors = palette(image)
    assert 2 <= len(colors) <= 8
    (first, share_1), (second, share_2) = colors[:2]
    assert share_1 == pytest.approx(0.75, abs=0.03) and share_2 == pytest.approx(0.25, abs=0.03)
    for hex_color, rgb in ((first, RED), (second, BLUE)):
        got = tuple(int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
        assert max(abs(g - e) for g, e in zip(got, rgb, strict=True)) <= 3, (hex_color, rgb)
    assert sum(share for _, share in colors) <= 1.0 + 1e-9
    assert [share for _, share in colors] == sorted((s for _, s in colors), reverse=True)
    assert palette(image, count=1) == colors[:1]
    assert palette(Image.new("RGB", (10, 10), RED)) == [("#c81e1e", 1.0)]


# ---------------------------------------------------------------- training's reference


def _halves() -> torch.Tensor:
    """ab (2, 32, 32): the left half one color, the right half another."""
    ab = torch.zeros(2, 32, 32)
    ab[0, :, :16], ab[0, :, 16:] = 0.5, -0.5
    return ab


def test_simulated_reference_is_seeded_dropped_or_a_random_part() -> None:
    ab = _halves()
    whole = summarize(ab[None])[0]
    assert whole[_cell(0.5, 0.0)] == whole[_cell(-0.5, 0.0)] == 0.5

    def draw(seed: int, drop: float = 0.0, side: float = 0.5) -> torch.Tensor:
        return simulate(ab, drop, side, torch.Generator().manual_seed(seed))

    assert torch.equal(draw(3), draw(3))
    seeded = [draw(seed, drop=0.5) for seed in range(50)]
    assert all(torch.equal(a, draw(seed, 0.5)) for seed, a in enumerate(seeded))  # the drop too
    assert torch.equal(draw(0, drop=1.0), torch.zeros(REFERENCE_CHANNELS))
    draws = [draw(seed) for seed in range(40)]
    for summary in draws:
        assert summary.shape == (REFERENCE_CHANNELS,) and summary[-1] == 1.0
        assert float(summary[:-1].sum()) == pytest.approx(1.0)
        assert _cells_of(summary) <= _cells_of(whole)  # a part of the image's own colors
    assert any(not torch.equal(s, whole) for s in draws)  # a crop: shares unlike the whole's
    assert any(not torch.equal(s, draws[0]) for s in draws)
    assert torch.equal(draw(5, side=1.0), whole)  # the smallest crop the whole image: itself
    dropped = sum(float(draw(seed, drop=0.5).abs().sum()) == 0.0 for seed in range(200))
    assert 70 <= dropped <= 130  # about half


def test_simulated_reference_crops_anywhere_in_the_image() -> None:
    ab = torch.zeros(2, 32, 32)  # four quadrants, four colors
    ab[0, :16], ab[0, 16:], ab[1, :, :16], ab[1, :, 16:] = 0.5, -0.5, 0.3, -0.3
    quadrants = {_cell(a, b) for a in (0.5, -0.5) for b in (0.3, -0.3)}
    seen = [
        _cells_of(simulate(ab, 0.0, 0.25, torch.Generator().manual_seed(s))) for s in range(300)
    ]
    assert all(cells and cells <= quadrants for cells in seen)
    for quadrant in quadrants:  # each corner is left out by some crop, and is alone in one
        assert any(quadrant not in cells for cells in seen)
        assert {quadrant} in seen


# ---------------------------------------------------------------- the generators

BUILDS: dict[str, Callable[[bool], nn.Module]] = {
    "unet": lambda reference: Generator(8, 3, reference=reference),
    "lite0": lambda reference: Lite0UNet(8, reference=reference),
    "lite0_stride2": lambda reference: Lite0UNet(8, output_stride=2, reference=reference),
    "lite0_stride4": lambda reference: Lite0UNet(8, output_stride=4, reference=reference),
}


def _references() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    first = summarize(torch.rand(2, 2, 16, 16, generator=gen) * 1.2 - 0.6)
    second = summarize(torch.rand(2, 2, 16, 16, generator=gen) * 0.4 + 0.2)
    return first, second


@pytest.mark.parametrize("name", list(BUILDS))
def test_a_fresh_reference_generator_ignores_the_reference_until_trained(name: str) -> None:
    torch.manual_seed(0)
    generator = BUILDS[name](True).eval()
    assert generator.reference is not None and generator.palette is not None
    l = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    reference, other = _references()
    zeros = torch.zeros(2, REFERENCE_CHANNELS)
    unflagged = reference.clone()
    unflagged[:, -1] = 0.0  # a histogram without the "given" flag: no reference
    with torch.no_grad():
        plain = generator(l)
        assert plain.shape == (2, 2, 32, 32)
        # the palette's gate starts at sigmoid(GATE_START): a small step toward the reference
        start = generator(l, reference=reference)
        assert 0 < (start - plain).abs().max() <= 2 * torch.sigmoid(torch.tensor(GATE_START))
        generator.palette.gate.bias.fill_(-1e4)  # gate shut: the FiLM alone, zero-initialised
        assert torch.equal(generator(l, reference=reference), plain)
        for layer in generator.reference.out:
            nn.init.normal_(layer.weight, 0.0, 1.0)
            nn.init.normal_(layer.bias, 0.0, 0.5)
        assert torch.equal(generator(l), plain)
        assert torch.equal(generator(l, reference=zeros), plain)
        assert torch.equal(generator(l, reference=unflagged), plain)
        given = generator(l, reference=reference)
        assert (given - plain).abs().max() > 1e-3
        assert (generator(l, reference=other) - given).abs().max() > 1e-3  # its colors matter
        mixed = generator(l, reference=torch.stack([reference[0], zeros[1]]))
        assert torch.equal(mixed[1], plain[1]) and torch.equal(mixed[0], given[0])  # per image


@pytest.mark.parametrize("name", list(BUILDS))
def test_a_generator_without_reference_refuses_one(name: str) -> None:
    generator = BUILDS[name](False).eval()
    assert generator.reference is None
    with pytest.raises(ValueError, match=r"without model\.reference"):
        generator(torch.zeros(1, 1, 32, 32), reference=torch.zeros(1, REFERENCE_CHANNELS))


@pytest.mark.parametrize(
    "settings",
    [
        ["model.encoder=unet", "model.depth=3"],
        ["model.encoder=efficientnet_lite0", "model.depth=5"],
        ["model.encoder=efficientnet_lite0", "model.depth=5", "model.output_stride=2"],
    ],
)
def test_building_the_film_leaves_the_other_weights_and_the_global_rng(
    settings: list[str],
) -> None:
    def build(reference: bool) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        config = load_config(None, [*settings, "model.base_channels=8",  # the palette alone
                                    f"model.reference={str(reference).lower()}",
                                    "model.reference_match=false"])  # fmt: skip
        torch.manual_seed(7)
        generator = build_generator(config.model, pretrained=False)
        assert (generator.reference is not None) == reference
        return generator.state_dict(), torch.rand(8)

    without, after_without = build(False)
    with_film, after_with = build(True)
    assert torch.equal(after_with, after_without)  # what is drawn next is what it was
    extra = set(with_film) - set(without)
    assert extra and all(key.startswith(("reference.", "palette.")) for key in extra)
    assert set(without) <= set(with_film)
    for key, value in without.items():
        assert torch.equal(value, with_film[key]), key
    for key in extra:
        if key.startswith("reference.out.") or key == "palette.gate.weight":
            assert not with_film[key].any(), key  # zero-initialised


@pytest.mark.parametrize("name", list(BUILDS))
def test_the_palette_head_picks_the_only_color_a_reference_has(name: str) -> None:
    # a reference of one color (all its pixels in one cell) and the gate wide open: every
    # pixel gets that cell's center, whatever the generator would have painted
    torch.manual_seed(0)
    generator = BUILDS[name](True).eval()
    assert generator.palette is not None
    color = torch.tensor([0.40, -0.30])  # ab / 110
    one = summarize(color.view(1, 2, 1, 1).expand(2, 2, 8, 8))
    cell = int(one[0, :-1].argmax())
    center = generator.palette.centers[cell]
    assert (center - color).abs().max() <= 1.0 / REFERENCE_BINS  # half a cell's width
    l = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.no_grad():
        generator.palette.gate.bias.fill_(1e4)
        picked = generator(l, reference=one)
        plain = generator(l)
    assert torch.allclose(picked, center.view(1, 2, 1, 1).expand_as(picked), atol=1e-3)
    assert (plain - picked).abs().max() > 0.1  # not what it paints on its own


# ---------------------------------------------------------------- training


def test_training_with_reference_moves_the_film_and_resumes_exactly(tmp_path: Path) -> None:
    """The simulated reference is drawn per sample from the crop's seed: a resumed run sees the
    same references, so it ends with the same weights."""
    settings = ["--set", "model.reference=true", "--set", "loss.perceptual_weight=0"]
    a, _ = train_and_resume(tmp_path, *settings)
    assert a["config"]["model"]["reference"] is True
    assert a["config"]["data"]["reference_drop"] == 0.5
    out = [k for k in a["generator"] if k.startswith("reference.out.") and k.endswith("weight")]
    assert len(out) == 4  # depth 5: one per up block but the head's
    assert all(a["generator"][key].abs().max() > 0 for key in out)  # moved from zero
    generator, config = load_generator(tmp_path / "straight" / "checkpoints" / "last.pt")
    assert config.model.reference and generator.reference is not None


def test_training_items_carry_a_seeded_reference_from_the_crop(color_folder: Path) -> None:
    paths = find_images(color_folder)
    plain = ColorImages(paths, 32, train=True)
    images = ColorImages(paths, 32, train=True, reference=(0.0, 0.5))
    item = images[(3, 11)]
    assert isinstance(item, dict) and set(item) == {"rgb", "reference"}
    assert torch.equal(item["rgb"], plain[(3, 11)])  # the same crop as without a reference
    half = ColorImages(paths, 32, train=True, reference=(0.5, 0.5))
    for seed in range(20):  # the same (index, seed): the same reference, dropped or not
        first, again = half[(3, seed)], half[(3, seed)]
        assert isinstance(first, dict) and isinstance(again, dict)
        assert torch.equal(first["reference"], again["reference"]), seed
    summaries = []
    for seed in range(6):
        drawn = images[(3, seed)]
        assert isinstance(drawn, dict)
        reference = drawn["reference"]
        assert reference.shape == (REFERENCE_CHANNELS,) and reference[-1] == 1.0
        whole = summarize(_crop_ab(drawn["rgb"])[None])[0]
        assert _cells_of(reference) <= _cells_of(whole)  # the crop's own colors
        summaries.append(reference)
    assert any(not torch.equal(s, summaries[0]) for s in summaries[1:])  # seeds differ
    validation = ColorImages(paths, 32, train=False, reference=(0.0, 0.5))
    assert isinstance(validation[0], torch.Tensor)  # validation: the crop alone
    dropped = ColorImages(paths, 32, train=True, reference=(1.0, 0.5))[(3, 11)]
    assert isinstance(dropped, dict) and not dropped["reference"].any()


def test_hints_and_reference_together_keep_the_hints_of_a_hints_only_run(
    color_folder: Path,
) -> None:
    paths = find_images(color_folder)
    hints_only = ColorImages(paths, 32, train=True, hints=(0.125, 9))
    both = ColorImages(paths, 32, train=True, hints=(0.125, 9), reference=(0.5, 0.5))
    given = 0
    for index, seed in [(0, 0), (1, 5), (4, 9), (7, 2), (12, 30), (19, 3)]:
        a, b = hints_only[(index, seed)], both[(index, seed)]
        assert isinstance(a, dict) and isinstance(b, dict)
        assert set(a) == {"rgb", "hints"} and set(b) == {"rgb", "hints", "reference"}
        assert torch.equal(a["rgb"], b["rgb"]) and torch.equal(a["hints"], b["hints"])
        given += int(b["reference"][-1] == 1.0)
    assert 0 < given < 6  # some references dropped, some given


# ---------------------------------------------------------------- the Colorizer


@pytest.fixture(scope="module")
def reference_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_reference_checkpoint(tmp_path_factory.mktemp("ref") / "ref.pt")


def _levels(a: Image.Image, b: Image.Image) -> np.ndarray:
    return np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16))


def test_colorize_with_a_reference_changes_the_colors(reference_model: Path) -> None:
    colorizer = Colorizer.from_checkpoint(reference_model, "cpu")
    assert colorizer.capabilities.reference
    image = make_color_image(5, (48, 40)).convert("L")
    reference, other = make_color_image(7), Image.new("RGB", (30, 30), BLUE)
    plain = colorizer.colorize(image)
    assert plain.size == image.size
    with_reference = colorizer.colorize(image, reference=reference)
    assert with_reference.size == image.size
    assert _levels(plain, colorizer.colorize(image, reference=None)).max() == 0
    assert _levels(plain, with_reference).mean() > 2.0  # visibly different colors
    assert _levels(with_reference, colorizer.colorize(image, reference=other)).mean() > 2.0
    assert _levels(with_reference, colorizer.colorize(image, reference=reference)).max() == 0
    assert torch.equal(Reference((reference,)).summary, from_image(reference))
    both = colorizer.colorize_batch([image, image.transpose(Image.Transpose.ROTATE_180)],
                                    request=Request.of(reference=reference))  # fmt: skip
    assert _levels(both[0], with_reference).max() == 0  # the one reference for every image
    # several references: each counts equally (the mean of their summaries)
    pair = Reference((reference, other)).summary
    assert torch.allclose(pair, (from_image(reference) + from_image(other)) / 2)
    mixed = colorizer.colorize(image, reference=[reference, other])
    alone = colorizer.colorize(image, reference=other)
    assert _levels(mixed, with_reference).max() > 0 and _levels(mixed, alone).max() > 0


def test_a_model_without_reference_refuses_one_in_one_line(tmp_path: Path) -> None:
    colorizer = Colorizer.from_checkpoint(make_tiny_checkpoint(tmp_path / "t.pt"), "cpu")
    assert not colorizer.capabilities.reference
    image = Image.new("L", (32, 32), 120)
    with pytest.raises(ReferenceImageError, match=r"model\.reference") as caught:
        colorizer.colorize(image, reference=Image.new("RGB", (8, 8), RED))
    assert isinstance(caught.value, ColorganError) and "\n" not in str(caught.value)
    colorizer.colorize(image, reference=None)  # no reference: as before


def test_old_checkpoints_colorize_as_before(tmp_path: Path) -> None:
    """A checkpoint written before model.reference (no reference keys in its config) loads and
    gives the same image; the generator is called without a reference."""
    new = make_tiny_checkpoint(tmp_path / "new.pt")
    saved = torch.load(new, weights_only=True)
    del saved["config"]["model"]["reference"]
    del saved["config"]["data"]["reference_drop"], saved["config"]["data"]["reference_crop"]
    old = tmp_path / "old.pt"
    save_checkpoint(saved, old)
    image = make_color_image(6, (40, 48)).convert("L")
    colorizers = [Colorizer.from_checkpoint(path, "cpu") for path in (new, old)]
    assert not any(c.capabilities.reference for c in colorizers)
    images = [c.colorize(image) for c in colorizers]
    assert _levels(*images).max() == 0
    assert np.asarray(images[0]).std(axis=2).mean() > 5  # colored (the orange cast), not gray
    generator, config = load_generator(old)
    assert not config.model.reference and generator.reference is None
    assert not any(key.startswith("reference.") for key in generator.state_dict())
    l = torch.rand(1, 1, 32, 32) * 2 - 1
    [prediction] = colorizers[1].predict_batch(l, [NOTHING])
    with torch.no_grad():
        assert torch.allclose(prediction.ab, generator.eval()(l), atol=1e-6)


# ---------------------------------------------------------------- ONNX


@pytest.mark.slow
@pytest.mark.parametrize("encoder", ["unet", "efficientnet_lite0"])
def test_onnx_with_reference_matches_pytorch_within_one_level(tmp_path: Path, encoder: str) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model = make_reference_checkpoint(tmp_path / "r.pt", encoder=encoder)
    onnx_path = tmp_path / "r.onnx"
    assert main(["export", str(model), "--onnx", str(onnx_path)]) == 0
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    matched = ["exemplar"] if encoder == "efficientnet_lite0" else []  # model.reference_match
    assert [node.name for node in inputs] == ["l", "reference", *matched]
    assert inputs[1].shape[1] == REFERENCE_CHANNELS and isinstance(inputs[1].shape[0], str)
    images = [make_color_image(8, (80, 56)).convert("L"), make_color_image(9, (80, 56))]
    reference = make_color_image(10, (64, 64))
    by_pt, onnx = (
        Colorizer.from_checkpoint(model, "cpu"),
        Colorizer.from_checkpoint(onnx_path, "cpu"),
    )
    assert onnx.capabilities.reference
    for given in (reference, None):  # batches of two: the reference's batch dim is dynamic
        expected = by_pt.colorize_batch(images, request=Request.of(reference=given))
        got = onnx.colorize_batch(images, request=Request.of(reference=given))
        for a, b in zip(expected, got, strict=True):
            assert (a.mode, a.size) == (b.mode, b.size)
            assert _levels(a, b).max() <= 1
    single = onnx.colorize(images[0], reference=reference)
    assert _levels(single, onnx.colorize(images[0])).mean() > 1.0  # the input is used


# ---------------------------------------------------------------- evaluate --reference


@pytest.fixture
def fast_features(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mean colors for Lite0 features (as in test_evaluate): no 224 px forward passes."""
    monkeypatch.setattr(evaluate, "lite0_features", lambda network, rgb: rgb.double().mean((2, 3)))


def test_evaluate_with_reference_self_or_a_file(
    reference_model: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    fast_features: None,
) -> None:
    data = write_color_folder(tmp_path / "data", 6, size=(40, 40))
    reference = tmp_path / "reference.png"
    make_color_image(11, (50, 40)).save(reference)
    results = {}
    for name, extra in (("none", []), ("self", ["--reference", "self"]),
                        ("file", ["--reference", str(reference)])):  # fmt: skip
        out = tmp_path / f"{name}.json"
        args = ["evaluate", str(reference_model), "--data", str(data), "--json", str(out)]
        assert main([*args, *extra, "--quiet"]) == 0
        results[name] = json.loads(out.read_text())
    printed = capsys.readouterr().out
    assert "colorized with the reference self" in printed
    assert "reference" not in results["none"]
    assert results["self"]["reference"] == "self"
    assert results["file"]["reference"] == str(reference)
    for result in results.values():
        assert result["n_images"] == 6
        for key in ("psnr", "ssim", "delta_e", "colorfulness"):
            assert isinstance(result[key], float) and np.isfinite(result[key]), key
        assert result["baseline_gray"] == results["none"]["baseline_gray"]  # same crops
    delta_e = {name: result["delta_e"] for name, result in results.items()}
    assert delta_e["self"] != pytest.approx(delta_e["none"])
    assert delta_e["file"] != pytest.approx(delta_e["none"])
    assert delta_e["file"] != pytest.approx(delta_e["self"])


def test_evaluate_self_reference_is_each_crops_own_colors() -> None:
    rgb = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    given = protocol("self", [], 16, 4.0).inputs([Path(f"{i}.png") for i in range(3)], rgb)
    for crop, summary in zip(rgb, given["reference"], strict=True):
        assert torch.equal(summary, summarize(_crop_ab(crop)[None])[0])
    assert given["exemplar"].shape == (3, 1, 4, 16, 16)  # each crop itself, as the match sees it


@pytest.mark.parametrize("case", ["no reference input", "unreadable file", "missing file"])
def test_evaluate_reference_errors_exit_2_with_one_line(
    case: str,
    reference_model: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = write_color_folder(tmp_path / "data", 2, size=(40, 40))
    model, reference = reference_model, tmp_path / "broken.png"
    reference.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    message = [str(reference), "cannot read"]
    if case == "no reference input":
        model, reference = make_tiny_checkpoint(tmp_path / "t.pt"), Path("self")
        message = ["model.reference=false", "drop --reference"]
    elif case == "missing file":
        reference = tmp_path / "nowhere.png"
        message = [str(reference), "no such file"]
    args = ["evaluate", str(model), "--data", str(data), "--reference", str(reference)]
    assert main([*args, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert all(fragment in err for fragment in message), err


def test_the_palette_head_starts_by_snapping_to_the_nearest_reference_color() -> None:
    # two colors in the reference, equal shares; the query silenced and the gate wide open:
    # each pixel gets whichever of the two is nearer the generator's own ab there
    torch.manual_seed(0)
    generator = Generator(8, 3, reference=True).eval()
    assert generator.palette is not None
    first, second = torch.tensor([0.40, -0.30]), torch.tensor([-0.45, 0.45])
    ab = torch.stack([first, second]).view(1, 2, 2, 1).permute(0, 2, 1, 3).expand(1, 2, 2, 4)
    two = summarize(ab.contiguous())
    assert torch.allclose(two[0, :-1].sort(descending=True).values[:2], torch.tensor([0.5, 0.5]))
    centers = generator.palette.centers[two[0, :-1] > 0]  # the two cells' centers
    l = torch.zeros(1, 1, 32, 32)
    with torch.no_grad():
        generator.palette.gate.bias.fill_(1e4)
        generator.palette.query.weight.zero_()
        generator.palette.query.bias.zero_()
        for target in (first, second):
            generator.head[0].bias.copy_(torch.atanh(target))  # its own colors near `target`
            generator.palette.gate.bias.fill_(-1e4)
            own = generator(l)
            generator.palette.gate.bias.fill_(1e4)
            picked = generator(l, reference=two)
            nearest = centers[(centers - target).norm(dim=1).argmin()]
            assert (own.mean(dim=(2, 3))[0] - target).abs().max() < 0.1
            assert torch.allclose(picked, nearest.view(1, 2, 1, 1).expand_as(picked), atol=1e-3)
