import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from linevision.config import Config, ConfigError, is_loopback_endpoint, parse_config

EXAMPLE = Path(__file__).resolve().parent.parent / "deploy" / "config.example.yaml"

VALID = """
cameras:
  - id: pp0
    backend: pylon
    device: {serial: "0815-0000"}
    trigger: {mode: hardware, source: Line1}
  - id: h0
    backend: harvesters
    cti: /opt/producer.cti
  - id: r0
    backend: replay
    path: /data/replay
    rate_hz: 5
stations:
  - name: pole_piece
    type: pole_piece
    cameras: [pp0]
    model: pole_piece
    deadline_ms: 30
  - name: pole_piece_b
    type: pole_piece
    cameras: [h0, r0]
    model: pole_piece
"""


def test_valid_config_parses_into_typed_models():
    cfg = parse_config(VALID)
    assert [c.backend for c in cfg.cameras] == ["pylon", "harvesters", "replay"]
    assert cfg.camera("r0").rate_hz == 5  # type: ignore[union-attr]
    assert cfg.stations[1].deadline_ms == 30.0
    assert cfg.bus.publish == "tcp://127.0.0.1:5556"


def test_example_config_in_deploy_is_valid():
    cfg = parse_config(EXAMPLE.read_text(), str(EXAMPLE))
    assert cfg.stations


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("deadline_ms: 30", "deadline_ms: 0"),
            "stations.0.deadline_ms: Input should be greater than 0",
        ),
        (
            ("deadline_ms: 30", "deadline_ms: fast"),
            "stations.0.deadline_ms: Input should be a valid number",
        ),
        (
            ("rate_hz: 5", "rate_hz: 5\n    colour: red"),
            "cameras.2.replay.colour: Extra inputs are not permitted",
        ),
        (("backend: replay", "backend: usb"), "cameras.2: Input tag 'usb' found using 'backend'"),
        (("cameras: [pp0]", "cameras: [nope]"), "station 'pole_piece' names unknown camera 'nope'"),
        (("cameras: [h0, r0]", "cameras: [pp0]"), "camera 'pp0' is used by stations"),
    ],
)
def test_invalid_config_names_the_field(change, expected):
    text = VALID.replace(*change)
    with pytest.raises(ConfigError) as info:
        parse_config(text, "plant.yaml")
    assert expected in str(info.value)
    assert str(info.value).startswith("plant.yaml: ")


def test_bus_refuses_non_loopback_bind():
    text = VALID + "bus:\n  publish: tcp://0.0.0.0:5556\n"
    with pytest.raises(
        ConfigError, match=r"bus: Value error, 'tcp://0\.0\.0\.0:5556' is not a loopback"
    ):
        parse_config(text)


def test_config_is_frozen():
    cfg = parse_config(VALID)
    with pytest.raises(ValueError, match="frozen"):
        cfg.stations[0].deadline_ms = 5  # type: ignore[misc]


def test_not_yaml_and_not_mapping():
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_config("cameras: [", "x.yaml")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        parse_config("- 1\n- 2\n", "x.yaml")


@pytest.mark.parametrize(
    ("endpoint", "loopback"),
    [
        ("tcp://127.0.0.1:1", True),
        ("tcp://127.3.4.5:1", True),
        ("tcp://localhost:1", True),
        ("tcp://[::1]:1", True),
        ("tcp://10.0.0.2:1", False),
        ("tcp://*:1", False),
        ("ipc:///run/linevision/verdicts", True),
        ("udp://127.0.0.1:1", False),
    ],
)
def test_loopback_endpoints(endpoint, loopback):
    assert is_loopback_endpoint(endpoint) is loopback


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "linevision", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_config_cli_exit_codes(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(VALID)
    res = _cli("check-config", str(good))
    assert res.returncode == 0, res.stderr
    assert "OK (3 cameras, 2 stations)" in res.stdout

    bad = tmp_path / "bad.yaml"
    bad.write_text(VALID.replace("deadline_ms: 30", "deadline_ms: -1"))
    res = _cli("check-config", str(bad))
    assert res.returncode == 2
    assert "stations.0.deadline_ms: Input should be greater than 0" in res.stderr

    res = _cli("check-config", str(tmp_path / "missing.yaml"))
    assert res.returncode == 2
    assert "cannot read" in res.stderr


def test_run_refuses_invalid_config(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(VALID.replace("deadline_ms: 30", "deadline_ms: 0"))
    res = _cli("run", "--config", str(bad))
    assert res.returncode == 2
    assert "stations.0.deadline_ms: Input should be greater than 0" in res.stderr


def _film_config(**camera: object) -> dict[str, object]:
    cam: dict[str, object] = {
        "id": "film",
        "backend": "pylon",
        "pixel_format": "BGR8",
        "roi": {"width": 4000, "height": 500},
        "line_scan": {"strips_per_cell": 36},
        **camera,
    }
    return {
        "cameras": [cam],
        "stations": [{"name": "film", "type": "blue_film", "cameras": ["film"], "model": "m"}],
    }


def test_a_blue_film_station_needs_a_bgr_line_scan_camera():
    assert Config.model_validate(_film_config()).stations[0].type == "blue_film"
    with pytest.raises(ValidationError, match="needs line_scan and pixel_format BGR8"):
        Config.model_validate(_film_config(pixel_format="Mono8"))
    with pytest.raises(ValidationError, match="needs line_scan and pixel_format BGR8"):
        Config.model_validate(_film_config(line_scan=None))
    two = _film_config()
    two["cameras"] = [*two["cameras"], {"id": "b", "backend": "replay", "path": "x"}]  # type: ignore[misc]
    two["stations"][0]["cameras"] = ["film", "b"]  # type: ignore[index]
    with pytest.raises(ValidationError, match="one line-scan camera"):
        Config.model_validate(two)
