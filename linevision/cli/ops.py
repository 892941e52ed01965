"""Operations: ``hmi``, ``history``, ``recipe``, ``bench``."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from pydantic import ValidationError

from linevision.cli.common import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, load_config, missing_extra
from linevision.config import Config, ConfigError


def cmd_hmi(args: argparse.Namespace) -> int:
    if (missing := missing_extra("hmi")) is not None:
        print(f"linevision hmi: {missing}", file=sys.stderr)
        return EXIT_FAILURE
    from linevision import log  # noqa: PLC0415
    from linevision.hmi.server import HmiConfigError, from_config  # noqa: PLC0415

    try:
        cfg = load_config(args.config) if args.config is not None else _default_config()
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
    from linevision.daemon.notify import notify  # noqa: PLC0415

    notify("READY=1")
    while not stop.wait(0.5):
        pass
    notify("STOPPING=1")
    server.stop()
    return EXIT_OK


def _default_config() -> Config:
    """The demo's configuration: the HMI and history commands work with ``linevision run``."""
    from linevision.tools import demo, demo_line  # noqa: PLC0415

    root = demo.cache_dir()
    return demo_line.configure(demo.four_station_config(demo.demo_data_paths(root)), root)


def cmd_history(args: argparse.Namespace) -> int:
    from linevision.daemon.archive import read_history  # noqa: PLC0415
    from linevision.paths import archive_dir  # noqa: PLC0415

    try:
        cfg = load_config(args.config) if args.config is not None else _default_config()
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
    from linevision.daemon.control import ControlError, request  # noqa: PLC0415

    try:
        cfg = load_config(args.config) if args.config is not None else None
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


def cmd_bench(args: argparse.Namespace) -> int:
    from linevision import log  # noqa: PLC0415
    from linevision.tools import bench, demo  # noqa: PLC0415

    log.configure("warning", "json")
    if args.camera == "aravis":
        return _bench_camera(args)
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
            load=args.load,
            backend=args.backend,
            backend_speed=not args.no_backend_speed,
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
    print(f"load {result['load']} x rated, backend {result['backend']}")
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
        "cpu",
        "job_cpu",
        "backend_speed",
    ):
        if key in result:
            print(f"{key}: {result[key]}")
    print(f"cpu_percent: {result['cpu_percent']}  peak_rss_mb: {result['peak_rss_mb']}")
    print(f"machine: {result['machine']}")
    return EXIT_OK


def _bench_camera(args: argparse.Namespace) -> int:
    """``bench --camera aravis``: pole_piece on the fake GigE camera vs the pylon emulator."""
    from linevision.tools import bench_camera, demo  # noqa: PLC0415

    if args.stations != ["pole_piece"]:
        print("linevision bench: --camera aravis runs --stations pole_piece", file=sys.stderr)
        return EXIT_CONFIG
    models_root = args.models if args.models is not None else demo.find_models_root()
    try:
        result = bench_camera.run(models_root, args.duration, args.endpoint)
    except ValueError as exc:
        print(f"linevision bench: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.json:
        print(json.dumps(result))
        return EXIT_OK
    runs = result["runs"]
    assert isinstance(runs, dict)
    print(f"{'camera@rate':<12} {'n':>6} {'p50':>8} {'p99':>8} {'/s':>7} {'cpu%':>6}  extra")
    for name, f in runs.items():
        extra = {k: f[k] for k in ("camera_cpu_percent", "camera_to_host") if k in f}
        print(
            f"{name:<12} {f['n']:>6} {f['p50_ms']:>8} {f['p99_ms']:>8} "
            f"{f['throughput_per_s']:>7} {f['cpu_percent']:>6}  {f['ng_reasons']} {extra}"
        )
    print(f"aravis_over_pylon_p50: {result['aravis_over_pylon_p50']}")
    print(f"frame: {result['frame']}  machine: {result['machine']}")
    return EXIT_OK


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    bench.add_argument(
        "--baseline-cells",
        type=int,
        default=20,
        help="cells in the baseline (0: no baseline, no model or backend speed)",
    )
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
    bench.add_argument(
        "--load",
        type=float,
        default=1.0,
        help="multiply every station's rated rate by this (default 1)",
    )
    bench.add_argument(
        "--backend",
        choices=("onnxruntime", "openvino"),
        default="onnxruntime",
        help="inference backend of the pipeline (the baseline stays onnxruntime)",
    )
    bench.add_argument(
        "--no-backend-speed",
        action="store_true",
        help="leave out the per-station onnxruntime / OpenVINO comparison after the run",
    )
    bench.add_argument("--duration", type=float, default=30.0, help="measured seconds")
    bench.add_argument("--models", type=Path, default=None, help="root of model folders")
    bench.add_argument("--endpoint", default="tcp://127.0.0.1:5566", help="bus endpoint to use")
    bench.add_argument(
        "--camera",
        choices=["pylon", "aravis"],
        default="pylon",
        help="aravis: pole_piece on the fake GigE Vision camera vs the pylon emulator, 20 and "
        "100 images/s",
    )
    bench.add_argument("--json", action="store_true")
    bench.set_defaults(func=cmd_bench)
