"""The pipelined folder run: the same images as one-at-a-time colorizing, resumable re-runs,
interruptions that leave no half-written file, torchrun ranks that share the work, and the
fast (BatchNorm-folded) model."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from colorgan import export, pipeline, runtime
from colorgan.cli import main
from colorgan.colorize import Colorizer
from colorgan.config import load_config
from colorgan.errors import ColorganError
from colorgan.jobs import Job, plan_jobs
from colorgan.models import build_generator
from colorgan.pipeline import Decoded, Output, _Batches, colorize_folder, shard
from colorgan.speed import fast_model, fold_batchnorm
from tests.conftest import UNET, make_color_image, make_tiny_checkpoint, scramble_batchnorm

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt")


def _inputs(root: Path, count: int = 7) -> Path:
    """Images of several sizes and modes (so several working shapes), one in a sub-folder."""
    root.mkdir(parents=True, exist_ok=True)
    sizes = [(48, 40), (40, 48), (64, 30), (33, 47), (48, 40), (90, 20), (20, 20)]
    for i in range(count):
        image = make_color_image(i, sizes[i % len(sizes)])
        if i == 3:
            image = image.convert("LA")  # gray with alpha
        folder = root / "sub" if i == 5 else root
        folder.mkdir(exist_ok=True)
        image.save(folder / f"img{i}.png")
    return root


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGBA"))


@pytest.mark.parametrize("workers", [0, 2])
def test_the_pipeline_writes_what_colorizing_one_picture_gives(
    checkpoint: Path, tmp_path: Path, workers: int
) -> None:
    inputs = _inputs(tmp_path / "in")
    colorizer = Colorizer.from_checkpoint(checkpoint, device="cpu", batch_size=3)
    jobs, _ = plan_jobs([inputs], tmp_path / "pipe")
    summary = colorize_folder(colorizer, jobs, Output(workers=workers))
    assert summary.written == len(jobs) == 7 and not summary.failures
    for job in jobs:
        with Image.open(job.source) as image:
            alone = np.asarray(colorizer.colorize(image).convert("RGBA"))
        assert np.array_equal(_pixels(job.target), alone), job.target


def test_a_re_run_skips_complete_outputs_and_redoes_what_changed(
    checkpoint: Path, tmp_path: Path
) -> None:
    inputs = _inputs(tmp_path / "in", 4)
    colorizer = Colorizer.from_checkpoint(checkpoint, device="cpu")
    jobs, _ = plan_jobs([inputs], tmp_path / "out")
    assert colorize_folder(colorizer, jobs, Output(workers=0), model_id="m1").written == 4
    before = {job.target: job.target.stat().st_mtime_ns for job in jobs}
    again = colorize_folder(colorizer, jobs, Output(workers=0), model_id="m1")
    assert (again.written, again.skipped) == (0, 4)
    assert {job.target: job.target.stat().st_mtime_ns for job in jobs} == before
    time.sleep(0.01)
    make_color_image(9).save(jobs[0].source)  # a changed input is colorized again
    assert colorize_folder(colorizer, jobs, Output(workers=0), model_id="m1").written == 1
    other = colorize_folder(colorizer, jobs, Output(workers=0), model_id="m2")  # another model: all
    assert (other.written, other.skipped) == (4, 0)
    bigger = colorize_folder(colorizer, jobs, Output(size=64, workers=0), model_id="m2")
    assert bigger.written == 4  # another working size: all


def test_stale_temporaries_of_a_killed_run_are_removed(checkpoint: Path, tmp_path: Path) -> None:
    inputs = _inputs(tmp_path / "in", 2)
    out = tmp_path / "out"
    out.mkdir()
    (out / ".img0.png.colorgan-k3j_x8a1.tmp").write_bytes(b"half a png")
    theirs = [".notes.backup.tmp", ".img0.png.k3j_x8a1.tmp", ".other.png.colorgan-k3j_x8a1.tmp"]
    for name in ["notes.tmp", *theirs]:  # a user's, or no output of this run's
        (out / name).write_text("not ours")
    jobs, _ = plan_jobs([inputs], out)
    colorize_folder(Colorizer.from_checkpoint(checkpoint, device="cpu"), jobs, Output(workers=0))
    assert not (out / ".img0.png.colorgan-k3j_x8a1.tmp").exists()
    assert all((out / name).read_text() == "not ours" for name in ["notes.tmp", *theirs])


@pytest.mark.slow
@pytest.mark.parametrize("ctrl_c", [False, True], ids=["sigterm", "ctrl-c"])
def test_sigterm_leaves_no_half_written_file_and_a_re_run_finishes(
    checkpoint: Path, tmp_path: Path, ctrl_c: bool
) -> None:
    """SIGTERM to the main process (a job scheduler), or SIGINT to the whole process group,
    workers too (Ctrl-C in a terminal): one line, whole outputs, no temporaries."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(24):
        make_color_image(i, (64, 48)).save(inputs / f"img{i:02d}.png")
    out = tmp_path / "out"
    slow = (  # every output takes a while to write, so the signal lands mid-run
        "import time, colorgan.files as f\n"
        "real = f.atomic_write\n"
        "def slow(path, write, durable=False):\n"
        "    time.sleep(0.15)\n"
        "    real(path, write, durable)\n"
        "f.atomic_write = slow\n"
        "from colorgan.cli import main\n"
        f"raise SystemExit(main(['colorize', {str(checkpoint)!r}, {str(inputs)!r}, '--out', "
        f"{str(out)!r}, '--workers', '1', '--quiet', '--device', 'cpu']))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-c", slow], cwd=REPO, env=env, text=True,
                            stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(out.glob("*.png"))) < 3:
        time.sleep(0.05)
    sent = signal.SIGINT if ctrl_c else signal.SIGTERM
    if ctrl_c:
        os.killpg(proc.pid, sent)
    else:
        proc.send_signal(sent)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sent, err
    assert "Traceback" not in err and "every output written is whole" in err
    written = sorted(out.glob("*.png"))
    assert 3 <= len(written) < 24
    assert not list(out.glob(".*")), "a temporary was left behind"
    for path in written:
        with Image.open(path) as image:
            image.load()  # whole files only
    code = main(["colorize", str(checkpoint), str(inputs), "--out", str(out), "--device", "cpu"])
    assert code == 0 and len(list(out.glob("*.png"))) == 24


