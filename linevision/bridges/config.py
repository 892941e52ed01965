"""Bridge configuration files: frozen pydantic models, extra="forbid", no I/O."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from linevision.config import (
    CurveClientConfig,
    is_loopback_endpoint,
    parse_yaml_model,
)

MODBUS_MAX_WRITE = 123
"""Registers one Modbus "write multiple registers" request may carry."""

SLOT_FIELDS = {"seq": 0, "cell_id": 2, "station": 4, "verdict": 5, "reason": 6}
"""Register offsets inside one result slot (seq and cell_id are 32-bit, high word first)."""
SLOT_MIN_STRIDE = 7

T = TypeVar("T", bound=BaseModel)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SourceConfig(_Model):
    """Where verdicts come from: the daemon's PUB and replay endpoints."""

    verdicts: str = "tcp://127.0.0.1:5556"
    replay: str | None = "tcp://127.0.0.1:5557"
    curve: CurveClientConfig | None = None
    heartbeat_timeout_s: float = Field(default=3.0, gt=0, le=600)
    """No heartbeat or verdict for this long: the daemon is down (alarm, status bit cleared)."""
    recover_timeout_s: float = Field(default=2.0, gt=0, le=600)
    """How long to keep asking the replay endpoint for a gap before declaring it lost."""
    replay_timeout_s: float = Field(default=0.5, gt=0, le=60)

    @model_validator(mode="after")
    def _loopback_without_keys(self) -> SourceConfig:
        if self.curve is not None:
            return self
        for endpoint in (self.verdicts, self.replay):
            if endpoint is not None and not is_loopback_endpoint(endpoint):
                msg = f"{endpoint!r} is not loopback: set source.curve to talk to another host"
                raise ValueError(msg)
        return self


class ReportConfig(_Model):
    """The bridge's own PUB socket: ``alarm.<name>`` and ``reject.<name>`` messages."""

    publish: str = "tcp://127.0.0.1:5558"

    @model_validator(mode="after")
    def _loopback_only(self) -> ReportConfig:
        if not is_loopback_endpoint(self.publish):
            msg = f"report.publish {self.publish!r} must be loopback, ipc:// or inproc://"
            raise ValueError(msg)
        return self


class Backoff(_Model):
    min_s: float = Field(default=0.05, gt=0, le=60)
    max_s: float = Field(default=2.0, gt=0, le=600)

    @model_validator(mode="after")
    def _ordered(self) -> Backoff:
        if self.max_s < self.min_s:
            msg = "backoff.max_s must be >= backoff.min_s"
            raise ValueError(msg)
        return self


class Handshake(_Model):
    ack_timeout_ms: float = Field(default=500.0, gt=0, le=60000)
    """From result ready to the PLC's ack."""
    clear_timeout_ms: float = Field(default=500.0, gt=0, le=60000)
    """From ready cleared to the PLC clearing its ack (the PLC is idle again)."""
    poll_ms: float = Field(default=2.0, gt=0, le=1000)
    late_after_ms: float = Field(default=250.0, gt=0)
    """A verdict handed over later than this after it was published raises ``late_delivery``."""


