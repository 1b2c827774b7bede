"""The `colorgan` command line: argument parsing and error reporting only. Each command hands
its options to the module that does the work; options several commands share are defined once
below, with defaults taken from the modules that own them."""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

from colorgan import connections, evaluate, files, options, pipeline, serve
from colorgan.errors import ColorganError, Interrupted, NonFiniteLoss, WriteFailed

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


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
        help="continue from a checkpoint; 'auto' picks RUN_DIR/checkpoints/last.pt if there is "
        "one. A checkpoint outside a run's checkpoints/ folder needs --run-dir; an older epoch "
        "of a run that went further branches into a new run directory",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start over in a --run-dir that holds a run: its checkpoints, metrics, samples "
        "and logs are deleted first (without this, such a run dir is refused)",
    )
    options.set_option(
        p, "override one config key, e.g. --set train.epochs=5 (repeatable; applied last)"
    )
    options.quiet_option(p, "no progress bars or console log")


def _cmd_train(args: argparse.Namespace) -> int:
    from colorgan.train import train_from_options

    try:
        train_from_options(
            args.config,
            args.assignments,
            args.data,
            args.val_data,
            args.run_dir,
            args.resume,
            quiet=args.quiet,
            overwrite=args.overwrite,
        )
    except Interrupted as interrupt:
        return 128 + interrupt.signum
    except (NonFiniteLoss, WriteFailed) as err:  # the run failed; it is not a usage error
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
    options.quiet_option(p, "no progress bar or summary")


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


