"""Command line: ``linevision <command>``; one module per command group."""

from __future__ import annotations

import argparse

from linevision import __version__
from linevision.cli import bridges, daemon, data, lifecycle, models, ops


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="linevision", description=__doc__)
    p.add_argument("--version", action="version", version=f"linevision {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for group in (daemon, ops, data, bridges, lifecycle, models):
        group.add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code
