"""The `colorgan` command line: argument parsing and error reporting only."""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from datetime import datetime
from pathlib import Path

from colorgan.config import ColorganError, ConfigError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _add_set_and_quiet(p: argparse.ArgumentParser, set_help: str) -> None:
    p.add_argument(
        "--set",
        dest="assignments",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help=set_help,
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars or console log")


def _train_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "train",
        help="train a colorizer on a folder of color images",
        description="Train the colorization GAN on a folder of color images (searched "
        "recursively; grayscale made on the fly). Writes config.yaml, metrics.jsonl, train.log, "
        "samples/, loss_curves.png and checkpoints/ into the run directory.",
    )
    p.add_argument(
        "--config", type=Path, help="YAML file of overrides, e.g. configs/cpu-small.yaml"
    )
    p.add_argument(
        "--data", type=Path, help="folder of color training images (required unless resuming)"
    )
    p.add_argument(
        "--val-data",
        type=Path,
        help="folder of validation images (default: a seeded data.val_fraction split of --data)",
    )
    p.add_argument(
        "--run-dir",
        type=Path,
        help="where the run's files go (default: runs/<time>, "
        "or the resumed checkpoint's run directory)",
    )
    p.add_argument(
        "--resume",
        metavar="PATH|auto",
        help="continue from a checkpoint; 'auto' picks RUN_DIR/checkpoints/last.pt if there is one",
    )
    _add_set_and_quiet(
        p, "override one config key, e.g. --set train.epochs=5 (repeatable; applied last)"
    )


def _cmd_train(args: argparse.Namespace) -> int:
    import torch

    from colorgan.checkpoint import load_checkpoint
    from colorgan.config import from_dict, load_config, to_dict
    from colorgan.train import Interrupted, NonFiniteLoss, train

    resume_state = None
    run_dir: Path | None = args.run_dir
    if args.resume == "auto":
        if run_dir is None:
            raise ConfigError("--resume auto needs --run-dir to know which run to continue")
        candidate = run_dir / "checkpoints" / "last.pt"
        if candidate.is_file():
            resume_state = load_checkpoint(candidate)
        else:
            print(
                f"colorgan: no checkpoint in {candidate.parent}; starting a new run",
                file=sys.stderr,
            )
    elif args.resume:
        resume_state = load_checkpoint(args.resume)
        if run_dir is None:
            run_dir = Path(args.resume).resolve().parent.parent
    if resume_state is not None:
        saved = from_dict(resume_state["config"])
        config = load_config(args.config, args.assignments, base=saved)
        changed = [
            f"{section}.{key}"
            for section, values in to_dict(config).items()
            for key, value in values.items()
            if to_dict(saved)[section][key] != value
        ]
        if changed:
            logging.getLogger("colorgan").warning(
                "resuming with changed keys: %s", ", ".join(changed)
            )
    else:
        config = load_config(args.config, args.assignments)
    data: Path | None = args.data
    val_data: Path | None = args.val_data
    if resume_state is not None and data is None:
        sources = resume_state.get("sources") or {}
        data = Path(sources["data"]) if sources.get("data") else None
        if val_data is None and sources.get("val_data"):
            val_data = Path(sources["val_data"])
    if data is None:
        raise ConfigError("--data DIR is required: a folder of color images to train on")
    if run_dir is None:
        run_dir = Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")
    # A fresh network's first CPU steps make denormal floats, which run several times slower.
    torch.set_flush_denormal(True)
    try:
        train(config, data, run_dir, val_data=val_data, resume=resume_state, quiet=args.quiet)
    except Interrupted as interrupt:
        return 128 + interrupt.signum
    except NonFiniteLoss as err:  # the run failed; it is not a usage error
        print(f"colorgan: error: {err}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _prepare_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "prepare",
        help="resize a folder of training images once, so training loads them faster",
        description="Write every image under SRC to DST (same sub-folders and names) with its "
        "short side resized to --size pixels, decoded and resized as training does (EXIF "
        "orientation applied, RGB); images already that small or smaller are kept at their own "
        "size, never upscaled. Train on DST with data.image_size=N. Re-runs skip outputs newer "
        "than their inputs. A file that cannot be read is named on stderr and skipped; the exit "
        "status is then 1.",
    )
    p.add_argument("src", metavar="SRC", type=Path, help="folder of images (searched recursively)")
    p.add_argument("dst", metavar="DST", type=Path, help="output folder, outside SRC")
    p.add_argument(
        "--size", type=int, required=True, metavar="N", help="short side of the outputs in pixels"
    )
    p.add_argument(
        "--workers",
        type=int,
        metavar="K",
        help="processes working in parallel (default: the number of CPU cores)",
    )
    p.add_argument(
        "--format",
        choices=["keep", "jpg", "png"],
        default="keep",
        help="output format (default keep: each file's own format; GIF becomes PNG); JPEG is "
        "written with full-resolution chroma (4:4:4)",
    )
    p.add_argument(
        "--quality", type=int, default=95, metavar="Q", help="JPEG/WEBP quality 1-100 (default 95)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")


