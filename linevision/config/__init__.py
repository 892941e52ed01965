"""The configuration file: frozen pydantic models, no I/O beyond parsing the text."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Literal, TypeVar
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from linevision.config.base import _Model
from linevision.config.cameras import (
    AravisCamera,
    CameraConfig,
    DeviceSelector,
    HarvestersCamera,
    LineScan,
    PylonCamera,
    PylonEmulation,
    ReplayCamera,
    Roi,
    Trigger,
)
from linevision.lifecycle_config import (
    ChallengeConfig,
    DriftConfig,
    ReviewConfig,
    ShadowConfig,
)


def is_loopback_endpoint(endpoint: str) -> bool:
    """True for ``inproc://``, ``ipc://`` and TCP endpoints on a loopback address.

    >>> is_loopback_endpoint("tcp://127.0.0.1:5556")
    True
    >>> is_loopback_endpoint("tcp://0.0.0.0:5556")
    False
    """
    parts = urlsplit(endpoint)
    if parts.scheme in {"inproc", "ipc"}:
        return True
    return parts.scheme == "tcp" and is_loopback_host(parts.hostname or "")


__all__ = [
    "AravisCamera",
    "CameraConfig",
    "DeviceSelector",
    "HarvestersCamera",
    "LineScan",
    "PylonCamera",
    "PylonEmulation",
    "ReplayCamera",
    "Roi",
    "Trigger",
]
"""The camera models live in :mod:`linevision.config.cameras`; re-exported here."""


class DecisionRule(_Model):
    """A classifier's output -> OK/NG.

    OK when the top label is in ``ok_labels`` and its probability is at least ``min_ok_score``;
    otherwise NG with reason ``defect``.
    """

    ok_labels: tuple[str, ...] = ("Normal",)
    min_ok_score: float = Field(default=0.0, ge=0.0, le=1.0)


class StationConfig(_Model):
    """One inspection station.

    ``pole_piece``: one frame per cell, a classifier. ``seal_edge`` and ``six_view``: one
    frame per camera per cell (cameras in view order), compared with ``reference``: an
    image file (one view) or a folder of ``1.png`` ... ``N.png`` (N views). ``blue_film``:
    one line-scan camera (``line_scan``, BGR8) whose strips make the frame; the frame is
    ``roi.width`` wide and ``roi.height * strips_per_cell`` lines long, and the cell may
    take its acquisition time plus ``assembly_ms`` to arrive.
    """

    name: str = Field(min_length=1, pattern=r"^[a-z0-9_]+$")
    type: Literal["pole_piece", "seal_edge", "six_view", "blue_film"]
    cameras: tuple[str, ...] = Field(min_length=1)
    model: Path
    decision: DecisionRule = DecisionRule()
    deadline_ms: float = Field(default=30.0, gt=0, le=60000)
    queue_size: int = Field(default=8, ge=1, le=1024)
    reference: Path | None = None
    assembly_ms: float = Field(default=200.0, ge=0, le=60000)
    """Multi-view cells: how long after its first view a cell may wait for the others."""
    backend: Literal["onnxruntime", "openvino"] | None = None
    """This station's inference backend (None: ``inference.backend``)."""
    precision: Literal["fp32", "int8", "bf16"] | None = None
    """This station's inference precision (None: ``inference.precision``)."""
    challenge: Path | None = None
    """Master samples in the folder contract (docs/data.md) with their expected verdicts,
    at least one OK and one NG: ``linevision challenge run`` (docs/lifecycle.md)."""

    @model_validator(mode="after")
    def _reference_for_comparison(self) -> StationConfig:
        if self.type in ("seal_edge", "six_view") and self.reference is None:
            msg = f"a {self.type} station needs reference (an image file or a folder of views)"
            raise ValueError(msg)
        if self.type == "blue_film" and len(self.cameras) != 1:
            msg = "a blue_film station has one line-scan camera"
            raise ValueError(msg)
        return self


