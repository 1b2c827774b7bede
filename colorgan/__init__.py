"""colorgan: turn grayscale images into color ones with a conditional GAN."""

from colorgan.colorize import Colorizer
from colorgan.discriminator import Discriminator
from colorgan.generator import Generator
from colorgan.hints import Hint
from colorgan.request import Capabilities, Request

__all__ = ["Capabilities", "Colorizer", "Discriminator", "Generator", "Hint", "Request"]
__version__ = "0.1.0"
