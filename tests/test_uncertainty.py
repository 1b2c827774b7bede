"""model.uncertainty: the Laplace head, the novelty factor, the caution fade, evaluate's
by_caution and uncertainty_spearman (colorize, serve and ONNX: test_caution.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from colorgan.batch import Batch, predict, split_output
from colorgan.cli import main
from colorgan.config import ModelConfig, load_config
from colorgan.evaluate import Trial, evaluate_checkpoint, parse_cautions
from colorgan.generator import Generator, Lite0UNet
from colorgan.state import build_state
from colorgan.train import train_step
from colorgan.uncertainty import (
    MIN_SCALE,
    Novelty,
    fade,
    fit_novelty,
    laplace_nll,
    uncertainty_map,
)
from tests.conftest import SMALL_STEP, train_args, write_color_folder


def _batch(seed: int = 1, size: int = 32) -> Batch:
    gen = torch.Generator().manual_seed(seed)
    return Batch(
        l=torch.rand(4, 1, size, size, generator=gen) * 2 - 1,
        ab=(torch.rand(4, 2, size, size, generator=gen) - 0.5) * 0.6,
    )


@pytest.mark.parametrize("stride", [1, 4])
def test_lite0_with_uncertainty_gives_ab_and_a_positive_scale(stride: int) -> None:
    torch.manual_seed(0)
    model = Lite0UNet(8, uncertainty=True, output_stride=stride).eval()
    prediction = predict(model, Batch(l=torch.rand(2, 1, 64, 64) * 2 - 1))
    assert prediction.ab.shape == (2, 2, 64, 64)
    assert prediction.uncertainty is not None
    assert prediction.uncertainty.shape == (2, 1, 64, 64)
    assert (prediction.uncertainty >= MIN_SCALE).all()


def test_unet_with_uncertainty_and_without() -> None:
    l = torch.rand(2, 1, 32, 32) * 2 - 1
    assert Generator(8, 5)(l).shape == (2, 2, 32, 32)  # as before: ab alone
    assert split_output(Generator(8, 5)(l)).uncertainty is None
    out = split_output(Generator(8, 5, uncertainty=True)(l))
    assert out.ab.shape == (2, 2, 32, 32) and out.uncertainty is not None
    assert out.uncertainty.shape == (2, 1, 32, 32)


def test_the_head_never_changes_the_colors() -> None:
    # Same seed with and without the head: the same weights, so the same colors, after steps
    # in which the head itself learned (its input is detached, its init on its own stream).
    states = []
    for flag in ("false", "true"):
        config = load_config(None, [*SMALL_STEP, f"model.uncertainty={flag}", "train.seed=3"])
        torch.manual_seed(3)
        state = build_state(config, torch.device("cpu"), steps_per_epoch=10)
        rows = [train_step(state, _batch()) for _ in range(3)]
        states.append((state, rows))
    (plain, plain_rows), (unc, unc_rows) = states
    for key, value in plain.generator.state_dict().items():
        assert torch.equal(value, unc.generator.state_dict()[key]), key
    assert [r["g_l1"] for r in plain_rows] == [r["g_l1"] for r in unc_rows]
    assert all(r["g_nll"] == 0.0 for r in plain_rows)
    assert unc_rows[-1]["g_nll"] < unc_rows[0]["g_nll"]  # the head itself learns


def test_laplace_nll_is_lowest_at_the_mean_absolute_error() -> None:
    error = torch.tensor([0.1, -0.3, 0.2, -0.2]).view(1, 4, 1, 1)  # mean |e| = 0.2
    losses = {s: float(laplace_nll(torch.full((1, 1, 1, 1), s), error)) for s in (0.1, 0.2, 0.4)}
    assert losses[0.2] < losses[0.1] and losses[0.2] < losses[0.4]


def test_fade_keeps_sure_colors_and_fades_unsure_ones() -> None:
    ab = torch.full((1, 2, 2, 2), 0.3)
    u = torch.tensor([[[[0.001, 0.001], [0.3, 3.0]]]])
    assert torch.equal(fade(ab, u, 0.0), ab)
    faded = fade(ab, u, 1.0)
    assert faded[0, :, 0, 0].tolist() == pytest.approx([0.3, 0.3], rel=1e-3)  # sure: kept
    assert (faded[0, :, 1, 0].abs() < 0.2).all()  # error as large as the color: faded
    assert (faded[0, :, 1, 1].abs() < 0.01).all()  # far larger: nearly gray
    half = fade(ab, u, 0.5)
    assert (half[0, :, 1, 0].abs() > faded[0, :, 1, 0].abs()).all()  # less caution, more color
    with pytest.raises(ValueError, match="caution"):
        fade(ab, u, 1.5)


def test_uncertainty_map_is_black_when_sure_and_white_when_guessing() -> None:
    levels = uncertainty_map(torch.tensor([0.0, 1.0]).view(1, 1, 1, 2))
    assert levels.dtype == torch.uint8 and levels.flatten().tolist() == [0, 255]


def test_novelty_is_zero_on_training_like_features_and_one_far_off_them() -> None:
    novelty = Novelty(4).eval()  # in training mode it gives 0: the head learns b alone
    # 200 images' features (B, 4, 8, 8) of random style: per-image channel means and spreads
    gen = torch.Generator().manual_seed(0)
    means, spreads = (
        torch.randn(200, 4, 1, 1, generator=gen),
        torch.rand(200, 4, 1, 1, generator=gen) + 0.5,
    )
    train = means + spreads * torch.randn(200, 4, 8, 8, generator=gen)
    assert torch.equal(novelty(train), torch.zeros(200, 1, 1, 1))  # not fitted: never novel

    class Features(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.novelty = novelty

        def forward(self, l: torch.Tensor) -> torch.Tensor:
            return self.novelty(l)

    batches = [{"l": train[i : i + 50]} for i in range(0, 200, 50)]
    assert fit_novelty(Features().eval(), batches) == 200
    assert novelty.fitted
    assert (novelty(train) == 0).float().mean() >= 0.95  # within 1.1x the 95% quantile
    assert torch.equal(novelty(train * 4), torch.ones(200, 1, 1, 1))  # another style (spread)
    assert torch.equal(novelty(train + 6), torch.ones(200, 1, 1, 1))  # (shifted means)
    assert torch.equal(novelty.train()(train * 4), torch.zeros(200, 1, 1, 1))  # training mode


@pytest.fixture(scope="module")
def uncertainty_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("unc")
    data = write_color_folder(root / "data", 10)
    args = ["--set", "model.uncertainty=true", "--set", "loss.perceptual_weight=0"]
    assert main(train_args(data, root / "run", *args, "--set", "train.epochs=1")) == 0
    return root / "run" / "checkpoints" / "last.pt", data


def test_training_fits_the_novelty_into_the_checkpoint(uncertainty_run: tuple[Path, Path]) -> None:
    checkpoint, _ = uncertainty_run
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["generator"]["uncertainty.novelty.precision"].abs().sum() > 0
    rows = [json.loads(line) for line in (checkpoint.parents[1] / "metrics.jsonl").open()]
    assert all(isinstance(row["g_nll"], float) for row in rows)


def test_evaluate_reports_by_caution_and_the_calibration(
    uncertainty_run: tuple[Path, Path],
) -> None:
    checkpoint, data = uncertainty_run
    trial = Trial(cautions=(0.0, 0.05, 0.5, 1.0))
    result = evaluate_checkpoint(checkpoint, data, quiet=True, trial=trial)
    assert set(result["by_caution"]) == {"0", "0.05", "0.5", "1"}
    assert -1.0 <= result["uncertainty_spearman"] <= 1.0
    assert result["caution"] == ModelConfig().caution == 0.05  # the default model.caution
    assert result["delta_e"] == pytest.approx(result["by_caution"]["0.05"]["delta_e"])
    colorfulness = [result["by_caution"][k]["colorfulness"] for k in ("0", "0.05", "0.5", "1")]
    assert colorfulness == sorted(colorfulness, reverse=True)  # caution only takes color away
    plain = evaluate_checkpoint(checkpoint, data, quiet=True)
    assert "by_caution" not in plain and plain["delta_e"] == pytest.approx(result["delta_e"])


def test_evaluate_caution_errors(
    uncertainty_run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint, data = uncertainty_run
    assert parse_cautions("0, 0.5,1,0.5") == [0.0, 0.5, 1.0]
    args = ["evaluate", str(checkpoint), "--data", str(data), "--quiet"]
    assert main([*args, "--caution", "0,2"]) == 2
    assert "--caution '0,2'" in capsys.readouterr().err
    plain = data.parent / "plain"
    assert (
        main(
            train_args(data, plain, "--set", "train.epochs=1", "--set", "loss.perceptual_weight=0")
        )
        == 0
    )
    assert main(["evaluate", str(plain / "checkpoints" / "last.pt"), "--data", str(data),
                 "--caution", "0,1", "--quiet"]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.uncertainty=false" in err[0]
