"""The daemon on a GigE Vision camera: the fake camera with lost packets feeds the pole-piece
station; the verdicts on the real ZeroMQ bus are compared with the fake's own log, and the
stream counters are read from the heartbeat and the metrics collector."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

from linevision.bus.subscriber import subscribe
from linevision.bus.wire import HEARTBEAT_TOPIC, HeartbeatMessage, VerdictMessage
from linevision.config import Config, parse_config
from linevision.daemon.metrics import _ServiceCollector
from linevision.daemon.service import Service
from tests.cameras.gige import FakeGigE, address_lock
from tests.cameras.test_aravis import LOOPBACK, new_serial
from tests.helpers import free_tcp_endpoint, run_service_and_collect

MODELS = Path(__file__).resolve().parents[2] / "models"


def line_config(serial: str, endpoint: str) -> Config:
    return Config.model_validate(
        {
            "cameras": [
                {
                    "id": "pole_piece_gige",
                    "backend": "aravis",
                    "address": LOOPBACK,
                    "device": {"serial": serial},
                    "exposure_us": 10000,
                    "roi": {"width": 448, "height": 448},
                    "frame_rate_hz": 10,
                }
            ],
            "stations": [
                {
                    "name": "pole_piece",
                    "type": "pole_piece",
                    "cameras": ["pole_piece_gige"],
                    "model": "pole_piece",
                    # generous: this test is about which cell gets which verdict, on a
                    # machine other tests load too (speed is `linevision bench`'s job)
                    "deadline_ms": 2000,
                }
            ],
            "bus": {"publish": endpoint, "heartbeat_s": 0.5},
            "archive": {"enabled": False},
            "metrics": {"enabled": False},
            "control": {"enabled": False},
        }
    )


def test_lost_packets_become_bad_frame_verdicts_of_the_right_cells(tmp_path: Path) -> None:
    verdicts: list[VerdictMessage] = []
    beats: list[HeartbeatMessage] = []
    with address_lock(LOOPBACK):
        fake = FakeGigE(new_serial(), tmp_path / "fake.log", LOOPBACK, lost_per_thousand=4)
        fake.start()
        cfg = line_config(fake.serial, free_tcp_endpoint())

        def reader() -> None:
            topics = ("verdict.", HEARTBEAT_TOPIC)
            for m in subscribe(cfg.bus.publish, topics, timeout_s=30.0):
                if isinstance(m, VerdictMessage):
                    verdicts.append(m)
                else:
                    beats.append(m)
                if len(verdicts) >= 60:
                    return

        service = Service(cfg, models_root=MODELS)
        try:
            service.start()
            thread = threading.Thread(target=reader, daemon=True)
            thread.start()
            thread.join(90.0)
            camera = service.cameras["pole_piece_gige"].stats()
            families = {f.name: f for f in _ServiceCollector(service, dict).collect()}
        finally:
            service.stop()
            fake.stop()
    assert len(verdicts) >= 60
    sent, damaged = fake.sent_frames(), fake.damaged_frames()
    by_cell = {m.cell_id: m for m in verdicts}
    assert len(by_cell) == len(verdicts)  # one verdict per cell
    bad = host_lost = 0
    for cell, m in sorted(by_cell.items()):
        frame_id = sent[cell - 1]  # free run: cell n is the n-th frame the camera sent
        if frame_id in damaged:
            bad += 1
            assert (m.verdict, m.reason) == ("NG", "bad_frame"), (cell, frame_id, m)
        elif m.reason == "bad_frame":
            host_lost += 1  # sent whole, lost on a loaded host (no free buffer in time)
        else:
            assert m.reason in (None, "defect"), (cell, frame_id, m.label)  # inspected
    assert bad >= 5
    assert host_lost <= 3
    assert len(by_cell) - bad >= 5
    # the stream counters reach the heartbeat (and the metrics, from the same stats)
    stream = beats[-1].cameras["pole_piece_gige"]["stream"]
    assert isinstance(stream, dict)
    assert stream["missing_packets"] > 0
    assert stream["failures"] >= 1
    assert camera.stream is not None
    assert camera.stream.failures >= bad
    samples = {
        s.labels["counter"]: s.value
        for s in families["linevision_camera_stream"].samples
        if s.labels["camera"] == "pole_piece_gige"
    }
    assert samples["missing_packets"] >= stream["missing_packets"]
    # a frame lost on the host (no free buffer) never completes
    assert samples["completed"] >= len(by_cell) - bad - host_lost


def test_the_deploy_config_runs_pole_piece_on_the_fake_camera(tmp_path: Path) -> None:
    path = MODELS.parent / "deploy" / "gige-fake.yaml"
    data = parse_config(path.read_text(), str(path)).model_dump(mode="json")
    serial = data["cameras"][0]["device"]["serial"]
    assert serial == "GEV01"
    data["bus"]["publish"] = free_tcp_endpoint()
    data["metrics"] = {"enabled": False}
    data["archive"] = {"enabled": False}
    data["control"] = {"enabled": False}
    cfg = Config.model_validate(data)
    with address_lock(LOOPBACK):
        fake = FakeGigE(serial, tmp_path / "fake.log", LOOPBACK)
        fake.start()
        try:
            got, _ = run_service_and_collect(cfg, 20, MODELS, timeout_s=60.0)
        finally:
            fake.stop()
    assert len(got) == 20
    cells = sorted(m.cell_id for m in got)
    assert cells == list(range(cells[0], cells[0] + 20))
    # inspected; a machine other work loads may miss the 30 ms deadline, shed a cell or lose
    # a frame's packets: each of those an NG with its reason, nothing else
    assert {m.reason for m in got} <= {None, "defect", "timeout", "overload", "bad_frame"}
    assert all(m.verdict == "NG" for m in got if m.reason is not None)
    assert any(m.reason in (None, "defect") for m in got)


def test_a_killed_camera_gives_camera_error_verdicts_until_it_is_back(tmp_path: Path) -> None:
    verdicts: list[VerdictMessage] = []
    with address_lock(LOOPBACK):
        fake = FakeGigE(new_serial(), tmp_path / "fake.log", LOOPBACK)
        fake.start()
        data = line_config(fake.serial, free_tcp_endpoint()).model_dump(mode="json")
        cam = data["cameras"][0]
        del cam["frame_rate_hz"]
        cam.update(
            trigger={"mode": "software", "rate_hz": 10},
            grab_timeout_ms=500,
            reconnect_min_s=0.2,
            reconnect_max_s=1.0,
        )
        cfg = Config.model_validate(data)
        done = threading.Event()

        def reader() -> None:
            for m in subscribe(cfg.bus.publish, ("verdict.",), timeout_s=30.0):
                if isinstance(m, VerdictMessage):
                    verdicts.append(m)
                if done.is_set():
                    return

        def count(reason: str | None) -> int:
            wanted = (None, "defect") if reason is None else (reason,)  # None: inspected
            return sum(m.reason in wanted for m in verdicts)

        service = Service(cfg, models_root=MODELS)
        try:
            service.start()
            thread = threading.Thread(target=reader, daemon=True)
            thread.start()
            assert wait(lambda: count(None) >= 8)
            fake.kill()
            assert wait(lambda: count("camera_error") >= 20)
            fake.start()
            before = count(None)
            assert wait(lambda: count(None) >= before + 8)
            done.set()
            thread.join(30.0)
        finally:
            service.stop()
            fake.stop()
    by_cell = {m.cell_id: m for m in verdicts}
    assert len(by_cell) == len(verdicts)
    cells = sorted(by_cell)
    assert cells == list(range(cells[0], cells[-1] + 1))  # every cell, once
    kinds = "".join(
        "E"
        if by_cell[c].reason == "camera_error"
        else "I"
        if by_cell[c].reason in (None, "defect")
        else "x"
        for c in cells
    )
    run = re.fullmatch(r"([^E]*)(E+)([^E]*)", kinds)
    assert run is not None, kinds  # inspected, camera errors while it was away, inspected
    head, _, tail = run.groups()
    assert head.count("I") >= 8, kinds
    assert tail.count("I") >= 8, kinds
    assert all(by_cell[c].verdict == "NG" for c in cells if kinds[c - cells[0]] != "I")


def wait(predicate: Callable[[], bool], timeout_s: float = 40.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
