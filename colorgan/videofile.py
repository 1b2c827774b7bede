"""Video files through FFmpeg (PyAV, whose wheel carries FFmpeg): what a source holds, its
frames in order, colored frames encoded in the source's container, and encoded parts joined
with the source's audio packets, copied untouched.

Parts are what make a long film resumable (video.py): each is a file of its own whose first
frame is a key frame, encoded without B-frames so that its packets' decoding order is their
display order, and every part's encoder is set up alike, so the parts' streams agree and
their packets follow one another into the output without re-encoding. Each frame keeps the
source's timestamp (pts in the stream's time base), so a variable frame rate and the audio's
sync survive; the display matrix (rotation, flips) is carried to the output's stream.
"""

from __future__ import annotations

import heapq
import io
import struct
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import av.container
import numpy as np
from av.sidedata.sidedata import Type as SideData

from colorgan.errors import ColorganError
from colorgan.files import atomic_write


class VideoError(ColorganError):
    """A video that cannot be read, or cannot be written as asked."""


# Each video suffix and the FFmpeg muxer that writes it.
FORMATS = {
    ".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm",
    ".avi": "avi", ".mpg": "mpeg", ".mpeg": "mpeg", ".ts": "mpegts", ".wmv": "asf", ".flv": "flv",
}  # fmt: skip
VIDEO_SUFFIXES = frozenset(FORMATS)
# The encoders tried, in order, when the source's own codec cannot be written in its container.
FALLBACK_ENCODERS = {
    "mp4": ("libx264",), "mov": ("libx264",), "matroska": ("libx264",),
    "webm": ("libvpx-vp9", "libvpx"), "avi": ("libx264", "mpeg4"), "asf": ("libx264", "mpeg4"),
    "flv": ("libx264",), "mpeg": ("mpeg2video", "mpeg1video"), "mpegts": ("libx264", "mpeg2video"),
}  # fmt: skip
CRF_ENCODERS = frozenset({"libx264", "libx265", "libvpx", "libvpx-vp9", "libsvtav1"})
_QP2LAMBDA = 118  # FFmpeg's FF_QP2LAMBDA: a quantizer as global_quality
# libvpx's defaults are its slowest; these are its usual "good, fast enough" settings
_VPX_SPEED = {"deadline": "good", "cpu-used": "4", "row-mt": "1"}
_COLOR_TAGS = ("colorspace", "color_range", "color_primaries", "color_trc")


def is_video(path: str | Path) -> bool:
    """Whether `path` has a video suffix (VIDEO_SUFFIXES, any case)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def _reason(err: BaseException) -> str:
    """An FFmpeg or OS error's reason, without the file name it repeats."""
    text = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return text.splitlines()[0][:120]


def _kinds() -> str:
    return ", ".join(sorted(VIDEO_SUFFIXES))


@dataclass(frozen=True)
class VideoInfo:
    """What a source's video stream is, read before its first frame is colored."""

    path: Path
    codec: str  # its codec's name, e.g. "h264"
    width: int
    height: int
    frames: int | None  # as the container counts them; None where it does not say
    rate: Fraction | None  # the average frame rate, where known
    time_base: Fraction  # each frame's pts counts in it
    pix_fmt: str
    bit_rate: int | None
    display_matrix: tuple[int, ...] | None  # how a player turns (or flips) the pictures
    colors: dict[str, int] = field(default_factory=dict)  # the first frame's colorspace tags


def open_source(path: Path) -> av.container.InputContainer:
    """The file opened for reading, or a VideoError naming it (one line)."""
    try:
        return av.open(str(path), "r")
    except (av.FFmpegError, OSError, ValueError) as err:
        raise VideoError(
            f"{path}: not a video FFmpeg can read ({_reason(err)}); give a video file "
            f"({_kinds()}, or any other container and codec FFmpeg reads)"
        ) from None


