"""Manga pages made from color crops (tones.make_page, data.input_style) and the lightness a toned
page's colored version carries (tones.page_lightness)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import default_collate

from colorgan.batch import Batch, to_batch
from colorgan.color import rgb_to_l_ab, uint8_to_float, uint8_to_l
from colorgan.colorize import Colorizer
from colorgan.config import load_config
from colorgan.data import ColorImages
from colorgan.errors import ConfigError
from colorgan.tones import TONE_KINDS, TONED_SHARE, blur, is_toned, make_page, page_lightness


def _flat(level: int, size: int = 64) -> torch.Tensor:
    return torch.full((3, size, size), level, dtype=torch.uint8)


def _picture(size: int = 64) -> torch.Tensor:
    """A gray ramp with a dark disc: edges for ink lines, levels for tones."""
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    level = 60 + 180 * x / (size - 1)
    disc = (x - size / 2) ** 2 + (y - size / 2) ** 2 < (size / 4) ** 2
    level = torch.where(disc, torch.full_like(level, 30.0), level)
    return level.round().to(torch.uint8).expand(3, -1, -1).clone()


@pytest.mark.parametrize("kind", TONE_KINDS)
def test_every_tone_kind_makes_a_two_level_page_darker_where_the_picture_is(kind: str) -> None:
    shares = []
    for level in (200, 120):  # light, then darker gray; both between paper and solid black
        gen = torch.Generator().manual_seed(3)
        page = make_page(_flat(level), gen, (kind,))
        assert page.gray.shape == (1, 64, 64) and page.gray.dtype == torch.uint8
        near = ((page.gray < 70) | (page.gray > 185)).float().mean()
        assert near > 0.8  # ink and paper, a little print noise
        shares.append(float((page.gray < 128).float().mean()))
    assert shares[1] > shares[0] + 0.1


def test_pages_are_drawn_by_the_seed_and_have_ink_lines_on_edges() -> None:
    first = make_page(_picture(), torch.Generator().manual_seed(7))
    again = make_page(_picture(), torch.Generator().manual_seed(7))
    other = make_page(_picture(), torch.Generator().manual_seed(8))
    assert torch.equal(first.gray, again.gray) and not torch.equal(first.gray, other.gray)
    assert first.ink.dtype == torch.bool and first.ink.any()
    assert bool((first.gray[first.ink] < 128).all())  # drawn ink is ink on the page


def test_an_unknown_tone_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown tone kind 'waves'"):
        make_page(_picture(), torch.Generator().manual_seed(0), ("waves",))
    with pytest.raises(ConfigError, match=r"data\.tones='dots,waves'"):
        load_config(assignments=["data.tones=dots,waves"])
    assert load_config(assignments=["data.input_style=mixed"]).data.input_style == "mixed"


def _dot_page(
    darkness: float, size: int = 96, period: float = 5.0, kind: str = "dots"
) -> torch.Tensor:
    """A dot (or line) screen of `darkness` over the whole page and a 2-px drawn line across
    it, as l."""
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    spot = torch.cos(x * 2 * math.pi / period) / 2
    if kind == "dots":
        spot = (torch.cos(x * 2 * math.pi / period) + torch.cos(y * 2 * math.pi / period)) / 4
    ink = darkness > 0.5 - spot
    ink[size // 2 : size // 2 + 2, :] = True
    page = torch.where(ink, 0, 255).to(torch.uint8).expand(3, -1, -1)
    return uint8_to_l(page[None])


@pytest.mark.parametrize("kind", ["dots", "lines"])
def test_page_lightness_smooths_the_tone_into_its_gray_and_keeps_the_line(kind: str) -> None:
    l = _dot_page(0.3 if kind == "dots" else 0.4, kind=kind)
    assert is_toned(l)
    out = page_lightness(l)
    level = (out[0, 0] + 1) / 2
    tone = level[8:40, 8:-8]  # away from the line
    coverage = float((l[0, 0, 8:40, 8:-8] < 0).float().mean())
    assert abs(float(tone.mean()) - (1 - coverage)) < 0.08
    assert float(tone.std()) < 0.08  # the dots are gone
    line = level[48:50, 8:-8]
    if kind == "dots":
        assert float(line.max()) < 0.05  # the drawn line keeps the page's ink, sharp
    else:  # across a line tone the ink map is less sure of it: mostly kept, clearly darker
        assert float(line.mean()) < 0.5 * float(tone.mean())


def test_a_soft_scan_whose_dots_print_as_grays_is_a_toned_page() -> None:
    level = (_dot_page(0.4) + 1) / 2  # a sharp dot page, then a soft scan of it:
    soft = blur(0.15 + 0.7 * level, 0.8)  # ink printed at 0.15, paper at 0.85, blurred
    assert float(((soft < 0.2) | (soft > 0.8)).float().mean()) < TONED_SHARE  # grays mostly
    assert is_toned(soft * 2 - 1)


def test_a_gray_picture_is_not_a_toned_page() -> None:
    assert not is_toned(uint8_to_l(_picture()[None]))
    fine = _picture().short() + torch.where(torch.arange(64) % 2 == 0, 25, -25)  # fine texture
    assert not is_toned(uint8_to_l(fine.clamp(0, 255).to(torch.uint8)[None]))
    assert not is_toned(uint8_to_l(_flat(255)[None]))  # blank paper: nothing to smooth


@pytest.mark.parametrize("style", ["manga", "mixed"])
def test_training_items_carry_the_page_as_the_model_input(tmp_path, style: str) -> None:
    for i in range(2):
        Image.fromarray(_picture().permute(1, 2, 0).numpy()).save(tmp_path / f"{i}.png")
    data = ColorImages(sorted(tmp_path.glob("*.png")), 64, True, pages=(style, TONE_KINDS))
    items = [data[(0, seed)] for seed in range(12)]
    assert all(isinstance(item, dict) and item["l"].shape == (1, 64, 64) for item in items)
    own = uint8_to_l(_picture()[None])[0]  # the crop's own L (the picture fills the crop)
    paged = [
        not torch.allclose(item["l"], own) and not torch.allclose(item["l"], own.flip(-1))
        for item in items
    ]  # type: ignore[index]
    assert all(paged) if style == "manga" else 0 < sum(paged) < len(paged)
    batch = to_batch(default_collate(items[:2]), torch.device("cpu"))
    assert torch.equal(batch.l[1], items[1]["l"])  # type: ignore[index]
    gray = ColorImages(sorted(tmp_path.glob("*.png")), 64, True, pages=("gray", TONE_KINDS))
    assert isinstance(gray[(0, 0)], torch.Tensor)  # gray: plain crops, as before


def _l_of(image: Image.Image) -> torch.Tensor:
    rgb = torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1)
    return rgb_to_l_ab(uint8_to_float(rgb[None]))[0]


def test_a_colored_toned_page_carries_the_smoothed_lightness_and_a_gray_picture_its_own() -> None:
    def predict(batch: Batch) -> torch.Tensor:  # a flat orange, whatever the input
        return (
            torch.tensor([0.2, 0.3]).view(1, 2, 1, 1).expand(len(batch.l), 2, *batch.l.shape[-2:])
        )

    colorizer = Colorizer(predict, image_size=32, multiple=8, device=torch.device("cpu"))
    page = Image.fromarray(((_dot_page(0.3)[0, 0] + 1) * 127.5).round().byte().numpy())
    assert torch.allclose(_l_of(colorizer.colorize(page)), page_lightness(_l_of(page)), atol=0.02)
    picture = Image.fromarray(_picture().permute(1, 2, 0).numpy())
    assert torch.allclose(_l_of(colorizer.colorize(picture)), _l_of(picture), atol=0.02)
