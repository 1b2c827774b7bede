"""Train the drawn-ink map (colorgan/inknet.py) on pages made from pictures we draw ourselves,
and score ink maps on pages made from a folder of color pictures.

    python experiments/ink_net.py train colorgan/inknet.pt              # the shipped weights
    python experiments/ink_net.py train runs/ink/anime.pt --data ../shared/data/anime/train
    python experiments/ink_net.py score ../shared/data/anime/unseen --net runs/ink/anime.pt

The pictures (`sketch`): a background, filled shapes of random colors, strands (a curve and
copies of it 2-5 px apart, the way hair is drawn), lettering, and the demo's scenes; each made
into a page by tones.make_page with the tone kinds the manga experiment trains on (hatching kept
out, as there). The label is the page's drawn ink (its lines and solid black, not the tones).
`score` reports the ink map's precision and recall against make_page's drawn ink on pages drawn
with the held-out seed of experiments/manga_pages.py, for the heuristic it replaced (drawn_ink) and
the nets named.
"""

from __future__ import annotations

import argparse
import json
import string
from pathlib import Path

import numpy as np
import torch
from kornia.filters import box_blur
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from colorgan.demo import draw_scene
from colorgan.files import find_images, to_picture
from colorgan.inknet import InkNet, ink_probability, load
from colorgan.tones import make_page, tone_scale

KINDS = ("dots", "lines", "gradient", "stipple")
SIZE = 128
CROP = 64  # training crops of the pages: the net sees 35 px around each pixel
SCORE_SEED = 36_000  # experiments/manga_pages.py's held-out seed
# the heuristic the net replaced (tones.drawn_ink until 2026-12-07): large connected ink with less
# ink than [0] around it and less large ink than [2] further out, or more than [1] around it
_INK_DENSITY = (0.45, 0.85, 0.22)


def drawn_ink(dark: torch.Tensor, scale: float) -> torch.Tensor:
    """The heuristic ink map (H, W) bool: dark pixels in connected ink larger than a tone's
    dot, either in a solid area or with little ink around them (a line) and little other large
    ink further out (where a line tone or hatching is many large lines side by side)."""
    labels, _ = ndimage.label(dark.numpy())
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    big = dark & torch.from_numpy(sizes[labels] >= (4 * scale) ** 2 + 4)
    near, wide = (2 * round(k * scale) + 1 for k in (2, 5))
    around = box_blur(dark.float()[None, None], (near, near))[0, 0]
    lines = box_blur(big.float()[None, None], (wide, wide))[0, 0]
    line = (around < _INK_DENSITY[0]) & (lines < _INK_DENSITY[2])
    return big & (line | (around > _INK_DENSITY[1]))


def _color(rng: np.random.Generator, low: int = 0, high: int = 256) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(low, high, 3))  # type: ignore[return-value]


def _curve(rng: np.random.Generator, size: int) -> np.ndarray:
    """A quadratic Bezier curve's points (32, 2) across the picture."""
    p0, p1, p2 = (rng.uniform(-0.1, 1.1, 2) * size for _ in range(3))
    t = np.linspace(0, 1, 32)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


def _strands(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int) -> None:
    base = _curve(rng, size)
    normal = rng.normal(size=2)
    normal /= np.linalg.norm(normal) + 1e-6
    gap, width = rng.uniform(2, 5), int(rng.integers(1, 3))
    dark = _color(rng, 0, 120)
    for k in range(int(rng.integers(3, 12))):
        points = base + normal * gap * k + rng.normal(scale=0.4, size=base.shape)
        draw.line([tuple(p) for p in points], fill=dark, width=width)