def video_stream(container: av.container.InputContainer, path: Path) -> av.VideoStream:
    """The first video stream that is not a cover picture; a VideoError if there is none."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    raise VideoError(f"{path}: has no video stream (audio only?); give a file with pictures")


def frames(path: Path, start_pts: int | None = None) -> Generator[av.VideoFrame, None, None]:
    """The source's frames in display order, each with a pts (in the stream's time base) that
    is given and larger than the one before (a missing or repeated one is made so; an AVI
    stores none, so its frames are counted). With `start_pts` (a key frame's, from `keyframes`
    where it gives one) the frames from that one on, found by seeking."""
    with open_source(path) as container:
        stream = video_stream(container, path)
        stream.thread_type = "AUTO"
        step = _frame_step(stream)
        counted = container.format.name == "avi"
        last: int | None = None
        index = 0
        try:
            decoded = container.decode(stream)
            if start_pts is not None:
                decoded = _from_key_frame(container, stream, start_pts)
            for frame in decoded:
                if counted or frame.pts is None or (last is not None and frame.pts <= last):
                    frame.pts = 0 if last is None else last + step
                last = frame.pts
                yield frame
                index += 1
        except av.FFmpegError as err:
            raise VideoError(
                f"{path}: cannot decode frame {index} ({_reason(err)}); the file may be "
                f"damaged: repair or re-encode it (ffmpeg -i IN -c:a copy OUT)"
            ) from None


def _from_key_frame(
    container: av.container.InputContainer, stream: av.VideoStream, pts: int
) -> Iterator[av.VideoFrame]:
    """The decoded frames from the one at `pts` on: sought to the key frame there, or where the
    seek lands past it, decoded from the first frame with the earlier ones dropped."""
    for offset in (pts, None):
        if offset is None:
            container.seek(0, backward=True)  # the start, in the container's time (us)
        else:
            container.seek(offset, stream=stream, backward=True)
        decoded = container.decode(stream)
        first = next((f for f in decoded if f.pts is not None and f.pts >= pts), None)
        if first is not None and first.pts == pts:
            yield first
            yield from decoded
            return
    raise VideoError(f"{container.name}: has no frame at {pts} any more; colorize it again")


def keyframes(path: Path) -> tuple[list[tuple[int, int | None]], int]:
    """Each key frame's display index and pts (None where the frames cannot be found by
    their pts: some lack one, repeat one, or an AVI's are counted), and the frame count, from
    the video stream's packets (nothing decoded)."""
    with open_source(path) as container:
        stream = video_stream(container, path)
        found = [(p.pts, p.is_keyframe) for p in container.demux(stream) if p.size]
        counted = container.format.name == "avi"
    times = [pts for pts, _ in found]
    if counted or None in times or len(set(times)) < len(times):
        return [(i, None) for i, (_, key) in enumerate(found) if key], len(found)
    shown = sorted(found, key=lambda packet: packet[0])  # type: ignore[arg-type,return-value]
    return [(i, pts) for i, (pts, key) in enumerate(shown) if key], len(found)


def _frame_step(stream: av.VideoStream) -> int:
    """One frame's duration in the stream's time base (at least 1), for a missing pts."""
    rate, time_base = stream.average_rate or stream.guessed_rate, stream.time_base
    if not rate or not time_base:
        return 1
    return max(1, round(1 / (rate * time_base)))


def probe(path: Path) -> VideoInfo:
    """What `path`'s video stream is (its first frame decoded for the rotation and colorspace);
    a VideoError (one line) for a file that is not a video, or has no frames."""
    with open_source(path) as container:
        stream = video_stream(container, path)
        codec = stream.codec_context
        info = dict(
            path=path, codec=codec.name, width=codec.width, height=codec.height,
            frames=stream.frames or None, rate=stream.average_rate or stream.guessed_rate,
            time_base=stream.time_base or Fraction(1, 90000), pix_fmt=codec.pix_fmt or "yuv420p",
            bit_rate=codec.bit_rate or None,
        )  # fmt: skip
    first = next(frames(path), None)
    if first is None:
        raise VideoError(f"{path}: its video stream has no frames; give a video with pictures")
    matrix = first.side_data.get(SideData.DISPLAYMATRIX)  # type: ignore[call-overload]
    return VideoInfo(
        **info,  # type: ignore[arg-type]
        display_matrix=struct.unpack("<9i", bytes(matrix)) if matrix is not None else None,
        colors={tag: int(getattr(first, tag)) for tag in _COLOR_TAGS},
    )


def rgb_of(frame: av.VideoFrame) -> np.ndarray:
    """A decoded frame as RGB (H, W, 3) uint8, converted with its own colorspace and range."""
    array = frame.to_ndarray(
        format="rgb24", src_color_range=frame.color_range or None, dst_color_range="JPEG"
    )
    assert isinstance(array, np.ndarray)
    return array


