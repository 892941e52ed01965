"""The shell of ``linevision bridge plc|reject``: read the file, run until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Literal

import zmq

from linevision import log
from linevision.bridges.config import PlcBridgeConfig, RejectBridgeConfig, parse_bridge_config
from linevision.config import ConfigError
from linevision.keys import KeyFileError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2

logger = log.get_logger(__name__)


def load(kind: Literal["plc", "reject"], path: Path) -> PlcBridgeConfig | RejectBridgeConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        msg = f"{path}: cannot read: {exc.strerror}"
        raise ConfigError(msg) from exc
    if kind == "plc":
        return parse_bridge_config(PlcBridgeConfig, text, str(path))
    return parse_bridge_config(RejectBridgeConfig, text, str(path))


async def _serve(cfg: PlcBridgeConfig | RejectBridgeConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if isinstance(cfg, PlcBridgeConfig):
        from linevision.bridges.plc import run_plc_bridge  # noqa: PLC0415

        await run_plc_bridge(cfg, stop)
    else:
        from linevision.bridges.reject import run_reject_bridge  # noqa: PLC0415

        await run_reject_bridge(cfg, stop)


def run_bridge(
    kind: Literal["plc", "reject"],
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
