"""The MQTT bridge's configuration file (``linevision bridge mqtt --config F``): no I/O.

The broker section is shared with ``linevision plant``. Credentials are only ever named by
file; a relative path is taken from ``$CREDENTIALS_DIRECTORY`` when that is set.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from linevision.bridges.config import Backoff, ReportConfig, SourceConfig
from linevision.config import SHIFT_START, is_loopback_endpoint, is_loopback_host

NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
"""A site or line name: one topic level, no MQTT wildcards or separators."""
PREFIX_PATTERN = r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class MqttTls(_Model):
    """TLS to the broker: the CA that signed its certificate, and the bridge's own pair."""

    ca: Path
    """PEM file of the CA (or CAs) the broker's certificate must chain to."""
    certificate: Path | None = None
    """The client certificate (PEM), when the broker asks for one."""
    private_key: Path | None = None
    """Its private key (PEM, unencrypted, mode 600)."""

    @model_validator(mode="after")
    def _pair(self) -> MqttTls:
        if (self.certificate is None) != (self.private_key is None):
            msg = "broker.tls: set both certificate and private_key, or neither"
            raise ValueError(msg)
        return self


class BrokerConfig(_Model):
    host: str = Field(min_length=1)
    port: int | None = Field(default=None, ge=1, le=65535)
    """Default 8883 with TLS, 1883 without."""
    client_id: str | None = Field(default=None, min_length=1, max_length=128)
    """Default ``linevision-<site>-<line>`` for the bridge (unique per line)."""
    keepalive_s: int = Field(default=10, ge=2, le=3600)
    """The broker publishes the Will after 1.5 keepalives without a packet."""
    connect_timeout_s: float = Field(default=5.0, gt=0, le=120)
    tls: MqttTls | None = None
    username: str | None = Field(default=None, min_length=1)
    password_file: Path | None = None
    """A file holding the password (mode 600; relative: ``$CREDENTIALS_DIRECTORY``)."""
    allow_insecure: bool = False
    """Accept a broker off loopback without TLS (anyone on the network reads every verdict)."""

    @property
    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return 8883 if self.tls is not None else 1883

    @model_validator(mode="after")
    def _secured_off_loopback(self) -> BrokerConfig:
        loopback = is_loopback_host(self.host)
        if self.tls is None and not loopback and not self.allow_insecure:
            msg = (
                f"broker.host {self.host!r} is not loopback: set broker.tls (ca, and "
                "certificate + private_key if the broker asks for them), or "
                "broker.allow_insecure: true to accept an unencrypted connection"
            )
            raise ValueError(msg)
        if self.password_file is not None and self.username is None:
            msg = "broker.password_file needs broker.username"
            raise ValueError(msg)
        if self.password_file is not None and self.tls is None and not loopback:
            msg = (
                "broker.password_file needs broker.tls off loopback: a password is never "
                "sent in clear"
            )
            raise ValueError(msg)
        return self


class StoreConfig(_Model):
    """The outbox on disk (SQLite, WAL): what was read from the daemon, until the broker has it."""

    path: Path | None = None
    """Default ``mqtt-<name>.db`` in the state folder (``$STATE_DIRECTORY``)."""
    max_entries: int = Field(default=1_000_000, ge=1_000, le=100_000_000)
    """Messages not yet acknowledged by the broker; past it the oldest are dropped and
    reported lost (about 0.5 KB each: 1,000,000 is about 0.5 GB, 10 hours of a line at
    27 verdicts/s)."""
    resend_s: float = Field(default=30.0, ge=0, le=3600)
    """Acknowledged messages kept this long and sent again after a connection is lost: a
    broker that acknowledges before it has persisted (Mosquitto saves every
    ``autosave_interval``) may lose them when it is killed. Keep it above that interval."""


class YieldConfig(_Model):
    period_s: float = Field(default=60.0, gt=0, le=3600)
    shifts: tuple[str, ...] = ("06:00", "14:00", "22:00")
    """Shift starts, local time (as the operator page's ``hmi.shifts``)."""
    min_yield: float = Field(default=0.95, ge=0, le=1)
    """A station's shift yield below this (after 50 cells) raises ``low_yield``."""

    @model_validator(mode="after")
    def _shifts(self) -> YieldConfig:
        for start in self.shifts:
            if not re.match(SHIFT_START, start):
                msg = f"yield.shifts: {start!r} is not HH:MM"
                raise ValueError(msg)
        return self


class MqttBridgeConfig(_Model):
    name: str = Field(default="mqtt", pattern=r"^[a-z0-9_]+$")
    site: str = Field(pattern=NAME_PATTERN)
    line: str = Field(pattern=NAME_PATTERN)
    topic_prefix: str = Field(default="linevision", pattern=PREFIX_PATTERN)
    source: SourceConfig = SourceConfig()
    report: ReportConfig = ReportConfig(publish="tcp://127.0.0.1:5562")
    broker: BrokerConfig
    store: StoreConfig = StoreConfig()
    yields: YieldConfig = Field(default=YieldConfig(), alias="yield")
    stations: tuple[str, ...] | None = None
    """Stations whose verdicts are published (None: every station)."""
    alarms_from: tuple[str, ...] = ()
    """Other bridges' report endpoints (their ``report.publish``): their alarms join the
    line's alarm state."""
    window: int = Field(default=64, ge=1, le=1000)
    """Verdicts in flight (published, not yet acknowledged); capped by the broker's Receive
    Maximum."""
    health_period_s: float = Field(default=5.0, gt=0, le=600)
    """The live-only ``.../health`` topic (QoS 0, expires after three periods)."""
    backoff: Backoff = Backoff(min_s=0.2, max_s=10.0)

    @model_validator(mode="after")
    def _endpoints(self) -> MqttBridgeConfig:
        for endpoint in self.alarms_from:
            if not is_loopback_endpoint(endpoint):
                msg = f"alarms_from: {endpoint!r} must be loopback, ipc:// or inproc://"
                raise ValueError(msg)
        return self

    @property
    def client_id(self) -> str:
        return self.broker.client_id or f"linevision-{self.site}-{self.line}"


class PlantConfig(_Model):
    """``linevision plant --config F``: the broker and the topic tree to read."""

    broker: BrokerConfig
    topic_prefix: str = Field(default="linevision", pattern=PREFIX_PATTERN)
    session_expiry_s: int = Field(default=3600, ge=0, le=2**32 - 1)
    """How long the broker keeps the view's session (and queues for it) while it is away."""
