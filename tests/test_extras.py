"""The optional extras: the core install runs the daemon without them, and a command that needs
one names it.

A missing extra is made the way Python marks a module unimportable: ``sys.modules[name] = None``
in a fresh interpreter, before linevision is imported.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLC = ("pymodbus", "asyncua", "snap7")
HMI = ("starlette", "uvicorn")
ARAVIS = ("gi",)


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )


def _main_without(hidden: tuple[str, ...], argv: list[str]) -> subprocess.CompletedProcess[str]:
    code = (
        "import sys\n"
        f"sys.modules.update(dict.fromkeys({hidden!r}))\n"
        "from linevision.cli import main\n"
        f"sys.exit(main({argv!r}))\n"
    )
    return _python(code)


def test_the_cli_and_the_daemon_load_no_optional_extra() -> None:
    code = (
        "import sys, linevision.cli, linevision.daemon.operations\n"
        f"print(sorted(n for n in {PLC + HMI + ARAVIS + ('paho',)!r} if n in sys.modules))\n"
    )
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("argv", "hidden", "message"),
    [
        (["bridge", "plc"], PLC, "needs the plc extra (pymodbus, asyncua, snap7 not installed)"),
        (["bridge", "plc"], ("snap7",), "needs the plc extra (snap7 not installed)"),
        (["bridge", "reject"], PLC, "needs the plc extra (pymodbus not installed)"),
    ],
)
def test_a_bridge_without_the_plc_extra_names_it(
    tmp_path: Path, argv: list[str], hidden: tuple[str, ...], message: str
) -> None:
    proc = _main_without(hidden, [*argv, "--config", str(tmp_path / "bridge.yaml")])
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip() == f"linevision {' '.join(argv)}: {message}: install linevision[plc]"


def test_the_reject_bridge_needs_only_modbus(tmp_path: Path) -> None:
    # past the extra check, the missing file is the error (exit 2)
    proc = _main_without(("asyncua", "snap7"), ["bridge", "reject", "--config", str(tmp_path)])
    assert proc.returncode == 2, proc.stderr
    assert "install linevision" not in proc.stderr


def test_the_hmi_without_its_extra_names_it() -> None:
    proc = _main_without(HMI, ["hmi"])
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip() == (
        "linevision hmi: needs the hmi extra (starlette, uvicorn not installed): "
        "install linevision[hmi]"
    )


def test_the_demo_without_the_hmi_extra_names_it_before_starting() -> None:
    proc = _main_without(HMI, ["run"])
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip() == (
        "linevision run: the demo's operator page needs the hmi extra (starlette, uvicorn not "
        "installed): install linevision[hmi], or run with --no-hmi"
    )


@pytest.mark.parametrize(
    ("argv", "command"),
    [(["bridge", "mqtt", "--config", "x.yaml"], "bridge mqtt"), (["plant"], "plant")],
)
def test_the_mqtt_commands_without_their_extra_name_it(argv: list[str], command: str) -> None:
    proc = _main_without(("paho",), argv)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip() == (
        f"linevision {command}: needs the mqtt extra (paho not installed): install linevision[mqtt]"
    )


def test_an_aravis_camera_without_pygobject_is_a_camera_error_naming_the_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['gi'] = None\n"
        "from linevision.cameras import open_driver\n"
        "from linevision.cameras.base import CameraError\n"
        "from linevision.config import AravisCamera\n"
        "cfg = AravisCamera.model_validate("
        "{'id': 'gige', 'backend': 'aravis', 'address': '127.0.0.2'})\n"
        "driver = open_driver(cfg)\n"
        "try:\n"
        "    driver.open()\n"
        "except CameraError as exc:\n"
        "    print(exc)\n"
    )
    proc = _python(code)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.strip()
    assert out.startswith("camera 'gige': the aravis backend needs PyGObject and Aravis 0.8")
    assert out.endswith("pip install 'linevision[aravis]' and apt-get install gir1.2-aravis-0.8")
