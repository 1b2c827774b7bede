"""`colorgan serve` with reference images (model.reference): the `reference` field of
POST /api/colorize, /api/uncertainty and /api/suggest (repeated for several), POST /api/palette,
POST /api/match (model.reference_match), /api/info's flags, and the refusals (a bad file, too
many or too large references, a model without the input), each one line of JSON."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from starlette.testclient import TestClient

from colorgan.checkpoint import save_checkpoint
from colorgan.colorize import Colorizer
from colorgan.config import load_config, to_dict
from colorgan.models import build_generator
from colorgan.reference import PALETTE_SIZE, palette
from colorgan.serve import Limits, create_app
from colorgan.uploads import MAX_REFERENCES
from tests.conftest import (
    AB_BIAS,
    UNET,
    make_color_image,
    make_exemplar_checkpoint,
    make_reference_checkpoint,
    make_tiny_checkpoint,
)
from tests.test_serve import decoded, gray, png_bytes, truncated_png

LIMITS = Limits(max_upload_bytes=20_000, max_pixels=200 * 200)


@pytest.fixture(scope="module")
def colorizer(tmp_path_factory: pytest.TempPathFactory) -> Colorizer:
    checkpoint = make_reference_checkpoint(tmp_path_factory.mktemp("serve") / "reference.pt")
    return Colorizer.from_checkpoint(checkpoint, device="cpu", batch_size=1)


@pytest.fixture(scope="module")
def client(colorizer: Colorizer) -> TestClient:
    return TestClient(create_app(colorizer, LIMITS))


@pytest.fixture(scope="module")
def plain_client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    """A model trained without model.reference."""
    checkpoint = make_tiny_checkpoint(tmp_path_factory.mktemp("serve") / "tiny.pt")
    return TestClient(create_app(Colorizer.from_checkpoint(checkpoint, device="cpu"), LIMITS))


def reference(seed: int = 7, size: tuple[int, int] = (64, 48)) -> Image.Image:
    return make_color_image(seed, size)


def files(image: Image.Image, ref: bytes | Image.Image) -> dict[str, tuple[str, bytes]]:
    data = ref if isinstance(ref, bytes) else png_bytes(ref)
    return {"image": ("a.png", png_bytes(image)), "reference": ("ref.png", data)}


def test_info_says_whether_the_model_takes_a_reference(
    client: TestClient, plain_client: TestClient
) -> None:
    assert client.get("/api/info").json()["reference"] is True
    assert plain_client.get("/api/info").json()["reference"] is False


def test_a_reference_changes_the_colors_as_colorize_does(
    client: TestClient, colorizer: Colorizer
) -> None:
    image, ref = gray(4), reference()
    result = np.asarray(decoded(client.post("/api/colorize", files=files(image, ref))))
    assert np.array_equal(result, np.asarray(colorizer.colorize(image, reference=ref)))
    plain = np.asarray(decoded(client.post("/api/colorize", content=png_bytes(image))))
    assert np.array_equal(plain, np.asarray(colorizer.colorize(image)))
    assert np.abs(result.astype(int) - plain).mean() > 3  # visibly other colors
    other = decoded(client.post("/api/colorize", files=files(image, reference(8))))
    assert not np.array_equal(np.asarray(other), result)  # another reference, other colors


def test_a_reference_is_decoded_as_an_image_is(client: TestClient, colorizer: Colorizer) -> None:
    """Alpha (flattened onto white for the colors), any mode, and the image's own alpha kept."""
    ref = reference(9).convert("RGBA")
    ref.putalpha(0)  # transparent but for a red patch
    ref.paste((200, 30, 30, 255), (0, 0, 40, 30))
    image = gray(5).convert("LA")
    result = decoded(client.post("/api/colorize?size=64", files=files(image, ref)))
    assert result.mode == "RGBA" and result.size == image.size
    expected = colorizer.colorize(image, size=64, reference=ref)
    assert np.array_equal(np.asarray(result), np.asarray(expected))
    palette_ = client.post("/api/palette", files={"reference": ("r.png", png_bytes(ref))})
    assert [c["color"] for c in palette_.json()["palette"][:2]] == ["#ffffff", "#c81e1e"]


@pytest.mark.parametrize(
    ("data", "status", "reason"),
    [
        (b"", 400, "reference: empty file"),
        (b"this is not an image", 400, "reference: not an image file"),
        (truncated_png(), 400, "reference: cannot decode"),
        (png_bytes(Image.new("RGB", (250, 200))), 413, "reference: 250x200 is 50,000 pixels"),
        (np.random.default_rng(0).bytes(30_000), 413, "reference: file over the limit"),
    ],
)
def test_a_bad_reference_file_gets_a_reason_naming_the_field(
    client: TestClient, data: bytes, status: int, reason: str
) -> None:
    for route in ("/api/colorize", "/api/palette"):
        response = client.post(route, files=files(gray(4), data))
        assert response.status_code == status, route
        assert response.headers["content-type"] == "application/json"
        assert reason in response.json()["error"], route
        assert len(response.json()["error"].splitlines()) == 1
    assert client.get("/api/info").status_code == 200  # and the server goes on


