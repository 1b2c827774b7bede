"""Colorize a video: every frame through a Colorizer, streamed (decode, color, encode a frame at
a time, so memory stays bounded however long the film), into the source's container with the
same frames, timestamps, size and rotation, and every audio stream copied untouched.

Steady colors. A model that takes references (model.reference, and best model.reference_match,
which takes colors place by place from where the references correspond) colors each frame
with the previous colored frame and its shot's first colored frame (the keyframe) as
references, so a shirt keeps its color from frame to frame and across the shot. A scene cut
(the mean absolute difference of consecutive frames' gray thumbnails above CUT_THRESHOLD)
starts afresh: that frame is colored alone and becomes the new keyframe. With `keyframe_every`
N > 0 the keyframe also moves to the current frame every N frames of a shot. The user's own
references (`request`) anchor every frame alike, so with them each frame takes those alone (a
bank's BANK_TOP closest chosen once per shot), in batches: adding the frames made both the
colors and the flicker worse (benchmarks/video_flicker.py, an early match model: mean CIEDE2000
14.1 against 11.4, flicker 0.92 against 0.78 Lab units; without references the frames cut the
flicker from 1.19 to 0.90); `frames_with_user_reference` adds them anyway. A model without
references, or `independent_frames`, colors each frame alone (in batches). Color points for
frame i come from `hints_dir/<i:06d>.json` (hints.py's format) when present.

Resuming. The frames are encoded in parts of `part_frames` frames, each its own file in
`<dst>.parts/` (videoparts.py: named by its first frame, written atomically), followed by the
last colored frame and the keyframe as PNGs and a small JSON (the part's timestamps, cuts and
shot state), so a resumed run continues the colors exactly where they were. `run.json` keys the
folder by the run (the model file, working size, options, request and hints, the source's size
and time): rerunning the same command after an interruption (Ctrl-C, a crash, a full disk)
decodes past the finished parts and colors from the first unfinished one; a changed run starts
afresh. At the end the parts' packets and the source's audio are joined into `dst`
(atomically, without re-encoding: videofile.py) and the folder is deleted.

Several processes. A `VideoJob` colors any `Segment` of the frames; under torchrun
(videorun.py) the film is split at key frames (`split_at_keyframes`), each rank colors its
segment into the same parts folder (each segment begins a new shot), and rank 0 joins them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import NoReturn

import av
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from colorgan.bank import BANK_TOP, closest, describe
from colorgan.colorize import Colorizer, join
from colorgan.errors import ColorganError, WriteFailed
from colorgan.files import Picture, to_image, write_error
from colorgan.hints import Hint, HintError, load_hints
from colorgan.jobs import model_identity
from colorgan.matching import exemplar_slot
from colorgan.reference import from_image, reduce_image
from colorgan.request import NOTHING, Reference, Request
from colorgan.videofile import (
    VIDEO_SUFFIXES,
    Encoding,
    VideoError,
    VideoInfo,
    frames,
    is_video,
    keyframes,
    plan_encoding,
    probe,
    rgb_of,
)
from colorgan.videoparts import Parts, Shot

__all__ = ["VIDEO_SUFFIXES", "VideoError", "VideoOptions", "VideoReport", "colorize_video",
           "is_video"]  # fmt: skip

THUMBNAIL_SIDE = 32  # scene cuts compare frames' gray at 32x32
# A new shot where consecutive thumbnails differ by more than this mean |gray| (0 to 1): a hard
# cut between scenes differs by 0.2 or more, motion within a shot mostly by under 0.05 at this
# scale. It errs high: a cut seen in a fast motion drops the references (a jump in the colors),
# a cut missed (between two dark scenes) only lends the old shot's colors as candidates.
CUT_THRESHOLD = 0.15
DEFAULT_PART_FRAMES = 240  # frames per part: at most this much work is lost to an interruption
MAX_CRF = 63
_VERSION = 2  # of the parts folder's layout (2: parts named by their first frame)


@dataclass(frozen=True)
class VideoOptions:
    """How to colorize a video (defaults: steady colors at the model's own working size)."""

    independent_frames: bool = False  # each frame alone, for comparison
    size: int | None = None  # working size (None: the model's training size)
    crf: int = 18  # quality (x264's scale, also used for VP8/9; others get a fixed quantizer)
    codec: str | None = None  # an FFmpeg encoder; None: the source's codec, else the container's
    request: Request = NOTHING  # the user's reference images, points for every frame, caution
    hints_dir: Path | None = None  # DIR/000120.json: color points for frame 120
    keyframe_every: int = 0  # 0: a new keyframe only at scene cuts
    # with the user's references, the previous and key frames too (off: the user's alone were
    # better on both counts, benchmarks/video_flicker.py; see the module's docstring)
    frames_with_user_reference: bool = False
    part_frames: int = DEFAULT_PART_FRAMES
    quiet: bool = False  # no progress bar

    def __post_init__(self) -> None:
        for name, low in (("crf", 0), ("keyframe_every", 0), ("part_frames", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ColorganError(f"{name} must be a whole number >= {low}, got {value!r}")
        if self.crf > MAX_CRF:
            raise ColorganError(f"crf must be from 0 (lossless) to {MAX_CRF}, got {self.crf}")


@dataclass(frozen=True)
class VideoReport:
    """What a colorize_video run did: frames written, this run's seconds and colored frames per
    second, scene cuts found, and parts reused from an interrupted run."""

    frames: int
    seconds: float
    frames_per_second: float
    cuts: int
    parts_reused: int


def thumbnail(rgb: torch.Tensor) -> torch.Tensor:
    """A frame (3, H, W) uint8 -> its gray (THUMBNAIL_SIDE, THUMBNAIL_SIDE) in [0, 1], averaged."""
    gray = rgb.float().mean(0, keepdim=True)[None] / 255.0
    return F.adaptive_avg_pool2d(gray, THUMBNAIL_SIDE)[0, 0]


def cut_score(before: torch.Tensor, after: torch.Tensor) -> float:
    """How much two consecutive thumbnails differ: mean |gray difference|, 0 to 1."""
    return float((after - before).abs().mean())


@dataclass(frozen=True, eq=False)
class _ShotReference(Reference):
    """References used as given (frames of the same shot): never narrowed as a bank is; each
    image's summary and exemplar slot come from `made`, so the keyframe's (and the user's
    references') are made once, not again for every frame that uses them."""

    made: _Made | None = None

    def closest(self, rgb: torch.Tensor) -> Reference:
        return self

    @cached_property
    def summary(self) -> torch.Tensor:
        assert self.made is not None
        summaries = [self.made.summary(image) for image in self.images]
        return summaries[0] if len(summaries) == 1 else torch.cat(summaries).mean(0, True)

    def exemplar(self, side: int) -> torch.Tensor:
        assert self.made is not None
        return torch.stack([self.made.slot(image, side) for image in self.images])[None]


class _Made:
    """Each reference image's summary (1, REFERENCE_CHANNELS) and exemplar slots (4, side,
    side), kept while the image is among the references in use (`keep`)."""

    def __init__(self) -> None:
        self.images: dict[int, Image.Image] = {}  # by id, held so that an id stays its image
        self.summaries: dict[int, torch.Tensor] = {}
        self.slots: dict[tuple[int, int], torch.Tensor] = {}

    def keep(self, images: Sequence[Image.Image]) -> None:
        """Forget what was made for images other than `images`."""
        self.images = {id(image): image for image in images}
        self.summaries = {k: v for k, v in self.summaries.items() if k in self.images}
        self.slots = {k: v for k, v in self.slots.items() if k[0] in self.images}

    def summary(self, image: Image.Image) -> torch.Tensor:
        if id(image) not in self.summaries:
            self.summaries[id(image)] = from_image(image)
        return self.summaries[id(image)]

    def slot(self, image: Image.Image, side: int) -> torch.Tensor:
        if (id(image), side) not in self.slots:
            self.slots[id(image), side] = exemplar_slot(reduce_image(image)[0], side)
        return self.slots[id(image), side]


class Coloring:
    """Colors a video's frames in order: alone, or steadied by the frames before them."""

    def __init__(self, colorizer: Colorizer, options: VideoOptions) -> None:
        self.colorizer, self.options = colorizer, options
        self.steady = colorizer.capabilities.reference and not options.independent_frames
        self.user = options.request.reference  # a bank: each shot uses its closest
        # frames as references: each frame waits for the one before it
        self.chained = self.steady and (self.user is None or options.frames_with_user_reference)
        self.batch = 1 if self.chained else colorizer.batch_size
        self.shot = Shot()
        self.made = _Made()

    def color(self, batch: Sequence[tuple[int, av.VideoFrame]]) -> list[np.ndarray]:
        """Colored RGB (H, W, 3) uint8 of consecutive frames (index, frame)."""
        pictures = [Picture(torch.from_numpy(rgb_of(f)).permute(2, 0, 1), None) for _, f in batch]
        requests = [self._request(i, p) for (i, _), p in zip(batch, pictures, strict=True)]
        predicted = self.colorizer.predict_pictures(pictures, self.options.size, requests)
        colored = [join(l, p.ab).permute(1, 2, 0).numpy() for l, p in predicted]
        if self.chained:
            self._keep(Image.fromarray(colored[-1]))
        return colored

    def _request(self, index: int, picture: Picture) -> Request:
        """Frame `index`'s request: its points, and its references when steady (and a new
        shot begun where the frame is a cut)."""
        request = self.options.request.with_points(self._points(index, picture))
        now = thumbnail(picture.rgb)
        before, self.shot.thumbnail = self.shot.thumbnail, now
        if before is not None and cut_score(before, now) > CUT_THRESHOLD:
            self.shot.cuts.append(index)
            self.shot.key = self.shot.previous = None
        if before is None or self.shot.key is None:
            self.shot.user = self._choose(picture)
        if not self.steady:
            return request  # a bank's closest are chosen for each frame (Request.for_picture)
        given = [self.shot.previous] if self.shot.previous is not None else []
        if self.shot.key is not None and self.shot.key is not self.shot.previous:
            given.append(self.shot.key)
        if self.user is not None and self.shot.user is not None:
            given += [self.user.images[i] for i in self.shot.user]
        self.made.keep(given)
        return request.with_reference(
            _ShotReference(tuple(given), made=self.made) if given else None
        )

    def _points(self, index: int, picture: Picture) -> list[Hint]:
        """Frame `index`'s color points, from hints_dir (none without the folder or file)."""
        if self.options.hints_dir is None:
            return list(self.options.request.points)
        path = self.options.hints_dir / f"{index:06d}.json"
        if not path.is_file():
            return list(self.options.request.points)
        points = [*self.options.request.points, *load_hints(path)]
        try:
            Request(tuple(points)).check_inside((picture.rgb.shape[1], picture.rgb.shape[2]))
        except HintError as err:
            raise HintError(f"{path}: {err}") from None
        return points

    def _choose(self, picture: Picture) -> list[int] | None:
        """The user's references a new shot uses: all, or of a bank the BANK_TOP closest to
        its first frame."""
        if self.user is None or not self.steady:
            return None
        if len(self.user.images) <= BANK_TOP:
            return list(range(len(self.user.images)))
        return closest(describe(picture.rgb), self.user.descriptors)

    def _keep(self, colored: Image.Image) -> None:
        """After a frame is colored: it is the previous frame, and the keyframe if it began a
        shot (or `keyframe_every` frames have passed)."""
        reduced = to_image(reduce_image(colored)[0], None)
        shot, every = self.shot, self.options.keyframe_every
        shot.previous = reduced
        if shot.key is None or (every and shot.since_key + 1 >= every):
            shot.key, shot.since_key = reduced, 0
        else:
            shot.since_key += 1


@dataclass(frozen=True)
class Segment:
    """Frames [start, end) of a video (end None: to its last frame): what one process colors;
    `start_pts`, the pts of the key frame at `start`, where decoding may seek to it."""

    start: int = 0
    end: int | None = None
    start_pts: int | None = None


def split_at_keyframes(keyframes: Sequence[int], total: int, count: int) -> list[Segment]:
    """`count` contiguous segments of a `total`-frame video, each after the first starting at
    the key frame nearest an even share (a segment is empty where there are too few)."""
    starts = [0]
    for share in range(1, count):
        target = share * total / count
        later = [k for k in keyframes if starts[-1] < k < total]
        starts.append(min(later, key=lambda k: abs(k - target)) if later else total)
    ends: list[int | None] = [*starts[1:], None]
    return [Segment(a, b) for a, b in zip(starts, ends, strict=True)]


@dataclass(frozen=True)
class SegmentReport:
    """One segment's frames (colored now or reused from finished parts) and scene cuts."""

    frames: int
    colored: int
    cuts: int
    parts_reused: int


@dataclass(frozen=True)
class VideoJob:
    """One video to colorize: checked, probed and its encoding chosen before any file is
    written; its parts colored segment by segment (by one process or several), then joined."""

    colorizer: Colorizer
    options: VideoOptions
    src: Path
    dst: Path
    info: VideoInfo
    encoding: Encoding

    @classmethod
    def plan(
        cls, colorizer: Colorizer, src: str | Path, dst: str | Path, options: VideoOptions
    ) -> VideoJob:
        """The job, or a VideoError (one line) for what cannot be read or written."""
        src, dst = Path(src), Path(dst)
        if dst.suffix.lower() != src.suffix.lower():
            raise VideoError(f"{dst}: a colored video keeps its source's container; name it "
                             f"{dst.with_suffix(src.suffix).name}")  # fmt: skip
        if dst.resolve() == src.resolve():
            raise VideoError(f"{dst}: is the source itself; write the colored video elsewhere")
        info = probe(src)
        encoding = plan_encoding(info, src.suffix, options.codec, options.crf)
        colorizer.capabilities.check(options.request)
        return cls(colorizer, options, src, dst, info, encoding)

    @property
    def parts(self) -> Parts:
        return Parts(self.dst)

    def open(self) -> None:
        """Make `<dst>.parts` this run's (another run's parts are deleted)."""
        self.parts.open(run_key(self.colorizer, self.info, self.encoding, self.options))

    def color(self, segment: Segment = Segment(), show: bool = True) -> SegmentReport:
        """Color `segment` into parts (the finished ones reused), with a progress bar if `show`."""
        parts = self.parts
        done = parts.finished(segment.start, segment.end)
        reused = sum(state["frames"] for state in done)
        total = self.info.frames if segment.end is None else segment.end
        total = None if total is None else total - segment.start
        with tqdm(total=total, initial=reused, unit="frame", desc=self.src.name, disable=not show,
                  dynamic_ncols=True) as progress:  # fmt: skip
            colored, shot = _color_parts(self, parts, segment, done, progress)
        return SegmentReport(reused + colored, colored, len(shot.cuts), len(done))

    def segment(self, rank: int, count: int) -> Segment:
        """The frames process `rank` of `count` colors: split at key frames (each found by
        seeking where the file allows)."""
        if count == 1:
            return Segment()
        found, total = keyframes(self.src)
        segment = split_at_keyframes([index for index, _ in found], total, count)[rank]
        return dataclasses.replace(segment, start_pts=dict(found).get(segment.start))

    def join(self, frames: int) -> None:
        """Write dst from the parts of its first `frames` frames and the source's audio."""
        try:
            self.parts.join(self.src, self.dst, self.encoding, frames)
        except OSError as err:
            raise WriteFailed(write_error(err)) from None


def colorize_video(
    colorizer: Colorizer, src: str | Path, dst: str | Path, options: VideoOptions | None = None
) -> VideoReport:
    """Colorize the video `src` into `dst` (the same container: `src`'s suffix), resumably
    (see the module's docstring); a VideoError (one line) for what cannot be read or written."""
    started = time.perf_counter()
    job = VideoJob.plan(colorizer, src, dst, options or VideoOptions())
    job.open()
    done = job.color(show=not job.options.quiet)
    job.join(done.frames)
    seconds = time.perf_counter() - started
    return VideoReport(
        frames=done.frames, seconds=seconds, frames_per_second=done.colored / max(seconds, 1e-9),
        cuts=done.cuts, parts_reused=done.parts_reused,
    )  # fmt: skip


def _color_parts(
    job: VideoJob, parts: Parts, segment: Segment, done: list[dict], progress: tqdm
) -> tuple[int, Shot]:
    """Decode the source once: past the frames before `segment` and its finished parts (their
    shot state restored), then color and encode the rest part by part; the frames colored and
    the last shot state."""
    colors = Coloring(job.colorizer, job.options)
    first = segment.start + sum(state["frames"] for state in done)
    colored = 0
    sought = segment.start if segment.start_pts is not None else 0  # decoding begins there
    source = frames(job.info.path, segment.start_pts if sought else None)
    with contextlib.closing(source):  # closed however this ends
        decoded = enumerate(source, start=sought)
        skip = first - sought
        last = next(itertools.islice(decoded, skip - 1, None), None) if skip else None
        if done:  # the finished parts' last frame: its thumbnail, for the next frame's cut
            if last is None:
                _changed(parts.folder)
            colors.shot = parts.restore(first - done[-1]["frames"], done[-1])
            colors.shot.thumbnail = thumbnail(torch.from_numpy(rgb_of(last[1])).permute(2, 0, 1))
        while segment.end is None or first < segment.end:
            count = job.options.part_frames
            if segment.end is not None:
                count = min(count, segment.end - first)
            head = next(decoded, None)
            if head is None:
                break
            chunk = itertools.chain([head], itertools.islice(decoded, count - 1))
            times: list[int] = []
            try:
                parts.write(first, job.encoding, _colored(colors, chunk, times, progress))
                parts.save(first, colors.shot, times)
            except OSError as err:
                raise WriteFailed(write_error(err)) from None
            colored += len(times)
            first += len(times)
    return colored, colors.shot


def _changed(folder: Path) -> NoReturn:
    raise VideoError(f"the source has fewer frames than when {folder} was begun; delete that "
                     f"folder and colorize again")  # fmt: skip


def _colored(
    colors: Coloring, chunk: Iterator[tuple[int, av.VideoFrame]], times: list[int], progress: tqdm
) -> Iterator[tuple[np.ndarray, int]]:
    """The chunk's frames colored, in colors.batch batches, with their pts (kept in `times`)."""
    while batch := list(itertools.islice(chunk, colors.batch)):
        for (_, frame), rgb in zip(batch, colors.color(batch), strict=True):
            assert frame.pts is not None  # videofile.frames gives every frame one
            times.append(frame.pts)
            progress.update(1)
            yield rgb, frame.pts


def run_key(
    colorizer: Colorizer, info: VideoInfo, encoding: Encoding, options: VideoOptions
) -> dict[str, object]:
    """What the parts depend on: the model, working size, encoding, options, request and hints
    files, and the source (its path, size and time)."""
    stat = info.path.stat()
    caution = colorizer.capabilities.resolve_caution(options.request)
    hints = None
    if options.hints_dir is not None:
        files = sorted(options.hints_dir.glob("*.json"))
        listed = [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]
        hints = hashlib.sha256(json.dumps(listed).encode()).hexdigest()[:16]
    return {
        "version": _VERSION,
        "model": model_identity(colorizer.source) if colorizer.source else repr(colorizer),
        "revision": colorizer.revision,
        "size": options.size or colorizer.image_size,
        "encoding": [encoding.codec, encoding.pix_fmt, encoding.options],
        "options": [
            options.independent_frames,
            options.keyframe_every,
            options.part_frames,
            options.frames_with_user_reference,
        ],
        "request": options.request.key(caution),
        "hints": hints,
        "source": [str(info.path.resolve()), stat.st_size, stat.st_mtime_ns],
    }
