"""colorgan: turn grayscale images into color ones with a conditional GAN."""

from colorgan.colorize import Colorizer
from colorgan.discriminator import Discriminator
from colorgan.generator import Generator
from colorgan.hints import Hint

__all__ = ["Colorizer", "Discriminator", "Generator", "Hint"]
__version__ = "0.1.0"