def test_a_reference_sent_as_text_is_refused(client: TestClient) -> None:
    image = {"image": ("a.png", png_bytes(gray(4)))}
    response = client.post("/api/colorize", files=image, data={"reference": "photo.png"})
    assert response.status_code == 400
    assert response.json()["error"].startswith("reference: send the reference image as a form")


def test_a_reference_for_a_model_without_one_gets_a_400(plain_client: TestClient) -> None:
    for route in ("/api/colorize", "/api/palette"):
        response = plain_client.post(route, files=files(gray(4), reference()))
        assert response.status_code == 400, route
        assert "trained without a reference input" in response.json()["error"]
        assert "model.reference=false" in response.json()["error"]
    # checked before decoding: a broken reference gets the same reason
    response = plain_client.post("/api/colorize", files=files(gray(4), b"not an image"))
    assert "trained without a reference input" in response.json()["error"]
    assert plain_client.post("/api/colorize", content=png_bytes(gray(4))).status_code == 200


def test_the_palette_of_a_reference(client: TestClient) -> None:
    ref = reference(7, (90, 70))
    expected = [{"color": c, "share": round(s, 4)} for c, s in palette(ref)]
    response = client.post("/api/palette", files={"reference": ("r.png", png_bytes(ref))})
    assert response.status_code == 200 and response.headers["cache-control"] == "no-store"
    shown = response.json()["palette"]
    assert shown == expected and 1 <= len(shown) <= PALETTE_SIZE
    assert all(len(c["color"]) == 7 and c["color"].startswith("#") for c in shown)
    assert [c["share"] for c in shown] == sorted((c["share"] for c in shown), reverse=True)
    assert 0 < sum(c["share"] for c in shown) <= 1.0 + 1e-3
    raw = client.post("/api/palette", content=png_bytes(ref))  # the body alone, too
    assert raw.json()["palette"] == expected
    image_only = client.post("/api/palette", files={"image": ("a.png", png_bytes(ref))})
    assert image_only.status_code == 400
    assert "send it as the form file field `reference`" in image_only.json()["error"]


def test_each_file_gets_the_whole_upload_limit(colorizer: Colorizer) -> None:
    """The image and its reference may each be up to --max-upload-mb."""
    limits = Limits(max_upload_bytes=200_000, max_pixels=300 * 300)
    client = TestClient(create_app(colorizer, limits))
    rng = np.random.default_rng(1)
    image, ref = (Image.fromarray(rng.integers(0, 256, (240, 240, 3), np.uint8)) for _ in "ab")
    sizes = [len(png_bytes(image)), len(png_bytes(ref))]
    assert all(150_000 < s < 200_000 for s in sizes)  # together over one limit (+ slack)
    response = client.post("/api/colorize", files=files(image, ref))
    expected = colorizer.colorize(image, reference=ref)
    assert np.array_equal(np.asarray(decoded(response)), np.asarray(expected))


def make_unsure_reference_checkpoint(path: Path) -> Path:
    """A tiny U-Net with model.uncertainty and model.reference, its FiLM layers random."""
    settings = [*UNET, "data.image_size=32", "model.base_channels=8", "model.depth=3"]
    settings += ["model.uncertainty=true", "model.reference=true"]
    config = load_config(None, settings)
    torch.manual_seed(0)
    generator = build_generator(config.model)
    assert generator.reference is not None
    with torch.no_grad():
        generator.head[0].bias.copy_(torch.tensor(AB_BIAS))
        for layer in generator.reference.out:
            torch.nn.init.normal_(layer.weight, 0.0, 2.0)
    save_checkpoint({"config": to_dict(config), "generator": generator.state_dict()}, path)
    return path


def test_the_uncertainty_map_takes_the_reference(tmp_path: Path) -> None:
    checkpoint = make_unsure_reference_checkpoint(tmp_path / "unsure.pt")
    colorizer = Colorizer.from_checkpoint(checkpoint, device="cpu", batch_size=1)
    client = TestClient(create_app(colorizer, LIMITS))
    assert client.get("/api/info").json()["reference"] is True
    image, ref = gray(6), reference(3)
    colored, mapped = colorizer.colorize_with_uncertainty(image, reference=ref)
    response = client.post("/api/uncertainty", files=files(image, ref))
    assert np.array_equal(np.asarray(decoded(response)), np.asarray(mapped))
    form = files(image, ref)
    result = decoded(client.post("/api/colorize", files=form, data={"caution": "0.5"}))
    expected = colorizer.colorize(image, caution=0.5, reference=ref)
    assert np.array_equal(np.asarray(result), np.asarray(expected))
    assert not np.array_equal(np.asarray(colored), np.asarray(colorizer.colorize(image)))
    bad = client.post("/api/uncertainty", files=files(image, b"not an image"))
    assert bad.status_code == 400 and bad.json()["error"].startswith("reference: not an image")


