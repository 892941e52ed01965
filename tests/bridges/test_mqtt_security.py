"""The MQTT bridge's security: TLS with a CA and a client certificate, a password from
``$CREDENTIALS_DIRECTORY``, against a real Mosquitto; a broker off loopback without TLS is
refused by the config and by ``check-config``."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from linevision.bridges.alarms import AlarmMessage
from linevision.bridges.mqtt import run_mqtt_bridge
from linevision.bridges.mqtt_config import MqttBridgeConfig
from linevision.cli import main
from linevision.config import ConfigError, parse_yaml_model
from tests.bridges.daemon_sim import Daemon
from tests.bridges.harness import BridgeThread, collect_reports, wait_for, write_yaml
from tests.bridges.mosquitto import Mosquitto, Subscriber, dedupe
from tests.bridges.mqtt_certs import make_pki
from tests.helpers import free_tcp_endpoint

PASSWORD = "s3cret-line-7"


@pytest.fixture
def secured(tmp_path, monkeypatch):
    """A broker whose second listener wants TLS, a client certificate and a password; the
    bridge's credentials in a folder given as ``$CREDENTIALS_DIRECTORY``."""
    pki = make_pki(tmp_path / "pki")
    creds = tmp_path / "credentials"
    creds.mkdir()
    for src, name in (
        (pki.ca, "ca.pem"),
        (pki.client_cert, "client.pem"),
        (pki.client_key, "client.key"),
    ):
        (creds / name).write_bytes(src.read_bytes())
    (creds / "client.key").chmod(0o600)
    (creds / "password").write_text(PASSWORD + "\n")
    pwfile = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(pwfile), "line7", PASSWORD], check=True, timeout=30
    )
    broker = Mosquitto(
        tmp_path / "broker",
        secure=[
            "allow_anonymous false",
            f"password_file {pwfile}",
            f"cafile {pki.ca}",
            f"certfile {pki.server_cert}",
            f"keyfile {pki.server_key}",
            "require_certificate true",
        ],
    ).start()
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    sub = Subscriber(broker.port).start()
    daemon = Daemon(free_tcp_endpoint(), free_tcp_endpoint(), tmp_path / "journal.db").start()
    yield tmp_path, broker, sub, daemon
    sub.stop()
    daemon.stop()
    broker.stop()


def _config(tmp_path: Path, daemon: Daemon, port: int, **broker: Any) -> MqttBridgeConfig:
    assert daemon.replay is not None
    return MqttBridgeConfig.model_validate(
        {
            "site": "plant1",
            "line": "line7",
            "source": {"verdicts": daemon.publisher.endpoint, "replay": daemon.replay.endpoint},
            "report": {"publish": free_tcp_endpoint()},
            "broker": {"host": "127.0.0.1", "port": port, "connect_timeout_s": 2, **broker},
            "store": {"path": str(tmp_path / "outbox.db")},
            "backoff": {"min_s": 0.1, "max_s": 0.3},
        }
    )


TLS = {"ca": "ca.pem", "certificate": "client.pem", "private_key": "client.key"}


def _alarms_while(cfg: MqttBridgeConfig, seconds: float) -> list[AlarmMessage]:
    alarms: list[AlarmMessage] = []
    reader = BridgeThread(
        lambda stop: collect_reports(cfg.report.publish, alarms, stop, AlarmMessage)
    )
    reader.start()
    bridge = BridgeThread(lambda stop: run_mqtt_bridge(cfg, stop)).start()
    try:
        time.sleep(seconds)
    finally:
        bridge.stop()
        reader.stop()
    return alarms


def test_tls_client_certificate_and_password_from_the_credentials_directory(secured):
    tmp_path, broker, sub, daemon = secured
    cfg = _config(
        tmp_path, daemon, broker.secure_port, tls=TLS, username="line7", password_file="password"
    )
    bridge = BridgeThread(lambda stop: run_mqtt_bridge(cfg, stop)).start()
    try:
        wait_for(lambda: sub.of("state"), 15, "the bridge's birth over TLS")
        daemon.stream(1, 100, rate_hz=200)
        wait_for(lambda: len(sub.verdicts()) >= 100, 20, "100 verdicts over TLS")
    finally:
        result = bridge.stop()
    # duplicates (a resend after a reconnect) are the consumers' to drop
    assert dedupe(sub.verdicts())["runs"] == {daemon.run_id: list(range(1, 101))}
    assert result.counters["connect_failures"] == 0
    assert "New client connected" in broker.log_text()


