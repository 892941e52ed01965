"""Bridge configuration files: frozen pydantic models, extra="forbid", no I/O."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from linevision.config import (
    CurveClientConfig,
    is_loopback_endpoint,
    is_loopback_host,
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
    challenge_request: int | None = Field(default=None, ge=0, le=65535)
    """Written by the PLC: 1 asks the daemon for a challenge run (of every station the
    bridge sends); the bridge writes 0 back once the daemon took the request."""

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
        if self.challenge_request is not None:
            out["challenge_request"] = [self.challenge_request]
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
        lo, hi = self.block_span()
        if hi - lo + 1 > MODBUS_MAX_WRITE:
            msg = (
                f"plc.map: count, run_tag and the slots span registers {lo}..{hi}; they must "
                f"fit in {MODBUS_MAX_WRITE} registers (a block is one write)"
            )
            raise ValueError(msg)
        addresses = self.addresses()
        for name in ("ready", "ack", "heartbeat", "status", "lost", "challenge_request"):
            inside = [a for a in addresses.get(name, []) if lo <= a <= hi]
            if inside:
                msg = (
                    f"plc.map.{name} lies inside the block (registers {lo}..{hi}: count, "
                    "run_tag and the slots, written in one request); move it out"
                )
                raise ValueError(msg)
        return self

    def block_span(self) -> tuple[int, int]:
        """First and last register of a block: count, run tag and every slot."""
        end = self.slot_base + self.slots * self.slot_stride - 1
        return min(self.count, self.run_tag, self.slot_base), max(self.count, self.run_tag + 1, end)


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
    challenge_request: str | None = None
    """A Boolean the PLC sets to ask for a challenge run (e.g. ``s=Linevision.ChallengeRequest``);
    the bridge sets it back to false once the daemon took the request."""


def _one_or_many(value: object) -> object:
    return [value] if isinstance(value, str | Path) else value


class OpcUaSecurity(_Model):
    """The secure channel: the bridge's certificate and key, and the servers it trusts.

    Relative paths are taken from ``$CREDENTIALS_DIRECTORY`` when that is set.
    """

    policy: Literal["Basic256Sha256"] = "Basic256Sha256"
    mode: Literal["SignAndEncrypt"] = "SignAndEncrypt"
    certificate: Path
    """The bridge's certificate (DER or PEM), from ``linevision keys generate --opcua``."""
    private_key: Path
    """Its private key (PEM or DER, unencrypted, mode 600)."""
    trust: Annotated[tuple[Path, ...], BeforeValidator(_one_or_many)] = Field(min_length=1)
    """Folders and/or files of trusted server certificates: the server's must be among them."""


class OpcUaUser(_Model):
    name: str = Field(min_length=1)
    password_file: Path
    """A file holding the password (mode 600; relative: ``$CREDENTIALS_DIRECTORY``)."""


class OpcUaTarget(_Model):
    kind: Literal["opcua"]
    url: str = Field(pattern=r"^opc\.tcp://")
    namespace_uri: str | None = "urn:linevision:plc"
    nodes: OpcUaNodes = OpcUaNodes()
    slots: int = Field(default=8, ge=1, le=256)
    timeout_s: float = Field(default=2.0, gt=0, le=60)
    security: OpcUaSecurity | None = None
    """None: no security (policy None), refused off loopback unless ``allow_insecure``."""
    user: OpcUaUser | None = None
    """None: anonymous session."""
    allow_insecure: bool = False
    """Accept a non-loopback ``url`` without ``security`` (anyone on the network can write)."""

    @model_validator(mode="after")
    def _secured_off_loopback(self) -> OpcUaTarget:
        host = urlsplit(self.url).hostname or ""
        if self.security is None and not is_loopback_host(host) and not self.allow_insecure:
            msg = (
                f"plc.url {self.url!r} is not loopback: set plc.security "
                "(Basic256Sha256 SignAndEncrypt), or plc.allow_insecure: true to accept "
                "an unsecured connection"
            )
            raise ValueError(msg)
        if self.user is not None and self.security is None:
            msg = "plc.user needs plc.security: a password is never sent unencrypted"
            raise ValueError(msg)
        return self


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


class ChallengeLink(_Model):
    """Where the bridge passes the PLC's challenge request: the daemon's control socket."""

    control: str = "tcp://127.0.0.1:5559"
    timeout_s: float = Field(default=5.0, gt=0, le=60)

    @model_validator(mode="after")
    def _loopback_only(self) -> ChallengeLink:
        if not is_loopback_endpoint(self.control):
            msg = f"challenge.control {self.control!r} must be loopback, ipc:// or inproc://"
            raise ValueError(msg)
        return self


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
    challenge: ChallengeLink | None = None
    """With ``plc.map.challenge_request`` (``plc.nodes.challenge_request``): where the PLC's
    request for a challenge run goes (docs/plc.md, "Vision verified")."""

    def challenge_request(self) -> int | str | None:
        """The PLC's request register (Modbus, S7) or node (OPC UA), if any."""
        if self.plc.kind == "opcua":
            return self.plc.nodes.challenge_request
        return self.plc.map.challenge_request

    @model_validator(mode="after")
    def _request_goes_somewhere(self) -> PlcBridgeConfig:
        if self.challenge_request() is not None and self.challenge is None:
            msg = "plc: a challenge_request register or node needs challenge.control"
            raise ValueError(msg)
        return self

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
    max_step: int = Field(default=4, ge=1, le=1000)
    """The most cells the counter may move forward between two reads (a late read); the
    cells it skipped are reported missed. A larger step, a step backward or to 0 is a
    counter jump, handled by ``on_jump``. A wrap (65535 -> 0, 2^32-1 -> 0) is a step of 1."""
    stations: dict[str, int] = Field(min_length=1)
    """Every station a cell must pass, with the offset from its cell_id to the tracked id."""
    phases: dict[str, int] = {}
    """Per station, the counts by which its capture lags the count step of the cell it
    images (default 0: the station's camera is triggered by the count step itself). Used to
    learn and check the numbering from capture times (docs/plc.md, "Counter jumps")."""

    @model_validator(mode="after")
    def _phases_of_stations(self) -> Tracking:
        for name in self.phases:
            if name not in self.stations:
                msg = f"tracking.phases.{name}: not a station in tracking.stations"
                raise ValueError(msg)
        return self


