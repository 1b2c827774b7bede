"""colorgan: turn grayscale images into color ones with a conditional GAN."""

from colorgan.colorize import Colorizer
from colorgan.discriminator import Discriminator
from colorgan.generator import Generator

__all__ = ["Colorizer", "Discriminator", "Generator"]
__version__ = "0.1.0"
