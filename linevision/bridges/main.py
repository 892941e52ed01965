"""The shell of ``linevision bridge plc|reject|mqtt``: read the file, run until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import ssl
import sys
from pathlib import Path
from typing import Literal

import zmq

from linevision import log
from linevision.bridges.config import PlcBridgeConfig, RejectBridgeConfig, parse_bridge_config
from linevision.bridges.mqtt_config import MqttBridgeConfig
from linevision.bus.curve import KeyFileError
from linevision.config import ConfigError
from linevision.paths import credential

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2

logger = log.get_logger(__name__)


Kind = Literal["plc", "reject", "mqtt"]
AnyBridgeConfig = PlcBridgeConfig | RejectBridgeConfig | MqttBridgeConfig


def load(kind: Kind, path: Path) -> AnyBridgeConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        msg = f"{path}: cannot read: {exc.strerror}"
        raise ConfigError(msg) from exc
    if kind == "plc":
        return parse_bridge_config(PlcBridgeConfig, text, str(path))
    if kind == "mqtt":
        return parse_bridge_config(MqttBridgeConfig, text, str(path))
    return parse_bridge_config(RejectBridgeConfig, text, str(path))


def file_problems(cfg: AnyBridgeConfig) -> list[str]:
    """What ``check-config`` finds wrong with the files a bridge config names (I/O here,
    never in the validators): the MQTT broker's password file, CA and client pair."""
    if not isinstance(cfg, MqttBridgeConfig):
        return []
    broker = cfg.broker
    problems: list[str] = []
    if broker.password_file is not None:
        path = credential(broker.password_file)
        try:
            if not path.read_text(encoding="utf-8").strip():
                problems.append(f"broker.password_file {path}: empty")
        except OSError as exc:
            problems.append(f"broker.password_file {path}: {exc.strerror}")
    if broker.tls is not None:
        try:
            ctx = ssl.create_default_context(cafile=str(credential(broker.tls.ca)))
            if broker.tls.certificate is not None and broker.tls.private_key is not None:
                cert = credential(broker.tls.certificate)
                ctx.load_cert_chain(str(cert), str(credential(broker.tls.private_key)))
        except (OSError, ssl.SSLError) as exc:
            problems.append(f"broker.tls: {exc}")
    return problems


async def _serve(cfg: AnyBridgeConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if isinstance(cfg, PlcBridgeConfig):
        from linevision.bridges.plc import run_plc_bridge  # noqa: PLC0415

        await run_plc_bridge(cfg, stop)
    elif isinstance(cfg, MqttBridgeConfig):
        from linevision.bridges.mqtt import run_mqtt_bridge  # noqa: PLC0415

        await run_mqtt_bridge(cfg, stop)
    else:
        from linevision.bridges.reject import run_reject_bridge  # noqa: PLC0415

        await run_reject_bridge(cfg, stop)


def run_bridge(
    kind: Kind,
    path: Path,
    level: Literal["debug", "info", "warning", "error"] = "info",
) -> int:
    try:
        cfg = load(kind, path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)  # noqa: T201
        return EXIT_CONFIG
    log.configure(level)
    try:
        asyncio.run(_serve(cfg))
    except (KeyFileError, zmq.ZMQError, OSError, ExceptionGroup) as exc:
        logger.exception("bridge_failed", bridge=kind, error=str(exc))
        print(f"linevision bridge {kind}: {exc}", file=sys.stderr)  # noqa: T201
        return EXIT_FAILURE
    return EXIT_OK
