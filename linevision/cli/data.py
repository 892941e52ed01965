"""Data and models: ``synth`` here, ``train``/``eval``/``models`` from tools."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from linevision.cli.common import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK
from linevision.tools.model_commands import add_model_commands


def cmd_synth(args: argparse.Namespace) -> int:
    from linevision.synth import blue_film, pole_piece, seal_edge, six_view  # noqa: PLC0415

    if args.n < 0 or not 0.0 <= args.ng_fraction <= 1.0:
        print("linevision synth: --n must be >= 0 and --ng-fraction in [0, 1]", file=sys.stderr)
        return EXIT_CONFIG
    if args.width < 1024 or args.height < 1024:
        print("linevision synth: --width and --height must be >= 1024", file=sys.stderr)
        return EXIT_CONFIG
    if args.design_seed is not None and args.station != "six_view":
        print("linevision synth: --design-seed is for six_view only", file=sys.stderr)
        return EXIT_CONFIG
    out, n, seed, ng = args.out, args.n, args.seed, args.ng_fraction
    try:
        if args.station == "pole_piece":
            count = pole_piece.write_dataset(out, n, seed)
        elif args.station == "seal_edge":
            count = seal_edge.write_dataset(out, n, seed, ng_fraction=ng)
        elif args.station == "six_view":
            count = six_view.write_dataset(
                out, n, seed, ng_fraction=ng, design_seed=args.design_seed
            )
        else:
            size = (args.width, args.height)
            count = blue_film.write_dataset(out, n, seed, size=size, ng_fraction=ng)
    except OSError as exc:
        print(f"linevision synth: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    unit = {"pole_piece": "images", "six_view": "cells", "blue_film": "frames"}.get(
        args.station, "images"
    )
    design = "" if args.design_seed is None else f", design seed {args.design_seed}"
    print(f"{out}: {count} {args.station} {unit} (seed {seed}{design})")
    return EXIT_OK


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    synth = sub.add_parser("synth", help="write a generated dataset folder for a station")
    synth.add_argument(
        "--station", required=True, choices=("pole_piece", "seal_edge", "six_view", "blue_film")
    )
    synth.add_argument("--out", type=Path, required=True, help="dataset folder to write")
    synth.add_argument(
        "--n", type=int, default=100, help="images per class (pole_piece), else samples"
    )
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument(
        "--design-seed",
        type=int,
        default=None,
        help="six_view: the product's seed (default --seed); cells are drawn from --seed",
    )
    synth.add_argument("--ng-fraction", type=float, default=0.5, help="share of NG samples")
    synth.add_argument("--width", type=int, default=4000, help="blue_film frame width")
    synth.add_argument("--height", type=int, default=18000, help="blue_film frame height")
    synth.set_defaults(func=cmd_synth)

    add_model_commands(sub)