def test_an_untrusted_broker_certificate_is_refused_and_raised(secured):
    tmp_path, broker, sub, daemon = secured
    other = make_pki(tmp_path / "other", name="another-ca")
    (tmp_path / "credentials" / "other-ca.pem").write_bytes(other.ca.read_bytes())
    tls = {**TLS, "ca": "other-ca.pem"}
    cfg = _config(
        tmp_path, daemon, broker.secure_port, tls=tls, username="line7", password_file="password"
    )
    daemon.stream(1, 20, rate_hz=100)
    alarms = _alarms_while(cfg, 2.5)
    codes = {a.alarm for a in alarms if a.active}
    assert "broker_untrusted" in codes
    detail = next(a.detail for a in alarms if a.alarm == "broker_untrusted")
    assert "certificate" in str(detail["error"])
    assert sub.verdicts() == []


def test_a_wrong_password_is_refused_and_raised(secured):
    tmp_path, broker, sub, daemon = secured
    (tmp_path / "credentials" / "wrong").write_text("not-it\n")
    cfg = _config(
        tmp_path, daemon, broker.secure_port, tls=TLS, username="line7", password_file="wrong"
    )
    alarms = _alarms_while(cfg, 2.5)
    assert "broker_auth_refused" in {a.alarm for a in alarms if a.active}
    assert sub.verdicts() == []


def _parse(text: str) -> MqttBridgeConfig:
    return parse_yaml_model(MqttBridgeConfig, text, "bridge-mqtt.yaml")


def test_a_broker_off_loopback_needs_tls_unless_explicitly_allowed():
    with pytest.raises(
        ConfigError, match=r"broker.host '10.20.0.5' is not loopback: set broker.tls"
    ):
        _parse("site: p\nline: l\nbroker: {host: 10.20.0.5}\n")
    cfg = _parse("site: p\nline: l\nbroker: {host: 10.20.0.5, allow_insecure: true}\n")
    assert cfg.broker.effective_port == 1883
    cfg = _parse("site: p\nline: l\nbroker: {host: mqtt.plant, tls: {ca: ca.pem}}\n")
    assert cfg.broker.effective_port == 8883
    with pytest.raises(ConfigError, match="a password is never sent in clear"):
        _parse(
            "site: p\nline: l\nbroker: {host: 10.20.0.5, allow_insecure: true, username: u,"
            " password_file: pw}\n"
        )
    with pytest.raises(ConfigError, match="site"):
        _parse("site: 'p/x'\nline: l\nbroker: {host: 127.0.0.1}\n")


def test_check_config_refuses_an_insecure_broker_and_names_missing_files(tmp_path, capsys):
    bad = write_yaml(
        tmp_path / "a.yaml", {"site": "p", "line": "l", "broker": {"host": "10.20.0.5"}}
    )
    assert main(["check-config", "--bridge", "mqtt", str(bad)]) == 2
    assert "broker.allow_insecure: true" in capsys.readouterr().err
    files = write_yaml(
        tmp_path / "b.yaml",
        {
            "site": "p",
            "line": "l",
            "broker": {
                "host": "10.20.0.5",
                "tls": {"ca": str(tmp_path / "missing-ca.pem")},
                "username": "u",
                "password_file": str(tmp_path / "missing-password"),
            },
        },
    )
    assert main(["check-config", "--bridge", "mqtt", str(files)]) == 2
    err = capsys.readouterr().err
    assert "missing-password" in err
    assert "broker.tls" in err
    ok = write_yaml(
        tmp_path / "c.yaml", {"site": "p", "line": "l", "broker": {"host": "127.0.0.1"}}
    )
    assert main(["check-config", "--bridge", "mqtt", str(ok)]) == 0
    assert "OK (mqtt bridge mqtt)" in capsys.readouterr().out
