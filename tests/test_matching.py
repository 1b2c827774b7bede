"""Local reference colors (matching.py): the match, the training pairs (pairs.py), the bank
(bank.py), evaluate's protocols (protocols.py) and a match model end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from colorgan import Colorizer
from colorgan.checkpoint import save_checkpoint
from colorgan.cli import main
from colorgan.color import rgb_to_l_ab, uint8_to_float
from colorgan.config import load_config, to_dict
from colorgan.data import ColorImages
from colorgan.generator import Lite0UNet
from colorgan.matching import MATCH_DIM, ReferenceMatch, exemplar_slot, stack_exemplars
from colorgan.models import build_generator
from colorgan.pairs import exemplar_of, self_exemplar
from colorgan.request import Reference, Request
from tests.conftest import built_once, make_color_image, train_args, write_color_folder


def _features(order: list[int]) -> torch.Tensor:
    """Normalised one-hot features (1, MATCH_DIM, 2, 2): position i holds direction order[i]."""
    features = torch.zeros(1, MATCH_DIM, 4)
    for position, direction in enumerate(order):
        features[0, direction, position] = 1.0
    return features.view(1, MATCH_DIM, 2, 2)


def _exemplar(ab: torch.Tensor) -> torch.Tensor:
    """One slot (1, 1, 4, 2, 2) with these ab (2, 2, 2) given everywhere."""
    return torch.cat([torch.zeros(1, 2, 2), ab, torch.ones(1, 2, 2)])[None, None]


def test_the_match_gathers_the_colors_where_the_features_correspond() -> None:
    match = ReferenceMatch(8, 8, 4)
    ab = torch.arange(8, dtype=torch.float32).view(2, 2, 2) / 10  # each position its own ab
    picture = _features([0, 1, 2, 3])
    reference = _features([2, 3, 0, 1])  # the same things at other places
    out = match(picture, reference, _exemplar(ab))
    expected = ab.flatten(1)[:, [2, 3, 0, 1]].view(2, 2, 2)  # picture i <- reference's match
    assert torch.allclose(out[0, :2], expected, atol=1e-4)
    assert torch.allclose(out[0, 2], torch.ones(2, 2))  # confidence: cosine similarity 1
    assert torch.equal(out[0, 3], torch.ones(2, 2))  # given


def test_no_reference_gives_zeros_and_empty_slots_change_nothing() -> None:
    match = ReferenceMatch(8, 8, 4)
    ab = torch.rand(2, 2, 2) - 0.5
    picture = _features([0, 1, 2, 3])
    one = match(picture, _features([3, 2, 1, 0]), _exemplar(ab))
    padded = stack_exemplars([{"exemplar": _exemplar(ab)}, {}])  # an empty second picture
    with_empty = torch.cat([_exemplar(ab), torch.zeros(1, 1, 4, 2, 2)], dim=1)
    references = torch.cat([_features([3, 2, 1, 0]), _features([0, 0, 0, 0])])
    assert torch.allclose(match(picture, references, with_empty), one, atol=1e-6)
    assert padded.shape == (2, 1, 4, 2, 2) and not padded[1].any()
    nothing = match(picture, _features([0, 1, 2, 3]), torch.zeros(1, 1, 4, 2, 2))
    assert not nothing.any()


def test_a_match_generator_without_a_reference_is_the_empty_reference() -> None:
    torch.manual_seed(0)
    generator = Lite0UNet(8, output_stride=4, upsample="affine", reference="match").eval()
    l = torch.rand(2, 1, 64, 64) * 2 - 1
    with torch.no_grad():
        alone = generator(l)
        empty = generator(l, exemplar=torch.zeros(2, 3, 4, 64, 64))
        exemplar = exemplar_slot(torch.randint(0, 256, (3, 40, 64), dtype=torch.uint8), 64)
        given = generator(l, exemplar=exemplar[None, None].expand(2, 1, -1, -1, -1))
    assert torch.equal(alone, empty)
    assert not torch.allclose(alone, given)  # the decoder reads the match
    assert exemplar[3, :12].sum() == 0 and exemplar[3, 12:52].all()  # fitted inside, padded


def test_self_exemplar_is_the_picture_warped() -> None:
    rgb = torch.from_numpy(np.array(make_color_image(3, (64, 64)))).permute(2, 0, 1)
    first = self_exemplar(rgb, torch.Generator().manual_seed(1))
    again = self_exemplar(rgb, torch.Generator().manual_seed(1))
    other = self_exemplar(rgb, torch.Generator().manual_seed(2))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert first.shape == (4, 64, 64)
    given = first[3] > 0.5
    assert 0.2 < given.float().mean() < 1.0  # rotated / zoomed: some of the square is empty
    assert not first[:3, ~given].any()  # nothing where nothing was brought in
    plain = exemplar_of(rgb)
    assert not torch.allclose(first[:3], plain[:3], atol=0.05)  # not the picture in place
    truth_ab = plain[1:3].flatten(1)
    # the warp moves colors, it does not make them: each given ab is near one of the picture's
    nearest = torch.cdist(first[1:3, given].T, truth_ab.T).amin(dim=1)
    assert float(nearest.quantile(0.9)) < 0.05


def _solid(color: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (40, 40), color)


def test_sibling_references_come_from_the_same_folder(tmp_path: Path) -> None:
    colors = {"red": (200, 30, 30), "blue": (30, 30, 200)}
    paths = []
    for name, color in colors.items():
        (tmp_path / name).mkdir()
        for i in range(3):
            paths.append(tmp_path / name / f"{i}.png")
            _solid(color).save(paths[-1])
    (tmp_path / "alone").mkdir()
    paths.append(tmp_path / "alone" / "0.png")
    make_color_image(1, (40, 40)).save(paths[-1])
    images = ColorImages(paths, 32, True, None, (0.0, 0.5), "sibling")
    for index, path in enumerate(paths[:-1]):
        item = images[(index, 11 + index)]
        assert isinstance(item, dict) and item["exemplar"].shape == (1, 4, 32, 32)
        mean_ab = item["exemplar"][0, 1:3].mean(dim=(1, 2))
        own = rgb_to_l_ab(uint8_to_float(item["rgb"][None]))[1][0].mean(dim=(1, 2))
        assert torch.allclose(mean_ab, own, atol=0.02), path  # its folder's color
        assert item["reference"][-1] == 1.0
    lone = images[(len(paths) - 1, 5)]
    assert isinstance(lone, dict) and 0 < lone["exemplar"][0, 3].mean() < 1  # itself, warped
    dropped = ColorImages(paths, 32, True, None, (1.0, 0.5), "both")[(0, 3)]
    assert isinstance(dropped, dict)
    assert not dropped["exemplar"].any() and not dropped["reference"].any()


def test_a_bank_gives_each_picture_its_closest_references() -> None:
    images = [make_color_image(seed, (48, 48)) for seed in range(5)]
    bank = Reference(tuple(images))
    for seed in (0, 3):
        picture = torch.from_numpy(np.array(images[seed])).permute(2, 0, 1)
        chosen = bank.closest(picture)
        assert len(chosen.sources) == 3
        assert chosen.images[0] is images[seed]  # the picture itself is the closest
    few = Reference(tuple(images[:3]))
    assert few.closest(torch.zeros(3, 8, 8, dtype=torch.uint8)) is few  # 3 or fewer: all


@built_once
def make_match_checkpoint(path: Path) -> Path:
    """An untrained 32 px Lite0 checkpoint with model.reference and the match, seeded."""
    settings = ["model.reference=true", "model.uncertainty=true", "model.base_channels=8"]
    config = load_config(None, [*settings, "data.image_size=32"])
    torch.manual_seed(0)
    generator = build_generator(config.model, pretrained=True)
    assert generator.match is not None
    save_checkpoint({"config": to_dict(config), "generator": generator.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def match_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_match_checkpoint(tmp_path_factory.mktemp("match") / "match.pt")


def _levels(a: Image.Image, b: Image.Image) -> float:
    diff = np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)
    return float(np.abs(diff).max())


def test_colorize_with_references_of_different_counts_in_one_batch(match_model: Path) -> None:
    colorizer = Colorizer.from_checkpoint(match_model, "cpu")
    assert colorizer.capabilities.match
    image = make_color_image(5, (48, 40)).convert("L")
    one, two = make_color_image(7), make_color_image(8, (30, 50))
    alone = colorizer.colorize(image, size=32)
    first = colorizer.colorize(image, reference=one, size=32)
    both = colorizer.colorize(image, reference=[one, two], size=32)
    assert _levels(alone, first) > 0 and _levels(first, both) > 0
    requests = [Request.of(reference=one), Request.of(reference=[one, two])]
    batch = colorizer.colorize_batch([image, image], 32, requests)  # 1 and 2 references stacked
    assert _levels(batch[0], first) == 0 and _levels(batch[1], both) == 0
    several = Request.of(reference=[one, two, make_color_image(9), make_color_image(10)])
    assert colorizer.colorize(image, reference=list(several.reference.sources), size=32).size == (
        48,
        40,
    )  # a bank of 4: the 3 closest


def test_train_and_evaluate_with_sibling_references(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for folder in ("a", "b"):
        write_color_folder(data / folder, 6, (40, 40))
    run = tmp_path / "run"
    settings = [
        "model.reference=true",
        "data.reference_source=both",
        "model.encoder=efficientnet_lite0",
        "model.depth=5",
        "data.image_size=32",
    ]
    args = train_args(data, run, *[item for s in settings for item in ("--set", s)])
    assert main(args) == 0
    report = tmp_path / "eval.json"
    checkpoint = run / "checkpoints" / "last.pt"
    assert (
        main(
            [
                "evaluate",
                str(checkpoint),
                "--data",
                str(data),
                "--reference",
                "sibling",
                "--json",
                str(report),
                "--quiet",
            ]
        )
        == 0
    )
    result = json.loads(report.read_text())
    assert result["reference"] == "sibling" and result["reference_missing"] == 0
    bank = tmp_path / "bank"
    write_color_folder(bank, 4, (40, 40))
    assert (
        main(
            [
                "evaluate",
                str(checkpoint),
                "--data",
                str(data),
                "--reference",
                str(bank),
                "--json",
                str(report),
                "--quiet",
            ]
        )
        == 0
    )
    assert json.loads(report.read_text())["reference"] == str(bank)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["evaluate", str(checkpoint), "--data", str(data), "--reference", str(empty)]) == 2