def test_shards_are_disjoint_and_cover_every_job(tmp_path: Path) -> None:
    jobs, _ = plan_jobs([_inputs(tmp_path / "in")], tmp_path / "out")
    for world in (1, 2, 3, 8):
        shares = [shard(jobs, rank, world) for rank in range(world)]
        flat = [job for share in shares for job in share]
        assert sorted(j.source for j in flat) == sorted(j.source for j in jobs)
        assert len(flat) == len(set(flat))


@pytest.mark.slow
def test_torchrun_ranks_write_every_input_exactly_once(checkpoint: Path, tmp_path: Path) -> None:
    inputs = _inputs(tmp_path / "in")
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
            "2", "-m", "colorgan", "colorize", str(checkpoint), str(inputs), "--out", str(out),
            "--device", "cpu", "--workers", "0"]  # fmt: skip
    result = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = re.search(r"colorized (\d+) of (\d+) image\(s\) into .* \(ranks: (\d+) \+ (\d+)\)",
                        result.stdout)  # fmt: skip
    assert summary is not None, result.stdout
    written, total, first, second = (int(v) for v in summary.groups())
    assert written == total == 7 and first + second == 7 and first > 0 and second > 0
    assert result.stdout.count("colorized") == 1  # one summary, from rank 0
    outputs = sorted(p.relative_to(out) for p in out.rglob("*.png"))
    assert len(outputs) == 7 and (out / "sub" / "img5.png").is_file()


def test_groups_stay_bounded_whatever_the_shapes() -> None:
    batches = _Batches(size=4, limit=8)
    released = []
    for i in range(100):  # a new working shape for almost every picture
        item = Decoded(i, l_small=torch.zeros(1, 1, 8 * (1 + i % 13), 8))
        if (group := batches.add(item)) is not None:
            released.extend(group)
        assert sum(len(g) for g in batches.groups.values()) <= 8
    released.extend(item for group in batches.rest() for item in group)
    assert sorted(item.index for item in released) == list(range(100))


@pytest.mark.parametrize("encoder", ["unet", "efficientnet_lite0"])
def test_folding_batchnorm_keeps_the_outputs(encoder: str) -> None:
    settings = [*UNET, "model.depth=5"] if encoder == "unet" else []
    config = load_config(None, [*settings, "model.hints=true", "data.image_size=64"])
    torch.manual_seed(0)
    generator = build_generator(config.model)
    scramble_batchnorm(generator)
    generator.eval()
    fast = fast_model(generator)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in generator.modules())  # a copy
    l = torch.rand(2, 1, 64, 64) * 2 - 1
    hints = torch.zeros(2, 3, 64, 64)
    hints[:, :, 10:14, 10:14] = 0.5
    with torch.inference_mode():
        assert torch.allclose(generator(l, hints), fast(l, hints), atol=1e-5)
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(build_generator(config.model).train())


