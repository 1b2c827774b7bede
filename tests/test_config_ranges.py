"""Config values that torch would choke on, and config files that would hang or flood the parser,
are one-line ConfigErrors naming the key (or file), the value and what is allowed."""

from __future__ import annotations

import itertools
import math
import string
from pathlib import Path
from typing import Any

import pytest

from colorgan.cli import main
from colorgan.config import from_dict, load_config, parse_set, resume_config, to_dict
from colorgan.errors import ConfigError

ONE_LINE = 240  # the longest a config error may be: key, a clipped value, the range (or the keys)


def _refused(assignments: list[str], path: Path | None = None) -> str:
    """The ConfigError message for `assignments` (and the file at `path`): one short line."""
    with pytest.raises(ConfigError) as info:
        load_config(path, assignments)
    message = str(info.value)
    assert "\n" not in message and len(message) <= ONE_LINE, message
    return message


@pytest.mark.parametrize(
    ("assignment", "fragments"),
    [
        ("optim.lr=nan", ["optim.lr=nan is not a finite number", "allowed: (0, inf)"]),
        ("optim.lr_d=-1", ["optim.lr_d=-1.0 is out of range", "allowed: [0, inf)", "0: optim.lr"]),
        ("optim.beta1=2", ["optim.beta1=2.0 is out of range", "allowed: [0, 1)"]),
        ("optim.beta2=1", ["optim.beta2=1.0 is out of range", "allowed: [0, 1)"]),
        ("optim.weight_decay=-1", ["optim.weight_decay=-1.0", "allowed: [0, inf)"]),
        ("optim.eta_min=-1e-5", ["optim.eta_min=-1e-05", "allowed: [0, inf)"]),
        ("train.sample_images=0", ["train.sample_images=0", "allowed: [1, 2**31 - 1]"]),
        ("train.val_images=0", ["train.val_images=0", "allowed: [1, 2**31 - 1]"]),
        ("model.disc_layers=0", ["model.disc_layers=0", "allowed: [1, 10]"]),
        ("model.disc_layers=-2", ["model.disc_layers=-2", "allowed: [1, 10]"]),
        ("model.disc_layers=11", ["model.disc_layers=11", "allowed: [1, 10]"]),
        ("model.disc_channels=0", ["model.disc_channels=0", "allowed: [1, 1024]"]),
        ("model.base_channels=100000", ["model.base_channels=100000", "allowed: [1, 1024]"]),
        ("loss.adversarial_weight=-1", ["loss.adversarial_weight=-1.0", "allowed: [0, inf)"]),
        ("loss.l1_weight=-100", ["loss.l1_weight=-100.0", "allowed: [0, inf)"]),
        ("data.max_images=-1", ["data.max_images=-1", "allowed: [0, 2**31 - 1] (0: all)"]),
        ("data.gray_threshold=-1", ["data.gray_threshold=-1.0", "allowed: [0, inf)"]),
        ("data.hint_max_patch=1000000000000", ["data.hint_max_patch=1000000000000", "[1, 256]"]),
        ("train.seed=18446744073709551616", ["train.seed=18446744073709551616", "[0, 2**32 - 1]"]),
        ("train.seed=-1", ["train.seed=-1 is out of range", "allowed: [0, 2**32 - 1]"]),
        ("train.num_workers=100000", ["train.num_workers=100000", "allowed: [0, 256]"]),
        ("train.max_minutes=.inf", ["train.max_minutes=inf is not a finite number"]),
        ("train.keep_checkpoints=-1", ["train.keep_checkpoints=-1", "(0: only last.pt)"]),
        ("model.depth=-1", ["model.depth=-1", "allowed: [0, 12] (0: the encoder's)"]),
        ("model.depth=1000000000000", ["model.depth=1000000000000", "allowed: [0, 12]"]),
    ],
)
def test_values_torch_would_choke_on_are_refused(assignment: str, fragments: list[str]) -> None:
    message = _refused([assignment])
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize("raw", ["nan", ".nan", ".NaN", "inf", ".inf", "-.inf", "1e999", "-1e999"])
def test_set_reads_nan_and_infinities_and_refuses_them(raw: str) -> None:
    value = parse_set([f"optim.lr={raw}"])["optim"]["lr"]
    assert isinstance(value, (str, float))  # YAML 1.1: "nan" and "1e999" stay strings
    message = _refused([f"optim.lr={raw}"])
    assert message.startswith("optim.lr=") and "is not a finite number" in message
    assert math.isnan(float(value)) or math.isinf(float(value))


