from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch

from colorgan.losses import (
    VGG16Features,
    WeightsError,
    d_losses,
    g_adversarial_loss,
    l1_loss,
    load_vgg16,
    perceptual_loss,
)


@pytest.mark.parametrize("mode", ["vanilla", "lsgan", "hinge"])
def test_adversarial_losses_reward_the_right_side(mode: str) -> None:
    confident_real, confident_fake = torch.full((2, 1, 4, 4), 1.0), torch.full((2, 1, 4, 4), 0.0)
    good_real, good_fake = d_losses(confident_real, confident_fake, mode)
    bad_real, bad_fake = d_losses(confident_fake, confident_real, mode)
    assert good_real < bad_real and good_fake < bad_fake
    assert g_adversarial_loss(confident_real, mode) < g_adversarial_loss(confident_fake, mode)


def test_vanilla_loss_at_zero_logits_is_log2() -> None:
    zero = torch.zeros(1, 1, 2, 2)
    real, fake = d_losses(zero, zero, "vanilla")
    assert real.item() == pytest.approx(0.6931, abs=1e-4) and fake.item() == pytest.approx(
        0.6931, abs=1e-4
    )


def test_l1() -> None:
    assert l1_loss(torch.zeros(1, 2, 2, 2), torch.full((1, 2, 2, 2), 0.25)).item() == 0.25


def _torchvision_style_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    state = {f"features.{k}": v for k, v in VGG16Features().features.state_dict().items()}
    state.update(  # later layers and the classifier, as in the official file; they are dropped
        {
            "features.28.weight": torch.zeros(512, 512, 3, 3),
            "classifier.0.weight": torch.zeros(4, 4),
        }
    )
    return state


def test_torchvision_state_dict_loads_by_name(tmp_path: Path) -> None:
    state = _torchvision_style_state()
    path = tmp_path / "vgg16.pth"
    torch.save(state, path)
    vgg = load_vgg16(str(path))
    assert torch.equal(vgg.features[0].weight, state["features.0.weight"])
    assert torch.equal(vgg.features[21].bias, state["features.21.bias"])
    assert not any(p.requires_grad for p in vgg.parameters())


def test_missing_weight_file_is_clear_error(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="no such file"):
        load_vgg16(str(tmp_path / "nope.pth"))
    torch.save({"something": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(WeightsError, match="not a torchvision VGG16 state dict"):
        load_vgg16(str(tmp_path / "other.pth"))


def test_failed_download_is_clear_error_not_a_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsError, match=r"cannot get VGG16 weights.*loss.vgg_weights=/path"):
        load_vgg16("torchvision")


def test_random_weights_warn() -> None:
    with pytest.warns(UserWarning, match="untrained VGG16"):
        load_vgg16("random")


def test_perceptual_loss_is_zero_for_truth_and_differentiable() -> None:
    with pytest.warns(UserWarning):
        vgg = load_vgg16("random")
    torch.manual_seed(0)
    l = torch.rand(2, 1, 32, 32) * 2 - 1
    ab_real = (torch.rand(2, 2, 32, 32) - 0.5) * 0.5
    assert perceptual_loss(vgg, l, ab_real, ab_real).item() == pytest.approx(0.0, abs=1e-6)
    ab_fake = torch.zeros_like(ab_real, requires_grad=True)
    loss = perceptual_loss(vgg, l, ab_fake, ab_real)
    loss.backward()
    assert loss.item() > 0 and ab_fake.grad is not None and ab_fake.grad.abs().sum() > 0
