"""Colorizing a video (video.py, videofile.py): short generated clips through tiny models; the
frames, timestamps, size, rotation and audio kept, steady colors, scene cuts, resuming, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from kornia.color import rgb_to_lab

from colorgan import Colorizer, Request
from colorgan.color import uint8_to_float
from colorgan.hints import HintError
from colorgan.video import (
    CUT_THRESHOLD,
    Coloring,
    Segment,
    VideoError,
    VideoJob,
    VideoOptions,
    colorize_video,
    cut_score,
    is_video,
    split_at_keyframes,
    thumbnail,
)
from colorgan.videofile import keyframes
from tests.conftest import make_color_image, make_hint_checkpoint, make_tiny_checkpoint
from tests.test_matching import make_match_checkpoint

SIZE = (64, 48)  # width, height
SAMPLE_RATE = 8000


def scene(index: int, seed: int) -> np.ndarray:
    """Frame `index` of scene `seed`: gray shapes moving over a gray background (H, W, 3)."""
    rng = np.random.default_rng(seed)
    width, height = SIZE
    image = np.full((height, width, 3), int(rng.integers(40, 200)), np.uint8)
    for shape in range(3):
        level = int(rng.integers(0, 256))
        top, left = int(rng.integers(0, height - 14)), int(rng.integers(0, width - 40))
        left += index * (shape + 1) // 3  # up to 24 pixels in 24 frames: inside the frame
        image[top : top + 14, left : left + 16] = level
    return image


def write_clip(
    path: Path,
    frames: int = 24,
    cut_at: int | None = None,
    rotation: int | None = None,
    audio: bool = True,
    times: list[int] | None = None,
) -> Path:
    """A gray H.264 clip of moving shapes (a second scene from `cut_at`), 24 fps or at `times`
    (pts in 1/1000 s), with a sine wave in AAC; `rotation` as its display matrix."""
    with av.open(str(path), "w") as output:
        video = output.add_stream("libx264", rate=24)
        video.width, video.height, video.pix_fmt = *SIZE, "yuv420p"
        if times is not None:
            video.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            video.set_display_rotation(rotation)
        sound = output.add_stream("aac", rate=SAMPLE_RATE, layout="mono") if audio else None
        for index in range(frames):
            seed = 1 if cut_at is not None and index >= cut_at else 0
            frame = av.VideoFrame.from_ndarray(scene(index, seed), format="rgb24")
            frame.pts = index if times is None else times[index]
            output.mux(video.encode(frame))
        output.mux(video.encode())
        if sound is not None:
            write_sine(output, sound, frames / 24)
    return path


def write_sine(
    output: av.container.OutputContainer, stream: av.AudioStream, seconds: float
) -> None:
    """`seconds` of a 440 Hz sine wave through `stream` (AAC, mono)."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    wave = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    for start in range(0, len(wave), 1024):
        frame = av.AudioFrame.from_ndarray(wave[None, start : start + 1024], "flt", "mono")
        frame.sample_rate, frame.pts = SAMPLE_RATE, start
        output.mux(stream.encode(frame))
    output.mux(stream.encode())


def read_clip(path: Path) -> dict:
    """A clip's frames (RGB), their times (s), its rotation and its audio packets."""
    with av.open(str(path)) as container:
        decoded = list(container.decode(video=0))
        stream = container.streams.video[0]
        found = {
            "rgb": [f.to_ndarray(format="rgb24") for f in decoded],
            "times": [f.pts * f.time_base for f in decoded],
            "rotation": decoded[0].rotation,
            "size": (stream.codec_context.width, stream.codec_context.height),
            "rate": stream.average_rate,
        }
    with av.open(str(path)) as container:
        if container.streams.audio:
            audio = container.streams.audio[0]
            packets = [p for p in container.demux(audio) if p.size]
            found["audio"] = (audio.codec_context.name, [(p.pts, bytes(p)) for p in packets])
    return found


