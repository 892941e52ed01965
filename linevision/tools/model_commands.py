"""``linevision train``, ``eval`` and ``calibrate``: the model commands of the CLI.

``train`` hands the common options to the station's trainer (``linevision.train.dispatch``);
seal_edge and six_view train supervised or, from good cells alone, in anomaly mode
(``--mode``, ``linevision.train.mode``);
anything after ``--`` goes to the trainer verbatim (``-- --arch resnet18 --val DIR``).
Training runs until the ``--minutes`` budget is spent or validation stops improving
(``--patience``); ``--epochs`` is an optional cap. Ctrl-C exports the best epoch so far.
``--exclude-kind K`` trains on the folder without kind K (``tools.kinds``).
``eval`` scores a model folder on a labelled dataset folder through the runtime path
(``linevision.tools.eval_run``), with recall per defect kind; ``--robustness`` adds the rows
of ``tools.robustness_run`` and ``--report DIR`` writes an HTML page (``tools.report``).
``calibrate`` writes a copy of the six_view model with a product's own threshold, set from
its good cells (``linevision.tools.calibrate``). ``variants`` checks the model on other
backends and precisions on a validation folder and lists the accepted ones in its manifest
(``linevision.tools.variants``); ``train --variants-data DIR`` does the same after training.
Progress goes to stderr. Exit codes: 0
done, 1 failure, 2 bad input or a station without a trainer or evaluation.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Final

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
STATIONS: Final = ("pole_piece", "seal_edge", "six_view", "blue_film")


def _error(command: str, message: object) -> None:
    sys.stderr.write(f"linevision {command}: {message}\n")


def cmd_train(args: argparse.Namespace) -> int:
    from linevision.synth.contract import DataError  # noqa: PLC0415
    from linevision.train import dispatch  # noqa: PLC0415

    extra = list(args.trainer_args)
    if extra[:1] == ["--"]:
        extra = extra[1:]
    request = dispatch.TrainRequest(
        station=args.station,
        data=args.data,
        out=args.out,
        epochs=args.epochs,
        minutes=args.minutes,
        seed=args.seed,
        patience=args.patience,
        mode=args.mode,
    )
    try:
        if not args.exclude_kind:
            code = dispatch.train(request, extra)
        else:
            from linevision.tools.kinds import without_kinds  # noqa: PLC0415

            with without_kinds(args.data, args.station, args.exclude_kind) as view:
                sys.stderr.write(f"train: without kind {', '.join(args.exclude_kind)}\n")
                code = dispatch.train(dataclasses.replace(request, data=view), extra)
    except dispatch.TrainerUnavailableError as exc:
        _error("train", exc)
        return EXIT_USAGE
    except DataError as exc:
        _error("train", exc)
        return EXIT_USAGE
    if code == EXIT_OK and args.variants_data is not None:
        return _variants("train", args.station, args.variants_data, args.out, None, args)
    return code


def _variants(  # noqa: PLR0913, PLR0917  (the command, what to check, where, which, how to report)
    command: str,
    station: str,
    data: Path,
    model_dir: Path,
    wanted: list[str] | None,
    args: argparse.Namespace,
    /,
) -> int:
    from linevision import log  # noqa: PLC0415
    from linevision.inference.manifest import ModelFileError, load_manifest  # noqa: PLC0415
    from linevision.synth.contract import DataError  # noqa: PLC0415
    from linevision.tools import eval_run, variants  # noqa: PLC0415
    from linevision.tools import robustness_run as rr  # noqa: PLC0415

    log.configure("warning", "json")
    progress = rr.Progress(every=getattr(args, "progress_every", 200))
    try:
        manifest, _ = load_manifest(model_dir)
        chosen = [variants.parse_variant(v) for v in wanted] if wanted else []
        chosen = chosen or [("openvino", manifest.precision), ("openvino", "bf16")]
        report = variants.check_variants(
            station,
            data,
            model_dir,
            chosen,
            threads=args.threads,
            progress=progress.start,
            data_name=getattr(args, "data_name", None),
        )
    except (DataError, ModelFileError, eval_run.EvalError, ValueError) as exc:
        _error(command, exc)
        return EXIT_USAGE
    if not getattr(args, "dry_run", False):
        path = variants.write_variants(model_dir, report)
        sys.stderr.write(f"{command}: accepted variants written to {path}\n")
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(report.as_json()) + "\n")
    else:
        sys.stdout.write(variants.format_text(report) + "\n")
    return EXIT_OK


def cmd_variants(args: argparse.Namespace) -> int:
    from linevision.tools import demo  # noqa: PLC0415

    model_dir = args.model if args.model is not None else demo.find_models_root() / args.station
    return _variants("variants", args.station, args.data, model_dir, args.variant, args)


def cmd_eval(args: argparse.Namespace) -> int:
    from linevision import log  # noqa: PLC0415
    from linevision.inference.manifest import ModelFileError  # noqa: PLC0415
    from linevision.synth.contract import DataError  # noqa: PLC0415
    from linevision.tools import demo, eval_run, kinds, report  # noqa: PLC0415
    from linevision.tools import robustness_run as rr  # noqa: PLC0415

    log.configure("warning", "json")
    model_dir = args.model if args.model is not None else demo.find_models_root() / args.station
    progress = rr.Progress(every=args.progress_every)
    rows: list[rr.Row] = []
    try:
        run = eval_run.Run(
            progress=progress.start("eval"), backend=args.backend, precision=args.precision
        )
        evaluation = eval_run.evaluate_folder(args.station, args.data, model_dir, args.threads, run)
        sample_kinds = kinds.read_kinds(args.data, args.station)
        tally = evaluation.tally
        per_kind = kinds.per_kind(sample_kinds, tally.true_ng, tally.flagged_ng) if tally else []
        if args.robustness:
            base = rr.row("baseline", "baseline (no change)", evaluation, sample_kinds)
            shifted = rr.robustness_rows(args.station, args.data, model_dir, args.threads, progress)
            rows = [base, *shifted]
    except (DataError, ModelFileError, eval_run.EvalError) as exc:
        _error("eval", exc)
        return EXIT_USAGE
    if args.report is not None:
        page = report.write_report(
            args.report,
            station=args.station,
            data=args.data,
            evaluation=evaluation,
            kinds=sample_kinds,
            per_kind=per_kind,
            rows=rows,
        )
        sys.stderr.write(f"eval: report written to {page}\n")
    if args.json:
        out = {**evaluation.as_json(), "threshold": evaluation.threshold, "per_kind": per_kind}
        if rows:
            out["robustness"] = rows
        sys.stdout.write(json.dumps(out) + "\n")
    else:
        text = [eval_run.format_text(evaluation), "", kinds.format_kinds(per_kind)]
        if rows:
            text += ["", rr.format_rows(args.station, rows)]
        sys.stdout.write("\n".join(text) + "\n")
    return EXIT_OK


def cmd_calibrate(args: argparse.Namespace) -> int:
    from linevision import log  # noqa: PLC0415
    from linevision.inference.manifest import ModelFileError  # noqa: PLC0415
    from linevision.synth.contract import DataError  # noqa: PLC0415
    from linevision.tools import calibrate, demo  # noqa: PLC0415

    log.configure("warning", "json")
    model_dir = args.model if args.model is not None else demo.find_models_root() / args.station
    try:
        cal = calibrate.calibrate(args.station, args.data, model_dir, args.out, args.threads)
    except (DataError, ModelFileError, calibrate.CalibrationError) as exc:
        _error("calibrate", exc)
        return EXIT_USAGE
    except OSError as exc:
        _error("calibrate", exc)
        return EXIT_FAILURE
    if cal.cells_given > cal.cells:
        sys.stdout.write(
            f"{args.data}: {cal.cells_given} good cells given, the first {cal.cells} used "
            f"(calibration uses at most {calibrate.MAX_CELLS})\n"
        )
    g = cal.good_scores
    sys.stdout.write(
        f"{args.out}: calibrated on {cal.cells} good cells (scores min {g['min']:.2f}, median "
        f"{g['median']:.2f}, max {g['max']:.2f}); NG at a score >= {cal.threshold:.2f}; "
        f"cells sha256 {cal.data_sha256}\n"
    )
    if g["over_threshold"]:
        sys.stdout.write(
            f"warning: {int(g['over_threshold'])} of the {cal.cells} good cells score NG; "
            "check them, or the model does not fit this product\n"
        )
    return EXIT_OK


def add_model_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    train = sub.add_parser(
        "train",
        help="train a station's model on a labelled folder; write ONNX and its manifest",
        description="Arguments after -- go to the station's trainer unchanged.",
    )
    train.add_argument("--station", required=True, choices=STATIONS)
    train.add_argument("--data", type=Path, required=True, help="labelled dataset folder")
    train.add_argument("--out", type=Path, required=True, help="model folder to write")
    train.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="training time budget; training runs until it is spent (default 10; blue_film 6)",
    )
    train.add_argument(
        "--patience",
        type=int,
        default=None,
        help="stop after this many epochs without a better validation score (default "
        "pole_piece 20, seal_edge and six_view 8; "
        "0: never; not for blue_film)",
    )
    train.add_argument(
        "--epochs", type=int, default=None, help="at most this many epochs (default: no cap)"
    )
    train.add_argument("--seed", type=int, default=None)
    train.add_argument(
        "--mode",
        choices=("auto", "anomaly", "supervised"),
        default=None,
        help="seal_edge, six_view: supervised (OK and NG cells), anomaly (good cells are "
        "enough; NG cells only set the threshold) or auto (default: anomaly below 200 NG "
        "cells)",
    )
    train.add_argument(
        "--exclude-kind",
        action="append",
        default=[],
        metavar="K",
        help="leave the samples of defect kind K out of training (the folder's kind column; "
        "repeatable): evaluate on the full folder to see whether an unseen kind is still NG",
    )
    train.add_argument(
        "--variants-data",
        type=Path,
        default=None,
        metavar="DIR",
        help="after training, check the model on openvino (own precision and bf16) on this "
        "validation folder and list the accepted variants in its manifest",
    )
    train.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    train.add_argument("trainer_args", nargs=argparse.REMAINDER, help="-- then trainer options")
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser(
        "eval", help="score a model folder on a labelled folder through the runtime path"
    )
    ev.add_argument("--station", required=True, choices=STATIONS)
    ev.add_argument("--data", type=Path, required=True, help="labelled dataset folder")
    ev.add_argument("--model", type=Path, default=None, help="model folder (default: shipped)")
    ev.add_argument("--threads", type=int, default=1, help="inference threads per session")
    ev.add_argument(
        "--backend",
        choices=("onnxruntime", "openvino"),
        default="onnxruntime",
        help="inference runtime (openvino: the openvino extra)",
    )
    ev.add_argument(
        "--precision",
        choices=("fp32", "int8", "bf16"),
        default=None,
        help="inference precision (default: the graphs' own); must be calibrated in the manifest",
    )
    ev.add_argument("--json", action="store_true", help="one JSON object")
    ev.add_argument(
        "--robustness",
        action="store_true",
        help="also score the folder under photometric and geometric shifts and at lower "
        "defect contrast (one more pass per row)",
    )
    ev.add_argument(
        "--report", type=Path, default=None, metavar="DIR", help="write DIR/index.html and PNGs"
    )
    ev.add_argument(
        "--progress-every",
        type=int,
        default=50,
        metavar="N",
        help="a progress line on stderr every N images (default 50)",
    )
    ev.set_defaults(func=cmd_eval)

    var = sub.add_parser(
        "variants",
        help="check a model on other backends/precisions on its validation folder; list the "
        "accepted ones (within 0.5 points of onnxruntime) in its manifest",
    )
    var.add_argument("--station", required=True, choices=STATIONS)
    var.add_argument("--data", type=Path, required=True, help="labelled validation folder")
    var.add_argument("--model", type=Path, default=None, help="model folder (default: shipped)")
    var.add_argument(
        "--variant",
        action="append",
        default=None,
        metavar="BACKEND/PRECISION",
        help="a variant to check (repeatable; default openvino at the graphs' own precision "
        "and openvino/bf16)",
    )
    var.add_argument("--threads", type=int, default=1, help="inference threads per session")
    var.add_argument(
        "--data-name",
        default=None,
        metavar="TEXT",
        help="how the manifest names the validation folder, e.g. the linevision synth command "
        "that made it (default: the folder's name)",
    )
    var.add_argument("--dry-run", action="store_true", help="report only; leave the manifest")
    var.add_argument("--json", action="store_true", help="one JSON object")
    var.add_argument("--progress-every", type=int, default=200, metavar="N")
    var.set_defaults(func=cmd_variants)

    cal = sub.add_parser(
        "calibrate",
        help="copy the six_view model with a product's own threshold, set from its good cells",
        description=(
            "Scores the good (OK) cells of --data (at least 20; the first 50 are used) "
            "through the runtime path and writes --out: the model's files unchanged and a "
            "manifest with a calibration section (normalisation, threshold and the sha256 of "
            "the cells' listing)."
        ),
    )
    cal.add_argument("--station", required=True, choices=("six_view",))
    cal.add_argument("--data", type=Path, required=True, help="folder of the product's good cells")
    cal.add_argument("--model", type=Path, default=None, help="model folder (default: shipped)")
    cal.add_argument("--out", type=Path, required=True, help="calibrated model folder to write")
    cal.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    cal.set_defaults(func=cmd_calibrate)
