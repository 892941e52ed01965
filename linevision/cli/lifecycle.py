"""The model's lifecycle: ``challenge``, ``baseline``, ``drift``, ``repeatability``,
``dataset`` (docs/lifecycle.md)."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from pathlib import Path

from linevision.cli.common import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, load_config
from linevision.config import ConfigError

DEFAULT_CONTROL = "tcp://127.0.0.1:5559"
POLL_S = 0.3


class FailedError(Exception):
    """A control request that failed; the message is for stderr."""


def endpoint_of(args: argparse.Namespace) -> str:
    if args.endpoint:
        return str(args.endpoint)
    if args.config is not None:
        return load_config(args.config).control.endpoint
    return DEFAULT_CONTROL


def control(endpoint: str, body: dict[str, object], timeout_s: float) -> dict[str, object]:
    """One request to the daemon; ``FailedError`` with its error when refused or unanswered."""
    from linevision.daemon.control import ControlError, request  # noqa: PLC0415

    try:
        reply = request(endpoint, body, timeout_s=timeout_s)
    except ControlError as exc:
        raise FailedError(str(exc)) from exc
    if not reply.get("ok"):
        raise FailedError(str(reply.get("error")))
    return reply


def user_name(given: str | None) -> str:
    """Who runs the command: ``--user``, else the login name."""
    if given:
        return given
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _stations(reply: dict[str, object]) -> dict[str, dict[str, object]]:
    stations = reply.get("stations")
    return stations if isinstance(stations, dict) else {}


def _wait_runs(
    endpoint: str, ids: dict[str, str], timeout_s: float, *, quiet: bool
) -> dict[str, dict[str, object]]:
    """Poll ``challenge.status`` until every run of ``ids`` has its record."""
    done: dict[str, dict[str, object]] = {}
    shown: dict[str, object] = {}
    deadline = time.monotonic() + timeout_s
    while len(done) < len(ids):
        if time.monotonic() > deadline:
            waiting = ", ".join(sorted(set(ids) - set(done)))
            msg = f"no result within {timeout_s:g} s for {waiting}"
            raise FailedError(msg)
        time.sleep(POLL_S)
        stations = _stations(control(endpoint, {"cmd": "challenge.status"}, 10.0))
        for name, run_id in ids.items():
            st = stations.get(name, {})
            record = st.get("record")
            if isinstance(record, dict) and record.get("id") == run_id:
                done[name] = record
                continue
            progress = st.get("progress")
            if not quiet and progress and progress != shown.get(name):
                shown[name] = progress
                assert isinstance(progress, list)
                print(f"{name}: sample {progress[0] + 1} of {progress[1]}", file=sys.stderr)
    return done


def _print_record(record: dict[str, object]) -> None:
    result = "PASSED" if record.get("passed") else "FAILED"
    model = record.get("model")
    sha = str(model.get("sha256", ""))[:12] if isinstance(model, dict) else "-"
    print(
        f"{record['station']}: {result}  recipe {record.get('recipe') or '-'}  model {sha}  "
        f"trigger {record.get('trigger')}  user {record.get('user') or '-'}"
    )
    if record.get("error"):
        print(f"  error: {record['error']}")
    samples = record.get("samples")
    for s in samples if isinstance(samples, list) else []:
        mark = "ok  " if s.get("passed") else "FAIL"
        score = "-" if s.get("score") is None else f"{s['score']:.3f}"
        got = f"{s.get('verdict')} {s.get('reason') or ''} {s.get('label') or ''}".strip()
        print(
            f"  {mark} {s['sample']:<40} expected {s['expected']}  got {got:<20} "
            f"score {score}  tries {s.get('attempts')}"
        )


def cmd_challenge(args: argparse.Namespace) -> int:
    try:
        endpoint = endpoint_of(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    try:
        if args.challenge_command == "status":
            body: dict[str, object] = {"cmd": "challenge.status"}
            if args.station:
                body["station"] = args.station
            reply = control(endpoint, body, args.timeout)
            print(json.dumps(reply, indent=2))
            return EXIT_OK
        body = {"cmd": "challenge.run", "user": user_name(args.user)}
        if args.station:
            body["station"] = args.station
        reply = control(endpoint, body, 10.0)
        runs = reply.get("runs")
        ids = {str(k): str(v) for k, v in runs.items()} if isinstance(runs, dict) else {}
        records = _wait_runs(endpoint, ids, args.timeout, quiet=args.json)
    except FailedError as exc:
        print(f"linevision challenge: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if args.json:
        print(json.dumps(records, indent=2))
    else:
        for name in sorted(records):
            _print_record(records[name])
    return EXIT_OK if all(r.get("passed") for r in records.values()) else EXIT_FAILURE


def _wait_capture(
    endpoint: str, station: str, capture_id: object, timeout_s: float
) -> dict[str, object]:
    """Poll ``drift.status`` until the capture ``capture_id`` is complete."""
    deadline = time.monotonic() + timeout_s
    shown = -1
    while True:
        st = _stations(control(endpoint, {"cmd": "drift.status"}, 10.0)).get(station, {})
        cap = st.get("capture")
        if isinstance(cap, dict) and cap.get("id") == capture_id:
            if cap.get("done"):
                return {"station": station, **cap}
            if cap.get("cells") != shown:
                shown = int(str(cap.get("cells")))
                print(f"{station}: {shown} of {cap.get('target')} OK cells", file=sys.stderr)
        if time.monotonic() > deadline:
            msg = f"the baseline was not complete within {timeout_s:g} s"
            raise FailedError(msg)
        time.sleep(POLL_S)


def cmd_baseline(args: argparse.Namespace) -> int:
    """Take the next ``--cells`` OK cells of a station as its drift baseline; waits for it."""
    try:
        endpoint = endpoint_of(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    body: dict[str, object] = {"cmd": "baseline.capture", "station": args.station}
    if args.cells is not None:
        body["cells"] = str(args.cells)
    try:
        started = control(endpoint, body, 10.0)
        done = _wait_capture(endpoint, args.station, started.get("id"), args.timeout)
    except FailedError as exc:
        print(f"linevision baseline: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(json.dumps(done, indent=2))
    return EXIT_OK


def cmd_drift(args: argparse.Namespace) -> int:
    try:
        reply = control(endpoint_of(args), {"cmd": "drift.status"}, args.timeout)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    except FailedError as exc:
        print(f"linevision drift: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(json.dumps(reply, indent=2))
    return EXIT_OK


def _print_study(report: dict[str, object]) -> None:
    study = report["study"]
    assert isinstance(study, dict)
    print(
        f"{report['station']}: {report['n']} rounds of {report['data']}  "
        f"recipe {report.get('recipe') or '-'}  model "
        f"{', '.join(str(m)[:12] for m in report['model'])}"  # type: ignore[attr-defined]
    )
    print(
        f"{'cell':<36} {'expect':>6} {'n':>4} {'OK':>4} {'NG':>4} {'agree%':>7} "
        f"{'vs exp%':>7} {'score mean':>10} {'std':>7} {'range':>7} {'faults':>6}"
    )
    cells = report["cells"]
    assert isinstance(cells, dict)
    for name, c in cells.items():
        mean = "-" if c["score_mean"] is None else f"{c['score_mean']:.4f}"
        std = "-" if c["score_std"] is None else f"{c['score_std']:.4f}"
        rng = "-" if c["score_range"] is None else f"{c['score_range']:.4f}"
        print(
            f"{name[:36]:<36} {c['expected']:>6} {c['n']:>4} {c['ok']:>4} {c['ng']:>4} "
            f"{c['agreement_pct']:>7} {c['matches_expected_pct']:>7} {mean:>10} {std:>7} "
            f"{rng:>7} {c['faults']:>6}"
        )
    w, v = study["within_agreement"], study["vs_standard"]
    print(
        f"within agreement: {w['cells']} of {study['cells']} cells ({w['pct']} %, 95 % CI "
        f"{w['ci95'][0]}-{w['ci95'][1]} %)   vs standard: {v['cells']} of {study['cells']} "
        f"({v['pct']} %, 95 % CI {v['ci95'][0]}-{v['ci95'][1]} %)   "
        f"largest score std: {study['max_score_std']}"
    )
    print(f"report: {report.get('archive')}")


def cmd_repeatability(args: argparse.Namespace) -> int:
    try:
        endpoint = endpoint_of(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    body: dict[str, object] = {
        "cmd": "repeatability.run",
        "station": args.station,
        "data": str(Path(args.data).resolve()),
        "n": str(args.n),
        "user": user_name(args.user),
    }
    try:
        started = control(endpoint, body, 30.0)
        deadline = time.monotonic() + args.timeout
        shown = -1
        while True:
            run = control(endpoint, {"cmd": "repeatability.status", "id": started["id"]}, 10.0)
            report = run.get("report")
            if isinstance(report, dict):
                break
            if run.get("done") != shown and not args.json:
                shown = int(str(run.get("done")))
                print(f"{args.station}: {shown} of {run.get('total')} cells", file=sys.stderr)
            if time.monotonic() > deadline:
                msg = f"the study was not complete within {args.timeout:g} s"
                raise FailedError(msg)  # noqa: TRY301  (the one way out of the poll)
            time.sleep(POLL_S)
    except FailedError as exc:
        print(f"linevision repeatability: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_study(report)
    return EXIT_OK


def cmd_dataset(args: argparse.Namespace) -> int:
    """The reviewed cells of a station as a dataset folder (no daemon needed)."""
    from linevision.daemon.recipes import RecipeError, apply_recipe, load_recipe  # noqa: PLC0415
    from linevision.lifecycle.dataset import DatasetError, export, parse_since  # noqa: PLC0415
    from linevision.paths import archive_dir, review_dir  # noqa: PLC0415

    try:
        cfg = load_config(args.config)
        if args.recipe is not None:
            if cfg.recipes.dir is None:
                print("linevision dataset: --recipe needs recipes.dir", file=sys.stderr)
                return EXIT_CONFIG
            cfg = apply_recipe(cfg, load_recipe(cfg.recipes.dir, args.recipe))
    except (ConfigError, RecipeError) as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    station = next((sc for sc in cfg.stations if sc.name == args.station), None)
    if station is None:
        names = ", ".join(sc.name for sc in cfg.stations)
        print(
            f"linevision dataset: --station {args.station!r} is not one of {names}", file=sys.stderr
        )
        return EXIT_CONFIG
    archive = args.archive or archive_dir(cfg.archive)
    reviews = args.review_dir or review_dir(cfg.review.dir)
    try:
        since = parse_since(args.since) if args.since else 0
        summary = export(archive, reviews, station, since, args.out, recipe=args.recipe)
    except (DatasetError, OSError) as exc:
        print(f"linevision dataset: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(json.dumps(summary, indent=2))
    return EXIT_OK


def _common(p: argparse.ArgumentParser, timeout_s: float) -> None:
    p.add_argument("--config", type=Path, default=None, help="the daemon's configuration")
    p.add_argument("--endpoint", default=None, help="override control.endpoint")
    p.add_argument("--timeout", type=float, default=timeout_s, help="seconds to wait")


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ch = sub.add_parser("challenge", help="master samples through the live stations")
    ch_sub = ch.add_subparsers(dest="challenge_command", required=True)
    run = ch_sub.add_parser("run", help="run the challenge now; exit 1 unless it passed")
    run.add_argument("--station", default=None, help="one station (default: all with masters)")
    run.add_argument("--user", default=None, help="who runs it (default: the login name)")
    run.add_argument("--json", action="store_true", help="the run records as JSON")
    _common(run, 300.0)
    run.set_defaults(func=cmd_challenge)
    status = ch_sub.add_parser("status", help="verified or not, and the last run, per station")
    status.add_argument("--station", default=None)
    _common(status, 10.0)
    status.set_defaults(func=cmd_challenge)

    base = sub.add_parser("baseline", help="the drift monitor's baseline")
    base_sub = base.add_subparsers(dest="baseline_command", required=True)
    cap = base_sub.add_parser("capture", help="take the next OK cells of a station as baseline")
    cap.add_argument("--station", required=True)
    cap.add_argument("--cells", type=int, default=None, help="default: drift.baseline_cells")
    _common(cap, 3600.0)
    cap.set_defaults(func=cmd_baseline)

    drift = sub.add_parser("drift", help="the drift monitor's state")
    drift_sub = drift.add_subparsers(dest="drift_command", required=True)
    dstat = drift_sub.add_parser("status", help="level and PSI per statistic, per station")
    _common(dstat, 10.0)
    dstat.set_defaults(func=cmd_drift)

    rep = sub.add_parser(
        "repeatability", help="the same cells N times through the live path: agreement, spread"
    )
    rep.add_argument("--station", required=True)
    rep.add_argument("--data", required=True, type=Path, help="a folder in the folder contract")
    rep.add_argument("--n", type=int, default=30, help="rounds (each cell once per round)")
    rep.add_argument("--user", default=None)
    rep.add_argument("--json", action="store_true")
    _common(rep, 3600.0)
    rep.set_defaults(func=cmd_repeatability)

    ds = sub.add_parser("dataset", help="reviewed cells as a dataset for linevision train")
    ds_sub = ds.add_subparsers(dest="dataset_command", required=True)
    exp = ds_sub.add_parser("export", help="write the reviewed cells in the folder contract")
    exp.add_argument("--station", required=True)
    exp.add_argument("--since", default=None, help="a date (2026-12-01[T06:00]) or age (7d, 12h)")
    exp.add_argument("--out", required=True, type=Path, help="a new (or empty) folder")
    exp.add_argument("--config", required=True, type=Path, help="the daemon's configuration")
    exp.add_argument("--archive", type=Path, default=None, help="override the archive folder")
    exp.add_argument("--review-dir", type=Path, default=None, help="override review.dir")
    exp.add_argument(
        "--recipe", default=None, help="only cells of this recipe (its reference goes with them)"
    )
    exp.set_defaults(func=cmd_dataset)
