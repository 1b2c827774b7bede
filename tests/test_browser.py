"""The `colorgan serve` page in headless Chromium (Playwright driving Debian's /usr/bin/chromium):
upload and drop images, get colorized results of the right size, download, broken uploads.

Skipped only when Chromium or Playwright is missing and COLORGAN_REQUIRE_BROWSER is not 1 (CI
sets it, after installing Chromium). COLORGAN_SCREENSHOT=PATH saves a screenshot of the page
(docs/serve.png is made this way).
"""

from __future__ import annotations

import base64
import io
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from tests.conftest import make_tiny_checkpoint
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


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`colorgan serve` on a tiny checkpoint, in a subprocess on a free port."""
    checkpoint = make_tiny_checkpoint(tmp_path_factory.mktemp("browser") / "tiny.pt")
    proc, address = start_server(checkpoint, "--device", "cpu")
    yield address
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def page(browser: Any, url: str) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1000, "height": 640}, accept_downloads=True)
    tab = context.new_page()
    tab.set_default_timeout(60_000)  # two slow cores, shared
    tab.goto(url)
    tab.wait_for_function("document.getElementById('size').value === '32'")  # /api/info came
    yield tab
    context.close()


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
