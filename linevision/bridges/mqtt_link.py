"""One MQTT 5 connection to the broker: a new paho client per connection, events into asyncio.

paho resends its own unacknowledged messages when a client reconnects; a client used for one
connection only never does, so the bridge's outbox is the only copy that is resent, in order.
paho's network thread calls back; each callback is handed to the event loop
(``call_soon_threadsafe``) tagged with the connection it belongs to, so an acknowledgement
from a connection that is gone is never taken for one of the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paho.mqtt.client import Client, ConnectFlags, DisconnectFlags, MQTTMessageInfo
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from linevision.bridges.mqtt_config import BrokerConfig
from linevision.log import get_logger
from linevision.paths import credential

log = get_logger(__name__)

RECEIVE_MAXIMUM_DEFAULT = 65535
"""MQTT 5: a CONNACK without Receive Maximum allows this many QoS 1 messages in flight."""


class LinkError(Exception):
    """The broker cannot be reached or refused us; ``code`` is the alarm raised."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class BrokerConfigError(OSError):
    """A credential or certificate file named by the broker section cannot be used."""


@dataclass(frozen=True, slots=True)
class Message:
    """A received message (``linevision plant``)."""

    topic: str
    payload: bytes
    retain: bool
    user: dict[str, str]
    t_recv_ns: int


def read_secret(path: Path) -> str:
    """A password file (relative: ``$CREDENTIALS_DIRECTORY``); one trailing newline is dropped."""
    full = credential(path)
    try:
        text = full.read_text(encoding="utf-8")
    except OSError as exc:
        msg = f"cannot read broker.password_file {full}: {exc.strerror}"
        raise BrokerConfigError(msg) from exc
    return text.removesuffix("\n")


def tls_context(cfg: BrokerConfig) -> ssl.SSLContext | None:
    """The broker's CA, and the client pair when configured; errors name the file."""
    tls = cfg.tls
    if tls is None:
        return None
    ca = credential(tls.ca)
    try:
        ctx = ssl.create_default_context(cafile=str(ca))
    except (OSError, ssl.SSLError) as exc:
        msg = f"broker.tls.ca {ca}: {exc}"
        raise BrokerConfigError(msg) from exc
    if tls.certificate is not None and tls.private_key is not None:
        cert, key = credential(tls.certificate), credential(tls.private_key)
        try:
            ctx.load_cert_chain(str(cert), str(key))
        except (OSError, ssl.SSLError) as exc:
            msg = f"broker.tls.certificate {cert} / private_key {key}: {exc}"
            raise BrokerConfigError(msg) from exc
    return ctx


def properties(packet: int, **values: Any) -> Properties:
    """MQTT 5 properties; ``user`` is a list of (name, value) user properties."""
    props = Properties(packet)  # type: ignore[no-untyped-call]  # paho leaves it untyped
    for name, value in values.items():
        if value is None:
            continue
        if name == "user":
            props.UserProperty = value
        else:
            setattr(props, name, value)
    return props


def make_client(cfg: BrokerConfig, client_id: str, password: str | None) -> Client:
    client = Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5,
        reconnect_on_failure=False,
    )
    client.connect_timeout = cfg.connect_timeout_s
    client.max_queued_messages_set(0)
    # the bridge keeps within the broker's Receive Maximum itself (known only at CONNACK)
    client.max_inflight_messages_set(RECEIVE_MAXIMUM_DEFAULT)
    ctx = tls_context(cfg)
    if ctx is not None:
        client.tls_set_context(ctx)
    if cfg.username is not None:
        client.username_pw_set(cfg.username, password)
    return client


def connect_error(exc: BaseException, cfg: BrokerConfig) -> LinkError:
    where = f"{cfg.host}:{cfg.effective_port}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return LinkError(
            f"broker {where}: certificate not trusted: {exc.verify_message}", "broker_untrusted"
        )
    if isinstance(exc, ssl.SSLError):
        return LinkError(f"broker {where}: TLS failed: {exc}", "broker_tls")
    return LinkError(f"broker {where} unreachable: {exc}", "broker_unreachable")


def refusal(reason: ReasonCode, cfg: BrokerConfig) -> LinkError:
    code = "broker_auth_refused" if reason.value in (0x86, 0x87, 0x8C) else "broker_refused"
    return LinkError(
        f"broker {cfg.host}:{cfg.effective_port} refused the connection: {reason}", code
    )