def lab(rgb: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """L (1, 1, H, W) and ab (1, 2, H, W) in Lab units of an RGB (H, W, 3) uint8 frame."""
    lab = rgb_to_lab(uint8_to_float(torch.from_numpy(rgb).permute(2, 0, 1)[None]))
    return lab[:, :1], lab[:, 1:]


def chroma(rgb: np.ndarray) -> float:
    """Mean |ab| (Lab units) of an RGB (H, W, 3) uint8 frame."""
    return float(lab(rgb)[1].abs().mean())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Colorizer:
    path = make_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny.pt")
    return Colorizer.from_checkpoint(path, "cpu")


@pytest.fixture(scope="module")
def match(tmp_path_factory: pytest.TempPathFactory) -> Colorizer:
    path = make_match_checkpoint(tmp_path_factory.mktemp("match") / "match.pt")
    return Colorizer.from_checkpoint(path, "cpu")


QUIET = VideoOptions(quiet=True, part_frames=8)


def test_an_mp4_keeps_its_frames_times_size_rotation_and_audio(
    tiny: Colorizer, tmp_path: Path
) -> None:
    src = write_clip(tmp_path / "clip.mp4", rotation=90)
    report = colorize_video(tiny, src, tmp_path / "out" / "clip.mp4", QUIET)
    before, after = read_clip(src), read_clip(tmp_path / "out" / "clip.mp4")
    assert report.frames == len(after["rgb"]) == len(before["rgb"]) == 24
    assert after["times"] == before["times"] and after["rate"] == before["rate"] == 24
    assert after["size"] == before["size"] == SIZE
    assert after["rotation"] == before["rotation"] == 90
    assert after["audio"] == before["audio"]  # the same codec, packets, times and bytes
    assert max(chroma(f) for f in before["rgb"]) < 1.0
    assert min(chroma(f) for f in after["rgb"]) > 5.0  # colored: the tiny model's orange cast
    for gray, colored in zip(before["rgb"], after["rgb"], strict=True):  # its lightness kept
        assert float((lab(gray)[0] - lab(colored)[0]).abs().mean()) < 2.0
    assert not (tmp_path / "out" / "clip.mp4.parts").exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["clip.mp4"]


def test_an_mkv_keeps_a_variable_frame_rate(tiny: Colorizer, tmp_path: Path) -> None:
    times = [0, 40, 90, 100, 180, 200, 260, 400, 420, 500, 560, 600]
    src = write_clip(tmp_path / "vfr.mkv", frames=len(times), times=times)
    colorize_video(tiny, src, tmp_path / "vfr_out.mkv", QUIET)
    after = read_clip(tmp_path / "vfr_out.mkv")
    assert after["times"] == [Fraction(t, 1000) for t in times]
    assert after["audio"] == read_clip(src)["audio"]


def test_steady_and_independent_frames_both_color_and_differ(
    match: Colorizer, tmp_path: Path
) -> None:
    src = write_clip(tmp_path / "clip.mkv", frames=12, audio=False)
    steady = colorize_video(match, src, tmp_path / "steady.mkv", QUIET)
    alone = colorize_video(
        match, src, tmp_path / "alone.mkv", VideoOptions(independent_frames=True, quiet=True)
    )
    assert steady.frames == alone.frames == 12 and steady.cuts == alone.cuts == 0
    a, b = read_clip(tmp_path / "steady.mkv")["rgb"], read_clip(tmp_path / "alone.mkv")["rgb"]
    assert len(a) == len(b) == 12
    assert any(not np.array_equal(x, y) for x, y in zip(a[1:], b[1:], strict=True))
    assert chroma(a[0]) > 1.0 and min(chroma(f) for f in b) > 1.0
    # an untrained match model copies the last frame's colors through a softmax's mean over
    # several places: they fade from frame to frame, but stay colored
    assert min(chroma(f) for f in a) > 0.1


def test_with_the_users_reference_each_frame_takes_it_alone_unless_asked(
    match: Colorizer, tmp_path: Path
) -> None:
    src = write_clip(tmp_path / "clip.mkv", frames=6, audio=False)
    request = Request.of(reference=[make_color_image(3, SIZE)])
    outputs = []
    for name, settings in (("steady", {}), ("alone", {"independent_frames": True}),
                           ("frames", {"frames_with_user_reference": True})):  # fmt: skip
        options = VideoOptions(request=request, quiet=True, **settings)
        colorize_video(match, src, tmp_path / f"{name}.mkv", options)
        outputs.append(read_clip(tmp_path / f"{name}.mkv")["rgb"])
    steady, alone, frames = outputs
    assert all(np.array_equal(a, b) for a, b in zip(steady, alone, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(steady, frames, strict=True))


def test_a_hard_cut_starts_a_new_shot(match: Colorizer, tmp_path: Path) -> None:
    src = write_clip(tmp_path / "cut.mp4", frames=16, cut_at=9, audio=False)
    report = colorize_video(match, src, tmp_path / "cut_out.mp4", QUIET)
    assert report.cuts == 1
    frames = [torch.from_numpy(scene(i, 0)).permute(2, 0, 1) for i in range(2)]
    other = torch.from_numpy(scene(0, 1)).permute(2, 0, 1)
    moving = cut_score(thumbnail(frames[0]), thumbnail(frames[1]))
    cut = cut_score(thumbnail(frames[1]), thumbnail(other))
    assert moving < CUT_THRESHOLD < cut


def test_an_interrupted_run_resumes_from_its_finished_parts(
    match: Colorizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = write_clip(tmp_path / "clip.mp4", frames=20, cut_at=11)
    straight = colorize_video(match, src, tmp_path / "straight.mp4", QUIET)
    dst = tmp_path / "resumed.mp4"
    calls = {"frames": 0}
    color = Coloring.color

    def stop_at_frame_17(self, batch):  # type: ignore[no-untyped-def]
        calls["frames"] += len(batch)
        if calls["frames"] > 17:
            raise KeyboardInterrupt
        return color(self, batch)

    monkeypatch.setattr(Coloring, "color", stop_at_frame_17)
    with pytest.raises(KeyboardInterrupt):
        colorize_video(match, src, dst, QUIET)
    monkeypatch.undo()
    parts = sorted(p.name for p in (tmp_path / "resumed.mp4.parts").iterdir())
    assert "part_00000008.mp4" in parts and "part_00000016.mp4" not in parts  # 8-frame parts
    assert not [name for name in parts if name.endswith(".tmp")]
    resumed = colorize_video(match, src, dst, QUIET)
    assert resumed.parts_reused == 2 and resumed.cuts == straight.cuts == 1
    a, b = read_clip(tmp_path / "straight.mp4"), read_clip(dst)
    assert all(np.array_equal(x, y) for x, y in zip(a["rgb"], b["rgb"], strict=True))
    assert a["times"] == b["times"] and a["audio"] == b["audio"] and len(b["rgb"]) == 20
    assert not (tmp_path / "resumed.mp4.parts").exists()


def test_a_changed_run_does_not_reuse_parts(match: Colorizer, tmp_path: Path) -> None:
    src = write_clip(tmp_path / "clip.mkv", frames=10, audio=False)
    parts = tmp_path / "out.mkv.parts"
    parts.mkdir()
    (parts / "run.json").write_text(json.dumps({"another": "run"}))
    (parts / "part_00000.json").write_text("{}")
    report = colorize_video(match, src, tmp_path / "out.mkv", QUIET)
    assert report.parts_reused == 0 and report.frames == 10


def test_hints_for_one_frame_color_that_frame(tmp_path: Path) -> None:
    model = make_hint_checkpoint(tmp_path / "hints.pt", "unet")
    colorizer = Colorizer.from_checkpoint(model, "cpu")
    src = write_clip(tmp_path / "clip.mp4", frames=6, audio=False)
    hints = tmp_path / "hints"
    hints.mkdir()
    (hints / "000003.json").write_text('[{"x": 32, "y": 24, "color": "#ff0000", "radius": 12}]')
    options = VideoOptions(hints_dir=hints, quiet=True)
    colorize_video(colorizer, src, tmp_path / "out.mp4", options)
    frames = read_clip(tmp_path / "out.mp4")["rgb"]
    red = [int(f[24, 32, 0]) - int(f[24, 32, 1]) for f in frames]  # R - G at the point
    assert red[3] > 60 and max(red[:3] + red[4:]) < red[3] - 40
    (hints / "000001.json").write_text('[{"x": 500, "y": 24, "color": "#ff0000"}]')
    with pytest.raises(HintError, match=r"000001\.json: point 0 at"):
        colorize_video(colorizer, src, tmp_path / "out2.mp4", options)


def test_an_avi_keeps_its_own_codec_and_another_can_be_asked(
    tiny: Colorizer, tmp_path: Path
) -> None:
    for suffix, codec, written in ((".avi", "mpeg4", "mpeg4"), (".webm", "libvpx", "vp9")):
        src = tmp_path / f"clip{suffix}"
        with av.open(str(src), "w") as output:
            stream = output.add_stream(codec, rate=25)
            stream.width, stream.height, stream.pix_fmt = *SIZE, "yuv420p"
            for index in range(10):
                frame = av.VideoFrame.from_ndarray(scene(index, 0), format="rgb24")
                frame.pts = index
                output.mux(stream.encode(frame))
            output.mux(stream.encode())
        options = VideoOptions(quiet=True, part_frames=4, codec=None if suffix == ".avi" else "vp9")
        report = colorize_video(tiny, src, tmp_path / f"out{suffix}", options)
        with av.open(str(tmp_path / f"out{suffix}")) as container:
            assert container.streams.video[0].codec_context.name == written
            assert len(list(container.decode(video=0))) == report.frames == 10


def test_what_is_not_a_video_is_one_line(tiny: Colorizer, tmp_path: Path) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    with av.open(str(tmp_path / "song.mp4"), "w") as output:
        write_sine(output, output.add_stream("aac", rate=SAMPLE_RATE, layout="mono"), 0.5)
    clip = write_clip(tmp_path / "clip.mp4", frames=4, audio=False)
    webm = tmp_path / "clip.webm"
    with av.open(str(webm), "w") as output:
        stream = output.add_stream("libvpx", rate=25)
        stream.width, stream.height, stream.pix_fmt = *SIZE, "yuv420p"
        output.mux(stream.encode(av.VideoFrame.from_ndarray(scene(0, 0), format="rgb24")))
        output.mux(stream.encode())
    cases = [
        (text, tmp_path / "a.mp4", VideoOptions(), "not a video FFmpeg can read"),
        (tmp_path / "song.mp4", tmp_path / "b.mp4", VideoOptions(), "has no video stream"),
        (tmp_path / "missing.mp4", tmp_path / "c.mp4", VideoOptions(), "not a video"),
        (clip, tmp_path / "d.mkv", VideoOptions(), "keeps its source's container"),
        (clip, tmp_path / "e.mp4", VideoOptions(codec="libvpx-vp9x"), "cannot write codec"),
        (webm, tmp_path / "f.webm", VideoOptions(codec="libx264"), "cannot write codec libx264"),
    ]
    for src, dst, options, reason in cases:
        with pytest.raises(VideoError, match=reason) as caught:
            colorize_video(tiny, src, dst, options)
        assert "\n" not in str(caught.value)
        assert str(src) in str(caught.value) or str(dst) in str(caught.value)
    with pytest.raises(Exception, match="crf must be"):
        VideoOptions(crf=99)


def test_is_video_knows_the_suffixes() -> None:
    assert is_video("a/b.MP4") and is_video(Path("x.webm")) and is_video("y.ts")
    assert not is_video("a.png") and not is_video("mp4")


def test_colorize_takes_videos_beside_images(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`colorgan colorize MODEL clip.mp4 picture.png --out DIR` writes DIR/clip.mp4 (every frame,
    the audio) and DIR/picture.png; a second run skips the finished video; --independent-frames
    and Colorizer.colorize_video take the same path."""
    from colorgan.cli import main

    model = make_match_checkpoint(tmp_path / "match.pt")
    clip = write_clip(tmp_path / "clip.mp4", frames=12)
    make_color_image(3).convert("L").save(tmp_path / "picture.png")
    out = tmp_path / "out"
    args = ["colorize", str(model), str(clip), str(tmp_path / "picture.png"), "--out", str(out)]
    assert main([*args, "--quiet", "--size", "32"]) == 0
    assert (out / "picture.png").is_file()
    written = read_clip(out / "clip.mp4")
    assert len(written["rgb"]) == 12 and written["audio"] == read_clip(clip)["audio"]
    stamp = (out / "clip.mp4").stat().st_mtime_ns
    assert main([*args, "--quiet", "--size", "32"]) == 0  # already there: skipped
    assert (out / "clip.mp4").stat().st_mtime_ns == stamp
    again = [*args, "--quiet", "--size", "32", "--independent-frames", "--overwrite"]
    assert main(again) == 0
    assert len(read_clip(out / "clip.mp4")["rgb"]) == 12
    report = Colorizer.from_checkpoint(model, "cpu").colorize_video(
        clip, tmp_path / "api.mp4", size=32, quiet=True
    )
    assert report.frames == 12 and (tmp_path / "api.mp4").is_file()
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    capsys.readouterr()
    assert main(["colorize", str(model), str(bad), "--out", str(out), "--quiet"]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"colorgan: {bad}: not a video FFmpeg")


def write_counted_clip(path: Path, frames: int, gop: int) -> Path:
    """An H.264 clip whose frame i shows i in binary (8 blocks of 8 x 8 pixels, dark 0, light
    1), a key frame every `gop` frames, with a sine in AAC."""
    with av.open(str(path), "w") as output:
        video = output.add_stream("libx264", rate=24, options={"g": str(gop), "sc_threshold": "0"})
        video.width, video.height, video.pix_fmt = *SIZE, "yuv420p"
        sound = output.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        for index in range(frames):
            image = np.full((SIZE[1], SIZE[0], 3), 128, np.uint8)
            for bit in range(8):
                image[:8, bit * 8 : bit * 8 + 8] = 220 if index >> bit & 1 else 30
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index
            output.mux(video.encode(frame))
        output.mux(video.encode())
        write_sine(output, sound, frames / 24)
    return path


def counted(rgb: np.ndarray) -> int:
    """The index a frame of write_counted_clip shows (its lightness kept by any coloring)."""
    light = [float(lab(rgb[:8, bit * 8 + 2 : bit * 8 + 6])[0].mean()) > 50 for bit in range(8)]
    return sum(1 << bit for bit, on in enumerate(light) if on)


def test_split_at_keyframes_gives_each_process_a_contiguous_share() -> None:
    assert split_at_keyframes([0, 6, 12, 18], 24, 2) == [Segment(0, 12), Segment(12, None)]
    assert split_at_keyframes([0, 10, 11], 30, 3) == [Segment(0, 10), Segment(10, 11),
                                                      Segment(11, None)]  # fmt: skip
    assert split_at_keyframes([0], 24, 2) == [Segment(0, 24), Segment(24, None)]  # one key: alone
    assert split_at_keyframes([0, 5], 24, 1) == [Segment(0, None)]


def test_segments_colored_apart_are_joined_in_order(tiny: Colorizer, tmp_path: Path) -> None:
    """What torchrun's ranks do, in one process: the second half first, then the first; a
    later run over the whole video reuses their parts."""
    clip = write_counted_clip(tmp_path / "clip.mp4", 24, gop=6)
    job = VideoJob.plan(tiny, clip, tmp_path / "out.mp4", VideoOptions(quiet=True, part_frames=8))
    job.open()
    halves = [job.segment(rank, 2) for rank in range(2)]
    assert [(s.start, s.end) for s in halves] == [(0, 12), (12, None)]
    assert halves[1].start_pts is not None  # the second half is found by seeking
    later, first = job.color(halves[1]), job.color(halves[0])
    assert (first.frames, later.frames, first.colored, later.colored) == (12, 12, 12, 12)
    whole = job.color()
    assert (whole.frames, whole.colored, whole.parts_reused) == (24, 0, 4)
    job.join(24)
    assert [counted(f) for f in read_clip(tmp_path / "out.mp4")["rgb"]] == list(range(24))


@pytest.mark.slow
def test_torchrun_splits_a_video_between_two_processes(tmp_path: Path) -> None:
    """`torchrun --nproc_per_node 2 -m colorgan colorize MODEL clip.mp4 --out DIR`: each rank
    colors half the frames from a key frame, rank 0 joins them in order with the audio and
    prints one summary; exit status 0."""
    model = make_tiny_checkpoint(tmp_path / "tiny.pt")
    clip = write_counted_clip(tmp_path / "clip.mp4", 24, gop=6)
    found, total = keyframes(clip)
    assert [index for index, _ in found] == [0, 6, 12, 18] and total == 24
    assert all(pts is not None for _, pts in found)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        env.pop(key, None)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "colorgan", "colorize", str(model), str(clip), "--out", str(out),
           "--size", "32", "--runtime", "torch", "--device", "cpu"]  # fmt: skip
    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("24 frames (ranks: 12 + 12)") == 1, result.stdout
    before, after = read_clip(clip), read_clip(out / "clip.mp4")
    assert [counted(f) for f in before["rgb"]] == list(range(24))
    assert [counted(f) for f in after["rgb"]] == list(range(24))  # every frame, in order
    assert after["times"] == before["times"] and after["audio"] == before["audio"]
    assert min(chroma(f) for f in after["rgb"]) > 5.0  # colored by both ranks
    assert sorted(p.name for p in out.iterdir()) == ["clip.mp4"]  # the parts folder is gone
