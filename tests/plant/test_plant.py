"""``linevision plant``: the view's counting, and a fleet of six lines into one Mosquitto
with the view as the one consumer (light load; tests/plant_fleet.py measures rated load)."""

from __future__ import annotations

import json
import time

from linevision.bridges.mqtt_link import Message
from linevision.plant.view import PlantView
from tests.bridges.mosquitto import need_mosquitto
from tests.plant_fleet import LIGHT, run_fleet


def verdict(seq: int, run: str = "a" * 32, line: str = "l1") -> Message:
    body = {
        "schema": 1,
        "run_id": run,
        "seq": seq,
        "station": "pp",
        "cell_id": seq,
        "verdict": "OK",
        "reason": None,
        "label": "Normal",
        "score": 0.9,
        "defects": [],
        "model": None,
        "t_frame_ns": time.time_ns(),
        "t_publish_ns": time.time_ns() - 2_000_000,
        "latency_ms": 1.0,
        "site": "p",
        "line": line,
    }
    user = {"run_id": run, "seq": str(seq), "t_mqtt_ns": str(time.time_ns() - 1_000_000)}
    return Message(
        f"linevision/p/{line}/pp/verdict", json.dumps(body).encode(), False, user, time.time_ns()
    )


def test_the_view_counts_each_verdict_once_and_sees_gaps():
    view = PlantView()
    for seq in (1, 2, 3, 2, 3, 5):
        view.ingest(verdict(seq))
    view.ingest(Message("linevision/p/l1/pp/verdict", b"{", False, {}, time.time_ns()))
    view.ingest(Message("elsewhere/x", b"{}", False, {}, time.time_ns()))
    snap = view.snapshot()
    line = snap["lines"]["p/l1"]
    assert (line["verdicts"], line["duplicates"], line["pending_gaps"]) == (4, 2, 1)
    assert line["runs"] == {"a" * 32: 3}
    assert snap["invalid"] == 2
    lat = snap["latency_ms"]
    assert lat["bridge_to_consumer"]["n"] == 4
    assert lat["daemon_to_consumer"]["p50"] > lat["bridge_to_consumer"]["p50"]
    view.ingest(verdict(4))
    assert view.snapshot()["lines"]["p/l1"]["runs"] == {"a" * 32: 5}
    assert "p/l1" in view.render()


def test_six_lines_into_one_broker_reach_the_plant_view_complete(tmp_path):
    need_mosquitto()
    out = run_fleet(tmp_path, lines=6, seconds=5, rates=LIGHT)
    shown = {k: v for k, v in out.items() if k not in ("want", "seen", "yields")}
    print(f"\nFIGURE plant fleet (light): {shown}")
    assert out["complete"], (out["want"], out["seen"])
    assert out["received"] == out["journaled"] > 0
    assert out["pending_gaps"] == 0
    assert len(out["seen"]) == 6
    for name, runs in out["seen"].items():
        assert runs == out["want"][name]
    assert set(out["states"].values()) <= {"offline", "daemon_down", "running"}
    assert out["latency_ms"]["bridge_to_consumer"]["n"] >= out["journaled"]
