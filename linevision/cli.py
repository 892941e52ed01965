"""Command line: ``linevision run|check-config|tail|cameras|hmi|history|recipe|synth``."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from pydantic import ValidationError

from linevision import __version__
from linevision.config import BusConfig, Config, ConfigError, format_validation_error, parse_config
from linevision.model_commands import add_model_commands

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
        demo.prepare_emulation(devices=demo.DEVICES)
    try:
        cfg = _load_config(args.config) if args.config is not None else None
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG

    from linevision import log  # noqa: PLC0415
    from linevision.operations import DaemonStartError, run_daemon  # noqa: PLC0415

    logger = log.get_logger("linevision.cli")
    models_root = args.models if args.models is not None else demo.find_models_root()
    if cfg is None:
        cfg = demo.four_station_config(demo.ensure_demo_data(demo.cache_dir()))
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

    reload = threading.Event()

    def on_hup(_signum: int, _frame: FrameType | None) -> None:
        reload.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_hup)
    embedded_hmi = args.config is None and not args.no_hmi
    try:
        run_daemon(cfg, models_root, stop, reload, hmi=embedded_hmi)
    except DaemonStartError as exc:
        print(f"linevision: {exc}", file=sys.stderr)
        return EXIT_FAILURE
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


def cmd_synth(args: argparse.Namespace) -> int:
    from linevision.synth import blue_film, pole_piece, seal_edge, six_view  # noqa: PLC0415

    if args.n < 0 or not 0.0 <= args.ng_fraction <= 1.0:
        print("linevision synth: --n must be >= 0 and --ng-fraction in [0, 1]", file=sys.stderr)
        return EXIT_CONFIG
    if args.width < 1024 or args.height < 1024:
        print("linevision synth: --width and --height must be >= 1024", file=sys.stderr)
        return EXIT_CONFIG
    out, n, seed, ng = args.out, args.n, args.seed, args.ng_fraction
    try:
        if args.station == "pole_piece":
            count = pole_piece.write_dataset(out, n, seed)
        elif args.station == "seal_edge":
            count = seal_edge.write_dataset(out, n, seed, ng_fraction=ng)
        elif args.station == "six_view":
            count = six_view.write_dataset(out, n, seed, ng_fraction=ng)
        else:
            size = (args.width, args.height)
            count = blue_film.write_dataset(out, n, seed, size=size, ng_fraction=ng)
    except OSError as exc:
        print(f"linevision synth: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    unit = {"pole_piece": "images", "six_view": "cells", "blue_film": "frames"}.get(
        args.station, "images"
    )
    print(f"{out}: {count} {args.station} {unit} (seed {seed})")
    return EXIT_OK


def cmd_bridge(args: argparse.Namespace) -> int:
    from linevision.bridges.main import run_bridge  # noqa: PLC0415

    return run_bridge(args.kind, args.config, args.log_level)


def cmd_keys_generate(args: argparse.Namespace) -> int:
    from linevision.keys import KeyFileError, generate  # noqa: PLC0415

    try:
        public, secret = generate(args.dir, args.name)
    except (KeyFileError, OSError) as exc:
        print(f"linevision keys generate: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"public key: {public}\nsecret key: {secret} (mode 600)")
    return EXIT_OK


def cmd_hmi(args: argparse.Namespace) -> int:
    from linevision import log  # noqa: PLC0415
    from linevision.hmi.server import HmiConfigError, from_config  # noqa: PLC0415

    try:
        cfg = _load_config(args.config) if args.config is not None else _default_config()
        if args.listen is not None or args.bus is not None:
            update = {
                k: v for k, v in (("listen", args.listen), ("bus", args.bus)) if v is not None
            }
            cfg = cfg.model_copy(
                update={"hmi": cfg.hmi.model_validate(cfg.hmi.model_dump() | update)}
            )
        server = from_config(cfg)
    except (ConfigError, HmiConfigError, ValidationError) as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    log.configure(cfg.logging.level, cfg.logging.format)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        server.start()
    except RuntimeError as exc:
        print(f"linevision hmi: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    from linevision.notify import notify  # noqa: PLC0415

    notify("READY=1")
    while not stop.wait(0.5):
        pass
    notify("STOPPING=1")
    server.stop()
    return EXIT_OK


def _default_config() -> Config:
    """The demo's configuration: the HMI and history commands work with ``linevision run``."""
    from linevision import demo  # noqa: PLC0415

    return demo.four_station_config(demo.demo_data_paths(demo.cache_dir()))