def _cmd_prepare(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from colorgan.prepare import Settings, describe, prepare

    def report(path: Path, reason: str) -> None:
        tqdm.write(f"colorgan: {path}: {reason}", file=sys.stderr)

    settings = Settings(size=args.size, fmt=args.format, quality=args.quality)
    summary = prepare(
        args.src, args.dst, settings, args.workers, progress=not args.quiet, on_failure=report
    )
    if not args.quiet:
        print(describe(summary, args.dst, args.size))
    return EXIT_FAILED if summary.failed else EXIT_OK


def _colorize_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "colorize",
        help="colorize image files and folders with a trained model",
        description="Colorize images of any size and mode (gray, color, 16-bit, with alpha, "
        "EXIF-rotated). The model runs on the image's L channel scaled so its short side is "
        "--size pixels; the predicted colors are upsampled onto the image's own full-resolution "
        "L, so each output has the input's size, detail and lightness. Writes "
        "DIR/<sub-folders>/<name>.<format> (a.png and a.jpg in one folder become a_png and "
        "a_jpg); inputs are never overwritten. A file that cannot be read is named on stderr "
        "and skipped; the exit status is then 1.",
    )
    p.add_argument(
        "model", metavar="MODEL", type=Path, help="a training checkpoint (.pt) or an exported .onnx"
    )
    p.add_argument(
        "inputs",
        metavar="INPUT",
        type=Path,
        nargs="+",
        help="image files and folders; folders are searched recursively for image files and "
        "their sub-folders are kept under --out",
    )
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    p.add_argument(
        "--size",
        type=int,
        metavar="N",
        help="working size: the short side the model sees, in pixels "
        "(default: the checkpoint's data.image_size); outputs keep the input's size",
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument(
        "--batch-size",
        type=int,
        default=8,
        metavar="N",
        help="files read and run through the model together (default 8)",
    )
    p.add_argument(
        "--format",
        choices=["png", "jpg", "webp"],
        default="png",
        help="output format (default png); jpg has no alpha, so transparent images are "
        "flattened onto white (png and webp keep alpha)",
    )
    p.add_argument(
        "--side-by-side",
        action="store_true",
        help="also write <name>_side_by_side.<format>: gray | color",
    )
    p.add_argument(
        "--max-pixels",
        type=int,
        default=100_000_000,
        metavar="N",
        help="refuse images with more pixels than this before decoding (default 100000000)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")


def _cmd_colorize(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from colorgan.colorize import Failure, colorize_files, load_colorizer, plan_jobs

    def report(failure: Failure) -> None:
        tqdm.write(f"colorgan: {failure.path}: {failure.reason}", file=sys.stderr)

    jobs, failures = plan_jobs(args.inputs, args.out, args.format, args.side_by_side)
    colorizer = load_colorizer(args.model, args.device, args.batch_size)
    for failure in failures:
        report(failure)
    job_failures = colorize_files(
        colorizer,
        jobs,
        args.format,
        size=args.size,
        max_pixels=args.max_pixels,
        on_failure=report,
        progress=not args.quiet and len(jobs) > 1,
    )
    if not args.quiet:
        print(f"colorized {len(jobs) - len(job_failures)} of {len(jobs)} image(s) into {args.out}")
    return EXIT_FAILED if failures or job_failures else EXIT_OK


def _evaluate_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "evaluate",
        help="measure a checkpoint on a folder of color images",
        description="Make each color image under DIR gray, colorize it and compare it with the "
        "original: PSNR, SSIM, mean CIEDE2000 (delta_e) and colorfulness, and the distance of the "
        "set of outputs to the set of originals (fd_lite0: Frechet distance, kid_lite0: KID x1000, "
        "on EfficientNet-Lite0 ImageNet features at 224 px; an offline stand-in for FID, not "
        "comparable with Inception FIDs), beside the same metrics of the plain gray image "
        "(baseline_gray). Images are center-cropped to --size pixels as in training's validation, "
        "colorized and measured at that size.",
    )
    p.add_argument("checkpoint", type=Path, help="a colorgan training checkpoint (.pt)")
    p.add_argument(
        "--data", type=Path, required=True, help="folder of color images (searched recursively)"
    )
    p.add_argument(
        "--size", type=int, help="evaluation size in pixels (default: the checkpoint's image_size)"
    )
    p.add_argument("--limit", type=int, default=0, help="use at most N images (default: all)")
    p.add_argument("--json", type=Path, help="also write the results to this JSON file")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--batch-size", type=int, default=16, help="images per batch (default 16)")
    p.add_argument(
        "--fid",
        action="store_true",
        help="also compute FID (needs the torch-fidelity package and Inception weights)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from colorgan.evaluate import evaluate_checkpoint, format_table

    result = evaluate_checkpoint(
        args.checkpoint,
        args.data,
        size=args.size,
        limit=args.limit,
        device=args.device,
        batch_size=args.batch_size,
        fid=args.fid,
        quiet=args.quiet,
    )
    print(format_table(result))
    if args.json is not None:
        try:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        except OSError as err:
            raise ColorganError(f"cannot write {args.json}: {err.strerror or err}") from None
        print(f"wrote {args.json}")
    return EXIT_OK


def _demo_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="train a small colorizer in a few minutes on generated scenes and report",
        description="Generate cartoon scenes (or use --data), train a small model for about "
        "--minutes on this machine, colorize held-out images and write comparison.png, "
        "metrics.json (model and gray baseline), data/ and the run directory run/ into --out.",
    )
    p.add_argument("--out", type=Path, default=Path("demo-out"), help="default: demo-out")
    p.add_argument("--minutes", type=float, default=3.0, help="time budget in minutes (default 3)")
    p.add_argument(
        "--data", type=Path, help="train on this folder of color images instead (held-out split)"
    )
    _add_set_and_quiet(p, "override a key of the demo's small config, e.g. --set train.device=cpu")


def _cmd_demo(args: argparse.Namespace) -> int:
    import time

    from colorgan.demo import run_demo

    start = time.perf_counter()
    run_demo(args.out, args.minutes, args.data, args.assignments, quiet=args.quiet)
    print(
        f"done in {time.perf_counter() - start:.0f} s: {args.out / 'comparison.png'}, "
        f"{args.out / 'metrics.json'}, run in {args.out / 'run'}"
    )
    return EXIT_OK


def _export_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "export",
        help="export a checkpoint's generator to ONNX",
        description="Write the generator of a training checkpoint as an ONNX file (dynamic batch, "
        "height and width; sides multiples of 2**model.depth), with the checkpoint's working "
        "size and depth in its metadata, atomically. The file is then checked in onnxruntime "
        "against PyTorch. `colorize` and `serve` take it as MODEL. Needs "
        "pip install 'colorgan[onnx]'.",
    )
    p.add_argument("checkpoint", type=Path, help="a colorgan training checkpoint (.pt)")
    p.add_argument("--onnx", type=Path, required=True, metavar="FILE", help="the .onnx to write")


