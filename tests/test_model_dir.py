"""Model folders (`export --model-dir`) and the Hugging Face Hub (`hf://owner/name`), without
network: a folder colorizes exactly like its checkpoint, its card is Hub metadata, hf:// loads
from a cache laid out as huggingface_hub lays it, loading runs no code, and pushing is checked
with a token and a recorded HfApi."""

from __future__ import annotations

import errno
import json
import pickle
import shutil
import sys
from pathlib import Path
from typing import Any

import huggingface_hub
import pytest
import torch
import yaml
from huggingface_hub import ModelCard, constants
from PIL import Image

from colorgan import evaluate, serve
from colorgan.checkpoint import load_checkpoint, save_checkpoint
from colorgan.cli import main
from colorgan.colorize import Colorizer, join
from colorgan.errors import ColorganError, HubError, MissingDependency, ModelFolderError
from colorgan.files import Picture, to_picture
from colorgan.modeldir import FILES
from tests.conftest import make_color_image, make_tiny_checkpoint

REPO = "someone/tiny-colorizer"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _pixels(path: Path) -> bytes:
    """An image file's decoded pixels (not its metadata)."""
    with Image.open(path) as image:
        return image.convert("RGBA").tobytes()


def pictures() -> list[Picture]:
    """Gray, gray with alpha and color pictures of odd sizes."""
    return [
        to_picture(make_color_image(1, (70, 50)).convert("L")),
        to_picture(make_color_image(2, (33, 61)).convert("LA")),
        to_picture(make_color_image(3, (40, 40))),
    ]


def same_colors(a: Colorizer, b: Colorizer, size: int | None = None) -> bool:
    """Whether two colorizers give the very same pixels."""
    by_a, by_b = a.predict_pictures(pictures(), size), b.predict_pictures(pictures(), size)
    return all(
        torch.equal(join(la, x.ab), join(lb, y.ab))
        for (la, x), (lb, y) in zip(by_a, by_b, strict=True)
    )