class ModbusMap(_Model):
    """Holding-register addresses (0-based, as on the wire). 32-bit values: high word first."""

    ready: int = Field(default=0, ge=0, le=65535)
    ack: int = Field(default=1, ge=0, le=65535)
    heartbeat: int = Field(default=2, ge=0, le=65535)
    status: int = Field(default=3, ge=0, le=65535)
    lost: int = Field(default=4, ge=0, le=65534)
    count: int = Field(default=6, ge=0, le=65535)
    run_tag: int = Field(default=7, ge=0, le=65534)
    slot_base: int = Field(default=9, ge=0, le=65535)
    slot_stride: int = Field(default=8, ge=SLOT_MIN_STRIDE, le=64)
    slots: int = Field(default=8, ge=1, le=32)

    def addresses(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {
            "ready": [self.ready],
            "ack": [self.ack],
            "heartbeat": [self.heartbeat],
            "status": [self.status],
            "lost": [self.lost, self.lost + 1],
            "count": [self.count],
            "run_tag": [self.run_tag, self.run_tag + 1],
        }
        end = self.slot_base + self.slots * self.slot_stride
        out["slots"] = list(range(self.slot_base, end))
        return out

    @model_validator(mode="after")
    def _no_overlap(self) -> ModbusMap:
        seen: dict[int, str] = {}
        for name, addrs in self.addresses().items():
            for a in addrs:
                if a > 65535:
                    msg = f"plc.map.{name} runs past register 65535"
                    raise ValueError(msg)
                if a in seen:
                    msg = f"plc.map.{name} overlaps plc.map.{seen[a]} at register {a}"
                    raise ValueError(msg)
                seen[a] = name
        if self.slots * self.slot_stride > MODBUS_MAX_WRITE:
            msg = f"plc.map: slots * slot_stride must be <= {MODBUS_MAX_WRITE} (one write)"
            raise ValueError(msg)
        return self


class ModbusTarget(_Model):
    kind: Literal["modbus"]
    host: str
    port: int = Field(default=502, ge=1, le=65535)
    device_id: int = Field(default=1, ge=0, le=255)
    timeout_s: float = Field(default=1.0, gt=0, le=60)
    map: ModbusMap = ModbusMap()


class OpcUaNodes(_Model):
    """Node ids; with ``namespace_uri`` set, write them without ``ns=`` (e.g. ``s=Lv.Ready``)."""

    ready: str = "s=Linevision.Ready"
    ack: str = "s=Linevision.Ack"
    heartbeat: str = "s=Linevision.Heartbeat"
    status: str = "s=Linevision.Status"
    lost: str = "s=Linevision.Lost"
    count: str = "s=Linevision.Count"
    run_tag: str = "s=Linevision.RunTag"
    seq: str = "s=Linevision.Seq"
    cell_id: str = "s=Linevision.CellId"
    station: str = "s=Linevision.Station"
    verdict: str = "s=Linevision.Verdict"
    reason: str = "s=Linevision.Reason"


class OpcUaTarget(_Model):
    kind: Literal["opcua"]
    url: str = Field(pattern=r"^opc\.tcp://")
    namespace_uri: str | None = "urn:linevision:plc"
    nodes: OpcUaNodes = OpcUaNodes()
    slots: int = Field(default=8, ge=1, le=256)
    timeout_s: float = Field(default=2.0, gt=0, le=60)


class S7Target(_Model):
    """Siemens S7 (ISO-on-TCP): one data block laid out like the Modbus map, a word per
    register (byte offset = 2 x register address, big-endian, as S7 stores it)."""

    kind: Literal["s7"]
    host: str
    port: int = Field(default=102, ge=1, le=65535)
    rack: int = Field(default=0, ge=0, le=7)
    slot: int = Field(default=1, ge=0, le=31)
    db: int = Field(ge=1, le=65535)
    timeout_s: float = Field(default=1.0, gt=0, le=60)
    map: ModbusMap = ModbusMap()


PlcTarget = Annotated[ModbusTarget | OpcUaTarget | S7Target, Field(discriminator="kind")]


class PlcBridgeConfig(_Model):
    name: str = Field(default="plc", pattern=r"^[a-z0-9_]+$")
    source: SourceConfig = SourceConfig()
    report: ReportConfig = ReportConfig()
    plc: PlcTarget
    stations: dict[str, int] = Field(min_length=1)
    """Station name -> station code written to the PLC (1..65535). Others are not sent."""
    handshake: Handshake = Handshake()
    backoff: Backoff = Backoff()
    heartbeat_s: float = Field(default=1.0, gt=0, le=60)
    state_file: Path | None = None
    """Last verdict the PLC acknowledged; after a restart the bridge resumes after it."""

    @model_validator(mode="after")
    def _station_codes(self) -> PlcBridgeConfig:
        for station, code in self.stations.items():
            if not 1 <= code <= 65535:
                msg = f"stations.{station}: code must be 1..65535"
                raise ValueError(msg)
        codes = list(self.stations.values())
        if len(set(codes)) != len(codes):
            msg = "stations: codes must be unique"
            raise ValueError(msg)
        return self


class ModbusIo(_Model):
    host: str
    port: int = Field(default=502, ge=1, le=65535)
    device_id: int = Field(default=1, ge=0, le=255)
    timeout_s: float = Field(default=0.5, gt=0, le=60)


class Tracking(_Model):
    """Which cell is at the reject station: ``counter - distance``.

    ``counter`` is a register holding a cell count: the inspection trigger count (then
    ``distance`` is the number of cells between the inspection and reject stations), or the
    id of the cell at the reject station as the PLC tracks it (``distance: 0``).
    """

    counter_register: int = Field(ge=0, le=65534)
    table: Literal["holding", "input"] = "holding"
    width: Literal[16, 32] = 32
    distance: int = Field(default=0, ge=0, le=1_000_000)
    poll_ms: float = Field(default=2.0, gt=0, le=1000)
    stations: dict[str, int] = Field(min_length=1)
    """Every station a cell must pass, with the offset from its cell_id to the tracked id."""


class CoilOutput(_Model):
    kind: Literal["modbus_coil"] = "modbus_coil"
    coil: int = Field(ge=0, le=65535)
    pulse_ms: float = Field(default=50.0, gt=0, le=10000)
    cell_register: int | None = Field(default=None, ge=0, le=65534)
    """Optional: the rejected cell's id (32-bit) is written here before the coil is set."""


class RejectBridgeConfig(_Model):
    name: str = Field(default="reject", pattern=r"^[a-z0-9_]+$")
    source: SourceConfig = SourceConfig()
    report: ReportConfig = ReportConfig(publish="tcp://127.0.0.1:5560")
    io: ModbusIo
    tracking: Tracking
    output: CoilOutput
    memory: int = Field(default=100_000, ge=100, le=10_000_000)
    backoff: Backoff = Backoff()


def parse_bridge_config(model: type[T], text: str, source: str) -> T:
    return parse_yaml_model(model, text, source)
