"""Other bridges' reports (``health.<bridge>``, ``alarm.<bridge>``) into the MQTT bridge's
alarm board: one asyncio SUB socket per configured endpoint (``alarms_from``)."""

from __future__ import annotations

import asyncio
import time

import zmq
import zmq.asyncio

from linevision.bridges.alarms import (
    ALARM_PREFIX,
    HEALTH_PREFIX,
    AlarmMessage,
    BridgeHealth,
    ReportError,
    parse_report,
)
from linevision.bridges.mqtt_alarms import AlarmBoard
from linevision.bus.subscriber import open_sub
from linevision.bus.wire import context
from linevision.log import RateLimitedLog, get_logger

log = get_logger(__name__)


async def watch_reports(endpoint: str, board: AlarmBoard, stop: asyncio.Event) -> None:
    bad = RateLimitedLog(log)
    sock = open_sub(zmq.asyncio.Context(context()), endpoint, (ALARM_PREFIX, HEALTH_PREFIX))
    try:
        while not stop.is_set():
            if not await sock.poll(200):
                continue
            frames = await sock.recv_multipart()
            if len(frames) != 2:
                bad.warning("report_invalid", endpoint=endpoint, frames=len(frames))
                continue
            try:
                msg = parse_report(frames[0], frames[1])
            except ReportError as exc:
                bad.warning("report_invalid", endpoint=endpoint, error=str(exc)[:300])
                continue
            if isinstance(msg, AlarmMessage | BridgeHealth):
                board.report(endpoint, msg, time.time_ns())
    finally:
        sock.close(0)
