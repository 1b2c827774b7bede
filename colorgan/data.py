"""Folders of color images -> uint8 RGB crops -> Batch(l, ab); bad files skipped and counted."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset, Sampler
from tqdm import tqdm

from colorgan.color import rgb_to_l_ab, uint8_to_float
from colorgan.config import ColorganError

log = logging.getLogger("colorgan")

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
_SCAN_SIZE = 64  # images are judged gray or not on a thumbnail this size
_COLORED_CHROMA = 10.0  # a pixel with YCbCr chroma above this counts as colored
_MIN_COLORED_SHARE = 0.02  # an image needs this share of colored pixels to count as color


class DataError(ColorganError):
    """A data folder that cannot be trained on."""


@dataclass(frozen=True)
class Batch:
    """A training batch on its device."""

    l: torch.Tensor  # (B, 1, H, W) in [-1, 1]
    ab: torch.Tensor  # (B, 2, H, W) in about [-1, 1]


def to_batch(rgb: torch.Tensor, device: torch.device) -> Batch:
    """uint8 RGB (B, 3, H, W) from the loader -> Batch(l, ab) on `device`, converted there."""
    l, ab = rgb_to_l_ab(uint8_to_float(rgb.to(device, non_blocking=True)))
    return Batch(l=l, ab=ab)


def find_images(root: Path) -> list[Path]:
    """Image files under `root`, recursively, sorted; other and hidden files are ignored."""
    if not root.is_dir():
        raise DataError(f"{root}: not a directory; give a folder of color images")
    return sorted(
        p
        for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )


def pil_to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB: palette and alpha flattened onto white, CMYK converted,
    16- and 32-bit grayscale scaled (never clipped)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        if image.mode == "F" and values.max() <= 1.0:
            top = 1.0
        gray = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB") if image.mode != "RGB" else image


def load_rgb(path: Path, min_side: int = 0) -> Image.Image:
    """Decode `path` as upright 8-bit RGB. JPEGs decode at a reduced scale (draft mode) when
    that still leaves the short side >= `min_side`. Raises OSError / ValueError if unreadable."""
    with Image.open(path) as opened:
        if min_side and opened.format == "JPEG":
            opened.draft("RGB", (min_side, min_side))
        upright = ImageOps.exif_transpose(opened)
        upright.load()
        return pil_to_rgb(upright)


def resize_short_side(image: Image.Image, size: int) -> Image.Image:
    """`image` scaled (aspect kept, bicubic, up or down) so its short side is `size` pixels;
    `colorgan prepare` uses the same resize, so prepared data gives the same training crops."""
    scale = size / min(image.size)
    resized = (max(size, round(image.width * scale)), max(size, round(image.height * scale)))
    if resized == image.size:
        return image
    return image.resize(resized, Image.Resampling.BICUBIC, reducing_gap=3.0)


def is_grayscale(image: Image.Image, mean_chroma_below: float) -> bool:
    """True if an RGB image has (almost) no color: low mean chroma or few colored pixels."""
    small = image.copy()
    small.thumbnail((_SCAN_SIZE, _SCAN_SIZE))
    ycc = np.asarray(small.convert("YCbCr"), dtype=np.float32)
    chroma = np.hypot(ycc[..., 1] - 128.0, ycc[..., 2] - 128.0)
    return bool(
        chroma.mean() < mean_chroma_below or (chroma > _COLORED_CHROMA).mean() < _MIN_COLORED_SHARE
    )


@dataclass
class Scan:
    """What a pass over a folder found."""

    usable: list[Path] = field(default_factory=list)
    unreadable: list[Path] = field(default_factory=list)
    grayscale: list[Path] = field(default_factory=list)


def scan_images(root: Path, gray_threshold: float, limit: int = 0, quiet: bool = False) -> Scan:
    """Find the usable color images under `root`; unreadable and grayscale files are skipped,
    named in a warning and counted. `limit` > 0 stops after that many usable images."""
    paths = find_images(root)
    if not paths:
        raise DataError(
            f"{root}: no image files found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    scan = Scan()
    for path in tqdm(
        paths, desc=f"scanning {root.name or root}", unit="img", disable=True if quiet else None
    ):
        try:
            image = load_rgb(path, min_side=_SCAN_SIZE)
        except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as err:
            log.warning("skipping unreadable image %s: %s", path, _reason(err))
            scan.unreadable.append(path)
            continue
        if is_grayscale(image, gray_threshold):
            scan.grayscale.append(path)
            continue
        scan.usable.append(path)
        if limit and len(scan.usable) >= limit:
            break
    if scan.grayscale:
        log.warning(
            "skipped %d (near-)grayscale image(s) in %s, e.g. %s",
            len(scan.grayscale),
            root,
            scan.grayscale[0],
        )
    if not scan.usable:
        raise DataError(
            f"{root}: no usable color image among {len(paths)} file(s) "
            f"({len(scan.unreadable)} unreadable, {len(scan.grayscale)} grayscale)"
        )
    return scan


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def split_paths(
    paths: Sequence[Path], val_fraction: float, seed: int
) -> tuple[list[Path], list[Path]]:
    """A seeded train/validation split; at least one image on each side when possible."""
    order = list(paths)
    random.Random(seed).shuffle(order)
    n_val = round(len(order) * val_fraction)
    n_val = min(max(n_val, 1 if val_fraction > 0 else 0), len(order) - 1)
    return sorted(order[n_val:]), sorted(order[:n_val])


def _crop_box(
    width: int, height: int, size: int, gen: torch.Generator | None
) -> tuple[int, int, int, int]:
    if gen is None:
        left, top = (width - size) // 2, (height - size) // 2
    else:
        left = int(torch.randint(0, width - size + 1, (1,), generator=gen))
        top = int(torch.randint(0, height - size + 1, (1,), generator=gen))
    return left, top, left + size, top + size


class ColorImages(Dataset[torch.Tensor]):
    """Square uint8 RGB crops (3, S, S) of color images. Items are (index, seed) pairs from
    EpochSampler: `seed` drives the crop and flip, so augmentation does not depend on which
    worker loads an item, and a resumed run sees the same crops as an uninterrupted one.
    Training items get a random crop and flip; validation items a center crop."""

    def __init__(self, paths: Sequence[Path], image_size: int, train: bool) -> None:
        if not paths:
            raise DataError("no images to load")
        self.paths = list(paths)
        self.image_size = image_size
        self.train = train
        self._warned: set[Path] = set()

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int, seed: int) -> torch.Tensor:
        """The crop of image `index`; raises if the file cannot be decoded."""
        size = self.image_size
        image = resize_short_side(load_rgb(self.paths[index], min_side=size), size)
        gen = torch.Generator().manual_seed(seed) if self.train else None
        image = image.crop(_crop_box(image.width, image.height, size, gen))
        if gen is not None and bool(torch.rand((), generator=gen) < 0.5):
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        array = np.asarray(image, dtype=np.uint8)
        return torch.from_numpy(array.copy()).permute(2, 0, 1)

    def __getitem__(self, item: int | tuple[int, int]) -> torch.Tensor:
        index, seed = item if isinstance(item, tuple) else (item, item)
        # A file that broke after the scan (replaced, truncated) must not kill a worker:
        # warn once and use the next image instead.
        for attempt in range(len(self.paths)):
            current = (index + attempt) % len(self.paths)
            try:
                return self.load(current, seed)
            except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as err:
                path = self.paths[current]
                if path not in self._warned:
                    self._warned.add(path)
                    log.warning("skipping unreadable image %s: %s", path, _reason(err))
        raise DataError("none of the images could be decoded")


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields (index, augmentation seed) pairs: a permutation fixed by (seed, epoch), sharded
    over `world_size` ranks, starting `skip` items in (to resume mid-epoch)."""

    def __init__(
        self, size: int, seed: int, shuffle: bool, rank: int = 0, world_size: int = 1
    ) -> None:
        self.size = size
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Choose the epoch's permutation; skip its first `skip` items on this rank."""
        self.epoch = epoch
        self.skip = skip

    def _order(self) -> list[int]:
        if not self.shuffle:
            order = list(range(self.size))
        else:
            gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.size, generator=gen).tolist()
        per_rank = -(-self.size // self.world_size)
        order += order[: per_rank * self.world_size - len(order)]  # pad so ranks get equal shares
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        base = (self.seed * 1_000_003 + self.epoch) * 10_000_019
        for index in self._order()[self.skip :]:
            yield index, (base + index) % (2**63)

    def __len__(self) -> int:
        return max(0, -(-self.size // self.world_size) - self.skip)