def _cmd_colorize(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from colorgan.chapters import run_chapters, split_chapters
    from colorgan.jobs import Failure
    from colorgan.request import Reference, Request, parse_caution
    from colorgan.runtime import ModelChoice
    from colorgan.videorun import run_videos, split_inputs

    def report(failure: Failure) -> None:
        tqdm.write(f"colorgan: {failure.path}: {failure.reason}", file=sys.stderr)

    caution = None if args.caution is None else parse_caution(args.caution, "--caution")
    given = None if args.reference is None else Reference(tuple(args.reference), args.max_pixels)
    model = ModelChoice(args.model, args.runtime, args.batch_size, args.compile)
    output = pipeline.Output(
        args.format, args.size, args.max_pixels, args.workers, args.overwrite, args.suggest
    )
    images, videos = split_inputs(args.inputs)
    images, chapters = split_chapters(images)
    run = pipeline.FolderRun(
        model, images, args.out, output, Request(reference=given, caution=caution),
        args.hints, args.side_by_side, args.uncertainty_map, args.device, args.quiet,
    )  # fmt: skip
    try:
        failed = 0
        if videos:
            failed += run_videos(run, videos, args.independent_frames, report)[2]
        if chapters:
            failed += run_chapters(run, chapters, args.recolor, report)[2]
        if images or not (videos or chapters):
            failed += pipeline.run_colorize(run, report)[2]
    except Interrupted as interrupt:
        print(f"colorgan: {interrupt}: stopped; every output written is whole", file=sys.stderr)
        return 128 + interrupt.signum
    return EXIT_FAILED if failed else EXIT_OK


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
    options.model_argument(p, "checkpoint", options.GENERATOR_HELP)
    p.add_argument(
        "--data", type=Path, required=True, help="folder of color images (searched recursively)"
    )
    p.add_argument(
        "--size", type=int, help="evaluation size in pixels (default: the checkpoint's image_size)"
    )
    p.add_argument("--limit", type=int, default=0, help="use at most N images (default: all)")
    p.add_argument("--json", type=Path, help="also write the results to this JSON file")
    options.device_option(p)
    p.add_argument(
        "--batch-size",
        type=int,
        default=evaluate.DEFAULT_BATCH_SIZE,
        help=f"images per batch (default {evaluate.DEFAULT_BATCH_SIZE})",
    )
    _evaluate_hints_options(p)
    p.add_argument(
        "--caution",
        metavar="C,C,...",
        help="a model.uncertainty model: also score it at these cautions (e.g. "
        "0,0.25,0.5,0.75,1; 0 is its colors as they are, 1 fades them toward gray where it "
        "is unsure): by_caution in the JSON. The top-level metrics are at the model's default "
        "caution (model.caution), and uncertainty_spearman is always reported for such a model",
    )
    p.add_argument(
        "--reference",
        metavar="self|FILE",
        help="a model.reference model: colorize every image with this reference: 'self' (each "
        "image's own colors: the upper bound) or one image file for all; the JSON records which",
    )
    p.add_argument(
        "--fid",
        action="store_true",
        help="also compute FID (needs the torch-fidelity package and Inception weights)",
    )
    options.quiet_option(p)


def _evaluate_hints_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--hints",
        metavar="N,N,...",
        help="also score the model with this many color points per image (e.g. 0,1,2,5,10,20; "
        "points drawn from each image's own colors, 6x6 px at 256 px, seeded by its file name): "
        "by_hints in the JSON, with hint_fidelity (mean CIEDE2000 inside the points)",
    )
    p.add_argument(
        "--hint-placement",
        choices=["random", "suggested"],
        default="random",
        help="where --hints' points go: random (default; around the center, as Zhang et al.'s "
        "simulated user) or suggested (each next one where suggest_points would put it, given "
        "the truth's color there, as a user following the suggestions would)",
    )


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from colorgan.evaluate import (
        Trial,
        evaluate_checkpoint,
        parse_cautions,
        parse_counts,
    )
    from colorgan.modeldir import resolve_model
    from colorgan.scores import format_table, write_json

    if args.json is not None:  # said now, not after all the work
        files.check_writable(args.json, "--json")
    model = resolve_model(args.checkpoint)
    if model.revision is not None:
        print(f"model {model.name}")
    result = evaluate_checkpoint(
        model,
        args.data,
        size=args.size,
        limit=args.limit,
        device=args.device,
        batch_size=args.batch_size,
        quiet=args.quiet,
        trial=Trial(
            tuple(parse_counts(args.hints)) if args.hints is not None else (),
            tuple(parse_cautions(args.caution)) if args.caution is not None else (),
            args.reference,
            args.fid,
            args.hint_placement,
        ),
    )
    print(format_table(result))
    if args.json is not None:
        write_json(result, args.json)
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
    options.set_option(p, "override a key of the demo's small config, e.g. --set train.device=cpu")
    options.quiet_option(p, "no progress bars or console log")


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
        help="export a checkpoint's generator: a model folder to share, or ONNX",
        description="--model-dir DIR writes a model folder to share: the generator alone "
        "(EMA weights when the checkpoint has them) in model.safetensors, its architecture and "
        "working size in config.json, and a model card README.md in the Hugging Face Hub's "
        "format with what the checkpoint knows (config, data folders, epochs, images seen, last "
        "validation) and, with --eval, `colorgan evaluate --json`'s results beside the gray "
        "baseline; written atomically. --push OWNER/NAME then uploads it to the Hub (needs a "
        "token: `hf auth login` or HF_TOKEN). --onnx FILE writes the generator as an ONNX file "
        "(dynamic batch, height and width; sides multiples of 2**model.depth) with the working "
        "size and depth in its metadata, checked in onnxruntime against PyTorch (needs pip "
        "install 'colorgan[onnx]'). `colorize`, `evaluate` and `serve` take either as MODEL.",
    )
    options.model_argument(
        p,
        "checkpoint",
        "a colorgan training checkpoint (.pt); for --onnx alone, any " + options.GENERATOR_HELP,
    )
    p.add_argument("--model-dir", type=Path, metavar="DIR", help="the model folder to write")
    p.add_argument(
        "--eval",
        type=Path,
        metavar="FILE",
        help="the JSON of `colorgan evaluate --json` for the card (with --model-dir)",
    )
    p.add_argument(
        "--push",
        metavar="OWNER/NAME",
        help="upload the model folder to this Hugging Face Hub model repo (with --model-dir)",
    )
    p.add_argument("--onnx", type=Path, metavar="FILE", help="the .onnx to write")


