"""six_view through the lifecycle, on six emulated pylon cameras: the challenge and the
"vision verified" bit, the reject actuator behind the real reject bridge, review -> export.

The daemon runs as ``linevision run`` in a process of its own: the test process's pylon
exposes four emulated cameras (tests/conftest.py), the station needs six. The line serves
twelve generated cells of one design (half NG, each kind), three cells a second.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from pymodbus.client import ModbusTcpClient

from linevision.bridges.alarms import RejectReport
from linevision.bridges.config import PlcBridgeConfig
from linevision.bridges.plc import run_plc_bridge
from linevision.bridges.plc_link import STATUS_VERIFIED
from linevision.bus.lifecycle import parse_challenge
from linevision.bus.wire import VerdictMessage, parse_message
from linevision.config import Config, HmiConfig
from linevision.daemon.control import request
from linevision.hmi.server import HmiServer, review_api
from linevision.synth import six_view
from linevision.synth.contract import read_labels
from linevision.train._cells import load_cells
from tests.bridges.harness import BridgeThread, Proc, collect_reports, free_port, write_yaml
from tests.bridges.plc_sim import ModbusPlc, ThreadedPlc
from tests.bridges.reject_sim import CELL_REGISTER, Counter, RejectLine
from tests.bridges.test_reject_persistence import stored_cells
from tests.daemon.parts import free_port as free_http_port
from tests.helpers import free_tcp_endpoint
from tests.lifecycle.parts import ROOT, BusLog, cli, wait_for
from tests.lifecycle.test_review import _http

SEED = 555
CELLS = 12
MASTERS = {"ok": 0, "ng": 1}
"""The generated cells used as master parts (cell 0 is good, cell 1 dented); the shipped
model decides all twelve right."""
DISTANCE = 4
"""Cells between the camera and the reject station."""


@dataclass
class Line:
    cfg: Config
    cfg_file: Path
    data: Path
    masters: Path
    bus: BusLog
    archive: Path

    def verdicts(self) -> list[VerdictMessage]:
        out = [parse_message(b"verdict.six_view", p) for p in self.bus.topics("verdict.")]
        assert all(isinstance(v, VerdictMessage) for v in out)
        return out  # type: ignore[return-value]


def _masters(data: Path, folder: Path, *, swapped: bool = False) -> None:
    """The master cells in the contract (``cell,label``); ``swapped``: the good one is
    listed NG and the dented one OK, as a wrong master list would."""
    rows = list(csv.DictReader((data / "labels.csv").open()))
    if not (folder / "reference").exists():  # the contract's; the station uses its own
        shutil.copytree(data / "reference", folder / "reference")
    lines = ["cell,label"]
    for name, index in MASTERS.items():
        if not (folder / name).exists():
            shutil.copytree(data / rows[index]["cell"], folder / name)
        label = rows[index]["label"]
        lines.append(f"{name},{ ({'OK': 'NG', 'NG': 'OK'}[label] if swapped else label) }")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")


def _config(root: Path, data: Path, masters: Path) -> dict[str, object]:
    rows = list(csv.DictReader((data / "labels.csv").open()))
    cameras = []
    for view in six_view.VIEWS:
        folder = root / f"view{view}"
        folder.mkdir()
        for i, row in enumerate(rows):
            shutil.copy(data / row["cell"] / f"{view}.png", folder / f"{i:04d}.png")
        cameras.append(
            {
                "id": f"six_{view}",
                "backend": "pylon",
                "device": {"serial": f"0815-{view - 1:04d}"},
                "pixel_format": "Mono8",
                "trigger": {"mode": "software", "rate_hz": 3},
                "grab_timeout_ms": 1000,
                "emulation": {"image_path": str(folder), "frame_period_us": 1000},
            }
        )
    return {
        "cameras": cameras,
        "stations": [
            {
                "name": "six_view",
                "type": "six_view",
                "cameras": [c["id"] for c in cameras],
                "model": "six_view",
                "reference": str(data / "reference"),
                "challenge": str(masters),
                # generous: the machine running the tests is shared and loaded
                "deadline_ms": 3000,
                "assembly_ms": 1000,
            }
        ],
        "bus": {"publish": free_tcp_endpoint()},
        "archive": {"dir": str(root / "archive")},
        "review": {"ok_below": 1.0, "dir": str(root / "review")},
        "challenge": {"on_start": False, "on_switch": False},
        "drift": {"enabled": False},
        "metrics": {"enabled": False},
        "control": {"endpoint": free_tcp_endpoint()},
        "logging": {"format": "json"},
    }


@pytest.fixture(scope="module")
def line(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Line]:
    root = tmp_path_factory.mktemp("six_line")
    data = root / "six"
    six_view.write_dataset(data, CELLS, seed=SEED)
    masters = root / "masters"
    _masters(data, masters)
    raw = _config(root, data, masters)
    cfg = Config.model_validate(raw)
    cfg_file = write_yaml(root / "config.yaml", raw)
    bus = BusLog(cfg.bus.publish).start()
    env = dict(
        os.environ, PYLON_CAMEMU="6", STATE_DIRECTORY=str(root / "state"), PYTHONPATH=str(ROOT)
    )
    args = ["-m", "linevision", "run", "--config", str(cfg_file), "--models", str(ROOT / "models")]
    with (root / "daemon.log").open("w") as log:
        daemon = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stderr=log)
    try:
        wait_for(lambda: len(bus.topics("verdict.")) >= 2, 60, "the line's first cells")
        yield Line(cfg, cfg_file, data, masters, bus, root / "archive")
    finally:
        daemon.terminate()
        try:
            daemon.wait(15)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(5)
        bus.stop()
    assert daemon.returncode == 0, (root / "daemon.log").read_text()[-3000:]


def _plc_bridge(cfg: Config, port: int) -> PlcBridgeConfig:
    return PlcBridgeConfig.model_validate(
        {
            "source": {"verdicts": cfg.bus.publish, "replay": None, "heartbeat_timeout_s": 3.0},
            "report": {"publish": free_tcp_endpoint()},
            "plc": {"kind": "modbus", "host": "127.0.0.1", "port": port, "timeout_s": 0.5},
            "stations": {"six_view": 1},
            "heartbeat_s": 0.2,
            "challenge": {"control": cfg.control.endpoint},
        }
    )


def _reject_bridge(cfg: Config, port: int, folder: Path) -> tuple[Path, dict[str, object]]:
    settings: dict[str, object] = {
        "name": "reject_six",
        "source": {"verdicts": cfg.bus.publish, "replay": None},
        "report": {"publish": free_tcp_endpoint()},
        "io": {"host": "127.0.0.1", "port": port},
        "tracking": {
            "counter_register": 0,
            "distance": DISTANCE,
            "poll_ms": 1,
            "stations": {"six_view": 0},
        },
        "output": {"coil": 0, "pulse_ms": 3, "cell_register": CELL_REGISTER},
        "backoff": {"min_s": 0.02, "max_s": 0.2},
        "state_file": str(folder / "reject.db"),
    }
    return write_yaml(folder / "reject.yaml", settings), settings


def _status(port: int) -> int:
    with ModbusTcpClient("127.0.0.1", port=port) as client:
        return int(client.read_holding_registers(3, count=1).registers[0])


def _challenge(line: Line, runs: int) -> dict[str, object]:
    """Run the challenge through the control socket; its record on ``challenge.six_view``."""
    reply = request(line.cfg.control.endpoint, {"cmd": "challenge.run", "user": "qa"})
    assert reply["ok"], reply
    wait_for(lambda: len(line.bus.topics("challenge.")) >= runs, 60, f"challenge run {runs}")
    msg = parse_challenge(b"challenge.six_view", line.bus.topics("challenge.")[runs - 1])
    return msg.model_dump(mode="json")


@dataclass
class Rig:
    """The PLC (its bridge on a thread) and the reject station (its bridge a process)."""

    plc_port: int
    station: RejectLine
    counter: Counter
    reports: list[RejectReport]
    state: Path


@contextmanager
def _bridges(line: Line, tmp_path: Path) -> Iterator[Rig]:
    plc = ThreadedPlc(ModbusPlc(free_port())).start()
    station = RejectLine(free_port())
    io = ThreadedPlc(station).start()  # type: ignore[arg-type]
    counter = Counter(station.port, 32)
    reject_file, settings = _reject_bridge(line.cfg, station.port, tmp_path)
    reports: list[RejectReport] = []
    endpoint = str(settings["report"]["publish"])  # type: ignore[index]
    reader = BridgeThread(lambda stop: collect_reports(endpoint, reports, stop, RejectReport))
    reader.start()
    counter.set(DISTANCE)  # cell 0 (none on this line) is at the reject station
    plc_cfg = _plc_bridge(line.cfg, plc.plc.port)
    plc_bridge = BridgeThread(lambda stop: run_plc_bridge(plc_cfg, stop))
    args = ["-m", "linevision", "bridge", "reject", "--config", str(reject_file)]
    reject = Proc(args, tmp_path / "reject.log")
    try:
        plc_bridge.start()
        reject.start(wait_ready=False)
        wait_for(lambda: station.fired == [0], 20, "the reject bridge's first read")
        wait_for(lambda: _status(plc.plc.port) & 1, 10, "the PLC bridge hearing the daemon")
        yield Rig(plc.plc.port, station, counter, reports, Path(str(settings["state_file"])))
    finally:
        reject.terminate()
        plc_bridge.stop()
        reader.stop()
        counter.close()
        io.stop()
        plc.stop()


def _sha256(folder: Path) -> str:
    digest = hashlib.sha256()
    for v in six_view.VIEWS:
        digest.update((folder / f"{v}.png").read_bytes())
    return digest.hexdigest()


def test_challenge_interlock_and_rejects_around_it(line: Line, tmp_path: Path) -> None:
    with _bridges(line, tmp_path) as rig:
        assert not _status(rig.plc_port) & STATUS_VERIFIED  # pending: never run
        wait_for(lambda: stored_cells(rig.state), 20, "the reject bridge's first verdict")
        first_cell = min(stored_cells(rig.state))  # it holds every cell's verdict from here

        # 1. the masters decided right: the bit is set
        passed = _challenge(line, 1)
        wait_for(lambda: _status(rig.plc_port) & STATUS_VERIFIED, 10, "the verified bit")
        # 2. a master list the model disagrees with: the run fails, the bit clears
        _masters(line.data, line.masters, swapped=True)
        failed = _challenge(line, 2)
        wait_for(lambda: not _status(rig.plc_port) & STATUS_VERIFIED, 10, "the bit cleared")
        _masters(line.data, line.masters)
        last_cell = line.verdicts()[-1].cell_id + 2
        wait_for(lambda: line.verdicts()[-1].cell_id >= last_cell, 30, "cells after the runs")
        # every verdict the reject bridge holds is a line cell's: no master reached it
        held = stored_cells(rig.state)
        line_cells = {v.cell_id for v in line.verdicts()}
        assert held
        assert held <= line_cells, sorted(held - line_cells)
        # 3. the line moves every cell through the reject station
        for c in range(1, last_cell + 1):
            rig.counter.set(c + DISTANCE)
            wait_for(lambda c=c: any(r.cell_id == c for r in rig.reports), 5, f"cell {c}")

    assert passed["passed"] is True, passed
    got = {s["sample"]: (s["expected"], s["verdict"], s["reason"]) for s in passed["samples"]}
    assert got == {"ok": ("OK", "OK", None), "ng": ("NG", "NG", "defect")}
    # what ran: the six views of each master cell, in camera order
    assert {s["sample"]: s["sha256"] for s in passed["samples"]} == {
        name: _sha256(line.masters / name) for name in MASTERS
    }
    assert failed["passed"] is False
    assert {s["sample"]: s["passed"] for s in failed["samples"]} == {"ok": False, "ng": False}

    verdicts = {v.cell_id: v.verdict for v in line.verdicts()}
    assert min(verdicts) > 0  # no master on the verdict bus
    fired = set(rig.station.fired) - {0}
    assert not [c for c in rig.station.fired if c < 0]
    # around the runs every NG line cell fired and no OK one (a cell before the bridge's
    # first verdict fires as "no verdict")
    around = range(first_cell, last_cell + 1)
    ng = {c for c in around if verdicts.get(c) == "NG"}
    ok = {c for c in around if verdicts.get(c) == "OK"}
    assert ng
    assert ok
    assert ng <= fired
    assert not ok & fired
    by_cell = {r.cell_id: r for r in rig.reports}
    assert all(by_cell[c].verdicts == {"six_view": verdicts[c]} for c in around)


def test_review_export_six_views(line: Line, tmp_path: Path) -> None:
    wait_for(lambda: len(line.verdicts()) >= 14, 60, "14 cells")
    hmi = HmiServer(
        HmiConfig(listen=f"127.0.0.1:{free_http_port()}"),
        line.cfg.bus.publish,
        line.archive,
        review=review_api(line.cfg, line.archive),
    )
    hmi.start()
    try:
        base = f"http://127.0.0.1:{hmi.port}"
        wait_for(
            lambda: len(json.loads(_http(f"{base}/api/review?station=six_view")[1])["cells"]) >= 10,
            30,
            "10 cells to review",
        )
        cells = json.loads(_http(f"{base}/api/review?station=six_view&limit=500")[1])["cells"]
        assert all(c["raw"] for c in cells)
        done: list[str] = []
        for c in cells:
            if c["verdict"] == "NG":
                decision = "confirm_ng" if "false_reject" in done else "false_reject"
            else:
                decision = "confirm_ok" if "missed_defect" in done else "missed_defect"
            body = {"run_id": c["run_id"], "seq": c["seq"], "decision": decision, "operator": "eva"}
            status, raw = _http(f"{base}/api/review", body)
            assert status == 200, raw
            done.append(decision)
    finally:
        hmi.stop()
    out = tmp_path / "dataset"
    run = cli(
        *("dataset", "export", "--station", "six_view", "--since", "1h"),
        *("--out", str(out), "--config", str(line.cfg_file)),
    )
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["cells"] == len(done)
    assert summary["without_frame"] == 0
    # the contract's reader and training's own
    samples = read_labels(out, "six_view")
    loaded = load_cells(out, "six_view")
    assert len(samples) == len(loaded.names) == len(done)
    # each exported cell is the six views of one generated cell, as the cameras gave them
    generated = [
        tuple(cv2.imread(str(p / f"{v}.png"), cv2.IMREAD_GRAYSCALE) for v in six_view.VIEWS)
        for p in sorted(q for q in line.data.iterdir() if q.is_dir() and q.name != "reference")
    ]
    for i in range(len(loaded.names)):
        views = loaded.views[i]
        assert [v.shape for v in views] == list(six_view.VIEW_SHAPES)
        assert any(
            all(np.array_equal(a, b) for a, b in zip(views, g, strict=True)) for g in generated
        )
    for v in six_view.VIEWS:
        assert (out / "reference" / f"{v}.png").read_bytes() == (
            line.data / "reference" / f"{v}.png"
        ).read_bytes()
    with (out / "labels.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    labels: dict[str, set[str]] = {r["review"]: set() for r in rows}
    for r in rows:
        labels[r["review"]].add(r["label"])
    assert {r["operator"] for r in rows} == {"eva"}
    assert labels["false_reject"] == labels["confirm_ok"] == {"OK"}
    assert labels["missed_defect"] == labels["confirm_ng"] == {"NG"}