# ---------------------------------------------------------------- several references, the match


@pytest.fixture(scope="module")
def matcher(tmp_path_factory: pytest.TempPathFactory) -> Colorizer:
    """A model.reference_match model: its references' colors are matched place by place."""
    checkpoint = make_exemplar_checkpoint(tmp_path_factory.mktemp("serve") / "exemplar.pt")
    return Colorizer.from_checkpoint(checkpoint, device="cpu", batch_size=1)


@pytest.fixture(scope="module")
def match_client(matcher: Colorizer) -> TestClient:
    return TestClient(create_app(matcher, LIMITS))


def several(image: Image.Image, *refs: bytes | Image.Image) -> list[tuple[str, tuple[str, bytes]]]:
    """A multipart form: the image, then each reference as a `reference` field."""
    form = [("image", ("a.png", png_bytes(image)))]
    for i, ref in enumerate(refs):
        data = ref if isinstance(ref, bytes) else png_bytes(ref)
        form.append(("reference", (f"ref{i}.png", data)))
    return form


def test_info_says_whether_the_model_matches_its_references(
    match_client: TestClient, client: TestClient
) -> None:
    info = match_client.get("/api/info").json()
    assert info["reference"] is info["match"] is info["match_map"] is True
    assert info["max_references"] == MAX_REFERENCES
    other = client.get("/api/info").json()  # the histogram alone
    assert other["reference"] is True and other["match"] is other["match_map"] is False


def test_several_references_color_as_colorize_does(
    match_client: TestClient, matcher: Colorizer
) -> None:
    image, one, two = gray(4, (64, 48)), reference(7), reference(8, (40, 70))
    both = decoded(match_client.post("/api/colorize", files=several(image, one, two)))
    assert np.array_equal(
        np.asarray(both), np.asarray(matcher.colorize(image, reference=[one, two]))
    )
    first = decoded(match_client.post("/api/colorize", files=several(image, one)))
    assert np.abs(np.asarray(both, dtype=int) - np.asarray(first)).mean() > 1  # both count
    bank = [reference(20 + seed) for seed in range(5)]  # more than 3: the closest 3 of them
    response = match_client.post("/api/colorize", files=several(image, *bank))
    expected = matcher.colorize(image, reference=bank)
    assert np.array_equal(np.asarray(decoded(response)), np.asarray(expected))
    suggested = match_client.post("/api/suggest?n=3", files=several(image, one, two))
    points = matcher.suggest_points(image, 3, reference=[one, two])
    assert suggested.json()["points"] == [{"x": p.x, "y": p.y, "color": p.color} for p in points]


def test_the_match_map_of_an_upload(
    match_client: TestClient, matcher: Colorizer, client: TestClient
) -> None:
    image, one, two = make_color_image(4, (64, 48)), reference(7), reference(8)
    response = match_client.post("/api/match?size=64", files=several(image, one, two))
    shown = decoded(response)
    assert (shown.mode, shown.size) == ("L", image.size)
    expected = matcher.reference_match(image, [one, two], size=64)
    assert np.array_equal(np.asarray(shown), np.asarray(expected))
    square = make_color_image(4, (64, 64))  # at its own working size: itself, exactly
    itself = decoded(match_client.post("/api/match?size=64", files=several(square, square)))
    assert np.asarray(itself).min() >= 250 and np.asarray(shown).mean() < 230
    alone = match_client.post("/api/match", content=png_bytes(image))
    assert alone.status_code == 400 and alone.json()["error"].startswith("no reference")
    refused = client.post("/api/match", files=several(image, one))  # a histogram model
    assert refused.status_code == 400
    assert "trained without model.reference_match" in refused.json()["error"]


def test_too_many_or_too_large_references_are_refused(match_client: TestClient) -> None:
    image, ref = gray(4), png_bytes(reference(7, (24, 24)))
    most = match_client.post("/api/colorize", files=several(image, *[ref] * MAX_REFERENCES))
    assert most.status_code == 200
    response = match_client.post("/api/colorize", files=several(image, *[ref] * 9))
    assert response.status_code == 400
    assert (
        response.json()["error"] == f"reference: at most {MAX_REFERENCES} images per request, got 9"
    )
    noise = np.random.default_rng(2).bytes(12_000)  # each under the limit, not both together
    response = match_client.post("/api/colorize", files=several(image, noise, noise))
    assert response.status_code == 413
    assert response.json()["error"].startswith("reference: 2 files together over the limit of")
    bad = match_client.post("/api/colorize", files=several(image, ref, b"not an image"))
    assert bad.status_code == 400 and bad.json()["error"].startswith("reference: not an image")
    palette_ = match_client.post("/api/palette", files=several(image, ref, ref)[1:])
    assert palette_.status_code == 400
    assert palette_.json()["error"] == "reference: one image here, got 2: send each alone"
