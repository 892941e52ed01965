"""``linevision model``: shadow a candidate, report, promote, roll back (docs/lifecycle.md)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from linevision.cli.common import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK
from linevision.cli.lifecycle import FailedError, control, endpoint_of, user_name
from linevision.config import ConfigError


def _request(args: argparse.Namespace, body: dict[str, object]) -> dict[str, object]:
    return control(endpoint_of(args), body, args.timeout)


def _body(args: argparse.Namespace) -> dict[str, object]:
    cmd = args.model_command
    body: dict[str, object] = {"cmd": f"model.{cmd}"}
    if cmd in ("shadow", "unshadow", "promote", "rollback"):
        body["station"] = args.station
    if cmd in ("shadow", "promote", "rollback"):
        body["user"] = user_name(args.user)
    if cmd == "shadow" or (cmd == "promote" and args.model is not None):
        # the daemon runs elsewhere: a folder relative to here means nothing to it
        body["model"] = str(Path(args.model).resolve())
    if cmd == "promote" and args.force:
        body["force"] = "true"
    if cmd == "report" and args.station:
        body["station"] = args.station
    return body


def cmd_model(args: argparse.Namespace) -> int:
    from linevision.lifecycle.shadow_report import format_report, shadow_report  # noqa: PLC0415

    try:
        if args.model_command == "report" and args.session is not None:
            reply: dict[str, object] = shadow_report(args.session)
        else:
            reply = _request(args, _body(args))
            reply.pop("ok", None)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    except (FailedError, ValueError) as exc:
        print(f"linevision model: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if args.model_command == "report" and not args.json:
        print(format_report(reply))
    else:
        print(json.dumps(reply, indent=2, default=str))
    return EXIT_OK


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    model = sub.add_parser("model", help="shadow, report, promote and roll back station models")
    msub = model.add_subparsers(dest="model_command", required=True)
    shadow = msub.add_parser("shadow", help="run a candidate beside the active model")
    shadow.add_argument("--station", required=True)
    shadow.add_argument("--model", required=True, type=Path, help="the candidate's folder")
    unshadow = msub.add_parser("unshadow", help="stop a station's shadow")
    unshadow.add_argument("--station", required=True)
    report = msub.add_parser("report", help="agreement, confusion, correlation, disagreements")
    report.add_argument("--station", default=None)
    report.add_argument("--session", type=Path, default=None, help="a shadow session's folder")
    report.add_argument("--json", action="store_true")
    msub.add_parser("status", help="active model, shadow and roll-back per station")
    promote = msub.add_parser("promote", help="make the candidate the active model (audited)")
    promote.add_argument("--station", required=True)
    promote.add_argument("--model", default=None, help="default: the station's shadow")
    promote.add_argument("--force", action="store_true", help="without a full shadow report")
    rollback = msub.add_parser("rollback", help="back to the model before the last promotion")
    rollback.add_argument("--station", required=True)
    for sp in msub.choices.values():
        sp.add_argument("--user", default=None, help="who does it (default: the login name)")
        sp.add_argument("--config", type=Path, default=None, help="the daemon's configuration")
        sp.add_argument("--endpoint", default=None, help="override control.endpoint")
        sp.add_argument("--timeout", type=float, default=120.0)
        sp.set_defaults(func=cmd_model)