class CurveServerConfig(_Model):
    """CURVE on the verdict and replay sockets: paths to key files, never the keys.

    A relative path is looked up in ``$CREDENTIALS_DIRECTORY`` (systemd credentials).
    """

    secret_key_file: Path
    """The daemon's ``NAME.key_secret`` from ``linevision keys generate``."""
    authorized_keys_dir: Path
    """Folder of the subscribers' public ``*.key`` files; any other client is refused."""


class CurveClientConfig(_Model):
    """A subscriber's key pair and the daemon's public key (relative: $CREDENTIALS_DIRECTORY)."""

    secret_key_file: Path
    server_public_key_file: Path


class JournalConfig(_Model):
    """The bounded on-disk journal of recent verdicts that the replay endpoint serves."""

    path: Path
    max_entries: int = Field(default=100_000, ge=100, le=10_000_000)


class BusConfig(_Model):
    publish: str = "tcp://127.0.0.1:5556"
    heartbeat_s: float = Field(default=1.0, gt=0, le=60)
    replay: str | None = None
    """ROUTER endpoint serving missed verdicts from the journal (None: no replay)."""
    curve: CurveServerConfig | None = None

    @model_validator(mode="after")
    def _loopback_only(self) -> BusConfig:
        if self.curve is not None:
            return self
        for endpoint in (self.publish, self.replay):
            if endpoint is not None and not is_loopback_endpoint(endpoint):
                msg = (
                    f"{endpoint!r} is not a loopback endpoint; "
                    "without CURVE keys only 127.0.0.1 is allowed"
                )
                raise ValueError(msg)
        return self


class InferenceConfig(_Model):
    """``workers`` threads run every station's jobs (earliest deadline first); each
    onnxruntime session uses ``intra_op_threads``. On the 2-core reference line PC:
    2 workers x 1 thread, one busy thread per core."""

    workers: int = Field(default=2, ge=1, le=256)
    intra_op_threads: int = Field(default=1, ge=1, le=256)
    opencv_threads: int = Field(default=1, ge=0, le=256)
    """OpenCV's own thread pool (0: its default, one per core). 1 on the reference PC: the
    pool's workers are the parallelism, and OpenCV's threads on top would compete with them."""
    graph_optimization: Literal["disable", "basic", "extended", "all"] = "all"
    backend: Literal["onnxruntime", "openvino"] = "onnxruntime"
    """The runtime of every station's graphs (a station's ``backend`` overrides it).
    ``openvino`` needs the ``openvino`` extra."""
    precision: Literal["fp32", "int8", "bf16"] | None = None
    """None: each model's graphs at their own precision. ``bf16`` (openvino only) and any
    other choice must be calibrated in the model's manifest (``runtimes``), or the station
    refuses to start."""