def _cmd_export(args: argparse.Namespace) -> int:
    from colorgan import hub
    from colorgan.modeldir import FILES, export_model_dir

    if args.onnx is None and args.model_dir is None:
        raise ColorganError("export needs --model-dir DIR or --onnx FILE (or both)")
    if args.model_dir is None and (args.eval is not None or args.push is not None):
        raise ColorganError("--eval and --push go with --model-dir DIR")
    if args.push is not None:
        hub.check_repo_id(args.push, "--push")
    access = hub.token() if args.push is not None else None  # before any work: say how to log in
    if args.model_dir is not None:
        export_model_dir(args.checkpoint, args.model_dir, args.eval, args.push)
        size_mb = sum(p.stat().st_size for p in args.model_dir.iterdir()) / 2**20
        print(f"wrote {args.model_dir} ({', '.join(FILES)}; {size_mb:.1f} MB)")
    if args.onnx is not None:
        from colorgan.export import export_onnx

        delta = export_onnx(args.checkpoint, args.onnx)
        size_mb = args.onnx.stat().st_size / 2**20
        print(
            f"wrote {args.onnx} ({size_mb:.1f} MB); onnxruntime vs PyTorch: max |Δab| {delta:.1e}"
        )
    if access is not None:
        url = hub.push(args.model_dir, args.push, FILES, access, "Upload a colorgan model")
        print(f"pushed to {url}; load it with: colorgan colorize hf://{args.push} ...")
    return EXIT_OK


def _serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="a web page (and HTTP endpoint) that colorizes dropped images",
        description="Serve a page where dropped images come back colorized (before/after view, "
        "working size control, download), and POST /api/colorize?size=N, which takes an image "
        "(as the body or a multipart file; multipart fields hints and caution) and answers the "
        "colorized PNG; POST /api/uncertainty?size=N answers a model.uncertainty model's map of "
        "where it is guessing. Listens on loopback unless --host says otherwise. Needs pip "
        "install 'colorgan[serve]'.",
    )
    options.model_argument(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument(
        "--port",
        type=int,
        default=serve.DEFAULT_PORT,
        metavar="N",
        help=f"port (default {serve.DEFAULT_PORT}; 0: any free one)",
    )
    options.device_option(p)
    p.add_argument(
        "--max-upload-mb",
        type=float,
        default=serve.DEFAULT_MAX_UPLOAD_MB,
        metavar="MB",
        help=f"refuse uploads larger than this many MiB (default {serve.DEFAULT_MAX_UPLOAD_MB:g})",
    )
    options.max_pixels_option(p, serve.DEFAULT_MAX_PIXELS)
    p.add_argument(
        "--header-timeout",
        type=float,
        default=connections.DEFAULT_HEADER_TIMEOUT,
        metavar="S",
        help="close a connection whose request headers take longer than this "
        f"(default {connections.DEFAULT_HEADER_TIMEOUT:g} s)",
    )
    p.add_argument(
        "--body-timeout",
        type=float,
        default=connections.DEFAULT_BODY_TIMEOUT,
        metavar="S",
        help="answer 408 to an upload whose body takes longer than this after its headers "
        f"(default {connections.DEFAULT_BODY_TIMEOUT:g} s)",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=connections.DEFAULT_MAX_CONNECTIONS,
        metavar="N",
        help=f"open connections at once (default {connections.DEFAULT_MAX_CONNECTIONS}); over it "
        "the "
        "longest-stalled one is closed, or a new one gets 503 when all are busy",
    )


def _cmd_serve(args: argparse.Namespace) -> int:
    limits = serve.limits_from_options(args.max_upload_mb, args.max_pixels)
    guards = connections.connections_from_options(
        args.header_timeout, args.body_timeout, args.max_connections
    )
    serve.serve(args.model, args.host, args.port, args.device, limits, guards)
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
    options.colorize_parser(sub)
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