def test_every_numeric_key_has_a_range_that_holds_its_default() -> None:
    from colorgan.config import RANGES, Config, numeric_keys

    assert set(RANGES) == set(numeric_keys())
    defaults = to_dict(Config())
    for key, allowed in RANGES.items():
        section, name = key.split(".")
        assert defaults[section][name] in allowed, key


def _outside(allowed: Any, kind: type) -> list[Any]:
    """Values just outside `allowed`, plus the non-numbers a key of type `kind` must refuse."""
    low = allowed.lo if allowed.open_lo else allowed.lo - (0.5 if kind is float else 1)
    values = [low, True]
    if math.isfinite(allowed.hi):
        values.append(allowed.hi if allowed.open_hi else allowed.hi + 1)
    return [*values, "nan", ".inf", "-.inf"] if kind is float else values


def test_every_numeric_key_refuses_values_outside_its_range() -> None:
    from colorgan.config import RANGES, numeric_keys

    accepted = []
    for key, kind in numeric_keys().items():
        for value in _outside(RANGES[key], kind):
            assignment = f"{key}={str(value).lower()}"
            try:
                load_config(None, [assignment])
            except ConfigError as err:
                message = str(err)
                assert message.startswith(key) and "\n" not in message, message
                assert len(message) <= ONE_LINE, message
                continue
            accepted.append(assignment)
    assert not accepted


def test_image_size_past_the_cap_names_the_memory_it_needs() -> None:
    message = _refused(["data.image_size=100000"])
    assert message.startswith("data.image_size=100000 needs about ")
    assert "GB of activations per batch of train.batch_size=8" in message
    assert message.endswith("the largest accepted is 4096")
    assert load_config(None, ["data.image_size=4096", "train.batch_size=1"]).data.image_size == 4096


@pytest.mark.parametrize(
    ("assignments", "fragment"),
    [
        (
            ["model.disc_layers=10"],
            "model.disc_layers=10 leaves the discriminator no patch at "
            "data.image_size=256; the most there is 6",
        ),
        (["model.disc_layers=4", "data.image_size=32"], "the most there is 3"),
        (["model.encoder=unet", "model.depth=1", "data.image_size=4"], "too small for the disc"),
        (["data.image_size=32", "train.batch_size=1"], "train.batch_size >= 2"),
        (["loss.adversarial_weight=0", "loss.l1_weight=0"], "would learn nothing"),
    ],
)
def test_keys_that_must_agree_are_checked(assignments: list[str], fragment: str) -> None:
    assert fragment in _refused(assignments)


def test_the_edges_of_each_range_still_work() -> None:
    config = load_config(
        None,
        ["optim.lr_d=0", "optim.beta1=0", "data.max_images=0", "train.keep_checkpoints=0",
         "train.seed=4294967295", "model.disc_layers=6", "train.num_workers=0"],
    )  # fmt: skip
    assert (config.train.seed, config.model.disc_layers) == (2**32 - 1, 6)
    unet = ["model.encoder=unet", "model.depth=2", "data.image_size=4"]
    assert load_config(None, [*unet, "loss.adversarial_weight=0"]).data.image_size == 4


def test_a_saved_config_and_a_resume_are_checked_too() -> None:
    saved = to_dict(load_config(None))
    bad = {**saved, "optim": {**saved["optim"], "lr": float("nan")}}
    with pytest.raises(ConfigError, match=r"^optim\.lr=nan is not a finite number"):
        from_dict(bad)
    with pytest.raises(ConfigError, match=r"^optim\.lr=nan"):
        resume_config(bad, None, None)
    with pytest.raises(ConfigError, match=r"^optim\.beta1=2\.0 is out of range"):
        resume_config(saved, None, ["optim.beta1=2"])


