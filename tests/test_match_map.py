"""The match map (`Colorizer.reference_match`): where a picture matches its reference images,
as a model trained with model.reference_match sees it (the confidence the decoder reads), and
the one-line refusals of models that cannot draw it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from colorgan.colorize import Colorizer
from colorgan.errors import ColorganError
from colorgan.files import to_picture
from colorgan.reference import ReferenceImageError
from colorgan.request import Request
from tests.conftest import (
    make_color_image,
    make_exemplar_checkpoint,
    make_reference_checkpoint,
    make_tiny_checkpoint,
)


@pytest.fixture(scope="module")
def colorizer(tmp_path_factory: pytest.TempPathFactory) -> Colorizer:
    checkpoint = make_exemplar_checkpoint(tmp_path_factory.mktemp("match") / "exemplar.pt")
    return Colorizer.from_checkpoint(checkpoint, device="cpu")


def _levels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(int)


def test_a_picture_matches_itself_and_not_another(colorizer: Colorizer) -> None:
    picture = make_color_image(3, (64, 64))
    itself = colorizer.reference_match(picture, picture, size=64)
    assert (itself.mode, itself.size) == ("L", picture.size)
    assert _levels(itself).min() >= 250  # every place is in the reference, the same
    other = _levels(colorizer.reference_match(picture, make_color_image(9, (64, 64)), size=64))
    assert other.mean() < _levels(itself).mean() - 40  # another picture: much less alike
    both = colorizer.reference_match(picture, [make_color_image(9, (64, 64)), picture], size=64)
    assert _levels(both).min() >= 250  # the best of the references counts


def test_the_map_is_the_confidence_the_decoder_reads(colorizer: Colorizer) -> None:
    generator = colorizer.match_network()
    assert generator.match is not None
    seen: list[torch.Tensor] = []
    hook = generator.match.register_forward_hook(lambda module, args, out: seen.append(out))
    image = make_color_image(4, (96, 64)).convert("L")  # odd sizes: the map has the image's
    references = [make_color_image(11, (40, 70)), make_color_image(12)]
    try:
        colorizer.colorize(image, reference=references, size=64)
    finally:
        hook.remove()
    [matched] = seen  # (1, 4, h/8, w/8): ab, confidence, given
    confidence = matched[:, 2:3].clamp(0, 1)
    full = torch.nn.functional.interpolate(confidence, size=(64, 96), mode="bilinear")
    expected = (full * 255).round()[0, 0].numpy()
    got = _levels(colorizer.reference_match(image, references, size=64))
    assert got.shape == (64, 96)
    assert np.abs(got - expected).max() <= 1
    assert got.std() > 5  # a map, not a constant


def test_the_map_has_the_image_size_at_any_working_size(colorizer: Colorizer) -> None:
    picture = make_color_image(6, (128, 128))
    small = colorizer.reference_match(picture, picture, size=32)
    large = colorizer.reference_match(picture, picture)  # the training size, 32
    full = colorizer.reference_match(picture, picture, size=128)
    assert small.size == full.size == (128, 128) and small.mode == full.mode == "L"
    assert np.array_equal(_levels(small), _levels(large))
    assert _levels(full).min() >= 250  # the reference at the picture's own scale: identical
    assert _levels(small).mean() > 200  # shrunk two ways (antialiased, bilinear): still alike


def test_a_folder_of_references_is_a_bank(colorizer: Colorizer, tmp_path: Path) -> None:
    for seed in range(2):
        make_color_image(20 + seed).save(tmp_path / f"r{seed}.png")
    picture = make_color_image(7)
    by_folder = colorizer.reference_match(picture, tmp_path, size=32)
    by_files = colorizer.reference_match(picture, sorted(tmp_path.iterdir()), size=32)
    assert np.array_equal(_levels(by_folder), _levels(by_files))


@pytest.mark.parametrize("maker", [make_reference_checkpoint, make_tiny_checkpoint])
def test_a_model_without_the_match_is_one_line(
    maker: Callable[[Path], Path], tmp_path: Path
) -> None:
    plain = Colorizer.from_checkpoint(maker(tmp_path / "m.pt"), device="cpu")
    with pytest.raises(ReferenceImageError, match=r"trained without model\.reference_match") as err:
        plain.reference_match(make_color_image(1), make_color_image(2))
    assert len(str(err.value).splitlines()) == 1


def test_no_reference_or_a_bad_size_is_one_line(colorizer: Colorizer, tmp_path: Path) -> None:
    picture = make_color_image(1)
    with pytest.raises(ReferenceImageError, match="give at least one image"):
        colorizer.reference_match(picture, [])
    with pytest.raises(ReferenceImageError, match="needs a reference"):
        colorizer.match_map(to_picture(picture), Request(), None)
    with pytest.raises(ColorganError, match="working size must be a positive whole number"):
        colorizer.reference_match(picture, picture, size=0)
    with pytest.raises(ReferenceImageError, match="a folder with no image files"):
        colorizer.reference_match(picture, tmp_path)