@dataclass(frozen=True, eq=False)
class Encoding:
    """How every part of one output is encoded: the same settings for each, so they join."""

    format: str  # the muxer (FORMATS)
    codec: str  # the encoder, e.g. "libx264"
    pix_fmt: str
    options: dict[str, str]
    rate: Fraction | None
    time_base: Fraction
    width: int
    height: int
    colors: dict[str, int]
    display_matrix: tuple[int, ...] | None


def plan_encoding(info: VideoInfo, suffix: str, codec: str | None, crf: int) -> Encoding:
    """How to write `info`'s frames as a `suffix` file: with `codec` (an FFmpeg encoder), or
    the source's own codec where FFmpeg can encode it in that container, else the container's
    fallback (FALLBACK_ENCODERS); each tried by writing a frame in memory. A VideoError (one
    line) when none can be written."""
    fmt = FORMATS.get(suffix.lower())
    if fmt is None:
        raise VideoError(f"{info.path}: cannot write a {suffix or 'suffix-less'} video; "
                         f"name the output with one of {_kinds()}")  # fmt: skip
    tried = [codec] if codec else [info.codec, *FALLBACK_ENCODERS[fmt]]
    for name in dict.fromkeys(tried):
        encoding = _encoding(info, fmt, name, crf)
        if encoding is not None and _can_write(encoding):
            return encoding
    what = f"codec {codec}" if codec else f"its codec ({info.codec}) or {', '.join(tried[1:])}"
    raise VideoError(
        f"{info.path}: cannot write {what} in a {suffix} file at {info.width}x{info.height} "
        f"with this FFmpeg; give a codec it can (e.g. {FALLBACK_ENCODERS[fmt][0]}) or convert "
        f"the video to .mp4"
    )


def _encoding(info: VideoInfo, fmt: str, name: str, crf: int) -> Encoding | None:
    """The settings for encoder `name`, or None where this FFmpeg has no such encoder."""
    try:
        codec = av.Codec(name, "w")
    except (av.codec.codec.UnknownCodecError, av.FFmpegError, ValueError):
        return None
    if codec.type != "video":
        return None
    offered = [f.name for f in codec.video_formats or ()]
    chroma = [f for f in offered if len(av.VideoFormat(f).components) >= 3] or ["yuv420p"]
    pix_fmt = next((f for f in (info.pix_fmt, "yuv420p") if f in chroma), chroma[0])
    if codec.name in CRF_ENCODERS:
        options = {"crf": str(crf)}
        if codec.name.startswith("libvpx"):
            options |= {"b": "0", "auto-alt-ref": "0", **_VPX_SPEED}  # b 0: constant quality
        if codec.name == "libx265":
            options["x265-params"] = "log-level=error"  # it prints its settings otherwise
    else:  # a fixed quantizer: crf 18 -> 3, mpeg4's near-transparent setting
        options = {"flags": "+qscale", "global_quality": str(max(1, round(crf / 6)) * _QP2LAMBDA)}
    return Encoding(
        fmt, codec.name, pix_fmt, options, info.rate, info.time_base, info.width, info.height,
        info.colors, info.display_matrix,
    )  # fmt: skip


def _can_write(encoding: Encoding) -> bool:
    """Whether one black frame can be encoded and muxed as `encoding` says (in memory)."""
    black = np.zeros((encoding.height, encoding.width, 3), np.uint8)
    try:
        with av.open(io.BytesIO(), "w", format=encoding.format) as output:
            stream = _add_stream(output, encoding)
            output.mux(stream.encode(_to_frame(black, 0, encoding)))
            output.mux(stream.encode())
    except (av.FFmpegError, ValueError, OSError):
        return False
    return True


def _add_stream(output: av.container.OutputContainer, encoding: Encoding) -> av.VideoStream:
    """The video stream `encoding` describes, added to `output`."""
    stream = output.add_stream(encoding.codec, rate=encoding.rate, options=encoding.options)
    assert isinstance(stream, av.VideoStream)
    stream.width, stream.height, stream.pix_fmt = encoding.width, encoding.height, encoding.pix_fmt
    stream.time_base = encoding.time_base
    stream.codec_context.time_base = encoding.time_base
    stream.codec_context.max_b_frames = 0  # decoding order = display order: parts join
    for tag, value in encoding.colors.items():
        setattr(stream.codec_context, tag, value)
    return stream