def _cmd_export(args: argparse.Namespace) -> int:
    from colorgan.export import export_onnx

    delta = export_onnx(args.checkpoint, args.onnx)
    size_mb = args.onnx.stat().st_size / 2**20
    print(f"wrote {args.onnx} ({size_mb:.1f} MB); onnxruntime vs PyTorch: max |Δab| {delta:.1e}")
    return EXIT_OK


def _serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="a web page (and HTTP endpoint) that colorizes dropped images",
        description="Serve a page where dropped images come back colorized (before/after view, "
        "working size control, download), and POST /api/colorize?size=N, which takes an image "
        "(as the body or a multipart file) and answers the colorized PNG. Listens on loopback "
        "unless --host says otherwise. Needs pip install 'colorgan[serve]'.",
    )
    p.add_argument(
        "model", metavar="MODEL", type=Path, help="a training checkpoint (.pt) or an exported .onnx"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument(
        "--port", type=int, default=8000, metavar="N", help="port (default 8000; 0: any free one)"
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument(
        "--max-upload-mb",
        type=float,
        default=25.0,
        metavar="MB",
        help="refuse uploads larger than this many MiB (default 25)",
    )
    p.add_argument(
        "--max-pixels",
        type=int,
        default=40_000_000,
        metavar="N",
        help="refuse images with more pixels than this, before decoding (default 40000000)",
    )


def _cmd_serve(args: argparse.Namespace) -> int:
    from colorgan.serve import Limits, serve

    if args.max_upload_mb <= 0 or args.max_pixels < 1:
        raise ColorganError("--max-upload-mb and --max-pixels must be positive")
    if not 0 <= args.port <= 65535:
        raise ColorganError(f"--port must be from 0 to 65535, got {args.port}")
    limits = Limits(int(args.max_upload_mb * 2**20), args.max_pixels)
    serve(args.model, args.host, args.port, args.device, limits)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="colorgan",
        description="Colorize grayscale images with a conditional GAN; train your own colorizer.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _train_parser(sub)
    _prepare_parser(sub)
    _colorize_parser(sub)
    _evaluate_parser(sub)
    _demo_parser(sub)
    _export_parser(sub)
    _serve_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: run a subcommand; expected errors print one line and set the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="colorgan: %(levelname)s: %(message)s")
    warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated.*")
    commands = {
        "train": _cmd_train,
        "prepare": _cmd_prepare,
        "colorize": _cmd_colorize,
        "evaluate": _cmd_evaluate,
        "demo": _cmd_demo,
        "export": _cmd_export,
        "serve": _cmd_serve,
    }
    try:
        return commands[args.command](args)
    except ColorganError as err:
        print(f"colorgan: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("colorgan: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
