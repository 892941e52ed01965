"""Command line: ``linevision run|check-config|tail|cameras``."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from linevision import __version__
from pydantic import ValidationError

from linevision.config import BusConfig, Config, ConfigError, format_validation_error, parse_config

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2


def _load_config(path: Path) -> Config:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        msg = f"{path}: cannot read: {exc.strerror}"
        raise ConfigError(msg) from exc
    return parse_config(text, str(path))


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        cfg = _load_config(args.file)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    print(f"{args.file}: OK ({len(cfg.cameras)} cameras, {len(cfg.stations)} stations)")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from linevision import demo  # noqa: PLC0415  (keeps pypylon's factory untouched until needed)

    if args.config is None:
        demo.prepare_emulation(devices=1)
    try:
        cfg = _load_config(args.config) if args.config is not None else None
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG

    from linevision import log  # noqa: PLC0415
    from linevision.inference.manifest import ModelFileError  # noqa: PLC0415
    from linevision.service import Service  # noqa: PLC0415

    logger = log.get_logger("linevision.cli")
    models_root = args.models if args.models is not None else demo.find_models_root()
    if cfg is None:
        images = demo.ensure_pole_piece_images(demo.cache_dir() / "pole_piece")
        cfg = demo.demo_config(images)
    if args.publish is not None:
        try:
            cfg = cfg.model_copy(update={"bus": BusConfig(publish=args.publish)})
        except ValidationError as exc:
            print(f"--publish: {format_validation_error(exc)}", file=sys.stderr)
            return EXIT_CONFIG
    log.configure(cfg.logging.level, cfg.logging.format)
    logger.info("starting", version=__version__, demo=args.config is None, models=str(models_root))

    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info("signal", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    service = Service(cfg, models_root=models_root)
    try:
        service.start()
    except (ModelFileError, RuntimeError, ValueError) as exc:
        logger.exception("start_failed", error=str(exc))
        print(f"linevision: {exc}", file=sys.stderr)
        service.stop()
        return EXIT_FAILURE
    while not stop.wait(0.5):
        pass
    service.stop()
    return EXIT_OK


def cmd_tail(args: argparse.Namespace) -> int:
    from linevision.bus import VerdictMessage, subscribe  # noqa: PLC0415

    topics = ("verdict.", "heartbeat") if args.heartbeats else ("verdict.",)
    n = 0
    for msg in subscribe(args.endpoint, topics, timeout_s=args.timeout):
        if args.json:
            print(json.dumps(msg.model_dump(mode="json", by_alias=True)), flush=True)
        elif isinstance(msg, VerdictMessage):
            reason = msg.reason or ""
            print(
                f"{msg.seq:>8} {msg.station:<12} cell {msg.cell_id:<8} {msg.verdict} "
                f"{reason:<12} {msg.label or '':<8} {msg.latency_ms:7.2f} ms",
                flush=True,
            )
        else:
            print(f"heartbeat run {msg.run_id} seq {msg.seq}", flush=True)
        if isinstance(msg, VerdictMessage):
            n += 1
            if args.count is not None and n >= args.count:
                return EXIT_OK
    if args.count is not None and n < args.count:
        print(f"linevision tail: only {n} of {args.count} verdicts before timeout", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def cmd_cameras(args: argparse.Namespace) -> int:
    from linevision.cameras.discovery import list_devices  # noqa: PLC0415

    devices = list_devices(args.cti)
    if args.json:
        print(json.dumps([d.__dict__ for d in devices], indent=2))
        return EXIT_OK
    if not devices:
        print("no GenICam devices found")
    for d in devices:
        print(f"{d.backend:<10} {d.vendor:<10} {d.model:<28} serial={d.serial} user_id={d.user_id}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="linevision", description=__doc__)
    p.add_argument("--version", action="version", version=f"linevision {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the inspection daemon (no --config: embedded demo)")
    run.add_argument("--config", type=Path, default=None)
    run.add_argument("--models", type=Path, default=None, help="root of model folders")
    run.add_argument("--publish", default=None, help="override bus.publish (verdict endpoint)")
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="validate a configuration file")
    check.add_argument("file", type=Path)
    check.set_defaults(func=cmd_check_config)

    tail = sub.add_parser("tail", help="print verdicts from the bus")
    tail.add_argument("--endpoint", default="tcp://127.0.0.1:5556")
    tail.add_argument("--count", type=int, default=None)
    tail.add_argument("--json", action="store_true")
    tail.add_argument("--heartbeats", action="store_true", help="print heartbeats too")
    tail.add_argument("--timeout", type=float, default=None, help="exit after this many idle s")
    tail.set_defaults(func=cmd_tail)

    cams = sub.add_parser("cameras", help="list GenICam devices (pypylon and harvesters)")
    cams.add_argument("--cti", type=Path, default=None, help="GenTL producer for harvesters")
    cams.add_argument("--json", action="store_true")
    cams.set_defaults(func=cmd_cameras)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