class Link:
    """One connection: ``open()``, ``publish()`` while up, ``close()``.

    ``on_ack(mid, ok, reason)`` for each PUBACK; ``on_lost(reason)`` once, when the
    connection ends without ``close()``.
    """

    def __init__(  # noqa: PLR0913  (the broker, who we are, the Will and the callbacks)
        self,
        cfg: BrokerConfig,
        client_id: str,
        password: str | None,
        will: tuple[str, bytes] | None,
        *,
        on_ack: Callable[[int, bool, str], None],
        on_lost: Callable[[str], None],
        on_message: Callable[[Message], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.client = make_client(cfg, client_id, password)
        if will is not None:
            self.client.will_set(
                will[0],
                will[1],
                qos=1,
                retain=True,
                properties=properties(
                    PacketTypes.WILLMESSAGE,
                    ContentType="application/json",
                    PayloadFormatIndicator=1,
                ),
            )
        self.receive_maximum = RECEIVE_MAXIMUM_DEFAULT
        self.session_present = False
        self.up = False
        self._loop = asyncio.get_running_loop()
        self._on_ack = on_ack
        self._on_lost = on_lost
        self._on_message = on_message
        self._connack: asyncio.Future[ReasonCode] = self._loop.create_future()
        self._closing = False
        self.client.on_connect = self._connected
        self.client.on_disconnect = self._disconnected
        self.client.on_publish = self._published
        if on_message is not None:
            self.client.on_message = self._received

    def _post(self, fn: Callable[..., None], *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting
            self._loop.call_soon_threadsafe(fn, *args)

    # ---- paho's thread ----------------------------------------------------------------

    def _connected(
        self,
        _c: Client,
        _u: object,
        flags: ConnectFlags,
        reason: ReasonCode,
        props: Properties | None,
    ) -> None:
        receive_max = getattr(props, "ReceiveMaximum", None) if props is not None else None
        self._post(self._connack_arrived, reason, flags.session_present, receive_max)

    def _disconnected(
        self,
        _c: Client,
        _u: object,
        _flags: DisconnectFlags,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        self._post(self._gone, str(reason))

    def _published(
        self, _c: Client, _u: object, mid: int, reason: ReasonCode, _props: Properties | None
    ) -> None:
        self._post(self._on_ack, mid, not reason.is_failure, str(reason))

    def _received(self, _c: Client, _u: object, msg: Any) -> None:
        user = {}
        if msg.properties is not None:
            user = dict(getattr(msg.properties, "UserProperty", []) or [])
        m = Message(msg.topic, bytes(msg.payload), bool(msg.retain), user, time.time_ns())
        assert self._on_message is not None
        self._post(self._on_message, m)

    # ---- the event loop ---------------------------------------------------------------

    def _connack_arrived(
        self,
        reason: ReasonCode,
        session_present: bool,  # noqa: FBT001  (posted through call_soon_threadsafe)
        receive_max: int | None,
    ) -> None:
        if receive_max is not None:
            self.receive_maximum = int(receive_max)
        self.session_present = session_present
        if not self._connack.done():
            self._connack.set_result(reason)

    def _gone(self, reason: str) -> None:
        was_up, self.up = self.up, False
        if not self._connack.done():
            self._connack.set_exception(
                LinkError(
                    f"broker {self.cfg.host} closed the connection: {reason}", "broker_unreachable"
                )
            )
        if was_up and not self._closing:
            self._on_lost(reason)

    async def open(self, clean_start: bool = True, session_expiry_s: int = 0) -> None:  # noqa: FBT001, FBT002
        """Connect and wait for the CONNACK; raises LinkError (``code`` names the alarm)."""
        cfg = self.cfg
        props = properties(PacketTypes.CONNECT, SessionExpiryInterval=session_expiry_s)
        try:
            await self._loop.run_in_executor(
                None,
                lambda: self.client.connect(
                    cfg.host,
                    cfg.effective_port,
                    cfg.keepalive_s,
                    clean_start=clean_start,
                    properties=props,
                ),
            )
        except (OSError, ValueError) as exc:
            raise connect_error(exc, cfg) from exc
        self.client.loop_start()
        try:
            reason = await asyncio.wait_for(asyncio.shield(self._connack), cfg.connect_timeout_s)
        except TimeoutError as exc:
            await self.close()
            where = f"{cfg.host}:{cfg.effective_port}"
            msg = f"broker {where}: no CONNACK within {cfg.connect_timeout_s} s"
            raise LinkError(msg, "broker_unreachable") from exc
        except LinkError:
            await self.close()
            raise
        if reason.is_failure:
            await self.close()
            raise refusal(reason, cfg)
        self.up = True

    def publish(  # noqa: PLR0913  (the message and its MQTT attributes)
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        expiry_s: int | None = None,
        user: list[tuple[str, str]] | None = None,
    ) -> int:
        """Queue one message on this connection; returns its mid (LinkError if it is down)."""
        props = properties(
            PacketTypes.PUBLISH,
            ContentType="application/json",
            PayloadFormatIndicator=1,
            MessageExpiryInterval=expiry_s,
            user=user,
        )
        info: MQTTMessageInfo = self.client.publish(
            topic, payload, qos=qos, retain=retain, properties=props
        )
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            msg = f"publish on {topic} failed: {info.rc.name}"
            raise LinkError(msg, "broker_unreachable")
        return info.mid

    def subscribe(self, topic: str, qos: int = 1) -> None:
        self.client.subscribe(topic, qos=qos)

    async def close(self) -> None:
        """Disconnect cleanly (no Will) if still up, and stop paho's thread."""
        self._closing = True
        self.up = False
        with contextlib.suppress(Exception):
            self.client.disconnect()
        await self._loop.run_in_executor(None, self.client.loop_stop)
