"""The recipe switches: generator warm-up, EMA, D's learning rate, and the shipped configs; the
switches that lost (label smoothing, instance noise, chroma re-balancing) are refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from colorgan.batch import Batch
from colorgan.checkpoint import load_generator
from colorgan.cli import main
from colorgan.config import load_config
from colorgan.ema import EMA
from colorgan.errors import ConfigError
from colorgan.state import build_state
from colorgan.train import train_step
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


@pytest.mark.parametrize(
    "key",
    [
        "train.ema_decay=1.0",
        "train.pretrain_epochs=-1",
    ],
)
def test_bad_switch_values_are_config_errors(key: str) -> None:
    with pytest.raises(ConfigError, match=key.split("=")[0]):
        load_config(None, [*BASE, key])


@pytest.mark.parametrize(
    "key", ["loss.real_label=0.9", "loss.instance_noise=0.1", "loss.rebalance=0.5"]
)
def test_the_switches_that_lost_are_refused_by_name(key: str) -> None:
    name = key.split("=")[0]
    with pytest.raises(ConfigError) as err:
        load_config(None, [*BASE, key])
    message = str(err.value)
    assert message.startswith(f"--set: {name} was removed (")
    assert message.endswith("; drop it from the config") and "\n" not in message
    assert "docs/journal/results.md" in message


@pytest.mark.parametrize("name", ["l1-only", "pix2pix-baseline", "cpu-small", "seed-anime512"])
def test_shipped_configs_load(name: str) -> None:
    config = load_config(REPO / "configs" / f"{name}.yaml")
    if name == "l1-only":
        assert config.loss.adversarial_weight == 0 and config.loss.perceptual_weight == 0
    if name in ("cpu-small", "seed-anime512"):  # the default generator, with color points
        model = config.model
        assert (model.encoder, model.output_stride, model.base_channels, model.upsample) == (
            "efficientnet_lite0",
            4,
            16,
            "affine",
        )
        assert model.hints
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


def test_lr_d_sets_the_discriminator_learning_rate_only() -> None:
    state = _state("optim.lr_d=1e-4")
    assert state.opt_d is not None
    assert state.opt_d.param_groups[0]["lr"] == 1e-4
    assert state.opt_g.param_groups[0]["lr"] == 2e-4
    same = _state()
    assert same.opt_d is not None and same.opt_d.param_groups[0]["lr"] == 2e-4
