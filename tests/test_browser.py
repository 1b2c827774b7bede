"""The `colorgan serve` page in headless Chromium (Playwright driving Debian's /usr/bin/chromium):
upload and drop images, get colorized results of the right size, download, broken uploads; with a
model that takes color points: place, move, remove, save and load points, the eyedropper; with a
model that predicts its uncertainty: the caution slider and the "where it is guessing" overlay;
with a model that takes reference images: its drop zone, each one's palette, and their colors for
every result until they are removed; with a model that matches them place by place, the overlay
of where each picture matches them.

Skipped only when Chromium or Playwright is missing and COLORGAN_REQUIRE_BROWSER is not 1 (CI
sets it, after installing Chromium). COLORGAN_SCREENSHOT=PATH saves a screenshot of the page
(docs/serve.png and, from the point test, docs/serve-hints.png are made this way).
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from colorgan.colorize import Colorizer
from colorgan.reference import palette
from tests.conftest import (
    make_color_image,
    make_exemplar_checkpoint,
    make_hint_checkpoint,
    make_reference_checkpoint,
    make_tiny_checkpoint,
    make_uncertainty_checkpoint,
)
from tests.test_serve import start_server

CHROMIUM = Path("/usr/bin/chromium")
# what Chromium needs here: root (no sandbox), no GPU, a closed network (no background calls)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _browser_missing(reason: str) -> None:
    if os.environ.get("COLORGAN_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason}, and COLORGAN_REQUIRE_BROWSER=1", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium through Playwright (no browser download: Debian's own)."""
    if not CHROMIUM.exists():
        _browser_missing(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _browser_missing("the playwright package is missing (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


def served(checkpoint: Path) -> Iterator[str]:
    """`colorgan serve` on `checkpoint`, in a subprocess on a free port."""
    proc, address = start_server(checkpoint, "--device", "cpu")
    yield address
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A tiny checkpoint without color points."""
    yield from served(make_tiny_checkpoint(tmp_path_factory.mktemp("browser") / "tiny.pt"))


@pytest.fixture(scope="module")
def hint_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A tiny untrained Lite0 checkpoint that takes color points."""
    yield from served(make_hint_checkpoint(tmp_path_factory.mktemp("browser") / "hints.pt"))


@pytest.fixture(scope="module")
def unsure_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A tiny checkpoint with model.uncertainty (sure where dark, guessing where light)."""
    path = tmp_path_factory.mktemp("browser") / "unsure.pt"
    yield from served(make_uncertainty_checkpoint(path, caution=0.25))


@pytest.fixture(scope="module")
def reference_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny checkpoint with model.reference whose colors visibly follow a reference."""
    return make_reference_checkpoint(tmp_path_factory.mktemp("browser") / "reference.pt")


@pytest.fixture(scope="module")
def reference_url(reference_checkpoint: Path) -> Iterator[str]:
    yield from served(reference_checkpoint)


@pytest.fixture(scope="module")
def match_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny checkpoint with model.reference_match whose colors follow its references."""
    return make_exemplar_checkpoint(tmp_path_factory.mktemp("browser") / "exemplar.pt")


@pytest.fixture(scope="module")
def match_url(match_checkpoint: Path) -> Iterator[str]:
    yield from served(match_checkpoint)


# records the `hints` and `caution` fields of each multipart request the page sends (Playwright
# does not give the body of a request that holds a file), every URL it fetches, and for each
# POST its URL and the names of its `reference` files
RECORD_HINTS = """
    window.sentHints = [];
    window.sentCautions = [];
    window.sentReferences = [];
    window.fetched = [];
    const send = window.fetch;
    window.fetch = (url, options) => {
        fetched.push(String(url));
        const form = options && options.body instanceof FormData ? options.body : null;
        if (form && !String(url).includes("api/palette")) {
            sentHints.push(form.get("hints"));
            sentCautions.push(form.get("caution"));
        }
        if (options && options.method === "POST") {
            const references = form ? form.getAll("reference").map(r => r.name) : [];
            sentReferences.push([String(url), references]);
        }
        return send(url, options);
    };
"""


def open_page(browser: Any, address: str) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1000, "height": 640}, accept_downloads=True)
    tab = context.new_page()
    tab.add_init_script(RECORD_HINTS)
    tab.set_default_timeout(60_000)  # two slow cores, shared
    tab.goto(address)
    tab.wait_for_function("document.getElementById('size').value === '32'")  # /api/info came
    yield tab
    context.close()


@pytest.fixture
def page(browser: Any, url: str) -> Iterator[Any]:
    yield from open_page(browser, url)


@pytest.fixture
def hint_page(browser: Any, hint_url: str) -> Iterator[Any]:
    yield from open_page(browser, hint_url)


@pytest.fixture
def unsure_page(browser: Any, unsure_url: str) -> Iterator[Any]:
    yield from open_page(browser, unsure_url)


@pytest.fixture
def reference_page(browser: Any, reference_url: str) -> Iterator[Any]:
    yield from open_page(browser, reference_url)


@pytest.fixture
def match_page(browser: Any, match_url: str) -> Iterator[Any]:
    yield from open_page(browser, match_url)


def scene(size: tuple[int, int]) -> Image.Image:
    """A generated grayscale scene: sky gradient, hills, a sun, a house."""
    width, height = size
    sky = np.linspace(200, 140, height, dtype=np.float32)[:, None].repeat(width, 1)
    image = Image.fromarray(sky.astype(np.uint8), "L")
    draw = ImageDraw.Draw(image)
    draw.ellipse((width * 0.68, height * 0.1, width * 0.86, height * 0.34), fill=235)
    draw.ellipse((-width * 0.3, height * 0.55, width * 0.7, height * 1.4), fill=110)
    draw.ellipse((width * 0.35, height * 0.62, width * 1.3, height * 1.5), fill=85)
    draw.rectangle((width * 0.2, height * 0.48, width * 0.42, height * 0.75), fill=170)
    draw.polygon(
        [(width * 0.17, height * 0.5), (width * 0.31, height * 0.32), (width * 0.45, height * 0.5)],
        fill=60,
    )
    return image.filter(ImageFilter.GaussianBlur(0.8))


def png_file(path: Path, image: Image.Image) -> Path:
    image.save(path)
    return path


def result_sizes(page: Any, count: int) -> list[list[int]]:
    """Wait for `count` result images to load; their natural (width, height), newest first."""
    page.wait_for_function(
        f"""() => {{
            const imgs = [...document.querySelectorAll('.card img.after')];
            return imgs.length === {count} && imgs.every(i => i.complete && i.naturalWidth > 0);
        }}"""
    )
    return page.eval_on_selector_all(
        ".card img.after", "imgs => imgs.map(i => [i.naturalWidth, i.naturalHeight])"
    )


def test_upload_colorizes_and_downloads(page: Any, tmp_path: Path) -> None:
    source = png_file(tmp_path / "valley.png", scene((240, 160)))
    page.fill("#size", "64")
    with page.expect_response(lambda r: "api/colorize?size=64" in r.url) as response:
        page.set_input_files("#files", str(source))
    assert response.value.status == 200
    assert result_sizes(page, 1) == [[240, 160]]
    page.fill(".compare input[type=range]", "70")  # the before/after slider moves the split
    clip = page.eval_on_selector(".compare img.before", "i => i.style.clipPath")
    assert clip == "inset(0px 30% 0px 0px)"
    assert page.inner_text(".card .dims") == "240×160"
    with page.expect_download() as download:
        page.click("a.download")
    assert download.value.suggested_filename == "valley_color.png"
    saved = Image.open(download.value.path())
    assert saved.size == (240, 160) and saved.mode == "RGB"
    rgb = np.asarray(saved, dtype=np.int16)
    assert np.abs(rgb[..., 0] - rgb[..., 2]).mean() > 5  # colored, not gray
    if os.environ.get("COLORGAN_SCREENSHOT"):
        page.set_viewport_size({"width": 760, "height": 500})
        page.screenshot(path=os.environ["COLORGAN_SCREENSHOT"], full_page=True)


def test_dropped_images_and_a_broken_one(page: Any) -> None:
    files = [
        ("hills.png", "image/png", png_bytes(scene((120, 90)))),
        ("broken.png", "image/png", b"\x89PNG\r\n\x1a\n this is not really a PNG"),
        ("tall.png", "image/png", png_bytes(scene((50, 100)))),
    ]
    transfer = page.evaluate_handle(
        """files => {
            const transfer = new DataTransfer();
            for (const [name, type, data] of files) {
                const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
                transfer.items.add(new File([bytes], name, { type }));
            }
            return transfer;
        }""",
        [[name, kind, base64.b64encode(data).decode()] for name, kind, data in files],
    )
    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
    assert result_sizes(page, 2) == [[50, 100], [120, 90]]  # newest first
    error = page.locator(".card", has_text="broken.png").locator(".status.error")
    assert "not an image file" in error.inner_text()
    assert page.locator(".card", has_text="broken.png").locator("img").count() == 0


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# ---- color points (a model with model.hints) ----

BLUE = "#0000ff"
PICTURE = (96, 64)  # the generated scene the point tests colorize


def shown_result(page: Any) -> np.ndarray:
    """The result image the page shows now, decoded (RGB, height x width x 3)."""
    data = page.eval_on_selector(
        ".card img.after",
        """async img => {
            const bytes = new Uint8Array(await (await fetch(img.src)).arrayBuffer());
            let text = "";
            for (const b of bytes) text += String.fromCharCode(b);
            return btoa(text);
        }""",
    )
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"), dtype=int)


def wait_results(page: Any, count: int) -> None:
    """Wait until the card has shown `count` results (the first, then each update) and has no
    update pending."""
    page.wait_for_function(
        f"""() => {{
            const card = document.querySelector('.card');
            const img = card && card.querySelector('img.after');
            return card.dataset.results === '{count}' && card.dataset.pending === '0' &&
                img.complete && img.naturalWidth > 0;
        }}"""
    )


def upload_scene(page: Any, tmp_path: Path) -> np.ndarray:
    """Upload the generated scene; its result without points."""
    page.set_input_files("#files", str(png_file(tmp_path / "scene.png", scene(PICTURE))))
    assert result_sizes(page, 1) == [list(PICTURE)]
    wait_results(page, 1)
    return shown_result(page)


def at_pixel(page: Any, x: float, y: float) -> dict[str, float]:
    """The position inside the points layer (CSS pixels) of image pixel coordinates x, y."""
    box = page.locator(".card .points").bounding_box()
    return {"x": x * box["width"] / PICTURE[0], "y": y * box["height"] / PICTURE[1]}


def point_positions(page: Any) -> list[list[str]]:
    return page.eval_on_selector_all(
        ".card .point", "dots => dots.map(d => [d.style.left, d.style.top, d.className])"
    )


def saved_points(page: Any) -> Any:
    with page.expect_download() as download:
        page.click(".card .save-points")
    assert download.value.suggested_filename == "scene.json"  # as `colorize --hints DIR` reads
    return json.loads(Path(download.value.path()).read_text(encoding="utf-8"))


def hints_sent(page: Any, action: Callable[[], object]) -> Any:
    """Do `action`; the points (the JSON of the `hints` field) of the request it leads to."""
    before = page.evaluate("sentHints.length")
    action()
    page.wait_for_function(f"sentHints.length > {before}")
    return json.loads(page.evaluate("sentHints[sentHints.length - 1]"))


def test_a_blue_point_colors_its_spot(hint_page: Any, tmp_path: Path) -> None:
    page = hint_page
    assert page.is_visible("#points-tools") and not page.is_visible("#points-note")
    plain = upload_scene(page, tmp_path)
    assert np.ptp(plain, axis=2).max() < 12  # the untrained model: about gray
    page.fill("#point-color", BLUE)
    x, y = 30.5, 20.5  # the middle of pixel (30, 20)
    where = at_pixel(page, x, y)
    sent = hints_sent(page, lambda: page.click(".card .points", position=where))
    assert sent == [{"x": x, "y": y, "color": BLUE}]
    wait_results(page, 2)
    hinted = shown_result(page)
    r, g, b = hinted[20, 30]
    assert b > r + 40 and b > g + 40, hinted[20, 30]  # blue at the point
    assert np.array_equal(hinted[40:, 60:], plain[40:, 60:])  # far away: as without points
    assert not np.array_equal(hinted, plain)
    left, top, kind = point_positions(page)[0]
    assert (float(left[:-1]), float(top[:-1])) == pytest.approx(
        (100 * x / 96, 100 * y / 64), abs=1e-3
    )
    assert kind == "point selected"
    link = page.get_attribute(".card a.download", "href")
    assert link == page.get_attribute(".card img.after", "src")  # the download is the update
    if os.environ.get("COLORGAN_SCREENSHOT"):
        page.set_viewport_size({"width": 760, "height": 560})
        page.screenshot(path=os.environ["COLORGAN_SCREENSHOT"], full_page=True)

    # the eyedropper takes the color shown at a spot (here: next to the point) without a point
    page.keyboard.press("Escape")  # nothing selected: only the current color changes
    page.click("#eyedropper")
    assert page.get_attribute("#eyedropper", "aria-pressed") == "true"
    page.click(".card .points", position=at_pixel(page, 31.5, 20.5))
    shown = "#{:02x}{:02x}{:02x}".format(*hinted[20, 31])
    assert page.input_value("#point-color") == shown and shown != "#000000"
    assert page.get_attribute("#eyedropper", "aria-pressed") == "false"
    assert len(point_positions(page)) == 1

    # a drag moves the point, Delete removes it: each change re-colorizes
    box = page.locator(".card .points").bounding_box()
    start, end = at_pixel(page, x, y), at_pixel(page, 70.5, 45.5)
    page.mouse.move(box["x"] + start["x"], box["y"] + start["y"])
    page.mouse.down()
    page.mouse.move(box["x"] + end["x"], box["y"] + end["y"], steps=5)
    assert hints_sent(page, lambda: page.mouse.up()) == [{"x": 70.5, "y": 45.5, "color": BLUE}]
    wait_results(page, 3)
    moved = shown_result(page)
    assert moved[45, 70, 2] > moved[45, 70, 0] + 40
    assert np.array_equal(moved[:15, :15], plain[:15, :15])
    assert np.array_equal(moved[20, 30], plain[20, 30])  # the old spot: as before
    assert hints_sent(page, lambda: page.keyboard.press("Delete")) == []
    wait_results(page, 4)
    assert point_positions(page) == [] and np.array_equal(shown_result(page), plain)
    assert page.evaluate("sentHints.length") == 3  # one per change, none for the eyedropper


def test_points_save_and_load_as_the_hints_json(hint_page: Any, tmp_path: Path) -> None:
    page = hint_page
    upload_scene(page, tmp_path)
    assert saved_points(page) == []
    points = [
        {"x": 10, "y": 12.5, "color": "#ff8800"},
        {"x": 80.25, "y": 50, "color": "#22aa44", "radius": 4},
    ]
    source = tmp_path / "points.json"
    source.write_text(json.dumps(points), encoding="utf-8")
    sent = hints_sent(page, lambda: page.set_input_files(".card input.load-file", str(source)))
    assert sent == points
    wait_results(page, 2)
    assert len(point_positions(page)) == 2
    assert saved_points(page) == points  # the round trip: the same JSON

    # a placed point is saved in pixels of the image, wherever the page shows it
    page.set_viewport_size({"width": 700, "height": 640})  # a smaller display of the image
    page.fill("#point-color", "#123456")
    page.click(".card .points", position=at_pixel(page, 48.5, 8.5))
    *kept, added = saved_points(page)
    assert kept == points and added == {"x": 48.5, "y": 8.5, "color": "#123456"}
    wait_results(page, 3)

    # a file that is not a hints file: its reason, and the points stay
    bad = tmp_path / "bad.json"
    for text, reason in [
        ('{"x": 1}', "expected a JSON list"),
        ('[{"x": 1, "y": 2, "color": "blue"}]', 'point 0: color "blue" is not'),
        ('[{"x": 96, "y": 2, "color": "#00f"}]', "point 0 at (96, 2) is outside the 96x64 image"),
        ("[{", "not valid JSON"),
    ]:
        bad.write_text(text, encoding="utf-8")
        page.set_input_files(".card input.load-file", str(bad))
        page.locator(".card .update.error", has_text=f"bad.json: {reason}").wait_for()
        assert len(point_positions(page)) == 3
    assert hints_sent(page, lambda: page.click(".card .clear-points")) == []
    wait_results(page, 4)
    assert saved_points(page) == [] and point_positions(page) == []
    assert page.evaluate("sentHints.length") == 3  # none for the refused files


def test_a_model_without_points_has_no_point_tools(page: Any, tmp_path: Path) -> None:
    page.set_input_files("#files", str(png_file(tmp_path / "scene.png", scene(PICTURE))))
    assert result_sizes(page, 1) == [list(PICTURE)]
    assert not page.is_visible("#points-tools")
    assert "trained without color points" in page.inner_text("#points-note")
    assert page.locator(".card .points").count() == 0
    assert page.locator(".card .save-points").count() == 0


# ---- caution and the uncertainty map (a model with model.uncertainty) ----


def halves(size: tuple[int, int]) -> Image.Image:
    """Gray: dark on the left (the test model is sure there), light on the right (it is not)."""
    gray = np.full((size[1], size[0]), 40, dtype=np.uint8)
    gray[:, size[0] // 2 :] = 230
    return Image.fromarray(gray)


def guess_alpha(page: Any, points: list[tuple[int, int]], overlay: str = "guess") -> list[int]:
    """The overlay canvas's size, then its opacity (0-255) at each (x, y) image pixel."""
    return page.eval_on_selector(
        f".card canvas.{overlay}",
        """(canvas, points) => {
            const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
            return [canvas.width, canvas.height,
                    ...points.map(([x, y]) => data.data[(y * canvas.width + x) * 4 + 3])];
        }""",
        points,
    )


def test_the_caution_slider_and_the_guessing_overlay(unsure_page: Any, tmp_path: Path) -> None:
    page = unsure_page
    assert page.is_visible("#caution-tools") and not page.is_visible("#caution-note")
    assert page.input_value("#caution") == "0.25"  # the model's model.caution
    assert page.inner_text("#caution-value") == "0.25"
    page.set_input_files("#files", str(png_file(tmp_path / "halves.png", halves(PICTURE))))
    assert result_sizes(page, 1) == [list(PICTURE)]
    wait_results(page, 1)
    faded = shown_result(page)
    dark, light = (slice(8, 56), slice(6, 40)), (slice(8, 56), slice(56, 90))
    assert np.ptp(faded[light], axis=2).max() < 12  # unsure there: nearly gray at 0.25
    assert np.ptp(faded[dark], axis=2).min() > 20  # sure: the model's colors

    page.fill("#caution", "0")  # the result follows the slider
    wait_results(page, 2)
    colored = shown_result(page)
    assert page.evaluate("sentCautions") == ["0.25", "0"]
    assert page.inner_text("#caution-value") == "0.00"
    assert np.ptp(colored[light], axis=2).min() > 30  # the model's own colors again
    assert np.abs(colored[dark] - faded[dark]).max() <= 1  # L and the sure colors: as before

    assert not page.is_visible(".card canvas.guess")
    with page.expect_response(lambda r: "api/uncertainty?size=32" in r.url) as response:
        page.check("#guessing")
    assert response.value.status == 200
    page.wait_for_function("document.querySelector('.card').dataset.map === 'shown'")
    assert page.is_visible(".card canvas.guess")
    width, height, at_dark, at_light = guess_alpha(page, [(20, 32), (75, 32)])
    assert (width, height) == PICTURE and at_dark < 10 and at_light > 150  # red where guessing
    if os.environ.get("COLORGAN_SCREENSHOT"):
        page.set_viewport_size({"width": 760, "height": 560})
        page.screenshot(path=os.environ["COLORGAN_SCREENSHOT"], full_page=True)

    page.fill("#caution", "1")  # caution changes the colors, not the map: no new map request
    wait_results(page, 3)
    assert np.ptp(shown_result(page)[light], axis=2).max() < 4
    assert sum("api/uncertainty" in url for url in page.evaluate("fetched")) == 1
    page.uncheck("#guessing")
    assert not page.is_visible(".card canvas.guess")


def test_a_model_without_uncertainty_has_no_caution_control(page: Any, tmp_path: Path) -> None:
    assert not page.is_visible("#caution-tools")
    assert "does not say how sure it is" in page.inner_text("#caution-note")
    page.set_input_files("#files", str(png_file(tmp_path / "scene.png", scene(PICTURE))))
    assert result_sizes(page, 1) == [list(PICTURE)]
    assert page.evaluate("sentCautions") == []  # the image alone, as the raw body
    assert page.locator(".card canvas.guess").is_hidden()


# ---- a reference image (a model with model.reference) ----


def references_sent(page: Any, route: str = "colorize") -> list[list[str]]:
    """The names of the `reference` files of each POST to api/<route>, in order."""
    return [name for url, name in page.evaluate("sentReferences") if f"api/{route}" in url]


def drop_file(page: Any, selector: str, name: str, data: bytes) -> None:
    """Drop one PNG file named `name` on `selector`."""
    transfer = page.evaluate_handle(
        """([name, data]) => {
            const transfer = new DataTransfer();
            const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
            transfer.items.add(new File([bytes], name, { type: "image/png" }));
            return transfer;
        }""",
        [name, base64.b64encode(data).decode()],
    )
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


def test_a_reference_image_colors_every_result_until_removed(
    reference_page: Any, reference_checkpoint: Path, tmp_path: Path
) -> None:
    page = reference_page
    assert page.is_visible("#reference-tools") and not page.is_visible("#reference-note")
    assert "their colors are used for every picture" in page.inner_text("#reference-drop")
    assert page.locator("#references .reference").count() == 0
    assert not page.is_visible("#matching-tools")  # the histogram alone: no match map
    plain = upload_scene(page, tmp_path)
    assert references_sent(page) == [[]]

    # a reference: its thumbnail and palette, and the result colorized again with it
    colors = make_color_image(7, (64, 48))
    source = png_file(tmp_path / "beach.png", colors)
    page.set_input_files("#reference-file", str(source))
    page.locator("#references .swatch").first.wait_for()
    swatches = page.eval_on_selector_all(
        "#references .swatch", "s => s.map(e => [e.dataset.color, Number(e.dataset.share)])"
    )
    assert swatches == [[color, round(share, 4)] for color, share in palette(colors)]
    assert page.is_visible("#references .reference-thumb")
    assert page.is_visible("#references .reference-remove")
    wait_results(page, 2)
    referenced = shown_result(page)
    assert references_sent(page) == [[], ["beach.png"]]
    assert references_sent(page, "palette") == [["beach.png"]]
    model = Colorizer.from_checkpoint(reference_checkpoint, device="cpu", batch_size=1)
    expected = model.colorize(Image.open(tmp_path / "scene.png"), reference=colors)
    assert np.abs(referenced - np.asarray(expected, dtype=int)).max() <= 1
    assert np.abs(referenced - plain).mean() > 3  # visibly other colors

    # a file that is not an image: its reason; the reference in use stays, nothing is redone
    (tmp_path / "notes.png").write_bytes(b"not an image at all")
    page.set_input_files("#reference-file", str(tmp_path / "notes.png"))
    page.locator("#reference-error", has_text="notes.png: reference: not an image").wait_for()
    assert page.locator("#references .swatch").count() == len(swatches)
    assert references_sent(page) == [[], ["beach.png"]]

    # removed: the result as without it, and requests no longer carry it
    page.click("#references .reference-remove")
    assert page.locator("#references .reference").count() == 0
    assert not page.is_visible("#reference-error")
    wait_results(page, 3)
    assert np.array_equal(shown_result(page), plain)
    assert references_sent(page) == [[], ["beach.png"], []]

    # dropped on its zone, it is back; a new picture gets it too
    drop_file(page, "#reference-drop", "again.png", png_bytes(colors))
    wait_results(page, 4)
    assert np.array_equal(shown_result(page), referenced)
    page.set_input_files("#files", str(png_file(tmp_path / "hills.png", scene((50, 40)))))
    assert result_sizes(page, 2) == [[50, 40], list(PICTURE)]
    assert references_sent(page) == [[], ["beach.png"], [], ["again.png"], ["again.png"]]


def test_several_references_and_where_the_picture_matches_them(
    match_page: Any, match_checkpoint: Path, tmp_path: Path
) -> None:
    page = match_page
    assert page.is_visible("#matching-tools")
    plain = upload_scene(page, tmp_path)
    picture = Image.open(tmp_path / "scene.png")
    beach, hills = make_color_image(7, (64, 48)), scene((64, 48)).convert("RGB")
    paths = [png_file(tmp_path / "beach.png", beach), png_file(tmp_path / "hills.png", hills)]
    page.set_input_files("#reference-file", [str(path) for path in paths])  # both at once
    wait_results(page, 2)
    assert page.locator("#references .reference").count() == 2
    assert references_sent(page) == [[], ["beach.png", "hills.png"]]
    model = Colorizer.from_checkpoint(match_checkpoint, device="cpu", batch_size=1)
    expected = model.colorize(picture, reference=[beach, hills])
    both = shown_result(page)
    assert np.abs(both - np.asarray(expected, dtype=int)).max() <= 1
    assert np.abs(both - plain).mean() > 3

    # the overlay: green as opaque as the picture matches the references
    assert not page.is_visible(".card canvas.match")
    with page.expect_response(lambda r: "api/match?size=32" in r.url) as response:
        page.check("#matching")
    assert response.value.status == 200
    page.wait_for_function("document.querySelector('.card').dataset.match === 'shown'")
    assert page.is_visible(".card canvas.match")
    places = [(10, 10), (48, 40), (80, 56)]
    mapped = np.asarray(model.reference_match(picture, [beach, hills]), dtype=int)
    width, height, *alphas = guess_alpha(page, places, "match")
    assert (width, height) == PICTURE
    assert alphas == pytest.approx([mapped[y, x] * 0.6 for x, y in places], abs=1.5)

    # one removed: colors and overlay follow (the overlay fetched again for the one left)
    page.click("#references .reference-remove >> nth=0")
    wait_results(page, 3)
    assert references_sent(page, "match")[-1] == ["hills.png"]
    page.wait_for_function("document.querySelector('.card').dataset.match === 'shown'")
    mapped = np.asarray(model.reference_match(picture, [hills]), dtype=int)
    _, _, *alphas = guess_alpha(page, places, "match")
    assert alphas == pytest.approx([mapped[y, x] * 0.6 for x, y in places], abs=1.5)
    page.uncheck("#matching")
    assert not page.is_visible(".card canvas.match")


def test_a_model_without_a_reference_has_no_reference_zone(page: Any) -> None:
    assert not page.is_visible("#reference-tools")
    assert "trained without a reference image" in page.inner_text("#reference-note")


def test_suggested_points_are_hollow_markers_a_click_turns_into_points(
    hint_page: Any, tmp_path: Path
) -> None:
    page = hint_page
    upload_scene(page, tmp_path)
    page.click(".card .suggest-points")
    page.wait_for_selector(".card .point.suggested")
    rings = page.eval_on_selector_all(
        ".card .point.suggested", "rs => rs.map(r => [r.style.left, r.style.top, r.title])"
    )
    assert len(rings) == 5  # the API's default
    assert all("click to add" in title for _, _, title in rings)
    assert not page.query_selector(".card .point:not(.suggested)")  # no point placed yet
    asked = page.evaluate("fetched.filter(u => u.includes('api/suggest')).length")
    assert asked == 1
    sent = hints_sent(page, lambda: page.click(".card .point.suggested >> nth=0"))
    assert len(sent) == 1 and sent[0]["color"].startswith("#")  # the model's color there
    left, top, _ = rings[0]
    x, y = sent[0]["x"], sent[0]["y"]
    assert (float(left[:-1]), float(top[:-1])) == pytest.approx(
        (100 * x / PICTURE[0], 100 * y / PICTURE[1]), abs=1e-3
    )
    wait_results(page, 2)
    assert len(page.query_selector_all(".card .point.suggested")) == 4  # the others stay
    assert page.input_value("#point-color") == sent[0]["color"]  # selected: change it at will