def _bomb() -> str:
    """A 'billion laughs' config: nine levels of nine aliases, 9**9 strings when expanded, under
    train.device so that the value itself would be shown in an 'expected str' message."""
    names = string.ascii_lowercase[:9]
    levels = ["&a [" + ",".join(['"x"'] * 9) + "]"]
    levels += [f"&{n} [" + ",".join([f"*{p}"] * 9) + "]" for p, n in itertools.pairwise(names)]
    return "train:\n  device: [" + ", ".join(levels) + "]\n"


def test_an_alias_bomb_is_refused_before_any_expansion(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb(), encoding="utf-8")
    assert path.stat().st_size < 400
    message = _refused([], path)
    assert message.startswith(f"{path}: YAML aliases (*name) are not accepted (line 2)")
    with pytest.raises(ConfigError, match=r"^--set 'train\.device': YAML aliases"):
        parse_set(["train.device=[&a [x, x], *a, *a]"])  # one line holds a bomb as well


def test_an_alias_bomb_via_the_cli_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb(), encoding="utf-8")
    assert main(["train", "--config", str(path), "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "YAML aliases" in err and "Traceback" not in err


def test_even_a_harmless_alias_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "alias.yaml"
    path.write_text("train:\n  epochs: &n 3\n  batch_size: *n\n", encoding="utf-8")
    assert "YAML aliases (*name) are not accepted (line 3)" in _refused([], path)
    anchor_only = tmp_path / "anchor.yaml"
    anchor_only.write_text("train: &t\n  epochs: 3\n", encoding="utf-8")
    assert load_config(anchor_only).train.epochs == 3


def test_a_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("train:\n  device: café\n".encode("latin-1"))
    message = _refused([], path)
    assert message == f"{path}: not UTF-8 text (byte 0xe9 at offset 20); save it as UTF-8"
    bom = tmp_path / "bom.yaml"
    bom.write_bytes(b"\xef\xbb\xbftrain:\n  epochs: 3\n")  # UTF-8 with a byte-order mark is fine
    assert load_config(bom).train.epochs == 3


def test_a_file_over_the_size_limit_is_not_parsed(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("# padding\n" * 7000, encoding="utf-8")  # 70 kB of comments
    assert _refused([], path) == f"{path}: over 64 KiB; a config is a short YAML file"
    assert _refused(["loss.vgg_weights=" + "x" * 70_000]) == "--set 'loss.vgg_weights': over 64 KiB"


def test_deep_nesting_is_refused_not_a_recursion_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("train:\n  epochs: " + "[" * 5000 + "]" * 5000 + "\n", encoding="utf-8")
    assert "nested over 16 levels deep (line 2)" in _refused([], path)


def test_a_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("train:\n  epochs: [1\n", encoding="utf-8")
    assert _refused([], path).startswith(f"{path}: not valid YAML at line 3, column 1: expected")


@pytest.mark.parametrize(
    "assignment",
    [
        "loss.vgg_weights=[" + ",".join(["1"] * 10_000) + "]",
        "loss.gan_mode=" + "w" * 50_000,
        "train.seed=1" + "0" * 5000,  # past Python's 4300-digit int limit
        "optim.lr=1" + "0" * 400,  # an int past the largest float
        "model.widht" + "h" * 100_000 + "=3",
        "section" + "s" * 100_000 + ".key=3",
    ],
)
def test_a_huge_value_is_shown_as_one_short_line(assignment: str) -> None:
    message = _refused([assignment])
    assert len(message) <= ONE_LINE


def test_a_huge_value_in_a_file_is_shown_as_one_short_line(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_text("train:\n  device:\n" + "    - abc\n" * 5000, encoding="utf-8")
    message = _refused([], path)
    prefix = "train.device: expected str, got "
    assert message.startswith(f"{prefix}['abc', 'abc', ") and message.endswith("...")
    assert len(message) - len(prefix) <= 60  # config.SHOWN_CHARS of the value, no more
