from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from colorgan.cli import main
from colorgan.config import ModelConfig, from_dict, load_config, parse_set, to_dict
from colorgan.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_defaults_are_the_founding_schedule_and_the_winning_model() -> None:
    config = load_config(None)
    assert (config.optim.lr, config.train.batch_size, config.train.epochs) == (2e-4, 8, 10)
    assert config.loss.l1_weight == 100.0
    # the shipped recipe (docs/journal/results.md): Lite0 encoder, ab at stride 4 from a decoder of
    # width 16, the affine upsampling, no perceptual term (no download)
    model = config.model
    assert (model.encoder, model.base_channels, model.depth) == ("efficientnet_lite0", 16, 5)
    assert (model.output_stride, model.upsample) == (4, "affine")
    assert config.loss.perceptual_weight == 0.0


def test_default_config_builds_without_any_download(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from colorgan.generator import Lite0UNet
    from colorgan.state import build_state

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    state = build_state(load_config(None, ["train.device=cpu"]), torch.device("cpu"), 1)
    assert isinstance(state.generator, Lite0UNet) and state.perceptual is None


def test_a_saved_config_from_before_model_encoder_is_the_unet() -> None:
    saved = to_dict(load_config(None, ["model.encoder=unet", "model.base_channels=64"]))
    del saved["version"], saved["model"]["encoder"]  # written before the Lite0 encoder existed
    model = from_dict(saved).model
    assert (model.encoder, model.base_channels, model.depth) == ("unet", 64, 8)


@pytest.mark.parametrize(("encoder", "depth"), [("unet", 8), ("efficientnet_lite0", 5)])
def test_depth_follows_the_encoder_unless_given(encoder: str, depth: int) -> None:
    assert load_config(None, [f"model.encoder={encoder}"]).model.depth == depth
    assert load_config(None, ["model.encoder=unet", "model.depth=6"]).model.depth == 6
    saved = to_dict(load_config(None, [f"model.encoder={encoder}"]))
    assert saved["model"]["depth"] == depth  # checkpoints and config.yaml hold the number


def test_set_overrides_yaml_and_parses_types(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 3\n  batch_size: 2\nloss:\n  gan_mode: hinge\n")
    config = load_config(path, ["train.epochs=5", "optim.lr=1e-3", "model.spectral_norm=true"])
    assert config.train.epochs == 5  # --set wins over the file
    assert config.train.batch_size == 2
    assert config.loss.gan_mode == "hinge"
    assert config.optim.lr == pytest.approx(1e-3)
    assert config.model.spectral_norm is True


def test_int_is_accepted_for_float() -> None:
    assert load_config(None, ["optim.lr=1"]).optim.lr == 1.0


@pytest.mark.parametrize(
    ("assignment", "fragment"),
    [
        ("train.epoch=3", "unknown key 'train.epoch'"),
        ("trian.epochs=3", "unknown section 'trian'"),
        ("train.epochs=three", "train.epochs: expected int"),
        ("train.epochs=2.5", "train.epochs: expected int"),
        ("loss.gan_mode=wgan", "not one of vanilla | lsgan | hinge"),
        ("model.spectral_norm=maybe", "expected bool"),
        ("data.image_size=100", "not a multiple of 2**model.depth=32"),
        ("train.epochs", "expected section.key=value"),
    ],
)
def test_bad_keys_and_values_are_errors(assignment: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        load_config(None, [assignment])
    assert fragment in str(info.value)


def test_unknown_key_in_yaml_names_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  widht: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown key 'model.widht'"):
        load_config(path)


def test_cli_config_error_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["train", "--data", str(tmp_path), "--set", "train.nope=1"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and "unknown key 'train.nope'" in err
    assert "Traceback" not in err


def test_round_trip_through_dict() -> None:
    config = load_config(None, ["train.epochs=4", "model.norm=instance"])
    assert from_dict(to_dict(config)) == config


@pytest.mark.parametrize("name", ["tiny.yaml", "cpu-small.yaml", "seed-anime512.yaml"])
def test_shipped_configs_load(name: str) -> None:
    config = load_config(REPO / "configs" / name)
    assert config.data.image_size % 2**config.model.depth == 0


def test_seed_config_is_the_founding_recipe() -> None:
    config = load_config(REPO / "configs" / "seed-anime512.yaml")
    assert config.data.image_size == 512
    assert config.model.encoder == "efficientnet_lite0"  # the recipe experiments' winner
    assert (config.loss.perceptual_network, config.loss.l1_weight) == ("vgg16", 100.0)
    assert (config.train.batch_size, config.train.epochs) == (8, 10)
    assert config.optim.lr == 2e-4
    assert config.loss.perceptual_weight > 0 and config.loss.adversarial_weight > 0
    assert config.model.hints  # color points: docs/journal/results.md, "Color points"


def test_cpu_small_takes_color_points() -> None:
    config = load_config(REPO / "configs" / "cpu-small.yaml")
    assert config.model.hints and config.model.encoder == "efficientnet_lite0"


@pytest.mark.parametrize("name", ["cpu-small.yaml", "seed-anime512.yaml"])
def test_the_recipes_use_the_lighter_generator(name: str) -> None:
    """docs/journal/results.md, "A lighter decoder, third round": ab at stride 4 from a width-16
    conv decoder, upsampled by the learned affine model of L; the default generator."""
    model = load_config(REPO / "configs" / name).model
    assert (model.output_stride, model.upsample, model.base_channels) == (4, "affine", 16)
    assert model == load_config(None, ["model.hints=true"]).model


def test_a_saved_config_carries_its_version() -> None:
    saved = to_dict(load_config(None))
    assert saved["version"] == 3
    assert set(saved) == {"version", "data", "model", "loss", "optim", "train"}
    with pytest.raises(ConfigError, match=r"^saved config: config version 4 is not one"):
        from_dict({**saved, "version": 4})
    with pytest.raises(ConfigError, match="unknown section 'version'"):
        load_config(None, ["version.x=1"])


def test_a_config_saved_before_the_recipe_was_the_default_keeps_its_meaning() -> None:
    """A version-less saved config (written before version 2) that lacks the keys whose
    default changed meant the version-1 defaults: a stride-1 model stays stride 1."""
    saved = to_dict(load_config(None))
    del saved["version"]
    for key in ("output_stride", "base_channels", "upsample"):
        del saved["model"][key]
    model = from_dict(saved).model
    assert (model.output_stride, model.base_channels, model.upsample) == (1, 32, "bilinear")
    versioned = from_dict(to_dict(load_config(None))).model  # a version-2 one: today's
    assert (versioned.output_stride, versioned.base_channels, versioned.upsample) == (
        4,
        16,
        "affine",
    )


def test_a_reference_model_saved_before_the_match_keeps_the_palette_alone() -> None:
    """A version-2 config (or older) has no model.reference_match: its reference model was the
    histogram's alone, so it loads without the match (and builds the network it saved)."""
    saved = to_dict(load_config(None, ["model.reference=true"]))
    assert saved["model"]["reference_match"] is True  # today's default
    del saved["model"]["reference_match"]
    assert from_dict({**saved, "version": 2}).model.reference_match is False
    del saved["version"]
    assert from_dict(saved).model.reference_match is False
    assert from_dict(to_dict(load_config(None, ["model.reference=true"]))).model.reference_match
    unet = load_config(None, ["model.encoder=unet", "model.reference=true"]).model
    assert unet.reference_match is False  # the U-Net takes the histogram alone


# A config saved by the code before the removals holds every removed key at its "off" value.
OLD_KEYS = {
    "model": {"decoder": "conv", "upsample": "bilinear", "output_stride": 1},
    "loss": {"rebalance": 0.0, "instance_noise": 0.0, "real_label": 1.0},
}


def _old_saved(**changes: dict[str, object]) -> dict[str, object]:
    """A version-less saved config with the removed keys, `changes` merged into its sections."""
    saved = to_dict(load_config(None))
    del saved["version"]
    for section, values in (OLD_KEYS | changes).items():
        saved[section] = {**saved[section], **OLD_KEYS.get(section, {}), **values}
    return saved


def test_removed_keys_at_their_old_off_value_load_silently() -> None:
    assert from_dict(_old_saved()) == load_config(None, ["model.output_stride=1"])


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("model", "decoder", "separable"),
        ("loss", "rebalance", 0.5),
        ("loss", "instance_noise", 0.1),
        ("loss", "real_label", 0.9),
    ],
)
def test_removed_keys_are_refused_by_name(
    tmp_path: Path, section: str, key: str, value: object
) -> None:
    name = f"{section}.{key}"
    removed = rf"{name} was removed \(.*docs/journal/results\.md\);"
    with pytest.raises(ConfigError, match=rf"^--set: {removed} drop it from the config$"):
        load_config(None, [f"{name}={value}"])
    path = tmp_path / "old.yaml"
    path.write_text(f"{section}:\n  {key}: {value}\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: {removed}"):
        load_config(path)
    with pytest.raises(ConfigError, match=rf"^saved config: {removed} load it with the colorgan"):
        from_dict(_old_saved(**{section: {key: value}}))


def test_the_removed_guided_upsampling_is_refused_by_name() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, ["model.upsample=guided"])
    assert str(err.value) == (
        "--set: model.upsample=guided was removed (it lost to affine: docs/journal/results.md); "
        "use affine"
    )
    old = _old_saved(model={"upsample": "guided", "output_stride": 4})
    with pytest.raises(ConfigError, match=r"^saved config: model\.upsample=guided was removed"):
        from_dict(old)


def test_a_checkpoint_with_a_removed_setting_is_refused_at_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    from colorgan.checkpoint import save_checkpoint
    from tests.conftest import make_color_image, make_tiny_checkpoint

    path = make_tiny_checkpoint(tmp_path / "tiny.pt")
    state = torch.load(path, weights_only=True)
    del state["config"]["version"]
    state["config"]["loss"]["rebalance"] = 0.5  # trained with a re-balanced L1
    save_checkpoint(state, path)
    run_dir = ["--run-dir", str(tmp_path / "run")]
    code = main(["train", "--resume", str(path), "--data", str(tmp_path), *run_dir])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert "loss.rebalance was removed" in err
    image = tmp_path / "in" / "a.png"  # colorize names the checkpoint whose config it refuses
    image.parent.mkdir()
    make_color_image(0).save(image)
    code = main(["colorize", str(path), str(image), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0
    assert f"{path}: saved config: loss.rebalance was removed" in err


def test_parse_set_reads_yaml_scalars() -> None:
    assert parse_set(["a.b=1", "a.c=x y", "d.e=null"]) == {
        "a": {"b": 1, "c": "x y"},
        "d": {"e": None},
    }


def test_an_unknown_key_lists_a_short_sections_keys_or_points_to_the_page() -> None:
    with pytest.raises(ConfigError) as short:
        load_config(None, ["optim.qqqqqqqqqq=1"])
    assert "(known in optim: lr, " in str(short.value)
    with pytest.raises(ConfigError) as long:
        load_config(None, ["model.qqqqqqqqqq=1"])
    keys = len(dataclasses.fields(ModelConfig))
    expected = f"(known in model: {keys} keys, in docs/configuration.md)"
    assert str(long.value).endswith(expected)