def cmd_history(args: argparse.Namespace) -> int:
    from linevision.archive import archive_dir, read_history  # noqa: PLC0415

    try:
        cfg = _load_config(args.config) if args.config is not None else _default_config()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    folder = args.archive if args.archive is not None else archive_dir(cfg.archive)
    try:
        rows = read_history(folder, args.cell, args.station)
    except (FileNotFoundError, OSError) as exc:
        print(f"linevision history: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    if not rows:
        print(f"no record of cell {args.cell} in {folder}")
        return EXIT_FAILURE
    for r in rows:
        model = f"{r['model_name']}@{r['model_version']} {str(r['model_sha256'] or '')[:12]}"
        why = " / ".join(str(x) for x in (r["reason"], r["label"]) if x)
        score = "-" if r["score"] is None else f"{r['score']:.3f}"
        print(
            f"{r['station']:<12} cell {r['cell_id']:<8} {r['verdict']} {why:<20} score {score} "
            f"recipe {r['recipe'] or '-'} model {model} {r['latency_ms']:.2f} ms "
            f"run {str(r['run_id'])[:8]} seq {r['seq']}"
            + (f" image {folder / str(r['image'])}" if r["image"] else "")
        )
    return EXIT_OK


def cmd_recipe(args: argparse.Namespace) -> int:
    from linevision.control import ControlError, request  # noqa: PLC0415

    try:
        cfg = _load_config(args.config) if args.config is not None else None
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    endpoint = args.endpoint or (cfg.control.endpoint if cfg else "tcp://127.0.0.1:5559")
    body: dict[str, object] = {"cmd": f"recipe.{args.recipe_command}"}
    if args.recipe_command == "switch":
        body["name"] = args.name
    try:
        reply = request(endpoint, body, timeout_s=args.timeout)
    except ControlError as exc:
        print(f"linevision recipe: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if not reply.get("ok"):
        print(f"linevision recipe: {reply.get('error')}", file=sys.stderr)
        return EXIT_FAILURE
    print(json.dumps(reply, indent=2))
    return EXIT_OK


def _add_operations_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    hmi = sub.add_parser("hmi", help="serve the operator page (read-only) for the verdict bus")
    hmi.add_argument("--config", type=Path, default=None)
    hmi.add_argument("--listen", default=None, help="override hmi.listen (host:port)")
    hmi.add_argument("--bus", default=None, help="override the verdict endpoint")
    hmi.set_defaults(func=cmd_hmi)

    hist = sub.add_parser("history", help="a cell's recorded verdicts across all stations")
    hist.add_argument("--cell", type=int, required=True)
    hist.add_argument("--station", default=None)
    hist.add_argument("--config", type=Path, default=None)
    hist.add_argument("--archive", type=Path, default=None, help="override the archive folder")
    hist.add_argument("--json", action="store_true")
    hist.set_defaults(func=cmd_history)

    recipe = sub.add_parser("recipe", help="switch or reload the running daemon's recipe")
    recipe_sub = recipe.add_subparsers(dest="recipe_command", required=True)
    switch = recipe_sub.add_parser("switch", help="switch the daemon to recipe NAME")
    switch.add_argument("name")
    recipe_sub.add_parser("reload", help="re-read the active recipe (as SIGHUP)")
    for sp in recipe_sub.choices.values():
        sp.add_argument("--config", type=Path, default=None)
        sp.add_argument("--endpoint", default=None, help="override control.endpoint")
        sp.add_argument("--timeout", type=float, default=60.0)
        sp.set_defaults(func=cmd_recipe)


def cmd_bench(args: argparse.Namespace) -> int:
    from linevision import bench, demo, log  # noqa: PLC0415

    log.configure("warning", "json")
    models_root = args.models if args.models is not None else demo.find_models_root()
    film = demo.FilmSize(args.film_width, args.film_lines, args.strip_lines)
    try:
        result = bench.run(
            models_root,
            args.duration,
            args.endpoint,
            tuple(args.stations),
            film_size=film,
            baseline_cells=args.baseline_cells,
            six_view_stagger_ms=args.six_view_stagger_ms,
            workers=args.workers,
            aligned_triggers=args.aligned_triggers,
        )
    except ValueError as exc:
        print(f"linevision bench: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.json:
        print(json.dumps(result))
        return EXIT_OK
    stations = result["stations"]
    assert isinstance(stations, dict)
    print(
        f"{'station':<12} {'n':>6} {'p50':>8} {'p99':>8} {'max':>8} {'p99insp':>8} "
        f"{'infer50':>8} {'/s':>7} "
        f"{'missing':>7} {'dup':>4}  NG"
    )
    for name, f in stations.items():
        print(
            f"{name:<12} {f['n']:>6} {f['p50_ms']:>8} {f['p99_ms']:>8} {f['max_ms']:>8} "
            f"{f['inspected_p99_ms']:>8} "
            f"{f['infer_p50_ms']:>8} {f['throughput_per_s']:>7} {f['cells_missing']:>7} "
            f"{f['cells_duplicated']:>4}  {f['ng_reasons']}"
        )
    for key in (
        "baseline",
        "baseline_over_pipeline_p50",
        "blue_film_work",
        "seq_gaps",
        "seq_duplicates",
        "trigger_offsets_ms",
    ):
        if key in result:
            print(f"{key}: {result[key]}")
    print(f"cpu_percent: {result['cpu_percent']}  peak_rss_mb: {result['peak_rss_mb']}")
    print(f"machine: {result['machine']}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="linevision", description=__doc__)
    p.add_argument("--version", action="version", version=f"linevision {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the inspection daemon (no --config: embedded demo)")
    run.add_argument("--config", type=Path, default=None)
    run.add_argument("--models", type=Path, default=None, help="root of model folders")
    run.add_argument("--publish", default=None, help="override bus.publish (verdict endpoint)")
    run.add_argument("--no-hmi", action="store_true", help="demo: do not serve the HMI page")
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

    _add_tool_commands(sub)
    return p


def _add_tool_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bench = sub.add_parser("bench", help="the real pipeline under rated load, with a baseline")
    bench.add_argument(
        "--stations",
        nargs="+",
        default=["pole_piece", "seal_edge", "six_view", "blue_film"],
        help="stations to load at their rated rates (default: all four at once)",
    )
    bench.add_argument("--film-width", type=int, default=4000, help="blue_film frame width")
    bench.add_argument("--film-lines", type=int, default=18000, help="blue_film frame lines")
    bench.add_argument("--strip-lines", type=int, default=1000, help="lines per line-scan strip")
    bench.add_argument("--baseline-cells", type=int, default=20, help="cells in the baseline")
    bench.add_argument(
        "--six-view-stagger-ms",
        type=float,
        default=30.0,
        help="six_view camera k sees the cell k times this after camera 1 (0: all at once)",
    )
    bench.add_argument(
        "--aligned-triggers",
        action="store_true",
        help="every station's camera triggers at the same instant (default: the demo's offsets)",
    )
    bench.add_argument(
        "--workers", type=int, default=None, help="inference pool threads (default: config's)"
    )
    bench.add_argument("--duration", type=float, default=30.0, help="measured seconds")
    bench.add_argument("--models", type=Path, default=None, help="root of model folders")
    bench.add_argument("--endpoint", default="tcp://127.0.0.1:5566", help="bus endpoint to use")
    bench.add_argument("--json", action="store_true")
    bench.set_defaults(func=cmd_bench)

    _add_operations_commands(sub)
    add_model_commands(sub)

    synth = sub.add_parser("synth", help="write a generated dataset folder for a station")
    synth.add_argument(
        "--station", required=True, choices=("pole_piece", "seal_edge", "six_view", "blue_film")
    )
    synth.add_argument("--out", type=Path, required=True, help="dataset folder to write")
    synth.add_argument(
        "--n", type=int, default=100, help="images per class (pole_piece), else samples"
    )
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--ng-fraction", type=float, default=0.5, help="share of NG samples")
    synth.add_argument("--width", type=int, default=4000, help="blue_film frame width")
    synth.add_argument("--height", type=int, default=18000, help="blue_film frame height")
    synth.set_defaults(func=cmd_synth)

    bridge = sub.add_parser("bridge", help="hand verdicts to the line (PLC, reject actuator)")
    bridge.add_argument("kind", choices=("plc", "reject"))
    bridge.add_argument("--config", type=Path, required=True)
    bridge.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error")
    )
    bridge.set_defaults(func=cmd_bridge)

    keys = sub.add_parser("keys", help="CURVE keys for the verdict and replay sockets")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    gen = keys_sub.add_parser("generate", help="write NAME.key and NAME.key_secret into DIR")
    gen.add_argument("dir", type=Path)
    gen.add_argument("--name", default="linevision", help="key file name (default linevision)")
    gen.set_defaults(func=cmd_keys_generate)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