def test_the_onnx_runtime_exports_once_and_matches_torch(
    checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLORGAN_CACHE", str(tmp_path / "cache"))
    inputs = _inputs(tmp_path / "in", 3)
    base = ["colorize", str(checkpoint), str(inputs), "--device", "cpu", "--workers", "0"]
    assert main([*base, "--out", str(tmp_path / "torch"), "--runtime", "torch"]) == 0
    assert "exporting" not in capsys.readouterr().out
    assert main([*base, "--out", str(tmp_path / "onnx"), "--runtime", "onnx"]) == 0
    assert "exporting the model to ONNX once" in capsys.readouterr().out
    assert len(list((tmp_path / "cache" / "onnx").glob("*.onnx"))) == 1
    for name in ("img0.png", "img1.png", "img2.png"):
        a = _pixels(tmp_path / "torch" / name).astype(int)
        b = _pixels(tmp_path / "onnx" / name).astype(int)
        assert np.abs(a - b).max() <= 1, name
    # auto, few images: the cached export is used, not made again
    assert main([*base, "--out", str(tmp_path / "auto")]) == 0
    assert "exporting" not in capsys.readouterr().out
    assert np.array_equal(
        _pixels(tmp_path / "auto" / "img0.png"), _pixels(tmp_path / "onnx" / "img0.png")
    )


def test_an_export_that_fails_its_check_falls_back_to_torch_under_auto(
    checkpoint: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLORGAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(export, "EXPORT_TOLERANCE", -1.0)  # no export passes
    monkeypatch.setattr(runtime, "ONNX_MIN_IMAGES", 1)  # auto picks onnx for this run
    inputs = _inputs(tmp_path / "in", 2)
    base = ["colorize", str(checkpoint), str(inputs), "--device", "cpu", "--workers", "0"]
    assert main([*base, "--out", str(tmp_path / "auto")]) == 0
    assert "running it in PyTorch instead" in caplog.text
    assert (tmp_path / "auto" / "img1.png").is_file()
    assert not list((tmp_path / "cache").rglob("*.onnx")), "a failed export was left behind"
    assert main([*base, "--out", str(tmp_path / "onnx"), "--runtime", "onnx"]) == 2


def test_an_encoding_process_that_dies_stops_the_run_with_one_line_and_a_re_run_finishes(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inputs = _inputs(tmp_path / "in", 4)
    real = pipeline.save_results

    def dies_on_img2(job: Job, *args: object) -> None:  # runs in the forked encoding process
        if job.source.name == "img2.png":
            os._exit(1)  # as the kernel's OOM killer would stop it
        real(job, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline, "save_results", dies_on_img2)
    colorizer = Colorizer.from_checkpoint(checkpoint, device="cpu", batch_size=2)
    jobs, _ = plan_jobs([inputs], tmp_path / "out")
    with pytest.raises(ColorganError, match=r"encoding process stopped .* run the command again"):
        colorize_folder(colorizer, jobs, Output(workers=1))
    monkeypatch.undo()
    again = colorize_folder(colorizer, jobs, Output(workers=1))
    assert again.written + again.skipped == 4 and again.written >= 1 and not again.failures
    assert not list((tmp_path / "out").glob(".*")), "a temporary was left behind"


def test_a_large_cpu_run_without_onnxruntime_says_how_to_get_it(
    checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    inputs = _inputs(tmp_path / "in", 2)
    monkeypatch.setattr(runtime, "_onnx_available", lambda: False)
    monkeypatch.setattr(runtime, "ONNX_MIN_IMAGES", 2)
    base = ["colorize", str(checkpoint), str(inputs), "--device", "cpu", "--workers", "0"]
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    assert runtime.ONNX_TIP in capsys.readouterr().out
    for other in (["--quiet"], ["--runtime", "torch"]):  # asked for quiet, or for torch
        assert main([*base, "--out", str(tmp_path / other[-1]), *other]) == 0
        assert runtime.ONNX_TIP not in capsys.readouterr().out
