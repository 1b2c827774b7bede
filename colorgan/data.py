"""Folders of color images -> uint8 RGB crops for training and validation: scanning (bad and
gray files skipped and counted), seeded splits, datasets, samplers and loaders."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from colorgan.color import rgb_to_l_ab, uint8_to_float, uint8_to_l
from colorgan.config import Config, tone_kinds
from colorgan.errors import DataError
from colorgan.files import DECODE_ERRORS, IMAGE_SUFFIXES, decode_reason, find_images, load_rgb
from colorgan.hints import simulate
from colorgan.pairs import empty_exemplar, exemplar_of, self_exemplar, siblings
from colorgan.reference import REFERENCE_CHANNELS, summarize
from colorgan.reference import simulate as simulate_reference
from colorgan.tones import make_page

log = logging.getLogger("colorgan")

_SCAN_SIZE = 64  # images are judged gray or not on a thumbnail this size
_COLORED_CHROMA = 10.0  # a pixel with YCbCr chroma above this counts as colored
_MIN_COLORED_SHARE = 0.02  # an image needs this share of colored pixels to count as color


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
        except DECODE_ERRORS as err:
            log.warning("skipping unreadable image %s: %s", path, decode_reason(err))
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


# a crop, or with simulated conditioning {"rgb": crop, "hints": hint map, "reference": summary}
Item = torch.Tensor | dict[str, torch.Tensor]


class ColorImages(Dataset[Item]):
    """Square uint8 RGB crops (3, S, S) of color images. Items are (index, seed) pairs from
    EpochSampler: `seed` drives the crop and flip, so augmentation does not depend on which
    worker loads an item, and a resumed run sees the same crops as an uninterrupted one.
    Training items get a random crop and flip; validation items a center crop. With `hints`
    (hint_p, hint_max_patch) or `reference` (reference_drop, reference_crop), training items are
    dicts of the crop ("rgb") and its "hints" map (3, S, S) (color points drawn from the crop's
    own colors, hints.simulate) and/or its "reference" summary (the colors of a random part of
    the crop, reference.simulate), drawn by the same seed. With `pages` (data.input_style,
    the tone kinds) other than gray, a training item also has the model's input "l" (1, S, S)
    in [-1, 1]: the L of the crop made into a manga page (tones.make_page; always for manga,
    half the time for mixed), else the crop's own. Validation crops stay gray."""

    def __init__(
        self,
        paths: Sequence[Path],
        image_size: int,
        train: bool,
        hints: tuple[float, int] | None = None,
        reference: tuple[float, float] | None = None,
        reference_source: str | None = None,
        pages: tuple[str, tuple[str, ...]] | None = None,
    ) -> None:
        if not paths:
            raise DataError("no images to load")
        self.paths = list(paths)
        self.image_size = image_size
        self.train = train
        self.hints = hints
        self.reference = reference
        self.reference_source = reference_source
        self.pages = pages if pages is not None and pages[0] != "gray" else None
        self._siblings = siblings(self.paths) if reference_source else []
        self._warned: set[Path] = set()

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int, seed: int) -> Item:
        """The crop of image `index` (and its conditioning); raises if the file cannot be
        decoded."""
        gen = torch.Generator().manual_seed(seed) if self.train else None
        rgb = self._crop(index, gen)
        if (self.hints is None and self.reference is None and self.pages is None) or gen is None:
            return rgb
        l, ab = (t[0] for t in rgb_to_l_ab(uint8_to_float(rgb[None])))  # (1, S, S), (2, S, S)
        item = {"rgb": rgb}
        if self.pages is not None:
            style, kinds = self.pages
            if style == "manga" or float(torch.rand((), generator=gen)) < 0.5:
                page = make_page(rgb, gen, kinds).gray
                l = uint8_to_l(page.expand(3, -1, -1)[None])[0]
            item["l"] = l
        if self.hints is not None:
            item["hints"] = simulate(ab, *self.hints, gen)
        if self.reference is not None and self.reference_source is None:
            item["reference"] = simulate_reference(ab, *self.reference, gen)
        elif self.reference is not None:
            item["exemplar"], item["reference"] = self._exemplar(index, rgb, gen)
        return item

    def _crop(self, index: int, gen: torch.Generator | None) -> torch.Tensor:
        """Image `index` as a uint8 crop (3, S, S): random and maybe flipped with `gen`,
        else the center."""
        size = self.image_size
        image = resize_short_side(load_rgb(self.paths[index], min_side=size), size)
        image = image.crop(_crop_box(image.width, image.height, size, gen))
        if gen is not None and bool(torch.rand((), generator=gen) < 0.5):
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        array = np.asarray(image, dtype=np.uint8)
        return torch.from_numpy(array.copy()).permute(2, 0, 1)

    def _exemplar(
        self, index: int, rgb: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A training sample's reference (pairs.py): its exemplar (1, 4, S, S) and summary
        (REFERENCE_CHANNELS,), both zeros when it is dropped (data.reference_drop)."""
        assert self.reference is not None
        if float(torch.rand((), generator=gen)) < self.reference[0]:
            return empty_exemplar(self.image_size), torch.zeros(REFERENCE_CHANNELS)
        others = self._siblings[index]
        sibling = self.reference_source == "sibling" or (
            self.reference_source == "both" and float(torch.rand((), generator=gen)) < 0.5
        )
        if sibling and others:
            other = others[int(torch.randint(len(others), (), generator=gen))]
            slot = exemplar_of(self._crop(other, gen))
        else:
            slot = self_exemplar(rgb, gen)
        given = slot[3] > 0.5
        summary = summarize(slot[1:3, given][None, :, None])[0]
        return slot[None], summary

    def crops(self, count: int) -> torch.Tensor:
        """The first `count` crops, (N, 3, S, S) uint8 (without their conditioning)."""
        items = [self[i] for i in range(min(count, len(self)))]
        return torch.stack([i if isinstance(i, torch.Tensor) else i["rgb"] for i in items])

    def __getitem__(self, item: int | tuple[int, int]) -> Item:
        index, seed = item if isinstance(item, tuple) else (item, item)
        # A file that broke after the scan (replaced, truncated) must not kill a worker:
        # warn once and use the next image instead.
        for attempt in range(len(self.paths)):
            current = (index + attempt) % len(self.paths)
            try:
                return self.load(current, seed)
            except DECODE_ERRORS as err:
                path = self.paths[current]
                if path not in self._warned:
                    self._warned.add(path)
                    log.warning("skipping unreadable image %s: %s", path, decode_reason(err))
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


def training_split(
    config: Config, data: Path, val_data: Path | None, quiet: bool
) -> tuple[list[Path], list[Path]]:
    """The training and validation images: `val_data`'s usable images, or else a seeded
    data.val_fraction split of `data`'s."""
    d = config.data
    scan = scan_images(data, d.gray_threshold, limit=d.max_images, quiet=quiet)
    log.info(
        "%s: %d usable color images, %d unreadable skipped, %d grayscale skipped",
        data,
        len(scan.usable),
        len(scan.unreadable),
        len(scan.grayscale),
    )
    if val_data is not None:
        val_scan = scan_images(val_data, d.gray_threshold, quiet=quiet)
        log.info("%s: %d validation images", val_data, len(val_scan.usable))
        return scan.usable, val_scan.usable
    if d.val_fraction <= 0 or len(scan.usable) < 2:
        raise DataError(
            f"{data}: no validation images; give --val-data DIR or data.val_fraction > 0"
        )
    train_paths, val_paths = split_paths(scan.usable, d.val_fraction, config.train.seed)
    log.info("seeded split: %d training, %d validation images", len(train_paths), len(val_paths))
    return train_paths, val_paths


@dataclass(frozen=True)
class Loaders:
    """What a training run reads: shuffled training crops (this rank's share), fixed
    validation crops, and the sampler that orders (and resumes) each epoch."""

    train: DataLoader[Item]  # uint8 (B, 3, S, S) (+ hints, reference: see ColorImages)
    val: DataLoader[torch.Tensor]  # uint8 (B, 3, S, S), center crops, no conditioning
    sampler: EpochSampler

    def sample_images(self, count: int) -> torch.Tensor:
        """The first `count` validation crops, (N, 3, S, S) uint8: the sample grid's rows."""
        val_set = self.val.dataset
        assert isinstance(val_set, ColorImages)
        return val_set.crops(count)


def make_loaders(
    config: Config,
    train_paths: list[Path],
    val_paths: list[Path],
    pin_memory: bool,
    rank: int = 0,
    world_size: int = 1,
) -> Loaders:
    """DataLoaders over the split: train.batch_size crops, train.num_workers processes."""
    t = config.train
    if len(train_paths) < t.batch_size * world_size:
        raise DataError(
            f"only {len(train_paths)} training image(s) for train.batch_size={t.batch_size}; "
            f"add images or lower train.batch_size"
        )
    sampler = EpochSampler(len(train_paths), t.seed, True, rank, world_size)
    common: dict[str, Any] = {
        "num_workers": t.num_workers,
        "pin_memory": pin_memory,
        "persistent_workers": t.num_workers > 0,
    }
    d = config.data
    hints = (d.hint_p, d.hint_max_patch) if config.model.hints else None
    reference = (d.reference_drop, d.reference_crop) if config.model.reference else None
    source = d.reference_source if config.model.reference and config.model.reference_match else None
    pages = (d.input_style, tone_kinds(d.tones))
    train_set = ColorImages(train_paths, d.image_size, True, hints, reference, source, pages)
    train_loader = DataLoader(
        train_set,
        batch_size=t.batch_size,
        sampler=sampler,
        drop_last=True,
        **common,
    )
    val_set = ColorImages(val_paths[: t.val_images], config.data.image_size, train=False)
    val_loader: DataLoader[torch.Tensor] = DataLoader(
        val_set,  # type: ignore[arg-type]  # train=False: plain crops
        batch_size=t.batch_size,
        sampler=EpochSampler(len(val_set), t.seed, shuffle=False),
        **common,
    )
    return Loaders(train_loader, val_loader, sampler)