def _to_frame(rgb: np.ndarray, pts: int, encoding: Encoding) -> av.VideoFrame:
    """RGB (H, W, 3) uint8 -> a frame in the encoder's pixel format, colorspace and range."""
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    colors = encoding.colors
    frame = frame.reformat(
        format=encoding.pix_fmt,
        dst_colorspace=colors.get("colorspace") or None,
        src_color_range="JPEG",
        dst_color_range=colors.get("color_range") or None,
    )
    frame.pts, frame.time_base = pts, encoding.time_base
    return frame


def write_video(path: Path, encoding: Encoding, colored: Iterable[tuple[np.ndarray, int]]) -> int:
    """Encode `colored` (RGB (H, W, 3) uint8 and its pts in encoding.time_base, in order) into
    a new video file at `path` (any name: the format is encoding.format); the count written."""
    count = 0
    with av.open(str(path), "w", format=encoding.format) as output:
        stream = _add_stream(output, encoding)
        for rgb, pts in colored:
            output.mux(stream.encode(_to_frame(rgb, pts, encoding)))
            count += 1
        output.mux(stream.encode())
    return count


def join_parts(
    parts: Sequence[Path], times: Sequence[Sequence[int]], source: Path, dst: Path,
    encoding: Encoding,
) -> None:  # fmt: skip
    """Write `dst` (atomically) from the parts' video packets, in order, and every audio
    stream of `source`, copied; `times` holds each part's frames' pts (encoding.time_base)."""

    def write(tmp: Path) -> None:
        with av.open(str(tmp), "w", format=encoding.format) as output, open_source(source) as src:
            with av.open(str(parts[0]), "r") as first:
                video = output.add_stream_from_template(first.streams.video[0])
            assert isinstance(video, av.VideoStream)
            if encoding.display_matrix is not None:
                video.set_display_matrix(list(encoding.display_matrix))
            audio = {s.index: _copy_of(output, s) for s in src.streams.audio}
            packets = _part_packets(parts, times, video, encoding.time_base)
            copied = _copied_packets(src, audio)
            for packet in heapq.merge(packets, copied, key=_seconds):
                output.mux(packet)

    atomic_write(dst, write)


def _copy_of(output: av.container.OutputContainer, stream: av.stream.Stream) -> av.stream.Stream:
    """A stream of `output` for `stream`'s packets as they are, in its time base (as ffmpeg's
    stream copy does: AVI's audio keeps its block count)."""
    return output.add_stream_from_template(stream, time_base=stream.time_base)


def _part_packets(
    parts: Sequence[Path], times: Sequence[Sequence[int]], stream: av.VideoStream,
    time_base: Fraction,
) -> Iterator[av.Packet]:  # fmt: skip
    """Each part's video packets in order, for `stream`, each given its frame's pts: without
    B-frames a part has one packet per frame, shown when decoded, and the times written are
    the source's whatever a muxer made of them (MPEG-TS adds a delay; AVI counts frames)."""
    for part, pts in zip(parts, times, strict=True):
        with av.open(str(part), "r") as container:
            count = 0
            for packet in container.demux(container.streams.video[0]):
                if not packet.size:
                    continue  # the demuxer's end of stream
                if count == len(pts):
                    raise _mismatch(part, len(pts))
                packet.time_base = time_base
                packet.pts = packet.dts = pts[count]
                packet.stream = stream
                count += 1
                yield packet
            if count != len(pts):
                raise _mismatch(part, len(pts))


def _mismatch(part: Path, frames: int) -> VideoError:
    return VideoError(
        f"{part}: not one packet for each of its {frames} frames; delete the folder "
        f"{part.parent} and colorize again"
    )


def _copied_packets(
    src: av.container.InputContainer, streams: dict[int, av.stream.Stream]
) -> Iterator[av.Packet]:
    """The source's audio packets, untouched, each for its stream of the output."""
    if not streams:
        return
    for packet in src.demux(*src.streams.audio):
        if packet.size == 0 or (packet.pts is None and packet.dts is None):
            continue
        packet.stream = streams[packet.stream.index]
        yield packet


def _seconds(packet: av.Packet) -> Fraction:
    """When a packet is decoded, in seconds: the order the muxer interleaves them in."""
    ticks = packet.dts if packet.dts is not None else packet.pts
    assert ticks is not None and packet.time_base is not None
    return ticks * packet.time_base
