"""Issue #36's experiment: models trained on gray, manga and mixed inputs (experiments/manga.sh),
scored on pictures they have not learned, given as

- `gray`: the picture's gray (what the gray-trained model learned from);
- `toned`: the picture made into a manga page by tones.make_page with a held-out seed and all
  tone kinds (hatching was kept out of the manga/mixed training);
- `hatching`: the same with hatching only: a tone kind no model saw.

Color ΔE00 is the truth's L with the model's ab (so the ink does not count), beside the gray
image's (the truth's L, no color); colorfulness and Lite0 KID of those pictures too. Then the
lightness a toned page's colored version carries, against the truth's L, on the drawn-ink pixels
and on the rest: the page as it is, a plain Gaussian, and tones.page_lightness (with the
learned ink map it uses, the heuristic one it replaced, and the true one).

    python experiments/manga_pages.py DATA_DIR gray=CKPT manga=CKPT mixed=CKPT --json OUT
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from ink_net import drawn_ink  # the heuristic the learned map replaced

from colorgan.batch import Batch, generate
from colorgan.color import float_to_uint8, l_ab_to_rgb, rgb_to_l_ab, uint8_to_float, uint8_to_l
from colorgan.data import ColorImages, scan_images
from colorgan.modeldir import load_model, resolve_model
from colorgan.scores import Scores, load_feature_network
from colorgan.tones import TONE_KINDS, blur, make_page, page_lightness, tone_scale

SEED = 36_000  # the held-out seed: training pages are drawn from the training sampler's seeds
CONDITIONS = {"toned": TONE_KINDS, "hatching": ("hatching",)}


def pages(rgb: torch.Tensor, kinds: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Crops (N, 3, S, S) uint8 -> their pages' L (N, 1, S, S) and drawn-ink masks."""
    made = [make_page(c, torch.Generator().manual_seed(SEED + i), kinds) for i, c in enumerate(rgb)]
    l = uint8_to_l(torch.stack([p.gray.expand(3, -1, -1) for p in made]))
    return l, torch.stack([p.ink for p in made])


def colored(generator: torch.nn.Module, l_in: torch.Tensor, l_true: torch.Tensor) -> torch.Tensor:
    """The truth's L with the model's ab (from input `l_in`), as 8-bit RGB floats."""
    abs_ = [generate(generator, Batch(l=part)) for part in l_in.split(32)]
    return uint8_to_float(float_to_uint8(l_ab_to_rgb(l_true, torch.cat(abs_).float())))


def descreened(l_page: torch.Tensor) -> torch.Tensor:
    """Pages' L (N, 1, S, S) -> page_lightness of each."""
    return torch.cat([page_lightness(p[None]) for p in l_page])


def lightness_errors(l_page: torch.Tensor, ink: torch.Tensor, l_true: torch.Tensor) -> dict:
    """Mean |L - L_truth| (L in 0..100) on drawn-ink pixels and on the rest, per choice."""
    choices = {
        "page as it is": l_page,
        "gaussian sigma 2": blur(l_page, 2.0),
        "page_lightness": descreened(l_page),
        "page_lightness, heuristic ink map": torch.cat(
            [page_lightness(p[None], drawn_ink(p[0] < 0, tone_scale(p[0] < 0))) for p in l_page]
        ),
        "page_lightness, the true ink map": torch.cat(
            [page_lightness(p[None], i[0]) for p, i in zip(l_page, ink, strict=True)]
        ),
    }
    out = {}
    for name, l in choices.items():
        error = (l - l_true).abs() * 50
        kept = (l - l_page).abs()[ink] * 50  # 0: the page's own ink pixels, sharp
        out[name] = {
            "ink": float(error[ink].mean()),
            "rest": float(error[~ink].mean()),
            "ink_vs_page": float(kept.mean()),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("models", nargs="+", help="NAME=CHECKPOINT")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument(
        "--descreened",
        default="",
        help="comma-separated model names also given the page's page_lightness as input "
        "(descreened first, as manga-colorization-v2 denoises its pages)",
    )
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    paths = scan_images(args.data, 4.0, quiet=True).usable
    paths = paths[: args.limit] if args.limit else paths
    rgb = ColorImages(paths, args.size, train=False).crops(len(paths))
    real = uint8_to_float(rgb)
    l_true = rgb_to_l_ab(real)[0]
    inputs = {"gray": (l_true, None), **{c: pages(rgb, k) for c, k in CONDITIONS.items()}}
    out: dict[str, Any] = {"data": str(args.data), "size": args.size, "images": len(paths)}
    gray_rgb = uint8_to_float(float_to_uint8(l_ab_to_rgb(l_true, torch.zeros_like(real[:, :2]))))
    models = dict(m.split("=", 1) for m in args.models)
    for condition, (l_in, ink) in inputs.items():
        outputs = {"gray image": gray_rgb}
        for name, checkpoint in models.items():
            generator = load_model(resolve_model(checkpoint))[0].eval()
            outputs[name] = colored(generator, l_in, l_true)
            if ink is not None and name in args.descreened.split(","):
                outputs[f"{name}+descreen"] = colored(generator, descreened(l_in), l_true)
        scores = Scores(list(outputs), load_feature_network(torch.device("cpu")))
        for start in range(0, len(real), 64):
            part = slice(start, start + 64)
            scores.add({n: o[part] for n, o in outputs.items()}, real[part])
        out[condition] = {name: scores.result(name) for name in outputs}
        for name, result in out[condition].items():
            print(
                f"{condition:<9} {name:<15} ΔE00 {result['delta_e']:6.2f}  colorfulness "
                f"{result['colorfulness']:5.1f}  KID {result['kid_lite0']}",
                flush=True,
            )
        if ink is not None:
            out[condition]["lightness"] = lightness_errors(l_in, ink, l_true)
            print(condition, json.dumps(out[condition]["lightness"]), flush=True)
    args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