class LoggingConfig(_Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


def split_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (IPv6 in brackets) -> ``(host, port)``.

    >>> split_listen("127.0.0.1:8080")
    ('127.0.0.1', 8080)
    >>> split_listen("[::1]:9108")
    ('::1', 9108)
    """
    parts = urlsplit(f"//{listen}")
    if parts.hostname is None or parts.port is None:
        msg = f"{listen!r} is not host:port"
        raise ValueError(msg)
    return parts.hostname, parts.port


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


SHIFT_START = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
"""A shift's start, ``HH:MM`` local time."""


class HmiAlarms(_Model):
    """The page's alarm thresholds besides ``min_yield`` and ``latency_budget_ms`` (which
    raise), with hysteresis: an alarm clears only past a second value, and only once its
    condition has stayed clear for ``clear_after_s``, so a figure near a threshold cannot
    make it flicker. ``latency_clear_ms`` None: 80 % of the budget."""

    yield_clear: float = Field(default=0.97, ge=0, le=1)
    yield_cells: int = Field(default=500, ge=10, le=100_000)
    yield_min_cells: int = Field(default=50, ge=1)
    latency_clear_ms: float | None = Field(default=None, gt=0)
    latency_window_s: float = Field(default=60.0, ge=1, le=3600)
    fault_count: int = Field(default=1, ge=1)
    fault_window_s: float = Field(default=60.0, ge=1, le=3600)
    clear_after_s: float = Field(default=5.0, ge=0, le=3600)


class HmiConfig(_Model):
    """The operator page (``linevision hmi``). Read-only; a token is required off loopback.

    ``token_file`` holds the token; a relative path is looked up in systemd's
    ``$CREDENTIALS_DIRECTORY`` (``LoadCredential=``). ``bus``: the verdict endpoint to
    subscribe to (default ``bus.publish``).
    """

    listen: str = "127.0.0.1:8080"
    token_file: Path | None = None
    bus: str | None = None
    latency_budget_ms: float = Field(default=30.0, gt=0)
    shifts: tuple[str, ...] = ("06:00", "14:00", "22:00")
    push_hz: float = Field(default=5.0, gt=0, le=50)
    min_yield: float = Field(default=0.95, ge=0, le=1)
    curve: CurveClientConfig | None = None
    """Key files for a daemon whose bus uses CURVE (``bus.curve``); never the keys themselves."""
    bridges: tuple[str, ...] = ()
    """The bridges' report endpoints (``report.publish``): health and alarms on the page."""
    alarms: HmiAlarms = HmiAlarms()

    @model_validator(mode="after")
    def _token_off_loopback(self) -> HmiConfig:
        a = self.alarms
        if a.yield_clear < self.min_yield or (a.latency_clear_ms or 0) > self.latency_budget_ms:
            msg = "hmi.alarms: yield_clear must be >= min_yield, latency_clear_ms <= the budget"
            raise ValueError(msg)
        host, _ = split_listen(self.listen)
        if not is_loopback_host(host) and self.token_file is None:
            msg = f"hmi.listen {self.listen!r} is not loopback: set hmi.token_file"
            raise ValueError(msg)
        if self.bus is not None and self.curve is None and not is_loopback_endpoint(self.bus):
            msg = f"hmi.bus {self.bus!r} is not loopback: set hmi.curve"
            raise ValueError(msg)
        for endpoint in self.bridges:
            if not is_loopback_endpoint(endpoint):
                msg = f"hmi.bridges: {endpoint!r} must be loopback, ipc:// or inproc://"
                raise ValueError(msg)
        for start in self.shifts:
            if not re.match(SHIFT_START, start):
                msg = f"hmi.shifts: {start!r} is not HH:MM"
                raise ValueError(msg)
        return self


class MetricsConfig(_Model):
    """The Prometheus endpoint of the daemon (``/metrics``)."""

    enabled: bool = True
    listen: str = "127.0.0.1:9108"

    @model_validator(mode="after")
    def _valid_listen(self) -> MetricsConfig:
        split_listen(self.listen)
        return self


class ArchiveConfig(_Model):
    """Every verdict in SQLite (WAL); NG images and every n-th OK image as JPEG with overlay.

    ``dir`` None: ``$STATE_DIRECTORY/archive`` under systemd, else the user's state folder.
    """

    enabled: bool = True
    dir: Path | None = None
    ok_sample_every: int = Field(default=0, ge=0)
    jpeg_quality: int = Field(default=85, ge=10, le=100)
    max_age_days: float = Field(default=90.0, gt=0)
    max_bytes: int = Field(default=20 * 1024**3, gt=0)
    retention_interval_s: float = Field(default=60.0, gt=0)
    queue_size: int = Field(default=20000, ge=10)
    image_queue_size: int = Field(default=64, ge=1)


class RecipesConfig(_Model):
    """Product recipes: one ``<name>.yaml`` per recipe in ``dir``; ``active`` at first start."""

    dir: Path | None = None
    active: str | None = None

    @model_validator(mode="after")
    def _active_needs_dir(self) -> RecipesConfig:
        if self.active is not None and self.dir is None:
            msg = "recipes.active needs recipes.dir"
            raise ValueError(msg)
        return self


class ControlConfig(_Model):
    """The daemon's control socket (ZeroMQ REP): ``linevision recipe switch`` talks to it."""

    enabled: bool = True
    endpoint: str = "tcp://127.0.0.1:5559"

    @model_validator(mode="after")
    def _loopback_only(self) -> ControlConfig:
        if not is_loopback_endpoint(self.endpoint):
            msg = f"control.endpoint {self.endpoint!r} must be loopback, ipc:// or inproc://"
            raise ValueError(msg)
        return self


class Config(_Model):
    cameras: tuple[CameraConfig, ...] = Field(min_length=1)
    stations: tuple[StationConfig, ...] = Field(min_length=1)
    bus: BusConfig = BusConfig()
    inference: InferenceConfig = InferenceConfig()
    logging: LoggingConfig = LoggingConfig()
    hmi: HmiConfig = HmiConfig()
    metrics: MetricsConfig = MetricsConfig()
    archive: ArchiveConfig = ArchiveConfig()
    recipes: RecipesConfig = RecipesConfig()
    control: ControlConfig = ControlConfig()
    journal: JournalConfig | None = None
    challenge: ChallengeConfig = ChallengeConfig()
    drift: DriftConfig = DriftConfig()
    shadow: ShadowConfig = ShadowConfig()
    review: ReviewConfig = ReviewConfig()

    @model_validator(mode="after")
    def _replay_needs_journal(self) -> Config:
        if self.bus.replay is not None and self.journal is None:
            msg = "bus.replay serves the journal: set journal.path too"
            raise ValueError(msg)
        return self

    @model_validator(mode="after")
    def _cross_references(self) -> Config:
        ids = [c.id for c in self.cameras]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            msg = f"camera ids must be unique, repeated: {', '.join(dup)}"
            raise ValueError(msg)
        names = [s.name for s in self.stations]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            msg = f"station names must be unique, repeated: {', '.join(dup)}"
            raise ValueError(msg)
        used: dict[str, str] = {}
        for station in self.stations:
            for cam in station.cameras:
                if cam not in ids:
                    msg = f"station {station.name!r} names unknown camera {cam!r}"
                    raise ValueError(msg)
                if cam in used:
                    msg = f"camera {cam!r} is used by stations {used[cam]!r} and {station.name!r}"
                    raise ValueError(msg)
                used[cam] = station.name
            if station.type == "blue_film":
                cam_cfg = self.camera(station.cameras[0])
                if cam_cfg.line_scan is None or cam_cfg.pixel_format != "BGR8":
                    msg = (
                        f"station {station.name!r}: camera {cam_cfg.id!r} needs line_scan "
                        "and pixel_format BGR8"
                    )
                    raise ValueError(msg)
        return self

    def camera(self, camera_id: str) -> CameraConfig:
        return next(c for c in self.cameras if c.id == camera_id)


_M = TypeVar("_M", bound=BaseModel)


class ConfigError(Exception):
    """A configuration that cannot be used; the message names each bad field."""


def format_validation_error(err: ValidationError) -> str:
    """One line per problem: ``stations.0.deadline_ms: Input should be greater than 0``."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"{loc}: {e['msg']}")
    return "\n".join(lines)


def parse_yaml_model(model: type[_M], text: str, source: str) -> _M:
    """YAML text -> ``model``; a ConfigError names the source and every bad field."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        msg = f"{source}: not valid YAML: {exc}"
        raise ConfigError(msg) from exc
    if not isinstance(data, dict):
        msg = f"{source}: the top level must be a mapping"
        raise ConfigError(msg)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        msg = f"{source}: invalid configuration\n{format_validation_error(exc)}"
        raise ConfigError(msg) from exc


def parse_config(text: str, source: str = "<config>") -> Config:
    return parse_yaml_model(Config, text, source)
