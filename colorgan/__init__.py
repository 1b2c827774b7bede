"""colorgan: turn grayscale images into color ones with a conditional GAN."""

from pathlib import Path
from typing import Any

from colorgan import colorize
from colorgan.discriminator import Discriminator
from colorgan.generator import Generator
from colorgan.hints import Hint
from colorgan.request import Capabilities, Request
from colorgan.video import VideoOptions, VideoReport, colorize_video


class Colorizer(colorize.Colorizer):
    """colorize.Colorizer with videos: `colorize_video` needs the video runner, which is built
    on the Colorizer (video.py), so the public class adds it here."""

    def colorize_video(self, src: str | Path, dst: str | Path, **options: Any) -> VideoReport:
        """Colorize the video `src` into `dst` (the same container), resumably: `options` are
        video.VideoOptions' (independent_frames, size, crf, codec, request, hints_dir, ...)."""
        return colorize_video(self, src, dst, VideoOptions(**options))


__all__ = ["Capabilities", "Colorizer", "Discriminator", "Generator", "Hint", "Request"]
__version__ = "0.1.0"
