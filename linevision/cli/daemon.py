"""The daemon's commands: ``run``, ``check-config``, ``tail``, ``cameras``."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Literal

from pydantic import ValidationError

from linevision import __version__
from linevision.cli.common import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_OK,
    load_config,
    missing_extra,
)
from linevision.config import BusConfig, Config, ConfigError, format_validation_error


def cmd_check_config(args: argparse.Namespace) -> int:
    if args.bridge is not None:
        return _check_bridge_config(args.bridge, args.file)
    try:
        cfg = load_config(args.file)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    print(f"{args.file}: OK ({len(cfg.cameras)} cameras, {len(cfg.stations)} stations)")
    return EXIT_OK


def _check_bridge_config(kind: Literal["plc", "reject", "mqtt"], path: Path) -> int:
    from linevision.bridges.main import file_problems, load  # noqa: PLC0415

    try:
        cfg = load(kind, path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    problems = file_problems(cfg)
    for problem in problems:
        print(f"{path}: {problem}", file=sys.stderr)
    if problems:
        return EXIT_CONFIG
    print(f"{path}: OK ({kind} bridge {cfg.name})")
    return EXIT_OK


def _override_bus(cfg: Config, **endpoints: str | None) -> Config:
    """``--publish`` / ``--replay`` over the config's bus section; ValueError names the option."""
    for field, value in endpoints.items():
        if value is None:
            continue
        try:
            bus = BusConfig.model_validate({**cfg.bus.model_dump(), field: value})
            cfg = Config.model_validate({**cfg.model_dump(), "bus": bus.model_dump()})
        except ValidationError as exc:
            msg = f"--{field}: {format_validation_error(exc)}"
            raise ValueError(msg) from exc
    return cfg


def _ng_rate(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        msg = f"{text!r} is not a number"
        raise argparse.ArgumentTypeError(msg) from None


def _ng_rate_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with ``--ng-rate``; sets the demo's default when it is not given."""
    if args.ng_rate is None:
        args.ng_rate = 0.03
        return None
    if args.config is not None:
        return "--ng-rate is the demo's (no --config)"
    if not 0.0 <= args.ng_rate <= 1.0:
        return f"--ng-rate {args.ng_rate}: a fraction 0..1"
    return None


def cmd_run(args: argparse.Namespace) -> int:
    embedded_hmi = args.config is None and not args.no_hmi
    if (problem := _ng_rate_problem(args)) is not None:
        print(f"linevision run: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    if embedded_hmi and (missing := missing_extra("hmi")) is not None:
        print(
            f"linevision run: the demo's operator page {missing}, or run with --no-hmi",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    from linevision.tools import demo  # noqa: PLC0415  (keeps pypylon's factory untouched until needed)

    if args.config is None:
        demo.prepare_emulation(devices=demo.DEVICES)
    try:
        cfg = load_config(args.config) if args.config is not None else None
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG

    from linevision import log  # noqa: PLC0415
    from linevision.daemon.operations import DaemonStartError, run_daemon  # noqa: PLC0415

    logger = log.get_logger("linevision.cli")
    models_root = args.models if args.models is not None else demo.find_models_root()
    if cfg is None:
        from linevision.tools import demo_line  # noqa: PLC0415

        root = demo.cache_dir()
        data = demo_line.line_data(demo.ensure_demo_data(root), root, args.ng_rate)
        cfg = demo_line.configure(demo.four_station_config(data), root)
        cfg = demo.with_delivery(cfg, replay=args.replay or demo.REPLAY_ENDPOINT)
    try:
        cfg = _override_bus(cfg, publish=args.publish, replay=args.replay)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    log.configure(cfg.logging.level, cfg.logging.format)
    logger.info("starting", version=__version__, demo=args.config is None, models=str(models_root))

    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info("signal", signal=signal.Signals(signum).name)
        stop.set()

    reload = threading.Event()

    def on_hup(_signum: int, _frame: FrameType | None) -> None:
        reload.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_hup)
    try:
        run_daemon(cfg, models_root, stop, reload, hmi=embedded_hmi)
    except DaemonStartError as exc:
        print(f"linevision: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def cmd_tail(args: argparse.Namespace) -> int:
    from linevision.bus.subscriber import subscribe  # noqa: PLC0415
    from linevision.bus.wire import VerdictMessage  # noqa: PLC0415

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

    devices = list_devices(args.cti, aravis=args.aravis)
    if args.json:
        print(json.dumps([d.__dict__ for d in devices], indent=2))
        return EXIT_OK
    if not devices:
        print("no GenICam devices found")
    for d in devices:
        print(
            f"{d.backend:<10} {d.vendor:<10} {d.model:<28} serial={d.serial} user_id={d.user_id}"
            + (f"  {d.name}" if d.backend == "aravis" else "")
        )
    return EXIT_OK


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser("run", help="run the inspection daemon (no --config: embedded demo)")
    run.add_argument("--config", type=Path, default=None)
    run.add_argument("--models", type=Path, default=None, help="root of model folders")
    run.add_argument("--publish", default=None, help="override bus.publish (verdict endpoint)")
    run.add_argument("--replay", default=None, help="override bus.replay (replay endpoint)")
    run.add_argument("--no-hmi", action="store_true", help="demo: do not serve the HMI page")
    run.add_argument(
        "--ng-rate",
        type=_ng_rate,
        default=None,
        help="demo: the share of NG cells the generated line runs at (default 0.03)",
    )
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="validate a configuration file")
    check.add_argument("file", type=Path)
    check.add_argument(
        "--bridge",
        choices=("plc", "reject", "mqtt"),
        default=None,
        help="the file is that bridge's configuration (default: the daemon's)",
    )
    check.set_defaults(func=cmd_check_config)

    tail = sub.add_parser("tail", help="print verdicts from the bus")
    tail.add_argument("--endpoint", default="tcp://127.0.0.1:5556")
    tail.add_argument("--count", type=int, default=None)
    tail.add_argument("--json", action="store_true")
    tail.add_argument("--heartbeats", action="store_true", help="print heartbeats too")
    tail.add_argument("--timeout", type=float, default=None, help="exit after this many idle s")
    tail.set_defaults(func=cmd_tail)

    cams = sub.add_parser("cameras", help="list GenICam devices (pypylon, harvesters, Aravis)")
    cams.add_argument("--cti", type=Path, default=None, help="GenTL producer for harvesters")
    cams.add_argument(
        "--aravis",
        action="store_true",
        help="also list Aravis devices (GigE Vision: a discovery broadcast on every interface)",
    )
    cams.add_argument("--json", action="store_true")
    cams.set_defaults(func=cmd_cameras)
