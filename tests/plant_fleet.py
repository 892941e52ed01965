"""The plant at small scale: N daemons as N lines, one MQTT bridge each, one Mosquitto, and
``linevision plant`` as the one consumer.

    python -m tests.plant_fleet --lines 6 --seconds 60 [--rated] [--json]

Each line is ``linevision run --config`` on replay cameras with a tiny ONNX model (the
pipeline is real, the compute light), journal and replay on; ``--rated`` gives each line the
rated verdict mix of the four-station line (20 + 4 + 2 + 1 = 27 verdicts/s over four
stations), otherwise one station at 5 cells/s. The consumer prints a JSON snapshot every
second; the run ends when it holds every journaled verdict of every line (or a timeout).

Figures: messages through the broker and per second at the consumer; latency from the
bridge's publish (user property ``t_mqtt_ns``) and from the daemon's (``t_publish_ns``) to
the consumer; the broker's CPU time per second of the run.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.bridges.harness import Proc, write_yaml
from tests.bridges.mosquitto import Mosquitto
from tests.daemon.parts import make_frames, make_model
from tests.helpers import free_tcp_endpoint

RATED = {"pole_piece": 20.0, "seal_edge": 4.0, "six_view": 2.0, "blue_film": 1.0}
LIGHT = {"pole_piece": 5.0}
START_TIMEOUT_S = 180.0
"""Six daemons and six bridges starting at once on two busy cores take a while."""


def daemon_config(work: Path, frames: Path, rates: dict[str, float]) -> tuple[Path, str, str]:
    publish, replay = free_tcp_endpoint(), free_tcp_endpoint()
    data = {
        "cameras": [
            {"id": f"{s}_cam", "backend": "replay", "path": str(frames), "rate_hz": hz}
            for s, hz in rates.items()
        ],
        "stations": [
            {
                "name": s,
                "type": "pole_piece",
                "cameras": [f"{s}_cam"],
                "model": "tiny",
                "deadline_ms": 500,
                "queue_size": 64,
            }
            for s in rates
        ],
        "inference": {"workers": 1},
        "bus": {"publish": publish, "replay": replay},
        "journal": {"path": str(work / "journal.db")},
        "archive": {"enabled": False},
        "metrics": {"enabled": False},
        "control": {"enabled": False},
        "logging": {"level": "info", "format": "json"},
    }
    return write_yaml(work / "daemon.yaml", data), publish, replay


def journaled(path: Path) -> dict[str, int]:
    """run_id -> the last journaled seq (a run is gapless from 1)."""
    if not path.exists():
        return {}
    db = sqlite3.connect(str(path), timeout=5.0)
    try:
        return dict(db.execute("SELECT run_id, MAX(seq) FROM verdicts GROUP BY run_id"))
    except sqlite3.OperationalError:
        return {}
    finally:
        db.close()


def last_snapshot(log: Path) -> dict[str, Any] | None:
    if not log.exists():
        return None
    for line in reversed(log.read_text(errors="replace").splitlines()):
        if line.startswith("{") and '"lines"' in line:
            try:
                return dict(json.loads(line))
            except ValueError:
                continue
    return None


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def complete(snap: dict[str, Any] | None, lines: list[Path]) -> bool:
    if snap is None:
        return False
    for i, work in enumerate(lines):
        seen = snap["lines"].get(f"plant1/line{i + 1}")
        want = journaled(work / "journal.db")
        if seen is None or not want:
            return False
        if any(seen["runs"].get(run, 0) < last for run, last in want.items()):
            return False
    return True


def run_fleet(work: Path, lines: int, seconds: float, rates: dict[str, float]) -> dict[str, Any]:
    models = work / "models"
    make_model(models / "tiny")
    frames = make_frames(work / "frames", count=16)
    broker = Mosquitto(work / "broker").start()
    assert broker.proc is not None
    plant_log = work / "plant.log"
    args = ["-m", "linevision", "plant", "--port", str(broker.port), "--json", "--interval", "1"]
    args += ["--client-id", "fleet-plant", "--stats", str(work / "plant-stats.json")]
    plant = Proc(args, plant_log)
    plant.start(wait_ready=False)
    procs: list[Proc] = [plant]
    line_dirs = []
    try:
        for i in range(lines):
            lw = work / f"line{i + 1}"
            lw.mkdir()
            line_dirs.append(lw)
            cfg, publish, replay = daemon_config(lw, frames, rates)
            bridge_cfg = write_yaml(
                lw / "bridge-mqtt.yaml",
                {
                    "site": "plant1",
                    "line": f"line{i + 1}",
                    "source": {"verdicts": publish, "replay": replay},
                    "report": {"publish": free_tcp_endpoint()},
                    "broker": {"host": "127.0.0.1", "port": broker.port},
                    "store": {"path": str(lw / "outbox.db")},
                    "yield": {"period_s": 5},
                },
            )
            bridge = Proc(
                ["-m", "linevision", "bridge", "mqtt", "--config", str(bridge_cfg)],
                lw / "bridge.log",
            )
            procs.append(bridge.start(wait_ready=False))
            daemon = Proc(
                ["-m", "linevision", "run", "--config", str(cfg), "--models", str(models)],
                lw / "daemon.log",
            )
            procs.append(daemon.start(wait_ready=False))
        started = time.monotonic()
        while not all(journaled(d / "journal.db") for d in line_dirs):
            assert time.monotonic() - started < START_TIMEOUT_S, "the daemons did not start"
            time.sleep(0.5)
        snap0 = last_snapshot(plant_log) or {"messages": 0}
        t0, cpu0 = time.monotonic(), cpu_s(broker.proc.pid)
        time.sleep(seconds)
        snap1 = last_snapshot(plant_log) or {"messages": 0}
        run_s = time.monotonic() - t0
        cpu = cpu_s(broker.proc.pid) - cpu0
        for p in procs[2::2]:  # the daemons: a clean stop journals the cells in flight
            p.terminate()
        deadline = time.monotonic() + 60
        while not complete(last_snapshot(plant_log), line_dirs) and time.monotonic() < deadline:
            time.sleep(0.5)
        done = complete(last_snapshot(plant_log), line_dirs)
    finally:
        for p in reversed(procs):
            if p.popen is not None and p.popen.poll() is None:
                p.terminate()
        broker.stop()
    stats = json.loads((work / "plant-stats.json").read_text())
    want = {f"plant1/line{i + 1}": journaled(d / "journal.db") for i, d in enumerate(line_dirs)}
    verdicts = sum(last for runs in want.values() for last in runs.values())
    return {
        "lines": lines,
        "rates": rates,
        "seconds": round(run_s, 1),
        "complete": done,
        "journaled": verdicts,
        "received": sum(v["verdicts"] for v in stats["lines"].values()),
        "duplicates": sum(v["duplicates"] for v in stats["lines"].values()),
        "pending_gaps": sum(v["pending_gaps"] for v in stats["lines"].values()),
        "messages": stats["messages"],
        "by_kind": stats["by_kind"],
        "messages_per_s": round((snap1["messages"] - snap0["messages"]) / run_s, 1),
        "start_s": round(t0 - started, 1),
        "latency_ms": stats["latency_ms"],
        "broker_cpu_s_per_s": round(cpu / run_s, 4),
        "want": want,
        "seen": {k: v["runs"] for k, v in stats["lines"].items()},
        "states": {k: v["status"] for k, v in stats["lines"].items()},
        "yields": {k: v["yield"] for k, v in stats["lines"].items()},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--lines", type=int, default=6)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--rated", action="store_true")
    p.add_argument("--json", action="store_true")
    p.add_argument("--probe", type=float, nargs="*", default=None, help="broker alone at RATE/s")
    args = p.parse_args()
    if args.probe is not None:
        with tempfile.TemporaryDirectory(prefix="plant-probe-") as tmp:
            for rate in args.probe:
                print(json.dumps(broker_probe(Path(tmp) / str(rate), rate, args.seconds)))
        return
    with tempfile.TemporaryDirectory(prefix="plant-fleet-") as tmp:
        out = run_fleet(Path(tmp), args.lines, args.seconds, RATED if args.rated else LIGHT)
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            if k not in ("want", "seen", "yields"):
                print(f"{k}: {v}")
    sys.exit(0 if out["complete"] else 1)


def broker_probe(work: Path, rate_hz: float, seconds: float, lines: int = 50) -> dict[str, Any]:
    """Mosquitto alone at ``rate_hz`` verdict-sized QoS 1 messages (spread over ``lines``
    topics, one publisher), one persistent QoS 1 subscriber: latency and broker CPU."""
    import threading  # noqa: PLC0415

    from paho.mqtt.client import Client  # noqa: PLC0415
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion  # noqa: PLC0415

    from linevision.bridges.mqtt_messages import Tree  # noqa: PLC0415
    from linevision.bus.wire import VerdictMessage, verdict_payload  # noqa: PLC0415
    from tests.bridges.daemon_sim import verdict  # noqa: PLC0415

    broker = Mosquitto(work / "probe-broker").start()
    assert broker.proc is not None
    body = VerdictMessage.model_validate_json(verdict_payload(verdict(3), "ab" * 16, 1, 0, 1.0))
    payload = Tree("linevision", "plant1", "line01", "mqtt").verdict(body)
    lat: list[float] = []
    got = threading.Event()
    n = round(rate_hz * seconds)

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        lat.append((time.time_ns() - int(msg.payload[:19])) / 1e6)
        if len(lat) >= n:
            got.set()

    sub = Client(CallbackAPIVersion.VERSION2, "probe-sub", protocol=MQTTProtocolVersion.MQTTv5)
    sub.on_message = on_message
    sub.connect("127.0.0.1", broker.port)
    sub.subscribe("linevision/#", qos=1)
    sub.loop_start()
    pub = Client(CallbackAPIVersion.VERSION2, "probe-pub", protocol=MQTTProtocolVersion.MQTTv5)
    pub.max_inflight_messages_set(20)
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    time.sleep(0.5)
    t0, cpu0 = time.monotonic(), cpu_s(broker.proc.pid)
    try:
        for i in range(n):
            wait = t0 + i / rate_hz - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            stamped = str(time.time_ns()).encode() + payload[19:]
            pub.publish(f"linevision/plant1/line{i % lines:02d}/pole_piece/verdict", stamped, qos=1)
        got.wait(60)
        run_s = time.monotonic() - t0
        cpu = cpu_s(broker.proc.pid) - cpu0
    finally:
        pub.loop_stop()
        sub.loop_stop()
        broker.stop()
    s = sorted(lat)
    return {
        "rate_hz": rate_hz,
        "sent": n,
        "received": len(lat),
        "payload_bytes": len(payload),
        "latency_ms": {
            "p50": round(s[len(s) // 2], 2),
            "p99": round(s[int(len(s) * 0.99)], 2),
            "max": round(s[-1], 2),
        },
        "broker_cpu_s_per_s": round(cpu / run_s, 4),
        "broker_cpu_us_per_message": round(1e6 * cpu / max(1, len(lat)), 1),
    }


if __name__ == "__main__":
    main()
