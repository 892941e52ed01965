"""The operator page's bridge health and alarms, and its bus subscription over CURVE."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import zmq
from playwright.sync_api import sync_playwright

from linevision.bridges.config import PlcBridgeConfig
from linevision.bridges.plc import run_plc_bridge
from linevision.bus import curve as keys
from linevision.bus.wire import context
from linevision.config import Config, HmiConfig
from linevision.hmi.server import HmiConfigError, HmiServer, from_config
from tests.bridges.daemon_sim import Daemon
from tests.bridges.harness import BridgeThread, free_port, wait_for
from tests.helpers import free_tcp_endpoint


def _health(state: str = "connected", **over: object) -> list[bytes]:
    body: dict[str, object] = {
        "schema": 1,
        "bridge": "plc",
        "kind": "plc",
        "state": state,
        "stream_alive": True,
        "run_id": "a" * 32,
        "last_seq": 41,
        "backlog": 2,
        "lost": 0,
        "retries": 3,
        "active": [],
        "counters": {"delivered": 41},
        "interval_s": 1.0,
        "t_ns": time.time_ns(),
        **over,
    }
    return [b"health.plc", json.dumps(body).encode()]


def _alarm(code: str, *, active: bool = True, severity: str = "error") -> list[bytes]:
    body = {
        "schema": 1,
        "source": "plc",
        "alarm": code,
        "severity": severity,
        "active": active,
        "detail": {"error": "connection refused"},
        "t_ns": time.time_ns(),
    }
    return [b"alarm.plc", json.dumps(body).encode()]


def _api_state(hmi: HmiServer) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{hmi.port}/api/state", timeout=5) as r:
        return json.loads(r.read())


def _bridge(snap: dict[str, Any]) -> dict[str, Any]:
    [row] = snap["health"]["bridges"]
    return row


def _hmi(bridges: tuple[str, ...]) -> HmiServer:
    cfg = HmiConfig(listen=f"127.0.0.1:{free_port()}", push_hz=20, bridges=bridges)
    hmi = HmiServer(cfg, free_tcp_endpoint(), None)
    hmi.start()
    return hmi


def test_bridge_up_alarm_invalid_then_down_when_its_publisher_stops():
    endpoint = free_tcp_endpoint()
    pub = context().socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(endpoint)
    hmi = _hmi((endpoint,))
    try:
        assert _bridge(_api_state(hmi))["state"] == "waiting"
        deadline = time.monotonic() + 5
        while _bridge(hmi.state.snapshot())["state"] != "connected":
            assert time.monotonic() < deadline, "no health reached the HMI"
            pub.send_multipart(_health())
            time.sleep(0.05)
        pub.send_multipart(_alarm("plc_ack_timeout"))
        pub.send_multipart(_alarm("late_delivery", severity="warning"))
        pub.send_multipart(_health(active=["plc_ack_timeout"]))
        for frames in (
            _health("retrying", extra=1),
            _health("retrying", backlog=-1),
            [b"health.reject", _health("retrying")[1]],
            [b"alarm.plc", b"{not json"],
            [*_alarm("plc_refused"), b"third frame"],
        ):
            pub.send_multipart(frames)
        wait_for(lambda: hmi.bridge_feed.invalid == 5, 5, "5 invalid reports")
        snap = _api_state(hmi)
        row = _bridge(snap)
        assert row["name"] == "plc"
        assert (row["state"], row["last_seq"], row["backlog"], row["retries"]) == (
            "connected",
            41,
            2,
            3,
        )
        assert row["age_s"] < 3
        assert (row["active"], row["invalid"]) == (["plc_ack_timeout"], 5)
        alarms = {a["code"]: a for a in snap["alarms"]}
        assert alarms["plc_ack_timeout"]["level"] == "critical"
        assert "connection refused" in alarms["plc_ack_timeout"]["text"]
        assert alarms["late_delivery"]["level"] == "warning"
        assert "plc_refused" not in alarms
        pub.send_multipart(_alarm("plc_ack_timeout", active=False, severity="info"))
        wait_for(lambda: not _bridge(hmi.state.snapshot())["active"], 5, "the alarm cleared")
        assert "plc_ack_timeout" not in {a["code"] for a in hmi.state.snapshot()["alarms"]}
        pub.close()
        wait_for(lambda: _bridge(hmi.state.snapshot())["state"] == "down", 5, "stale = down")
        snap = _api_state(hmi)
        assert _bridge(snap)["age_s"] >= 3
        down = [a for a in snap["alarms"] if a["code"] == "bridge_down"]
        assert down[0]["level"] == "critical"
        assert "no health message for" in down[0]["text"]
    finally:
        hmi.stop()
        if not pub.closed:
            pub.close()


def test_a_plc_bridge_that_cannot_reach_its_plc_shows_on_the_page():
    cfg = PlcBridgeConfig.model_validate(
        {
            "source": {"verdicts": free_tcp_endpoint(), "replay": None},
            "report": {"publish": free_tcp_endpoint()},
            "plc": {"kind": "modbus", "host": "127.0.0.1", "port": free_port(), "timeout_s": 0.2},
            "stations": {"pole_piece": 1},
            "backoff": {"min_s": 0.02, "max_s": 0.2},
        }
    )
    hmi = _hmi((cfg.report.publish,))
    bridge = BridgeThread(lambda stop: run_plc_bridge(cfg, stop)).start()
    try:

        def unreachable_shown() -> bool:
            snap = hmi.state.snapshot()
            codes = {a["code"] for a in snap["alarms"]}  # type: ignore[attr-defined]
            return _bridge(snap)["state"] == "retrying" and "plc_unreachable" in codes

        wait_for(unreachable_shown, 8, "the bridge retrying with plc_unreachable")
        bridge.stop()
        wait_for(lambda: _bridge(hmi.state.snapshot())["state"] == "down", 3, "stopped = down")
        texts = [a["text"] for a in _api_state(hmi)["alarms"] if a["code"] == "bridge_down"]
        assert texts == ["bridge plc: stopped"]
    finally:
        bridge.stop()
        hmi.stop()


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    d = tmp_path / "keys"
    keys.generate(d, "server")
    keys.generate(d, "hmi")
    keys.generate(d / "other", "intruder")
    (d / "authorized").mkdir()
    (d / "authorized" / "hmi.key").write_bytes((d / "hmi.key").read_bytes())
    return d


def _config(endpoint: str, secret: str) -> Config:
    return Config.model_validate(
        {
            "cameras": [{"id": "c", "backend": "replay", "path": "/x"}],
            "stations": [{"name": "s", "type": "pole_piece", "cameras": ["c"], "model": "m"}],
            "bus": {
                "publish": endpoint,
                "curve": {"secret_key_file": "server.key_secret", "authorized_keys_dir": "a"},
            },
            "archive": {"enabled": False},
            "hmi": {
                "listen": f"127.0.0.1:{free_port()}",
                "curve": {"secret_key_file": secret, "server_public_key_file": "server.key"},
            },
        }
    )


def test_hmi_reads_a_curve_bus_with_its_credential_keys_only(tmp_path, key_dir):
    daemon = Daemon(free_tcp_endpoint(), None, tmp_path / "j.db", key_dir=key_dir).start()
    env = {"CREDENTIALS_DIRECTORY": str(key_dir)}
    endpoint = daemon.publisher.endpoint
    good = from_config(_config(endpoint, "hmi.key_secret"), env)
    intruder = from_config(_config(endpoint, "other/intruder.key_secret"), env)
    with pytest.raises(HmiConfigError, match=r"hmi\.curve: cannot load secret key"):
        from_config(_config(endpoint, "missing.key_secret"), env)
    try:
        good.start()
        intruder.start()
        wait_for(lambda: good.state.snapshot()["run_id"] is not None, 5, "a heartbeat")
        daemon.stream(1, 20, rate_hz=None)
        wait_for(lambda: good.state.verdicts == 20, 5, "20 verdicts over CURVE")
        time.sleep(0.5)
        assert _api_state(good)["verdicts_seen"] == 20
        snap = _api_state(intruder)
        assert (snap["verdicts_seen"], snap["run_id"]) == (0, None)
    finally:
        good.stop()
        intruder.stop()
        daemon.stop()


def test_hmi_unit_loads_the_curve_keys_as_credentials():
    unit = Path(__file__).resolve().parents[2] / "systemd" / "linevision-hmi.service"
    creds = [
        line.partition("=")[2]
        for line in unit.read_text().splitlines()
        if line.startswith("LoadCredential=")
    ]
    assert "hmi.key_secret:/etc/linevision/keys/hmi.key_secret" in creds
    assert "linevision.key:/etc/linevision/keys/linevision.key" in creds


CHROMIUM = Path("/usr/bin/chromium")


def test_the_bridge_row_renders_in_the_health_panel():
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    endpoint = free_tcp_endpoint()
    pub = context().socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(endpoint)
    hmi = _hmi((endpoint,))
    try:
        with sync_playwright() as p:
            b = p.chromium.launch(
                executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
            )
            try:
                page = b.new_page()
                page.goto(f"http://127.0.0.1:{hmi.port}/")
                page.wait_for_function("window.hmiStats.events > 0", timeout=5000)
                page.click("#system-open")
                deadline = time.monotonic() + 5
                while _bridge(hmi.state.snapshot())["state"] != "connected":
                    assert time.monotonic() < deadline, "no health reached the HMI"
                    pub.send_multipart(_health())
                    time.sleep(0.05)
                up = '#system span.good[data-bridge="plc"][data-state="connected"]'
                page.wait_for_selector(up, timeout=3000)
                assert "last seq 41" in page.inner_text("#system .health")
                pub.send_multipart(_health("down"))
                down = '#system span.bad[data-bridge="plc"][data-state="down"]'
                page.wait_for_selector(down, timeout=3000)
                page.wait_for_selector('.alarm[data-code="bridge_down"]', timeout=3000)
            finally:
                b.close()
    finally:
        hmi.stop()
        pub.close()
