"""A colorized video's parts: the folder `<dst>.parts` beside the output where colorize_video
(video.py) keeps each finished part (a video file of its frames, encoded by
videofile.write_video), the shot state after it (the previous colored frame and the keyframe
as PNGs, a JSON of the part's pts, cuts and counters) and `run.json`, the run they belong to.
A part is named by its first frame's index, so one process or several (each a segment of the
frames) write into the same folder, an interrupted run resumes from the parts that follow one
another, and the output is joined from the parts that run from frame 0."""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from colorgan.files import atomic_write
from colorgan.videofile import Encoding, VideoError, join_parts, write_video

RUN_FILE = "run.json"


@dataclass
class Shot:
    """What carries from frame to frame: the shot's keyframe and the previous colored frame
    (as references: reduced), the user's references chosen for the shot (indices), frames
    since the keyframe, and the last frame's thumbnail."""

    key: Image.Image | None = None
    previous: Image.Image | None = None
    user: list[int] | None = None
    since_key: int = 0
    thumbnail: torch.Tensor | None = None
    cuts: list[int] = field(default_factory=list)  # frame indices that started a shot


class Parts:
    """The folder `<dst>.parts` of an output's finished parts, and the run they belong to. A
    part is named by its first frame's index (`part_00000240.mp4`); a run colors the frames in
    one segment or several (under torchrun), and the parts that follow one another from frame
    0 make the output."""

    def __init__(self, dst: Path) -> None:
        self.folder = dst.with_name(dst.name + ".parts")
        self.suffix = dst.suffix

    def _file(self, first: int, kind: str) -> Path:
        return self.folder / f"part_{first:08d}{kind}"

    def open(self, key: dict[str, object]) -> None:
        """Make the folder this run's: a folder from another run is emptied."""
        run_file = self.folder / RUN_FILE
        if self.folder.exists() and not run_file.is_file() and any(self.folder.iterdir()):
            raise VideoError(f"{self.folder}: not colorgan's parts folder; move it away")
        try:
            same = json.loads(run_file.read_text(encoding="utf-8")) == json.loads(json.dumps(key))
        except (OSError, ValueError):
            same = False
        if not same:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder.mkdir(parents=True)
            text = json.dumps(key, indent=1)
            atomic_write(run_file, lambda tmp: tmp.write_text(text, encoding="utf-8"))

    def finished(self, start: int, end: int | None) -> list[dict]:
        """The finished parts that follow one another from frame `start`, in order, as far as
        frame `end` (a part that would pass it is not one of them)."""
        done = []
        while end is None or start < end:
            state = self._finished(start)
            if state is None or (end is not None and start + state["frames"] > end):
                break
            done.append(state)
            start += state["frames"]
        return done

    def _finished(self, first: int) -> dict | None:
        """The saved state of the part from frame `first`, if the part and its files are whole."""
        try:
            state = json.loads(self._file(first, ".json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        needed = [self._file(first, self.suffix)]
        if state.get("steady"):
            needed.append(self._file(first, ".previous.png"))
        if state.get("steady") and not state.get("key_is_previous"):
            needed.append(self._file(first, ".key.png"))
        return state if state.get("frames") and all(p.is_file() for p in needed) else None

    def write(
        self, first: int, encoding: Encoding, colored: Iterator[tuple[np.ndarray, int]]
    ) -> None:
        """Encode the part from frame `first` (atomically) from its colored frames; a state
        saved there before (by a run split elsewhere) is removed first, so it never describes
        this part."""
        self._file(first, ".json").unlink(missing_ok=True)
        path = self._file(first, self.suffix)
        atomic_write(path, lambda tmp: write_video(tmp, encoding, colored))

    def save(self, first: int, shot: Shot, times: list[int]) -> None:
        """The shot state after the part from frame `first` (its frames' pts too), the JSON
        written last."""
        for image, kind in ((shot.previous, ".previous.png"), (shot.key, ".key.png")):
            if image is not None and (kind == ".previous.png" or shot.key is not shot.previous):
                _save_png(image, self._file(first, kind))
        state = {
            "frames": len(times), "pts": times, "cuts": shot.cuts, "user": shot.user,
            "since_key": shot.since_key, "key_is_previous": shot.key is shot.previous,
            "steady": shot.previous is not None,
        }  # fmt: skip
        text = json.dumps(state)
        atomic_write(self._file(first, ".json"), lambda tmp: tmp.write_text(text, "utf-8"))

    def restore(self, first: int, state: dict) -> Shot:
        """The shot state saved after the part from frame `first` (its previous and key frames
        decoded)."""
        previous = key = None
        if state["steady"]:
            previous = _load_png(self._file(first, ".previous.png"))
            key_file = self._file(first, ".key.png")
            key = previous if state["key_is_previous"] else _load_png(key_file)
        return Shot(key, previous, state["user"], state["since_key"], None, list(state["cuts"]))

    def join(self, src: Path, dst: Path, encoding: Encoding, frames: int) -> None:
        """Write `dst` from the parts of the first `frames` frames and the source's audio, then
        delete the folder."""
        done = self.finished(0, frames)
        firsts = list(itertools.accumulate((s["frames"] for s in done), initial=0))
        if firsts[-1] != frames:
            raise VideoError(f"{self.folder}: its parts hold {firsts[-1]} of the {frames} frames; "
                             f"delete the folder and colorize again")  # fmt: skip
        files = [self._file(first, self.suffix) for first in firsts[:-1]]
        join_parts(files, [s["pts"] for s in done], src, dst, encoding)
        shutil.rmtree(self.folder, ignore_errors=True)


def _save_png(image: Image.Image, path: Path) -> None:
    atomic_write(path, lambda tmp: image.save(tmp, "PNG"))


def _load_png(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")
