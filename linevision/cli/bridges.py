"""Handing verdicts on: ``bridge``, ``keys`` and ``plant`` (the MQTT broker's view)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from linevision.cli.common import EXIT_CONFIG, EXIT_FAILURE, EXIT_OK, missing_extra


def cmd_bridge(args: argparse.Namespace) -> int:
    # the reject bridge talks Modbus only; the PLC bridge any of the plc extra's protocols
    if args.kind == "mqtt":
        missing = missing_extra("mqtt")
    else:
        missing = missing_extra("plc", ("pymodbus",) if args.kind == "reject" else None)
    if missing is not None:
        print(f"linevision bridge {args.kind}: {missing}", file=sys.stderr)
        return EXIT_FAILURE
    from linevision.bridges.main import run_bridge  # noqa: PLC0415

    return run_bridge(args.kind, args.config, args.log_level)


def cmd_plant(args: argparse.Namespace) -> int:
    missing = missing_extra("mqtt")
    if missing is not None:
        print(f"linevision plant: {missing}", file=sys.stderr)
        return EXIT_FAILURE
    import asyncio  # noqa: PLC0415
    import signal  # noqa: PLC0415

    from linevision import log  # noqa: PLC0415
    from linevision.bridges.mqtt_config import PlantConfig  # noqa: PLC0415
    from linevision.config import ConfigError, parse_yaml_model  # noqa: PLC0415
    from linevision.plant.client import run_plant, write_stats  # noqa: PLC0415

    try:
        if args.config is not None:
            cfg = parse_yaml_model(
                PlantConfig, args.config.read_text(encoding="utf-8"), str(args.config)
            )
        else:
            data = {"broker": {"host": args.host, "port": args.port}, "topic_prefix": args.prefix}
            cfg = PlantConfig.model_validate(data)
    except (ConfigError, OSError, ValueError) as exc:
        print(f"linevision plant: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    log.configure("warning")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if args.duration is not None:
            loop.call_later(args.duration, stop.set)
        view = await run_plant(
            cfg,
            stop,
            client_id=args.client_id,
            interval_s=args.interval,
            as_json=args.json,
            quiet=args.quiet,
        )
        if args.stats is not None:
            write_stats(view, args.stats)

    try:
        asyncio.run(main())
    except OSError as exc:
        print(f"linevision plant: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def cmd_keys_generate(args: argparse.Namespace) -> int:
    if args.opcua:
        return _opcua_certificate(args)
    from linevision.bus.curve import KeyFileError, generate  # noqa: PLC0415

    try:
        public, secret = generate(args.dir, args.name or "linevision")
    except (KeyFileError, OSError) as exc:
        print(f"linevision keys generate: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"public key: {public}\nsecret key: {secret} (mode 600)")
    return EXIT_OK


def _opcua_certificate(args: argparse.Namespace) -> int:
    missing = missing_extra("plc", ("cryptography",))
    if missing is not None:
        print(f"linevision keys generate --opcua: {missing}", file=sys.stderr)
        return EXIT_FAILURE
    from linevision.bridges import opcua_certs  # noqa: PLC0415

    uri = args.application_uri or opcua_certs.default_application_uri()
    name = args.name or "opcua-client"
    try:
        files = opcua_certs.generate_client(args.dir, name, uri, days=args.days)
    except (opcua_certs.CertificateError, OSError) as exc:
        print(f"linevision keys generate --opcua: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    cert = opcua_certs.load_certificate(files.certificate)
    print(
        f"certificate: {files.certificate} (give it to the OPC UA server to trust)\n"
        f"private key: {files.private_key} (mode 600)\n"
        f"application URI: {uri}\nthumbprint: {opcua_certs.thumbprint(cert)}"
    )
    return EXIT_OK


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bridge = sub.add_parser(
        "bridge", help="hand verdicts on (PLC, reject actuator, the plant's MQTT broker)"
    )
    bridge.add_argument("kind", choices=("plc", "reject", "mqtt"))
    bridge.add_argument("--config", type=Path, required=True)
    bridge.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error")
    )
    bridge.set_defaults(func=cmd_bridge)

    plant = sub.add_parser(
        "plant", help="the plant view: each line's state, yield and alarms from the MQTT broker"
    )
    plant.add_argument("--config", type=Path, default=None, help="broker: and topic_prefix:")
    plant.add_argument("--host", default="127.0.0.1", help="without --config (loopback only)")
    plant.add_argument("--port", type=int, default=1883)
    plant.add_argument("--prefix", default="linevision", help="the topic tree's first level")
    plant.add_argument("--client-id", default=None, help="the persistent session's name")
    plant.add_argument("--interval", type=float, default=2.0, help="seconds between prints")
    plant.add_argument("--json", action="store_true", help="one JSON snapshot per print")
    plant.add_argument("--quiet", action="store_true", help="print nothing (with --stats)")
    plant.add_argument("--duration", type=float, default=None, help="exit after S seconds")
    plant.add_argument("--stats", type=Path, default=None, help="write the last snapshot here")
    plant.set_defaults(func=cmd_plant)

    keys = sub.add_parser(
        "keys", help="CURVE keys for the bus sockets, the OPC UA client certificate"
    )
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    gen = keys_sub.add_parser(
        "generate",
        help="write NAME.key and NAME.key_secret into DIR "
        "(--opcua: NAME-cert.der and NAME-key.pem)",
    )
    gen.add_argument("dir", type=Path)
    gen.add_argument(
        "--name", default=None, help="file name (default linevision; opcua-client with --opcua)"
    )
    gen.add_argument(
        "--opcua",
        action="store_true",
        help="an OPC UA client certificate and key for the PLC bridge (docs/plc.md)",
    )
    gen.add_argument(
        "--application-uri",
        default=None,
        help="with --opcua: the application URI (default urn:<host>:linevision:bridge)",
    )
    gen.add_argument(
        "--days", type=int, default=1825, help="with --opcua: validity in days (default 1825)"
    )
    gen.set_defaults(func=cmd_keys_generate)