class CoilOutput(_Model):
    kind: Literal["modbus_coil"] = "modbus_coil"
    coil: int = Field(ge=0, le=65535)
    pulse_ms: float = Field(default=50.0, gt=0, le=10000)
    cell_register: int | None = Field(default=None, ge=0, le=65534)
    """Optional: the rejected cell's id (32-bit) is written here before the coil is set."""
    decision_register: int | None = Field(default=None, ge=0, le=65533)
    """Optional, recommended: every decided cell, pass or reject, as three holding registers
    in one write: the counter value that put the cell at the station (32-bit, high word
    first) and 1 (pass) or 2 (reject). A station that latches it rejects every cell whose
    pass did not arrive while it stood there (docs/plc.md, "The reject interlock")."""


class StopOutput(_Model):
    """What stops the line: a coil set to 1, or a holding register set to ``value``."""

    coil: int | None = Field(default=None, ge=0, le=65535)
    holding_register: int | None = Field(default=None, ge=0, le=65535)
    value: int = Field(default=1, ge=0, le=65535)

    @model_validator(mode="after")
    def _one_target(self) -> StopOutput:
        if (self.coil is None) == (self.holding_register is None):
            msg = "on_jump.stop: set exactly one of coil or holding_register"
            raise ValueError(msg)
        return self


class OnJump(_Model):
    """What the bridge does when the counter jumps (forward, backward, reset to 0)."""

    policy: Literal["reject_all", "stop_line"] = "reject_all"
    """``reject_all``: fire for every cell in the window; ``stop_line``: set ``stop``."""
    window: int | None = Field(default=None, ge=1, le=1_000_000)
    """Cells fired after a jump, counted from the cell at the station (default distance + 1:
    that cell and every cell between the inspection and the reject station)."""
    stop: StopOutput | None = None


class RejectBridgeConfig(_Model):
    name: str = Field(default="reject", pattern=r"^[a-z0-9_]+$")
    source: SourceConfig = SourceConfig()
    report: ReportConfig = ReportConfig(publish="tcp://127.0.0.1:5560")
    io: ModbusIo
    tracking: Tracking
    output: CoilOutput
    on_jump: OnJump = OnJump()
    memory: int = Field(default=100_000, ge=100, le=10_000_000)
    """Most cells tracked (at most half the counter's range: 32768 with a 16-bit counter)."""
    backoff: Backoff = Backoff()
    state_file: Path | None = None
    """The shift register on disk (SQLite); default ``reject-<name>.db`` in the state folder."""

    def jump_window(self) -> int:
        w = self.on_jump.window
        return self.tracking.distance + 1 if w is None else w

    @model_validator(mode="after")
    def _registers_apart(self) -> RejectBridgeConfig:
        """The decision, the cell id and the counter are different holding registers."""
        t, out = self.tracking, self.output
        spans: dict[str, tuple[int | None, int]] = {
            "output.decision_register": (out.decision_register, 3),
            "output.cell_register": (out.cell_register, 2),
        }
        if t.table == "holding":
            spans["tracking.counter_register"] = (t.counter_register, t.width // 16)
        taken = [(a, n, name) for name, (a, n) in spans.items() if a is not None]
        for i, (a, n, name) in enumerate(taken):
            for b, m, other in taken[i + 1 :]:
                if a < b + m and b < a + n:
                    msg = f"{name}: registers {a}-{a + n - 1} overlap {other}"
                    raise ValueError(msg)
        return self

    @model_validator(mode="after")
    def _jump_outputs(self) -> RejectBridgeConfig:
        stop = self.on_jump.stop
        if self.on_jump.policy == "stop_line" and stop is None:
            msg = "on_jump.stop: required when on_jump.policy is stop_line"
            raise ValueError(msg)
        if stop is None:
            return self
        if stop.coil is not None and stop.coil == self.output.coil:
            msg = f"on_jump.stop.coil: {stop.coil} is the reject output (output.coil)"
            raise ValueError(msg)
        if stop.holding_register is not None:
            t = self.tracking
            spans = {"output.cell_register": (self.output.cell_register, 2)}
            if t.table == "holding":
                spans["tracking.counter_register"] = (t.counter_register, t.width // 16)
            for name, (first, words) in spans.items():
                if first is not None and first <= stop.holding_register < first + words:
                    msg = f"on_jump.stop.holding_register: {stop.holding_register} overlaps {name}"
                    raise ValueError(msg)
        return self


def parse_bridge_config(model: type[T], text: str, source: str) -> T:
    return parse_yaml_model(model, text, source)
