"""`colorgan serve`: the page, POST /api/colorize, limits, broken uploads, concurrency, the CLI."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import httpx2 as httpx  # what starlette's TestClient uses
import numpy as np
import pytest
import torch
from PIL import Image
from starlette.testclient import TestClient

from colorgan.batch import Batch
from colorgan.cli import main
from colorgan.colorize import Colorizer
from colorgan.connections import listen
from colorgan.errors import ColorganError
from colorgan.hints import Hint
from colorgan.serve import Limits, create_app
from tests.conftest import make_color_image, make_hint_checkpoint, make_tiny_checkpoint

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("serve") / "tiny.pt")


@pytest.fixture(scope="module")
def colorizer(checkpoint: Path) -> Colorizer:
    return Colorizer.from_checkpoint(checkpoint, device="cpu", batch_size=1)


@pytest.fixture(scope="module")
def client(colorizer: Colorizer) -> TestClient:
    limits = Limits(max_upload_bytes=20_000, max_pixels=200 * 200)
    return TestClient(create_app(colorizer, limits))


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def gray(seed: int, size: tuple[int, int] = (70, 50)) -> Image.Image:
    return make_color_image(seed, size).convert("L")


def decoded(response: httpx.Response) -> Image.Image:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return Image.open(io.BytesIO(response.content))


def test_page_and_info(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "Drop images here" in page.text
    assert client.get("/api/info").json() == {
        "image_size": 32,
        "multiple": 8,
        "max_size": 2048,
        "max_upload_bytes": 20_000,
        "max_pixels": 40_000,
        "max_references": 8,
        "hints": False,
        "uncertainty": False,
        "caution": None,
        "reference": False,
        "match": False,
        "match_map": False,
    }


def test_raw_body_and_multipart_give_the_colorized_png(
    client: TestClient, colorizer: Colorizer
) -> None:
    image = gray(1)
    expected = np.asarray(colorizer.colorize(image))
    raw = decoded(client.post("/api/colorize", content=png_bytes(image)))
    form = decoded(client.post("/api/colorize", files={"image": ("a.png", png_bytes(image))}))
    for result in (raw, form):
        assert result.size == (70, 50) and result.mode == "RGB"
        assert np.array_equal(np.asarray(result), expected)


def test_size_and_alpha(client: TestClient, colorizer: Colorizer) -> None:
    image = make_color_image(2, (61, 33)).convert("LA")
    result = decoded(client.post("/api/colorize?size=64", content=png_bytes(image)))
    assert result.mode == "RGBA" and result.size == (61, 33)
    assert np.array_equal(np.asarray(result), np.asarray(colorizer.colorize(image, size=64)))
    assert not np.array_equal(np.asarray(result), np.asarray(colorizer.colorize(image)))


def truncated_png() -> bytes:
    data = png_bytes(make_color_image(3, (80, 80)))
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("query", "body", "status", "reason"),
    [
        ("", b"", 400, "empty upload"),
        ("", b"this is not an image", 400, "not an image file"),
        ("", truncated_png(), 400, "cannot decode"),
        ("?size=0", png_bytes(gray(0)), 400, "size must be a whole number"),
        ("?size=abc", png_bytes(gray(0)), 400, "size must be a whole number"),
        ("?size=4096", png_bytes(gray(0)), 413, "size must be a whole number"),  # too large
        ("?size=" + "9" * 5000, png_bytes(gray(0)), 413, "size must be a whole number"),
        ("", png_bytes(gray(0, (250, 200))), 413, "refused before decoding"),
        ("", np.random.default_rng(0).bytes(200_000), 413, "over the limit"),
    ],
)
def test_bad_uploads_get_a_4xx_reason(
    client: TestClient, query: str, body: bytes, status: int, reason: str
) -> None:
    response = client.post(f"/api/colorize{query}", content=body)
    assert response.status_code == status
    assert reason in response.json()["error"]
    assert client.get("/api/info").status_code == 200  # and the server goes on


def test_multipart_without_a_file_is_refused(client: TestClient) -> None:
    body = b'--b\r\nContent-Disposition: form-data; name="note"\r\n\r\nno file\r\n--b--\r\n'
    headers = {"content-type": "multipart/form-data; boundary=b"}
    response = client.post("/api/colorize", content=body, headers=headers)
    assert response.status_code == 400 and "no file" in response.json()["error"]


@pytest.fixture(scope="module")
def hint_colorizer(tmp_path_factory: pytest.TempPathFactory) -> Colorizer:
    checkpoint = make_hint_checkpoint(tmp_path_factory.mktemp("serve") / "hints.pt")
    return Colorizer.from_checkpoint(checkpoint, device="cpu", batch_size=1)


def test_a_hints_field_colors_its_points(hint_colorizer: Colorizer) -> None:
    client = TestClient(create_app(hint_colorizer))
    assert client.get("/api/info").json()["hints"] is True
    image = gray(4)
    points = [{"x": 20.5, "y": 10, "color": "#0000ff"}, {"x": 50, "y": 30, "color": "#f80"}]
    files = {"image": ("a.png", png_bytes(image))}
    result = decoded(client.post("/api/colorize", files=files, data={"hints": json.dumps(points)}))
    hints = [Hint(20.5, 10, "#0000ff"), Hint(50, 30, "#f80")]
    assert np.array_equal(
        np.asarray(result), np.asarray(hint_colorizer.colorize(image, hints=hints))
    )
    assert not np.array_equal(np.asarray(result), np.asarray(hint_colorizer.colorize(image)))
    empty = decoded(client.post("/api/colorize", files=files, data={"hints": "[]"}))
    assert np.array_equal(np.asarray(empty), np.asarray(hint_colorizer.colorize(image)))


@pytest.mark.parametrize(
    ("hints", "reason"),
    [
        ("[{x: 1}]", "hints: not valid JSON"),
        ('{"x": 1, "y": 2, "color": "#00f"}', "expected a JSON list of points"),
        ('[{"x": 1, "y": 2}]', "point 0: expected an object with x, y and color"),
        ('[{"x": 1, "y": 2, "color": "blue"}]', "point 0: color 'blue' is not"),
        ('[{"x": 1, "y": "2", "color": "#00f"}]', "point 0: 'y' must be a number"),
        ('[{"x": 1, "y": 2, "color": "#00f"}, {"x": 70, "y": 0, "color": "#00f"}]',
         "point 1 at (70, 0) is outside the 70x50 image"),
    ],
)  # fmt: skip
def test_a_bad_hints_field_gets_a_400_reason(
    hint_colorizer: Colorizer, hints: str, reason: str
) -> None:
    client = TestClient(create_app(hint_colorizer))
    files = {"image": ("a.png", png_bytes(gray(4)))}
    response = client.post("/api/colorize", files=files, data={"hints": hints})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert reason in response.json()["error"]


def test_points_for_a_model_without_hints_get_a_400_reason(client: TestClient) -> None:
    files = {"image": ("a.png", png_bytes(gray(4)))}
    hints = json.dumps([{"x": 1, "y": 2, "color": "#0000ff"}])
    response = client.post("/api/colorize", files=files, data={"hints": hints})
    assert response.status_code == 400
    assert "trained without color points" in response.json()["error"]


def test_concurrent_requests_get_their_own_results(colorizer: Colorizer) -> None:
    """Two requests in flight at once: each gets its own image; the model is never entered
    twice at the same time."""
    inside, overlaps = [0], [0]

    def slow_predict(batch: Batch) -> torch.Tensor:
        inside[0] += 1
        overlaps[0] = max(overlaps[0], inside[0])
        time.sleep(0.2)  # long enough for the other request to arrive
        ab = colorizer.predict(batch)
        inside[0] -= 1
        return ab

    slow = Colorizer(slow_predict, 32, 8, torch.device("cpu"), batch_size=1)
    images = [gray(10, (64, 48)), gray(11, (40, 56))]

    async def both() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=create_app(slow))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            posts = [http.post("/api/colorize", content=png_bytes(i)) for i in images]
            return list(await asyncio.gather(*posts))

    started = time.perf_counter()
    results = [decoded(r) for r in asyncio.run(both())]
    assert time.perf_counter() - started < 2.0
    assert overlaps[0] == 1
    for image, result in zip(images, results, strict=True):
        assert result.size == image.size
        assert np.array_equal(np.asarray(result), np.asarray(colorizer.colorize(image)))


def test_missing_starlette_is_one_clear_line(
    colorizer: Colorizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "starlette.applications", None)
    with pytest.raises(ColorganError, match=r"pip install 'colorgan\[serve\]'"):
        create_app(colorizer)


def test_cli_port_in_use_is_a_usage_error(
    checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with listen("127.0.0.1", 0) as busy:
        port = busy.getsockname()[1]
        code = main(["serve", str(checkpoint), "--port", str(port)])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 1 and f"cannot listen on 127.0.0.1:{port}" in err[0]


def start_server(model: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    """`colorgan serve MODEL --port 0` in a subprocess; returns it and the URL it printed."""
    args = [sys.executable, "-m", "colorgan", "serve", str(model), "--port", "0", *extra]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "" if it exited: its error is then on stderr
    if "http://127.0.0.1:" not in line:
        proc.kill()
        raise AssertionError(f"colorgan serve did not print its URL: {line!r}")
    return proc, line.split(" at ")[1].split()[0]


def test_cli_serve_prints_its_url_and_answers(checkpoint: Path) -> None:
    proc, url = start_server(checkpoint, "--device", "cpu")
    try:
        with urllib.request.urlopen(url + "api/info", timeout=30) as response:
            assert json.load(response)["image_size"] == 32
        request = urllib.request.Request(url + "api/colorize", data=png_bytes(gray(5)))
        with urllib.request.urlopen(request, timeout=60) as response:
            assert Image.open(io.BytesIO(response.read())).size == (70, 50)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_working_size_that_cannot_fit_gets_a_413_reason(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import colorgan.device as device_module

    monkeypatch.setattr(device_module, "free_memory", lambda device: 1000)  # 1 kB free
    response = client.post("/api/colorize?size=64", content=png_bytes(gray(0)))
    assert response.status_code == 413
    assert "free" in response.json()["error"] and "smaller --size" in response.json()["error"]