def trained_checkpoint(path: Path, data: Path) -> Path:
    """A tiny checkpoint as training leaves one: EMA weights (not the raw ones), epochs, steps,
    data folders, metrics rows with validation, best."""
    saved = load_checkpoint(make_tiny_checkpoint(path.with_name("raw.pt")))
    ema = {k: v + 0.01 if v.is_floating_point() else v for k, v in saved["generator"].items()}
    rows = [
        {"epoch": e, "step": 25 * e, "val_delta_e": 9.0 - e, "val_psnr": 20.0 + e,
         "val_l1": 0.1, "val_colorfulness": 30.0}
        for e in (1, 2, 3)
    ]  # fmt: skip
    state = {
        "config": saved["config"] | {"train": saved["config"]["train"] | {"batch_size": 4}},
        "generator": saved["generator"],
        "generator_ema": ema,
        "epoch": 3,
        "step": 75,
        "best": 6.0,
        "history": rows,
        "sources": {"data": str(data / "anime-512"), "val_data": None},
    }
    save_checkpoint(state, path)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(tiny.pt, its model folder written by `colorgan export --model-dir`)."""
    folder = tmp_path_factory.mktemp("model-dir")
    checkpoint = make_tiny_checkpoint(folder / "tiny.pt")
    assert main(["export", str(checkpoint), "--model-dir", str(folder / "tiny")]) == 0
    return checkpoint, folder / "tiny"


def front_matter(card: str) -> dict[str, Any]:
    """The YAML metadata block at the top of a model card."""
    assert card.startswith("---\n")
    block = card[4 : card.index("\n---\n", 4)]
    meta = yaml.safe_load(block)
    assert isinstance(meta, dict)
    return meta


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("colorgan: error: "), err
    return err[0]


def test_model_folder_holds_three_files_and_colorizes_like_its_checkpoint(
    exported: tuple[Path, Path],
) -> None:
    checkpoint, folder = exported
    assert sorted(p.name for p in folder.parent.iterdir()) == ["tiny", "tiny.pt"]  # no temporary
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)
    config = json.loads((folder / "config.json").read_text())
    assert config["library_name"] == "colorgan" and config["format_version"] == 1
    assert config["weights"] == "generator"
    assert config["config"]["model"]["depth"] == 3 and config["config"]["data"]["image_size"] == 32
    by_pt = Colorizer.from_checkpoint(checkpoint, "cpu")
    by_folder = Colorizer.from_checkpoint(folder, "cpu")
    assert (by_folder.image_size, by_folder.multiple) == (32, 8)
    assert same_colors(by_pt, by_folder) and same_colors(by_pt, by_folder, size=48)
    assert same_colors(by_pt, Colorizer.from_pretrained(folder, device="cpu"))
    assert by_folder.source == str(folder) and by_folder.revision is None


def test_cli_colorize_with_a_model_folder_writes_the_same_files(
    exported: tuple[Path, Path], tmp_path: Path
) -> None:
    checkpoint, folder = exported
    make_color_image(4, (45, 30)).convert("L").save(tmp_path / "a.png")
    for model, out in ((folder, "folder"), (checkpoint, "pt")):
        args = ["colorize", str(model), str(tmp_path / "a.png"), "--out", str(tmp_path / out)]
        assert main([*args, "--quiet"]) == 0
    # the same pixels (the files' tags differ: each names the model it was made with)
    assert _pixels(tmp_path / "folder" / "a.png") == _pixels(tmp_path / "pt" / "a.png")


def test_export_takes_the_ema_weights_and_the_card_tells_the_training(
    tmp_path: Path, color_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint = trained_checkpoint(tmp_path / "run" / "best.pt", tmp_path)
    monkeypatch.setattr(evaluate, "lite0_features", lambda network, rgb: rgb.double().mean((2, 3)))
    eval_json = tmp_path / "eval.json"
    args = [str(checkpoint), "--data", str(color_folder), "--json", str(eval_json), "--quiet"]
    assert main(["evaluate", *args]) == 0
    result = json.loads(eval_json.read_text())
    folder = tmp_path / "shared"
    assert (
        main(["export", str(checkpoint), "--model-dir", str(folder), "--eval", str(eval_json)]) == 0
    )
    assert json.loads((folder / "config.json").read_text())["weights"] == "generator_ema"
    # the EMA weights went in: the folder colorizes as the checkpoint does (which uses them too)
    assert same_colors(
        Colorizer.from_checkpoint(checkpoint, "cpu"), Colorizer.from_checkpoint(folder, "cpu")
    )
    card = (folder / "README.md").read_text()
    meta = front_matter(card)
    assert meta["library_name"] == "colorgan" and meta["pipeline_tag"] == "image-to-image"
    assert {"colorgan", "image-colorization"} <= set(meta["tags"])
    test, validation = meta["model-index"][0]["results"]
    values = {m["type"]: m["value"] for m in test["metrics"]}
    assert values["delta_e"] == round(result["delta_e"], 4)
    assert values["psnr"] == round(result["psnr"], 4)
    assert {m["type"]: m["value"] for m in validation["metrics"]}["val_delta_e"] == 6.0
    assert validation["dataset"]["name"] == "anime-512"
    # the Hub's own parser reads the metadata, model-index included
    parsed = ModelCard(card).data
    assert parsed.library_name == "colorgan" and parsed.eval_results
    assert {r.metric_type for r in parsed.eval_results} >= {"delta_e", "val_delta_e"}
    body = card.split("\n---\n", 1)[1]
    assert "`anime-512`" in body and str(tmp_path) not in body  # folder names, not paths
    assert "| epochs | 3 of 10 |" in body and "| optimizer steps | 75 |" in body
    assert "about 300 (steps × `train.batch_size` 4" in body
    assert "moving average (EMA)" in body
    gray = result["baseline_gray"]

    def shown(x: float) -> str:
        return f"{x:.4f}" if abs(x) < 10 else f"{x:.2f}"

    for label, key in (("ΔE00 (mean CIEDE2000)", "delta_e"), ("PSNR [dB]", "psnr")):
        row = f"| {label}, {'lower' if key == 'delta_e' else 'higher'} is better |"
        assert f"{row} {shown(result[key])} | {shown(gray[key])} |" in body


def test_export_to_onnx_from_a_model_folder(
    exported: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, folder = exported
    assert main(["export", str(folder), "--onnx", str(tmp_path / "m.onnx")]) == 0
    assert "max |Δab|" in capsys.readouterr().out
    by_onnx = Colorizer.from_checkpoint(tmp_path / "m.onnx", "cpu")
    assert (by_onnx.image_size, by_onnx.multiple) == (32, 8)


def fake_hub_cache(cache: Path, folder: Path, commit: str = COMMIT) -> Path:
    """`folder` as huggingface_hub caches a download of REPO's main branch at `commit`:
    models--owner--name/refs/main holding the commit, snapshots/<commit>/ the files."""
    owner, name = REPO.split("/")
    repo = cache / f"models--{owner}--{name}"
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return repo / "snapshots" / commit


@pytest.fixture
def offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache, and HF_HUB_OFFLINE=1 (huggingface_hub reads both at import,
    so its constants are set too): no test here reaches for the network."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_hub_model_loads_offline_from_the_cache_at_a_pinned_commit(
    exported: tuple[Path, Path],
    offline_cache: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    checkpoint, folder = exported
    snapshot = fake_hub_cache(offline_cache, folder)
    (snapshot.parent.parent / "refs" / "v1.0").write_text(COMMIT)  # a tag, as cached
    by_pt = Colorizer.from_checkpoint(checkpoint, "cpu")
    for loaded in (
        Colorizer.from_pretrained(REPO, device="cpu"),
        Colorizer.from_pretrained(REPO, revision=COMMIT, device="cpu"),
        Colorizer.from_pretrained(f"hf://{REPO}", revision="v1.0", device="cpu"),
        Colorizer.from_checkpoint(f"hf://{REPO}@main", "cpu"),
    ):
        assert loaded.revision == COMMIT and loaded.source == f"hf://{REPO}@{COMMIT}"
        assert same_colors(by_pt, loaded)
    make_color_image(5, (30, 20)).save(tmp_path / "b.png")
    args = ["colorize", f"hf://{REPO}", str(tmp_path / "b.png"), "--out", str(tmp_path / "hub")]
    assert main(args) == 0
    assert f"model hf://{REPO}@{COMMIT}" in capsys.readouterr().out
    args = ["colorize", str(checkpoint), str(tmp_path / "b.png"), "--out", str(tmp_path / "pt")]
    assert main([*args, "--quiet"]) == 0
    assert _pixels(tmp_path / "hub" / "b.png") == _pixels(tmp_path / "pt" / "b.png")


def test_evaluate_and_serve_take_model_folders_and_hub_models(
    exported: tuple[Path, Path],
    offline_cache: Path,
    color_folder: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    checkpoint, folder = exported
    fake_hub_cache(offline_cache, folder)
    monkeypatch.setattr(evaluate, "lite0_features", lambda network, rgb: rgb.double().mean((2, 3)))
    by_pt = evaluate.evaluate_checkpoint(checkpoint, color_folder, limit=4, quiet=True)
    assert evaluate.evaluate_checkpoint(folder, color_folder, limit=4, quiet=True) == by_pt
    args = ["evaluate", f"hf://{REPO}", "--data", str(color_folder), "--limit", "4", "--quiet"]
    assert main(args) == 0
    assert capsys.readouterr().out.startswith(f"model hf://{REPO}@{COMMIT}\n")

    class Server:  # uvicorn's place: the test only needs serve() to load and say what it serves
        def run(self, sockets: list[Any]) -> None:
            pass

    monkeypatch.setattr(serve, "server", lambda app, sock, connections=None: Server())
    serve.serve(f"hf://{REPO}", port=0, device="cpu")
    assert f"serving hf://{REPO}@{COMMIT} at http://127.0.0.1:" in capsys.readouterr().out
    serve.serve(folder, port=0, device="cpu")
    assert f"serving {folder} at" in capsys.readouterr().out


@pytest.mark.parametrize("missing", ["model.safetensors", "config.json"])
def test_hub_snapshot_without_a_file_names_it(
    exported: tuple[Path, Path],
    offline_cache: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    missing: str,
) -> None:
    (fake_hub_cache(offline_cache, exported[1]) / missing).unlink()
    make_color_image(5, (30, 20)).save(tmp_path / "b.png")
    args = ["colorize", f"hf://{REPO}", str(tmp_path / "b.png"), "--out", str(tmp_path / "o")]
    assert main(args) == 2
    line = one_error_line(capsys)
    assert f"hf://{REPO}@{COMMIT}: not a colorgan model (no {missing})" in line


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (f"hf://{REPO}", "not in the Hugging Face cache, and HF_HUB_OFFLINE is set"),
        (f"hf://{REPO}@v2", "not in the Hugging Face cache"),
        ("hf://no-owner", "is not a Hub model name"),
        ("hf://a/b/c", "is not a Hub model name"),
        (f"hf://{REPO}@", "nothing after '@'"),
    ],
)
def test_hub_names_that_cannot_be_had_are_one_line(
    offline_cache: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    model: str,
    message: str,
) -> None:
    make_color_image(5, (30, 20)).save(tmp_path / "b.png")
    assert main(["colorize", model, str(tmp_path / "b.png"), "--out", str(tmp_path / "o")]) == 2
    assert message in one_error_line(capsys)
    with pytest.raises(HubError, match=message):
        Colorizer.from_checkpoint(model, "cpu")


def test_missing_huggingface_hub_is_one_line(
    offline_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails as if not installed
    with pytest.raises(MissingDependency, match="pip install huggingface_hub"):
        Colorizer.from_pretrained(REPO, device="cpu")


def edit_config(folder: Path, change: dict[str, Any]) -> None:
    path = folder / "config.json"
    raw = json.loads(path.read_text())
    for key, value in change.items():
        section, _, name = key.partition(".")
        if name:
            raw["config"][section][name] = value
        else:
            raw[key] = value
    path.write_text(json.dumps(raw))


def removed(name: str) -> Any:
    return lambda folder: (folder / name).unlink()


def written(name: str, data: bytes) -> Any:
    return lambda folder: (folder / name).write_bytes(data)


def edited(change: dict[str, Any]) -> Any:
    return lambda folder: edit_config(folder, change)


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (removed("config.json"), "not a colorgan model (no config.json)"),
        (removed("model.safetensors"), "not a colorgan model (no model.safetensors)"),
        (written("config.json", b"{nope"), "config.json is not JSON"),
        (written("config.json", b"[1, 2]"), "config.json is not a JSON object"),
        (edited({"library_name": "transformers"}), "library_name 'transformers'"),
        (edited({"format_version": 2}), "format_version 2; this colorgan reads format 1"),
        (edited({"config": None}), "no config object with a model section"),
        (edited({"data.image_size": 7}), "data.image_size"),
        (edited({"model.colour": 1}), "unknown key 'model.colour'"),
        (edited({"model.base_channels": 16}), "generator weights do not fit"),
        (written("model.safetensors", b"\x08" + b"\0" * 20), "cannot read model.safetensors"),
    ],
)
def test_a_spoiled_model_folder_is_one_line(
    exported: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    spoil: Any,
    message: str,
) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(exported[1], folder)
    spoil(folder)
    make_color_image(5, (30, 20)).save(tmp_path / "b.png")
    assert (
        main(["colorize", str(folder), str(tmp_path / "b.png"), "--out", str(tmp_path / "o")]) == 2
    )
    line = one_error_line(capsys)
    assert str(folder) in line and message in line


class _TouchOnLoad:
    """Unpickling this opens (creates) a file: what a malicious pickle could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def booby_trap(folder: Path, marker: Path) -> None:
    """Code and pickles beside the model that would create `marker` if imported or loaded."""
    (folder / "model.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (folder / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    for name in ("pytorch_model.bin", "model.pt", "generator.pkl"):
        (folder / name).write_bytes(pickle.dumps(_TouchOnLoad(marker)))


def test_loading_a_model_folder_never_runs_code_from_it(
    exported: tuple[Path, Path],
    offline_cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checkpoint, folder = exported
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(_TouchOnLoad(marker)))
    assert marker.exists()  # the trap works when it is sprung
    marker.unlink()
    local = tmp_path / "local"
    shutil.copytree(folder, local)
    booby_trap(local, marker)
    booby_trap(fake_hub_cache(offline_cache, folder), marker)
    monkeypatch.chdir(local)  # even with the folder as the working directory
    by_pt = Colorizer.from_checkpoint(checkpoint, "cpu")
    assert same_colors(by_pt, Colorizer.from_checkpoint(local, "cpu"))
    assert same_colors(by_pt, Colorizer.from_pretrained(REPO, device="cpu"))
    assert same_colors(by_pt, Colorizer.from_checkpoint(".", "cpu"))
    assert not marker.exists()
    assert "model" not in sys.modules


def test_export_replaces_a_model_folder_and_refuses_anything_else(
    exported: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint, folder = exported
    other = make_tiny_checkpoint(tmp_path / "other.pt", ab_bias=(-0.3, 0.1))
    target = tmp_path / "models" / "mine"
    shutil.copytree(folder, target)
    assert main(["export", str(other), "--model-dir", str(target)]) == 0  # replaced
    assert same_colors(
        Colorizer.from_checkpoint(other, "cpu"), Colorizer.from_checkpoint(target, "cpu")
    )
    assert sorted(p.name for p in target.parent.iterdir()) == ["mine"]  # nothing left aside
    (target / ".git").mkdir()  # a clone of the Hub repo: never deleted
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    for out, foreign in ((target, ".git"), (busy, "notes.txt")):
        assert main(["export", str(checkpoint), "--model-dir", str(out)]) == 2
        line = one_error_line(capsys)
        assert f"holds '{foreign}'" in line and "give a new or empty folder" in line
        assert (out / foreign).exists()
    readme = tmp_path / "readme"
    readme.mkdir()
    (readme / "README.md").write_text("my project")  # a model folder's names, but no model
    assert main(["export", str(checkpoint), "--model-dir", str(readme)]) == 2
    assert "not replaced, it is no model folder" in one_error_line(capsys)
    assert (readme / "README.md").read_text() == "my project"
    (tmp_path / "file").write_text("x")
    assert main(["export", str(checkpoint), "--model-dir", str(tmp_path / "file")]) == 2
    assert "exists and is not a folder" in one_error_line(capsys)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["export", str(checkpoint), "--model-dir", str(empty)]) == 0
    assert sorted(p.name for p in empty.iterdir()) == sorted(FILES)


def test_a_failed_write_leaves_the_old_folder_whole(
    exported: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    target = tmp_path / "mine"
    shutil.copytree(exported[1], target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    real_write = Path.write_bytes

    def disk_full(self: Path, data: bytes) -> int:
        if self.name == "model.safetensors":  # as a real write() fails: no file named
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", disk_full)
    other = make_tiny_checkpoint(tmp_path / "other.pt", ab_bias=(-0.3, 0.1))
    assert main(["export", str(other), "--model-dir", str(target)]) == 2
    line = one_error_line(capsys)
    assert "No space left on device" in line and str(target / "model.safetensors") in line
    assert "MB needed" in line and "MB free" in line
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "other.pt"]  # no temporary


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "export needs --model-dir DIR or --onnx FILE"),
        (["--onnx", "m.onnx", "--eval", "e.json"], "--eval and --push go with --model-dir"),
        (["--model-dir", "d", "--eval", "missing.json"], "--eval missing.json: cannot read"),
        (["--model-dir", "d", "--eval", "tiny.pt"], "--eval tiny.pt: not JSON"),
        (["--model-dir", "d", "--eval", "bad.json"], "not the JSON of `colorgan evaluate --json`"),
        (["--model-dir", "d", "--push", "no-owner"], "is not a Hub model name"),
        (["--model-dir", "d", "--push", "a/b@main"], "is not a Hub model name"),
    ],
)
def test_export_usage_errors_are_one_line(
    exported: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(exported[0].parent)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    Path("bad.json").write_text('{"psnr": 1}')
    assert main(["export", "tiny.pt", *args]) == 2
    assert message in one_error_line(capsys)
    assert not Path("d").exists()


def test_a_model_folder_is_made_from_a_checkpoint_only(
    exported: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", str(exported[1]), "--model-dir", str(tmp_path / "again")]) == 2
    assert "--model-dir is made from a training checkpoint" in one_error_line(capsys)
    assert not (tmp_path / "again").exists()


def no_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No Hugging Face token anywhere: not in the environment, no login file."""
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))


def test_push_without_a_token_says_how_to_log_in(
    exported: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    no_token(tmp_path, monkeypatch)
    assert huggingface_hub.get_token() is None
    out = tmp_path / "mine"
    assert main(["export", str(exported[0]), "--model-dir", str(out), "--push", REPO]) == 2
    line = one_error_line(capsys)
    assert line == (
        "colorgan: error: no Hugging Face token: run `hf auth login` (or `huggingface-cli "
        "login`) or set HF_TOKEN"
    )
    assert not out.exists()  # said before any work


def test_push_uploads_the_model_folder(
    exported: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    no_token(tmp_path, monkeypatch)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    calls: list[tuple[str, Any, dict[str, Any]]] = []

    def create_repo(self: Any, repo_id: str, **kwargs: Any) -> str:
        calls.append(("create_repo", repo_id, kwargs | {"token": self.token}))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self: Any, **kwargs: Any) -> Any:
        calls.append(("upload_folder", kwargs["repo_id"], kwargs))
        uploaded = sorted(p.name for p in Path(kwargs["folder_path"]).iterdir())
        calls.append(("files", uploaded, {}))
        return type("Commit", (), {"commit_url": f"https://huggingface.co/{REPO}/commit/abc"})()

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    out = tmp_path / "mine"
    assert main(["export", str(exported[0]), "--model-dir", str(out), "--push", REPO]) == 0
    assert [c[0] for c in calls] == ["create_repo", "upload_folder", "files"]
    assert calls[0][1] == REPO and calls[0][2]["exist_ok"] is True
    assert calls[0][2]["token"] == "hf_test_token"
    assert Path(calls[1][2]["folder_path"]) == out and calls[1][2]["allow_patterns"] == FILES
    assert calls[2][1] == sorted(FILES)
    assert f"pushed to https://huggingface.co/{REPO}/commit/abc" in capsys.readouterr().out
    card = (out / "README.md").read_text()
    assert f"colorgan colorize hf://{REPO} photos/ --out colored/" in card
    assert f'Colorizer.from_pretrained("{REPO}")' in card
    assert front_matter(card)["library_name"] == "colorgan"


def test_push_without_a_network_is_one_line(
    exported: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No network: huggingface_hub's httpx raises ConnectError, which is no OSError."""
    import httpx

    no_token(tmp_path, monkeypatch)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")

    def unreachable(self: Any, repo_id: str, **kwargs: Any) -> str:
        raise httpx.ConnectError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", unreachable)
    out = tmp_path / "mine"
    assert main(["export", str(exported[0]), "--model-dir", str(out), "--push", REPO]) == 2
    line = one_error_line(capsys)
    assert f"cannot push to {REPO}: cannot reach the Hub: ConnectError" in line
    assert (out / "model.safetensors").is_file()  # the folder written before the push is kept


def test_a_folder_that_is_not_a_model_is_refused_as_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    make_color_image(5, (30, 20)).save(tmp_path / "b.png")
    assert main(["colorize", str(run), str(tmp_path / "b.png"), "--out", str(tmp_path / "o")]) == 2
    line = one_error_line(capsys)
    assert "no config.json and no model.safetensors" in line and "checkpoints/best.pt" in line
    with pytest.raises(ModelFolderError):
        Colorizer.from_checkpoint(run, "cpu")
    with pytest.raises(ColorganError, match=r"an \.onnx model runs in onnxruntime only"):
        evaluate.evaluate_checkpoint(tmp_path / "m.onnx", tmp_path, quiet=True)


def test_export_removes_only_its_own_stale_temporaries(tmp_path: Path) -> None:
    """A sibling folder named like `.D.anything.tmp` is a user's: kept; what an interrupted
    export of D left (`.D.colorgan-XXXXXXXX.tmp`) is removed."""
    checkpoint = make_tiny_checkpoint(tmp_path / "tiny.pt")
    theirs = tmp_path / ".tiny.backup.tmp"
    (theirs / "deep").mkdir(parents=True)
    (theirs / "deep" / "keep.txt").write_text("mine")
    stale = tmp_path / ".tiny.colorgan-ab12_x9z.tmp"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    assert main(["export", str(checkpoint), "--model-dir", str(tmp_path / "tiny")]) == 0
    assert (theirs / "deep" / "keep.txt").read_text() == "mine"
    assert not stale.exists()
