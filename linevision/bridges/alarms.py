"""What a bridge reports on its own PUB socket: ``alarm.<source>``, ``reject.<station>`` and,
every second, ``health.<bridge>``.

Payloads are UTF-8 JSON in the models below (schema 1), validated by whoever reads them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Literal

import zmq
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from linevision.bus.wire import SCHEMA, context
from linevision.log import get_logger

log = get_logger(__name__)

ALARM_PREFIX = "alarm."
REJECT_PREFIX = "reject."
HEALTH_PREFIX = "health."
HEALTH_PERIOD_S = 1.0

BridgeState = Literal["connected", "retrying", "down"]


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class AlarmMessage(_Wire):
    schema_: Literal[1] = Field(alias="schema")
    source: str
    alarm: str
    """Code, e.g. ``plc_unreachable``, ``verdicts_lost``, ``daemon_down``."""
    severity: Literal["info", "warning", "error"]
    active: bool
    """True when the condition starts (or for a one-off event), False when it clears."""
    detail: dict[str, object]
    t_ns: int


class RejectReport(_Wire):
    schema_: Literal[1] = Field(alias="schema")
    station: str
    cell_id: int
    action: Literal["reject", "pass"]
    reason: Literal["ng", "no_verdict", "ok", "counter_jump"]
    """``counter_jump``: rejected by the ``reject_all`` window after a counter jump."""
    verdicts: dict[str, Literal["OK", "NG"] | None]
    fired: bool
    """The reject output was driven (False for a pass, or when the output failed)."""
    t_ns: int


class BridgeHealth(_Wire):
    schema_: Literal[1] = Field(alias="schema")
    bridge: str
    kind: Literal["plc", "reject", "mqtt"]
    state: BridgeState
    """``connected``: the PLC / reject I/O link / MQTT broker is up; ``retrying``: it is not
    (connecting or backing off); ``down``: the bridge is stopping (its last message)."""
    stream_alive: bool | None
    """The bridge hears the daemon (None: not known yet)."""
    run_id: str | None
    last_seq: int | None
    """PLC bridge: the last seq the PLC acknowledged; reject bridge: the last verdict recorded."""
    backlog: int = Field(ge=0)
    """Verdicts waiting for the PLC, or for the MQTT broker's PUBACK (always 0 for the reject
    bridge)."""
    lost: int = Field(ge=0)
    retries: int = Field(ge=0)
    active: list[str]
    """Codes of the alarm conditions raised and not cleared."""
    counters: dict[str, int]
    interval_s: float = Field(gt=0)
    t_ns: int


class ReportError(ValueError):
    """A report message that does not match the models above."""


def parse_report(topic: bytes, payload: bytes) -> AlarmMessage | RejectReport | BridgeHealth:
    try:
        name = topic.decode("ascii")
        if name.startswith(ALARM_PREFIX):
            return AlarmMessage.model_validate_json(payload)
        if name.startswith(REJECT_PREFIX):
            return RejectReport.model_validate_json(payload)
        if name.startswith(HEALTH_PREFIX):
            health = BridgeHealth.model_validate_json(payload)
            if health.bridge != name[len(HEALTH_PREFIX) :]:
                msg = f"topic {name!r} does not match bridge {health.bridge!r}"
                raise ReportError(msg)
            return health
    except (UnicodeDecodeError, ValidationError) as exc:
        msg = f"malformed report on {topic[:64]!r}: {exc}"
        raise ReportError(msg) from exc
    msg = f"unknown report topic {topic[:64]!r}"
    raise ReportError(msg)


class Reporter:
    """A PUB socket; sending never blocks (a slow reader loses reports, never the bridge)."""

    def __init__(self, endpoint: str, source: str) -> None:
        self.endpoint = endpoint
        self.source = source
        self.sent = 0
        self.active: dict[str, dict[str, object]] = {}
        """Raised conditions and their detail; re-sent by ``repeat`` for late subscribers."""
        self._sock = context().socket(zmq.PUB)
        self._sock.setsockopt(zmq.LINGER, 200)
        self._sock.setsockopt(zmq.SNDHWM, 10_000)
        self._sock.bind(endpoint)

    def close(self) -> None:
        self._sock.close()

    def _send(self, topic: str, body: dict[str, object]) -> None:
        data = json.dumps(body, separators=(",", ":"), default=str).encode()
        try:
            self._sock.send_multipart([topic.encode("ascii"), data], flags=zmq.NOBLOCK)
            self.sent += 1
        except zmq.Again:
            log.warning("report_dropped", topic=topic)

    def alarm(
        self,
        code: str,
        severity: Literal["info", "warning", "error"] = "error",
        **detail: object,
    ) -> None:
        """A one-off event, or the start of a condition (see ``raise_once``/``clear``)."""
        self._emit(code, severity, True, detail)  # noqa: FBT003

    def raise_once(self, code: str, **detail: object) -> None:
        """Alarm on the first occurrence of a lasting condition only."""
        if code not in self.active:
            self.active[code] = detail
            self._emit(code, "error", True, detail)  # noqa: FBT003

    def clear(self, code: str, **detail: object) -> None:
        """The condition raised with ``raise_once`` is gone."""
        if code in self.active:
            del self.active[code]
            self._emit(code, "info", False, detail)  # noqa: FBT003

    def repeat(self) -> None:
        """Send every active condition again, marked ``repeat`` (a subscriber may have joined
        since); :func:`publish_health` calls it every period."""
        for code, detail in self.active.items():
            self._emit(code, "error", True, {**detail, "repeat": True}, quiet=True)  # noqa: FBT003

    def _emit(
        self,
        code: str,
        severity: Literal["info", "warning", "error"],
        active: bool,  # noqa: FBT001
        detail: dict[str, object],
        *,
        quiet: bool = False,
    ) -> None:
        body: dict[str, object] = {
            "schema": SCHEMA,
            "source": self.source,
            "alarm": code,
            "severity": severity,
            "active": active,
            "detail": detail,
            "t_ns": time.time_ns(),
        }
        if not quiet:
            log.warning("alarm", source=self.source, alarm=code, active=active, **detail)
        self._send(ALARM_PREFIX + self.source, body)

    def reject(self, report: RejectReport) -> None:
        data = report.model_dump_json(by_alias=True).encode()
        try:
            self._sock.send_multipart(
                [(REJECT_PREFIX + report.station).encode("ascii"), data], flags=zmq.NOBLOCK
            )
            self.sent += 1
        except zmq.Again:
            log.warning("report_dropped", station=report.station)

    def health(self, health: BridgeHealth) -> None:
        data = health.model_dump_json(by_alias=True).encode()
        try:
            self._sock.send_multipart(
                [(HEALTH_PREFIX + health.bridge).encode("ascii"), data], flags=zmq.NOBLOCK
            )
            self.sent += 1
        except zmq.Again:
            log.warning("report_dropped", bridge=health.bridge)


async def publish_health(
    reporter: Reporter,
    snapshot: Callable[[], BridgeHealth],
    stop: asyncio.Event,
    period_s: float = HEALTH_PERIOD_S,
) -> None:
    """Every ``period_s`` until ``stop`` is set: each active alarm again, then ``snapshot()``
    on ``health.<bridge>``.

    Alarms are state, not edges: a subscriber that joins at any moment (the HMI, an auditor,
    or one that reconnects after this bridge restarted) sees every active condition within
    one period, not only the edges sent while it was connected.
    """
    while not stop.is_set():
        reporter.repeat()
        reporter.health(snapshot())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), period_s)
