"""``linevision train`` and ``linevision eval``: the model commands of the CLI.

``train`` hands the common options to the station's trainer (``linevision.train.dispatch``);
anything after ``--`` goes to the trainer verbatim (``-- --arch resnet18 --val DIR``).
``eval`` scores a model folder on a labelled dataset folder through the runtime path
(``linevision.eval_run``). Exit codes: 0 done, 1 failure, 2 bad input or a station
without a trainer or evaluation.
"""

from __future__ import annotations

import argparse
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
    )
    try:
        return dispatch.train(request, extra)
    except dispatch.TrainerUnavailableError as exc:
        _error("train", exc)
        return EXIT_USAGE
    except DataError as exc:
        _error("train", exc)
        return EXIT_USAGE


def cmd_eval(args: argparse.Namespace) -> int:
    from linevision import demo, eval_run, log  # noqa: PLC0415
    from linevision.inference.manifest import ModelFileError  # noqa: PLC0415
    from linevision.synth.contract import DataError  # noqa: PLC0415

    log.configure("warning", "json")
    model_dir = args.model if args.model is not None else demo.find_models_root() / args.station
    try:
        evaluation = eval_run.evaluate_folder(args.station, args.data, model_dir, args.threads)
    except (DataError, ModelFileError, eval_run.EvalError) as exc:
        _error("eval", exc)
        return EXIT_USAGE
    if args.json:
        sys.stdout.write(json.dumps(evaluation.as_json()) + "\n")
    else:
        sys.stdout.write(eval_run.format_text(evaluation) + "\n")
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
    train.add_argument("--epochs", type=int, default=None)
    train.add_argument("--minutes", type=float, default=None, help="training time budget")
    train.add_argument("--seed", type=int, default=None)
    train.add_argument("trainer_args", nargs=argparse.REMAINDER, help="-- then trainer options")
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser(
        "eval", help="score a model folder on a labelled folder through the runtime path"
    )
    ev.add_argument("--station", required=True, choices=STATIONS)
    ev.add_argument("--data", type=Path, required=True, help="labelled dataset folder")
    ev.add_argument("--model", type=Path, default=None, help="model folder (default: shipped)")
    ev.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    ev.add_argument("--json", action="store_true", help="one JSON object")
    ev.set_defaults(func=cmd_eval)
