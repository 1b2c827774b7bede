"""The recipe switches: generator warm-up, EMA, label smoothing, instance noise, and the
baseline configs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from colorgan.batch import Batch
from colorgan.checkpoint import load_generator
from colorgan.cli import main
from colorgan.config import load_config
from colorgan.ema import EMA
from colorgan.errors import ConfigError
from colorgan.losses import AB_BINS, ab_bins, ab_histogram, d_losses, l1_loss, rebalance_weights
from colorgan.state import build_state
from colorgan.train import _noise, train_step
from tests.conftest import REPO, SMALL_STEP, train_args, write_color_folder

BASE = [*SMALL_STEP, "train.epochs=4"]


def _state(*extra: str):  # type: ignore[no-untyped-def]
    config = load_config(None, [*BASE, *extra])
    return build_state(config, torch.device("cpu"), steps_per_epoch=5)


def _batch(seed: int = 1) -> Batch:
    gen = torch.Generator().manual_seed(seed)
    return Batch(
        l=torch.rand(4, 1, 32, 32, generator=gen) * 2 - 1,
        ab=(torch.rand(4, 2, 32, 32, generator=gen) - 0.5) * 0.6,
    )


def _copy(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> bool:
    after = module.state_dict()
    return any(not torch.equal(v, after[k]) for k, v in before.items() if v.is_floating_point())


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step")
def test_pretrain_epochs_leave_the_discriminator_alone_then_hand_over() -> None:
    state = _state("train.pretrain_epochs=1")
    assert state.discriminator is not None
    d_before, g_before = _copy(state.discriminator), _copy(state.generator)
    losses = train_step(state, _batch())
    assert losses["g_adv"] == 0.0 and losses["d_total"] == 0.0
    assert losses["g_total"] == pytest.approx(100 * losses["g_l1"], rel=1e-6)
    assert not _changed(d_before, state.discriminator)
    assert _changed(g_before, state.generator)
    state.epoch = 1  # the warm-up is over
    losses = train_step(state, _batch())
    assert losses["g_adv"] > 0 and losses["d_total"] > 0
    assert _changed(d_before, state.discriminator)


def test_pretrain_needs_adversarial_epochs_left() -> None:
    with pytest.raises(ConfigError, match=r"train\.pretrain_epochs=4 leaves no adversarial"):
        load_config(None, [*BASE, "train.pretrain_epochs=4"])
    # Without a discriminator the warm-up is the whole run, which is allowed.
    load_config(None, [*BASE, "train.pretrain_epochs=4", "loss.adversarial_weight=0"])


def test_ema_follows_its_formula() -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    ema = EMA(net, decay=0.9)
    start = net[0].weight.detach().clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
        net[1].running_mean.fill_(2.0)
        net[1].num_batches_tracked.fill_(7)
    ema.update(net)  # decay warms up: min(0.9, 2 / 11)
    d = 2 / 11
    assert torch.allclose(ema.module[0].weight, d * start + (1 - d) * (start + 1))
    assert torch.allclose(ema.module[1].running_mean, torch.full((2,), (1 - d) * 2.0))
    assert int(ema.module[1].num_batches_tracked) == 7
    for _ in range(200):
        ema.update(net)
    assert ema.current_decay() == 0.9
    assert torch.allclose(ema.module[0].weight, net[0].weight, atol=1e-6)
    assert not ema.module[0].weight.requires_grad


def test_ema_is_what_validation_uses() -> None:
    state = _state("train.ema_decay=0.99")
    assert state.ema is not None and state.eval_generator is state.ema.module
    for _ in range(3):
        train_step(state, _batch())
    assert state.ema.updates == 3
    live, averaged = state.generator.state_dict(), state.ema.module.state_dict()
    assert any(not torch.equal(live[k], averaged[k]) for k in live)
    assert _state().eval_generator is not None and _state().ema is None


def test_one_sided_label_smoothing_targets_only_real() -> None:
    real, fake = torch.zeros(3, 1, 4, 4), torch.zeros(3, 1, 4, 4)
    loss_real, loss_fake = d_losses(real, fake, "vanilla", real_label=0.9)
    assert loss_real.item() == pytest.approx(math.log(2))  # BCE at logit 0 is log 2 for any target
    logits = torch.full((3, 1, 4, 4), 2.0)
    loss_real, loss_fake = d_losses(logits, logits, "vanilla", real_label=0.9)
    expected = F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, 0.9))
    assert loss_real.item() == pytest.approx(expected.item())
    assert loss_fake.item() == pytest.approx(F.softplus(torch.tensor(2.0)).item())
    loss_real, _ = d_losses(logits, logits, "lsgan", real_label=0.9)
    assert loss_real.item() == pytest.approx((2.0 - 0.9) ** 2)
    with pytest.raises(ConfigError, match="hinge"):
        load_config(None, [*BASE, "loss.real_label=0.9", "loss.gan_mode=hinge"])


def test_instance_noise_fades_to_nothing() -> None:
    state = _state("loss.instance_noise=0.5")
    ab = torch.zeros(64, 2, 32, 32)
    torch.manual_seed(0)
    assert _noise(state, ab).std().item() == pytest.approx(0.5, rel=0.02)
    state.step = state.total_steps // 2
    assert _noise(state, ab).std().item() == pytest.approx(0.25, rel=0.02)
    state.step = state.total_steps
    assert torch.equal(_noise(state, ab), ab)
    assert torch.equal(_noise(_state(), ab), ab)  # off by default


@pytest.mark.parametrize(
    "key",
    [
        "train.ema_decay=1.0",
        "loss.real_label=0",
        "loss.instance_noise=-1",
        "train.pretrain_epochs=-1",
    ],
)
def test_bad_switch_values_are_config_errors(key: str) -> None:
    with pytest.raises(ConfigError, match=key.split("=")[0]):
        load_config(None, [*BASE, key])


@pytest.mark.parametrize("name", ["l1-only", "pix2pix-baseline", "cpu-small", "seed-anime512"])
def test_shipped_configs_load(name: str) -> None:
    config = load_config(REPO / "configs" / f"{name}.yaml")
    if name == "l1-only":
        assert config.loss.adversarial_weight == 0 and config.loss.perceptual_weight == 0
    if name == "pix2pix-baseline":
        assert config.optim.weight_decay == 0 and config.optim.eta_min == config.optim.lr
        assert config.loss.gan_mode == "vanilla" and config.model.dropout == 0.5
        assert config.train.ema_decay == 0 and config.train.pretrain_epochs == 0


def test_warm_up_and_ema_through_the_cli(tmp_path: Path) -> None:
    data = write_color_folder(tmp_path / "data", 20)
    run_dir = tmp_path / "run"
    extra = ["--set", "train.epochs=3", "--set", "train.pretrain_epochs=1"]
    extra += ["--set", "train.ema_decay=0.9", "--set", "loss.perceptual_weight=0"]
    assert main(train_args(data, run_dir, *extra)) == 0
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["g_adv"] is None and rows[0]["d_total"] is None
    assert rows[1]["g_adv"] is not None and rows[2]["d_total"] is not None
    assert "generator warm-up" in (run_dir / "train.log").read_text()
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["ema_updates"] == state["step"]
    generator, _ = load_generator(run_dir / "checkpoints" / "last.pt")
    for key, value in generator.state_dict().items():
        assert torch.equal(value, state["generator_ema"][key]), key  # inference uses the EMA
    # best.pt comes from an adversarial epoch, never from the warm-up.
    best = torch.load(run_dir / "checkpoints" / "best.pt", weights_only=True)
    assert best["epoch"] >= 2


def test_rebalance_weights_favour_rare_colors_and_average_one() -> None:
    common = torch.zeros(1, 2, 8, 8)  # gray pixels
    rare = torch.full((1, 2, 1, 1), 0.5)  # one strongly colored pixel
    counts = ab_histogram(common) * 99 + ab_histogram(rare)
    weights = rebalance_weights(counts, 0.5)
    gray_bin, rare_bin = ab_bins(common), ab_bins(rare)
    assert weights[rare_bin].item() > 5 * weights[gray_bin][0, 0, 0].item()
    assert torch.allclose(rebalance_weights(counts, 0.0), torch.ones(AB_BINS, AB_BINS))
    # Weighted L1 is the per-pixel weight times the channel-mean absolute error.
    fake, real = torch.zeros(1, 2, 1, 2), torch.tensor([[[[0.0, 0.5]], [[0.0, 0.5]]]])
    expected = (weights[ab_bins(real)] * torch.tensor([[[0.0, 0.5]]])).mean()
    assert l1_loss(fake, real, weights).item() == pytest.approx(expected.item())
    assert l1_loss(fake, real, None).item() == pytest.approx(0.25)


def test_rebalance_through_the_cli_keeps_its_histogram_on_resume(tmp_path: Path) -> None:
    data = write_color_folder(tmp_path / "data", 20)
    run_dir = tmp_path / "run"
    extra = ["--set", "loss.rebalance=0.5", "--set", "loss.perceptual_weight=0"]
    assert main(train_args(data, run_dir, *extra, "--set", "train.epochs=1")) == 0
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    counts = state["ab_counts"]
    assert counts.shape == (AB_BINS, AB_BINS) and counts.sum() == 16 * 32 * 32  # 16 train images
    resume = ["train", "--resume", str(run_dir / "checkpoints" / "last.pt"), "--quiet"]
    assert main([*resume, "--set", "train.epochs=2"]) == 0
    again = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert again["epoch"] == 2 and torch.equal(again["ab_counts"], counts)


def test_lr_d_sets_the_discriminator_learning_rate_only() -> None:
    state = _state("optim.lr_d=1e-4")
    assert state.opt_d is not None
    assert state.opt_d.param_groups[0]["lr"] == 1e-4
    assert state.opt_g.param_groups[0]["lr"] == 2e-4
    same = _state()
    assert same.opt_d is not None and same.opt_d.param_groups[0]["lr"] == 2e-4
