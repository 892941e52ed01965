"""The MQTT topic tree and its payloads (schema 1); docs/plant.md is the contract.

``<prefix>/<site>/<line>/<station>/verdict``   QoS 1; the bus payload plus ``site`` and ``line``
``<prefix>/<site>/<line>/<station>/yield``     QoS 1, retained; the shift's OK/NG by reason
``<prefix>/<site>/<line>/<station>/alarm``     QoS 1, retained; the station's active alarms
``<prefix>/<site>/<line>/alarm``               QoS 1, retained; the line's active alarms
``<prefix>/<site>/<line>/state``               QoS 1, retained; birth, death (Last Will)
``<prefix>/<site>/<line>/lost``                QoS 1; verdicts the bridge could not recover
``<prefix>/<site>/<line>/health``              QoS 0, expires; the bridge's backlog and counts
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from linevision.bus.wire import VerdictMessage, WireModel

SCHEMA = 1
LINE_TOPICS = ("state", "alarm", "lost", "health")
STATION_TOPICS = ("verdict", "yield", "alarm")

Status = Literal["running", "daemon_down", "starting", "offline"]


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class MqttVerdict(VerdictMessage):
    """A verdict as published on MQTT: the bus payload plus where it comes from."""

    site: str
    line: str


class StationIdentity(_Wire):
    recipe: str | None
    model: WireModel | None


class LineState(_Wire):
    """Retained on ``.../state``: the bridge's birth, its updates, and its death (the Will)."""

    schema_: Literal[1] = Field(alias="schema")
    site: str
    line: str
    bridge: str
    status: Status
    """``running``: bridge and daemon up; ``daemon_down``: the bridge hears no daemon;
    ``starting``: not heard from the daemon yet; ``offline``: the bridge is gone."""
    reason: Literal["bridge_lost", "bridge_stopped"] | None
    """Why ``offline``: the broker lost the bridge (the Will), or it stopped cleanly."""
    run_id: str | None
    recipe: str | None
    """The recipe every station runs (None: none configured, or the stations differ)."""
    stations: dict[str, StationIdentity]
    t_ns: int
    """When this state was made (for the Will: when the bridge connected)."""


class YieldReport(_Wire):
    """``.../<station>/yield``: retained every period; ``final`` once when the shift ends."""

    schema_: Literal[1] = Field(alias="schema")
    site: str
    line: str
    station: str
    shift_start: str
    """Local time, ISO 8601 without zone (the line PC's clock)."""
    ok: int = Field(ge=0)
    ng: int = Field(ge=0)
    total: int = Field(ge=0)
    yield_: float | None = Field(alias="yield")
    ng_by_reason: dict[str, int]
    """``defect`` for a model's NG, otherwise the fault reason (``timeout``, ``bad_frame``...)."""
    final: bool
    revision: int = Field(ge=0)
    """0 for the first final of a shift; +1 for each correction (verdicts counted late)."""
    t_ns: int


class ActiveAlarm(_Wire):
    source: str
    """``daemon``, this bridge's name, another bridge's name, or the station."""
    alarm: str
    severity: Literal["info", "warning", "error"]
    detail: dict[str, object]
    since_ns: int


class AlarmState(_Wire):
    """``.../alarm`` (line) and ``.../<station>/alarm``: every active alarm, retained."""

    schema_: Literal[1] = Field(alias="schema")
    site: str
    line: str
    station: str | None
    active: list[ActiveAlarm]
    t_ns: int


class LostReport(_Wire):
    schema_: Literal[1] = Field(alias="schema")
    site: str
    line: str
    run_id: str
    first_seq: int
    last_seq: int | None
    """None: the end of the run is unknown."""
    reason: str
    t_ns: int


class MqttHealth(_Wire):
    schema_: Literal[1] = Field(alias="schema")
    site: str
    line: str
    bridge: str
    daemon_alive: bool | None
    backlog: int = Field(ge=0)
    """Messages in the outbox not yet acknowledged by the broker."""
    acked_run_id: str | None
    acked_seq: int | None
    lost: int = Field(ge=0)
    counters: dict[str, int]
    t_ns: int


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed topic of the tree: ``station`` is None for a line topic."""

    site: str
    line: str
    station: str | None
    kind: str


def line_topic(prefix: str, site: str, line: str, kind: str) -> str:
    return f"{prefix}/{site}/{line}/{kind}"


def station_topic(prefix: str, site: str, line: str, station: str, kind: str) -> str:
    return f"{prefix}/{site}/{line}/{station}/{kind}"


def parse_topic(prefix: str, topic: str) -> Topic | None:
    """``linevision/s/l/pole_piece/verdict`` -> Topic(s, l, pole_piece, verdict); None if
    the topic is not one of the tree's."""
    if not topic.startswith(prefix + "/"):
        return None
    parts = topic[len(prefix) + 1 :].split("/")
    if len(parts) == 3 and parts[2] in LINE_TOPICS:
        return Topic(parts[0], parts[1], None, parts[2])
    if len(parts) == 4 and parts[3] in STATION_TOPICS:
        return Topic(parts[0], parts[1], parts[2], parts[3])
    return None


Payload = MqttVerdict | LineState | YieldReport | AlarmState | LostReport | MqttHealth
_MODELS: dict[tuple[bool, str], type[Payload]] = {
    (True, "verdict"): MqttVerdict,
    (True, "yield"): YieldReport,
    (True, "alarm"): AlarmState,
    (False, "alarm"): AlarmState,
    (False, "state"): LineState,
    (False, "lost"): LostReport,
    (False, "health"): MqttHealth,
}


class PayloadError(ValueError):
    """A message on the tree that does not match its topic's model."""


def parse_payload(topic: Topic, payload: bytes) -> Payload:
    model = _MODELS[(topic.station is not None, topic.kind)]
    try:
        msg = model.model_validate_json(payload)
    except ValidationError as exc:
        text = f"malformed {topic.kind} payload: {str(exc)[:300]}"
        raise PayloadError(text) from exc
    if (msg.site, msg.line) != (topic.site, topic.line):
        text = f"payload names {msg.site}/{msg.line}, topic {topic.site}/{topic.line}"
        raise PayloadError(text)
    station = getattr(msg, "station", None)
    if topic.station is not None and station != topic.station:
        text = f"payload names station {station!r}, topic {topic.station!r}"
        raise PayloadError(text)
    return msg
