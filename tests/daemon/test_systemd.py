"""The systemd units and the installer: the directives the daemon relies on, and `verify`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "systemd"
VENV_BIN = ROOT / ".venv" / "bin" / "linevision"


def _directives(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key, []).append(value)
    return out


def test_daemon_unit_is_notify_with_watchdog_and_hardening():
    d = _directives(UNITS / "linevision.service")
    assert d["Type"] == ["notify"]
    assert d["WatchdogSec"] == ["10s"]
    assert d["Restart"] == ["on-failure"]
    assert d["User"] == ["linevision"]
    assert d["ProtectSystem"] == ["strict"]
    assert d["StateDirectory"] == ["linevision"]
    assert d["LoadCredential"][0].startswith("linevision.key_secret:")
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert "run --config /etc/linevision/config.yaml" in d["ExecStart"][0]


def test_hmi_and_bridge_units():
    hmi = _directives(UNITS / "linevision-hmi.service")
    assert hmi["Type"] == ["notify"]
    assert "hmi --config /etc/linevision/config.yaml" in hmi["ExecStart"][0]
    assert hmi["ProtectSystem"] == ["strict"]
    # the archive read-only; the operators' reviews (docs/lifecycle.md) writable
    assert hmi["ReadOnlyPaths"] == ["/var/lib/linevision"]
    assert hmi["ReadWritePaths"] == ["-/var/lib/linevision/review"]
    bridge = _directives(UNITS / "linevision-bridge@.service")
    assert "bridge %i --config /etc/linevision/bridge-%i.yaml" in bridge["ExecStart"][0]
    assert bridge["Restart"] == ["on-failure"]
    for d in (hmi, bridge):
        assert d["User"] == ["linevision"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_verify(tmp_path):
    names = []
    for unit in UNITS.glob("*.service"):
        text = unit.read_text().replace("/opt/linevision/venv/bin/linevision", str(VENV_BIN))
        name = unit.name.replace("@.service", "@plc.service")
        (tmp_path / name).write_text(text)
        names.append(str(tmp_path / name))
    run = subprocess.run(
        ["systemd-analyze", "verify", *sorted(names)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"SYSTEMD_LOG_LEVEL": "notice", "PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 0, run.stderr
    assert "linevision" not in run.stderr, run.stderr


def test_install_script_parses_and_documents_itself():
    script = ROOT / "deploy" / "install.sh"
    assert subprocess.run(["bash", "-n", str(script)], check=False, timeout=30).returncode == 0
    run = subprocess.run(
        ["bash", str(script), "--help"], capture_output=True, text=True, timeout=30, check=False
    )
    assert run.returncode == 0
    assert "/opt/linevision" in run.stdout
    text = script.read_text()
    for must in ("config.example.yaml", "systemctl enable linevision.service", "python3 -m venv"):
        assert must in text


def test_mqtt_bridge_drop_in_loads_the_broker_credentials_and_yields_priority():
    drop_in = UNITS / "linevision-bridge@mqtt.service.d" / "mqtt.conf"
    d = _directives(drop_in)
    assert d["LoadCredential"] == ["mqtt:/etc/linevision/mqtt"]
    assert int(d["Nice"][0]) > int(_directives(UNITS / "linevision-bridge@.service")["Nice"][0])
    text = (ROOT / "deploy" / "install.sh").read_text()
    assert "bridge-mqtt" in text
    assert "$SOURCE[plc,hmi,mqtt]" in text
    assert "systemd/*.service.d" in text
