"""How sure the generator is of its colors (`model.uncertainty`), and the caution knob.

A generator built with `model.uncertainty` also outputs, per pixel, a scale `u` > 0: its
predicted mean absolute error of each ab channel, in ab's units (Lab ab / 110). It has two parts:

* the Laplace scale b of Kendall and Gal (2017): a small head trained with the negative
  log-likelihood of the truth's ab under Laplace(ab_fake, b) (`laplace_nll`), whose optimum is
  each pixel's expected |ab error|. Its scale is bounded (MIN_SCALE, MAX_SCALE), so one step
  costs a bounded loss (docs/journal/results.md has the variants tried). The head reads the
  generator's last features *detached*, and its weights are drawn from their own random stream,
  so it never changes the colors: with the same seed, a model with the head paints exactly what
  one without it paints. It learns where the training images' colors were hard to tell.
* the image's novelty (`Novelty`): how unlike the training images it is, as the Mahalanobis
  distance `z` of its stride-8 feature style (channel means and spreads) from the training
  images' (fitted at the end of every epoch, `fit_novelty`), in units of the training images'
  own NOVELTY_QUANTILE. The head cannot know where it has never been, and that is where the
  damage is (another drawing style, photos for an anime model): there every color is a guess,
  whose error grows with how much color it paints. So with p = clamp((z - NOVELTY_START) /
  NOVELTY_RAMP, 0, 1), the chance that the image is outside what the model knows,

      u = b + p * GUESS_ERROR * |ab|.

  On training-like images (z < NOVELTY_START) u is b alone. p is an inference-time term: in
  training mode it is 0, so the head's NLL trains b alone.

`caution` in [0, 1] fades colors toward gray where `u` is large against the color itself:
each pixel's ab is multiplied by |ab|^2 / (|ab|^2 + caution * (2u)^2), the Wiener factor of a
color whose error has mean square (2u)^2 (a Laplace error of scale u in each channel). 0 gives the
model's colors; 1 keeps color where the model is sure and fades it where the expected error is
as large as the color. L is never touched.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from colorgan.color import AB_SCALE

# the head's scale lies in (MIN_SCALE, MAX_SCALE) (ab units: 1.1 to 220 Lab units); bounded, so a
# step whose features are far off its training ones costs a bounded loss (unbounded, such steps
# made an epoch's mean loss many times its usual value)
MIN_SCALE, MAX_SCALE = 0.01, 2.0
INITIAL_SCALE = 0.1  # the head's scale before training (~ a trained model's mean |ab error|)
NOVELTY_QUANTILE = 0.95  # the training images' distance quantile that `Novelty` scales to 1
# p rises from 0 at 1.1x that distance to 1 at 1.3x (chosen on docs/journal/results.md's sets:
# anime/val images lie at a median 0.81, anime/unseen 0.86, photos 1.33-1.37, see "Knowing when it
# is guessing")
NOVELTY_START, NOVELTY_RAMP = 1.1, 0.2
GUESS_ERROR = 2.0  # a guess's mean |ab error| per channel, as a multiple of its |ab|
MAP_FULL_SCALE = 25.0  # the uncertainty map is white at this mean |ab error| (Lab units) or more


def laplace_nll(scale: torch.Tensor, error: torch.Tensor) -> torch.Tensor:
    """What trains the head: the mean negative log-likelihood (less log 2) of `error`
    (B, C, H, W) under a zero-mean Laplace of `scale` (B, 1, H, W), shared by the channels, in
    fp32. Lowest where the scale is the expected |error|."""
    scale = scale.float()
    return (error.float().abs() / scale + scale.log()).mean()


def fade(ab: torch.Tensor, uncertainty: torch.Tensor, caution: float) -> torch.Tensor:
    """`ab` (B, 2, H, W) faded toward gray by `caution` where `uncertainty` (B, 1, H, W, the
    same units) is large against the color (the Wiener factor in the module's docstring)."""
    if not 0.0 <= caution <= 1.0:
        raise ValueError(f"caution must be in [0, 1], got {caution}")
    if caution == 0.0:
        return ab
    chroma = ab.float().square().sum(dim=1, keepdim=True)
    noise = caution * (2.0 * uncertainty.float()).square()
    return (ab * (chroma / (chroma + noise).clamp_min(1e-12))).to(ab.dtype)


def uncertainty_map(uncertainty: torch.Tensor) -> torch.Tensor:
    """The uncertainty (B, 1, H, W) as a grayscale map, uint8: black where the model is sure,
    white where its predicted mean |ab error| is MAP_FULL_SCALE Lab units or more ("where it
    is guessing")."""
    level = (uncertainty.float() * (AB_SCALE / MAP_FULL_SCALE)).clamp(0.0, 1.0)
    return (level * 255.0).round().to(torch.uint8)


class UncertaintyHead(nn.Module):
    """Predicts the Laplace scale from the generator's last features (detached), at
    `upscale` times their resolution (a transposed conv for the from-scratch U-Net, 2). The
    scale is a sigmoid of the output between MIN_SCALE and MAX_SCALE, starting at
    INITIAL_SCALE everywhere (the head need not first unlearn a far-off start), and never
    clamped (a clamp's zero gradient would hold a pixel at the bound for good). Its input
    is normalised (BatchNorm without affine): the features it reads keep changing scale while
    the generator trains, and the head would chase them."""

    def __init__(self, channels: int, upscale: int = 1, hidden: int = 16) -> None:
        super().__init__()
        # Its own random stream: building the head leaves the global generator as it was, so
        # everything drawn after it (the discriminator, the data order) is what it was without.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(torch.initial_seed() + 1)
            last: nn.Conv2d | nn.ConvTranspose2d = (
                nn.Conv2d(hidden, 1, 1)
                if upscale == 1
                else nn.ConvTranspose2d(hidden, 1, 2 * upscale, upscale, upscale // 2)
            )
            nn.init.normal_(last.weight, 0.0, 0.01)
            fraction = (INITIAL_SCALE - MIN_SCALE) / (MAX_SCALE - MIN_SCALE)
            start = math.log(fraction / (1 - fraction))  # the sigmoid's input for it
            nn.init.constant_(last.bias, start)  # type: ignore[arg-type]
            self.layers = nn.Sequential(
                nn.BatchNorm2d(channels, affine=False),
                nn.Conv2d(channels, hidden, 3, padding=1),
                nn.ReLU(inplace=True),
                last,
            )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        raw = self.layers(features.detach()).float()
        return MIN_SCALE + (MAX_SCALE - MIN_SCALE) * torch.sigmoid(raw)


def style(features: torch.Tensor) -> torch.Tensor:
    """A feature map (B, C, h, w) -> its style statistics (B, 2C): each channel's mean and
    standard deviation over the image (what tells a photo from a drawing)."""
    x = features.detach().float()
    mean = x.mean(dim=(2, 3))
    std = (x.square().mean(dim=(2, 3)) - mean.square()).clamp_min(0.0).sqrt()
    return torch.cat([mean, std], dim=1)


class Novelty(nn.Module):
    """How unlike the training images an image is, from a feature map (B, C, h, w) of it: the
    Mahalanobis distance of its style statistics (`style`) from the training images', over the
    training images' own NOVELTY_QUANTILE of that distance (so 1 or less on most training-like
    images). Its output is p = clamp((that - NOVELTY_START) / NOVELTY_RAMP, 0, 1), (B, 1, 1, 1):
    how surely the image is outside what the model knows. Until `fit_novelty` has run, p is 0,
    and in training mode too: the Laplace head learns b alone (with p in the training NLL, the
    head's loss jumped by 0.4 at every epoch end, when the novelty was refitted)."""

    mean: torch.Tensor
    precision: torch.Tensor
    scale: torch.Tensor

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(2 * channels))
        self.register_buffer("precision", torch.zeros(2 * channels, 2 * channels))  # 0: unfitted
        self.register_buffer("scale", torch.ones(()))

    @property
    def fitted(self) -> bool:
        return bool(self.precision.abs().sum() > 0)

    def distance(self, features: torch.Tensor) -> torch.Tensor:
        """The Mahalanobis distance (B,) of each image's style, before the quantile's scale."""
        centred = style(features) - self.mean
        return ((centred @ self.precision) * centred).sum(dim=1).clamp_min(0.0).sqrt()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.training:  # the head learns b alone: p is for inference (and fit after each epoch)
            return features.new_zeros(features.shape[0], 1, 1, 1, dtype=torch.float32)
        z = self.distance(features) / self.scale  # unfitted (precision 0): 0, so p = 0
        return ((z - NOVELTY_START) / NOVELTY_RAMP).clamp(0.0, 1.0).view(-1, 1, 1, 1)


NOVELTY_IMAGES = 1024  # training images whose style fits `Novelty` (seconds at 64 px)
NOVELTY_SHRINK = 0.1  # covariance shrinkage toward its diagonal (2C dimensions, ~1000 images)


@torch.no_grad()
def fit_novelty(generator: nn.Module, inputs: Iterable[Mapping[str, torch.Tensor]]) -> int:
    """Fit the `Novelty` of a model.uncertainty `generator` to the style of its features on
    `inputs` (the model inputs of training batches by name, up to NOVELTY_IMAGES images), in eval
    mode. Returns the number of images used (0: the generator has no novelty to fit)."""
    novelty = next((m for m in generator.modules() if isinstance(m, Novelty)), None)
    if novelty is None:
        return 0
    seen: list[torch.Tensor] = []  # (B, 2C) per batch
    handle = novelty.register_forward_hook(
        lambda module, args, output: seen.append(style(args[0]).cpu())
    )
    training = generator.training
    generator.eval()
    images = 0
    try:
        for batch in inputs:
            generator(**batch)
            images += batch["l"].shape[0]
            if images >= NOVELTY_IMAGES:
                break
    finally:
        handle.remove()
        generator.train(training)
    if images > 1:
        _fit(novelty, torch.cat(seen).double())
    return images


def _fit(novelty: Novelty, styles: torch.Tensor) -> None:
    """Set the statistics from `styles` (N, 2C): mean, shrunk covariance's inverse, then the
    scale that puts the training images' NOVELTY_QUANTILE distance at 1."""
    mean = styles.mean(dim=0)
    covariance = torch.cov(styles.T)
    diagonal = torch.diag(torch.diag(covariance).clamp_min(1e-8))
    shrunk = (1 - NOVELTY_SHRINK) * covariance + NOVELTY_SHRINK * diagonal
    precision = torch.linalg.inv(shrunk)
    centred = styles - mean
    distances = ((centred @ precision) * centred).sum(dim=1).clamp_min(0.0).sqrt()
    device = novelty.mean.device
    novelty.mean.copy_(mean.float().to(device))
    novelty.precision.copy_(precision.float().to(device))
    novelty.scale.copy_(torch.quantile(distances, NOVELTY_QUANTILE).clamp_min(1e-6).float())


def uncertainty_parts(channels: int, upscale: int, style_channels: int) -> nn.ModuleDict:
    """model.uncertainty's modules: the Laplace head on the last features (`channels`, at
    1/`upscale` of the output's resolution) and the novelty of the stride-8 features' style
    (`style_channels`)."""
    return nn.ModuleDict(
        {"head": UncertaintyHead(channels, upscale), "novelty": Novelty(style_channels)}
    )


def with_uncertainty(
    parts: nn.ModuleDict, ab: torch.Tensor, last: torch.Tensor, styled: torch.Tensor
) -> torch.Tensor:
    """(B, 3, H, W): `ab` and the uncertainty u = b + p * GUESS_ERROR * |ab| (uncertainty.py):
    `last` feeds the head (b), `styled` (the stride-8 features) the novelty (p)."""
    scale = parts["head"](last)
    if scale.shape[-2:] != ab.shape[-2:]:  # predicted at the output stride
        scale = F.interpolate(scale, size=ab.shape[-2:], mode="bilinear", align_corners=False)
    chroma = ab.detach().float().square().sum(dim=1, keepdim=True).sqrt()
    guess = parts["novelty"](styled) * GUESS_ERROR * chroma
    return torch.cat([ab, (scale + guess).to(ab.dtype)], dim=1)