def sketch(rng: np.random.Generator, size: int = SIZE) -> Image.Image:
    """A color picture of our own with line work a page's ink is drawn from."""
    if rng.random() < 0.25:
        return draw_scene(rng, size)
    image = Image.new("RGB", (size, size), _color(rng, 120))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 8))):
        box = sorted(rng.uniform(-0.2, 1.2, 2) * size), sorted(rng.uniform(-0.2, 1.2, 2) * size)
        xy = (box[0][0], box[1][0], box[0][1], box[1][1])
        outline = _color(rng, 0, 90) if rng.random() < 0.5 else None
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape(xy, fill=_color(rng), outline=outline, width=int(rng.integers(1, 4)))
    for _ in range(int(rng.integers(0, 4))):
        _strands(draw, rng, size)
    for _ in range(int(rng.integers(0, 3))):
        font = ImageFont.load_default(size=float(rng.uniform(8, 22)))
        text = "".join(rng.choice(list(string.ascii_letters + "!? "), int(rng.integers(3, 12))))
        draw.text(tuple(rng.uniform(0, 0.8, 2) * size), text, fill=_color(rng, 0, 80), font=font)
    return image


def _crop(image: Image.Image) -> torch.Tensor:
    return to_picture(image.convert("RGB").resize((SIZE, SIZE), Image.Resampling.BICUBIC)).rgb


def make_pages(count: int, seed: int, data: Path | None) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` pages' lightness (N, 1, S, S) in 0..1 and their drawn ink (N, 1, S, S) bool."""
    rng = np.random.default_rng(seed)
    paths = find_images(data) if data else []
    levels, inks = [], []
    for i in range(count):
        picture = Image.open(paths[i % len(paths)]) if paths else sketch(rng)
        page = make_page(_crop(picture), torch.Generator().manual_seed(seed + i), KINDS)
        levels.append(page.gray.float() / 255)
        inks.append(page.ink)
    return torch.stack(levels), torch.stack(inks)


def train(out: Path, data: Path | None, steps: int, seed: int) -> None:
    torch.manual_seed(seed)
    levels, inks = make_pages(4000, seed, data)
    net = InkNet()
    optimizer = torch.optim.AdamW(net.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for step in range(steps):
        pick = torch.randint(len(levels), (32,))
        y, x = (int(v) for v in torch.randint(SIZE - CROP + 1, (2,)))
        logits = net(levels[pick, :, y : y + CROP, x : x + CROP])
        truth = inks[pick, :, y : y + CROP, x : x + CROP].float()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, truth)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step}: loss {loss.item():.4f}", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), out)


def _f1(found: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    hit = float((found & truth).sum())
    precision, recall = hit / max(1.0, float(found.sum())), hit / max(1.0, float(truth.sum()))
    return {
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / max(1e-9, precision + recall),
    }


def score(data: Path, nets: list[Path], limit: int) -> dict[str, dict[str, float]]:
    paths = find_images(data)[:limit]
    pages = [make_page(_crop(Image.open(p)), torch.Generator().manual_seed(SCORE_SEED + i))
             for i, p in enumerate(paths)]  # fmt: skip
    found: dict[str, list[torch.Tensor]] = {"heuristic drawn_ink": []}
    loaded = {str(path): load(path) for path in nets}
    found |= {name: [] for name in loaded}
    for page in pages:
        level = page.gray[0].float() / 255
        dark = level < 0.5
        found["heuristic drawn_ink"].append(drawn_ink(dark, tone_scale(dark)))
        for name, net in loaded.items():
            found[name].append(ink_probability(level, net) > 0.5)
    truth = torch.stack([p.ink[0] for p in pages])
    return {name: _f1(torch.stack(maps), truth) for name, maps in found.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("out", type=Path)
    t.add_argument("--data", type=Path, help="color pictures (default: our own sketches)")
    t.add_argument("--steps", type=int, default=2000)
    t.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("score")
    s.add_argument("data", type=Path)
    s.add_argument("--net", type=Path, action="append", default=[])
    s.add_argument("--limit", type=int, default=100)
    s.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.command == "train":
        train(args.out, args.data, args.steps, args.seed)
        return
    result = score(args.data, args.net, args.limit)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
