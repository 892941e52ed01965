"""Drift through the folder camera: a darker image or a blurred lens raises a drift alarm
within a window of cells, before the false rejects it brings pass 2 %.

The station's model calls a frame darker than 0.1 (of full scale) NG, as a model that sees
a missing part would: the line's OK frames lie between 0.16 and 0.30, so a camera losing
gain makes false rejects only once the darkest frames pass that line. The folder camera
reads its files at each grab; the test rewrites them (atomically) to change the "camera".
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from linevision.bus.wire import parse_message
from linevision.config import HmiConfig
from linevision.hmi.server import HmiServer
from linevision.lifecycle.stats import image_stats
from tests.daemon.parts import free_port, make_model
from tests.lifecycle.parts import BusLog, cli, lifecycle_config, running_daemon, wait_for

N_FRAMES = 20
WINDOW = 100
"""``drift.window`` here: the test states that an alarm comes within one window of cells."""


def _originals(n: int = N_FRAMES) -> list[np.ndarray]:
    """OK frames with mean brightness spread evenly over 0.16..0.30 of full scale."""
    rng = np.random.default_rng(7)
    out = []
    for i in range(n):
        level = 255 * (0.16 + 0.14 * i / (n - 1))
        img = np.full((96, 128), level, np.float32)
        cv2.circle(img, (30 + 3 * i, 48), 14, level + 40, -1)
        cv2.line(img, (0, 10 + i), (127, 80 - i), level - 25, 2)
        img += rng.normal(0, 4, img.shape).astype(np.float32)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def _write(folder: Path, images: list[np.ndarray]) -> None:
    """Replace every frame file atomically: a grab reads the old file or the new one."""
    for i, img in enumerate(images):
        tmp = folder / f".f_{i:03d}.png.tmp"
        ok, data = cv2.imencode(".png", img)
        assert ok
        tmp.write_bytes(data.tobytes())
        tmp.replace(folder / f"f_{i:03d}.png")


def _gain(images: list[np.ndarray], g: float) -> list[np.ndarray]:
    return [np.clip(img.astype(np.float32) * g, 0, 255).astype(np.uint8) for img in images]


def _blur(images: list[np.ndarray], sigma: float) -> list[np.ndarray]:
    return [cv2.GaussianBlur(img, (0, 0), sigma) for img in images]


def _setup(tmp_path: Path):
    frames = tmp_path / "frames"
    frames.mkdir()
    originals = _originals()
    _write(frames, originals)
    models = tmp_path / "models"
    make_model(models / "dark_is_ng", name="dark_is_ng", invert=True, at=0.1)
    cfg = lifecycle_config(
        tmp_path,
        frames,
        rate_hz=100,
        drift={"window": WINDOW, "min_cells": 60, "every": 10},
        challenge={"on_start": False},
    )
    station = cfg.stations[0].model_copy(update={"model": Path("dark_is_ng")})
    return cfg.model_copy(update={"stations": (station,)}), models, frames, originals


def _verdicts_and_alarms(bus: BusLog) -> list[tuple[str, dict[str, object]]]:
    out = []
    for topic, payload in list(bus.messages):
        if topic.startswith("verdict."):
            m = parse_message(topic.encode(), payload)
            out.append(("verdict", m.model_dump()))
        elif topic == "alarm.daemon":
            out.append(("alarm", json.loads(payload)))
    return out


def _cells_until_alarm(bus: BusLog, mark: int, code: str, active: bool = True):
    """Verdicts after message ``mark`` until the alarm ``code``, and that alarm."""
    cells = 0
    for kind, body in _verdicts_and_alarms(bus)[mark:]:
        if kind == "verdict":
            cells += 1
        elif (
            body["alarm"] == code and body["active"] is active and not body["detail"].get("repeat")
        ):
            return cells, body
    return None


def _capture_baseline(cfg) -> None:
    run = cli(
        "baseline",
        "capture",
        "--station",
        "pole_piece",
        "--cells",
        "200",
        "--endpoint",
        cfg.control.endpoint,
        "--timeout",
        "120",
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["done"] is True


def test_lower_gain_or_a_blur_raises_an_alarm_within_a_window_naming_the_statistic(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    cfg, models, frames, originals = _setup(tmp_path)
    bus = BusLog(cfg.bus.publish).start()
    hmi = HmiServer(HmiConfig(listen=f"127.0.0.1:{free_port()}"), cfg.bus.publish, None)
    hmi.start()
    try:
        with running_daemon(cfg, models) as ops:
            _capture_baseline(cfg)
            drift = ops.lifecycle.drift  # type: ignore[union-attr]
            wait_for(lambda: drift.status()["stations"]["pole_piece"]["level"] == "ok", 20, "ok")

            # the camera loses 20 % of its gain
            mark = len(bus.messages)
            _write(frames, _gain(originals, 0.8))
            wait_for(lambda: _cells_until_alarm(bus, mark, "drift_critical"), 30, "alarm")
            cells, alarm = _cells_until_alarm(bus, mark, "drift_critical")  # type: ignore[misc]
            detail = alarm["detail"]
            print(
                f"gain -20 %: drift_critical after {cells} cells: {detail['statistic']} "
                f"PSI {detail['psi']}"
            )
            assert cells <= WINDOW
            assert detail["station"] == "pole_piece"
            assert float(detail["psi"]) >= 0.25
            # once the window is the new camera's: a loss of gain shows in brightness (and
            # what scales with it, contrast and noise), not in sharpness
            psi = _psi_after_window(bus, mark, drift)
            print(f"gain -20 %: PSI after a window: {psi}")
            assert psi["brightness"] >= 0.25
            assert psi["sharpness"] < 0.1
            _check_page_and_metrics(hmi, ops.metrics_address)
            verdicts = [b for k, b in _verdicts_and_alarms(bus)[mark:] if k == "verdict"]
            decided = [v for v in verdicts if v["reason"] in (None, "defect")]
            assert all(v["verdict"] == "OK" for v in decided), "no false reject yet at -20 %"

            # the camera is cleaned: the alarm clears
            mark = len(bus.messages)
            _write(frames, originals)
            wait_for(
                lambda: _cells_until_alarm(bus, mark, "drift_critical", active=False), 30, "clear"
            )

            # the lens blurs
            mark = len(bus.messages)
            _write(frames, _blur(originals, 1.5))
            wait_for(lambda: _cells_until_alarm(bus, mark, "drift_critical"), 30, "blur alarm")
            cells, alarm = _cells_until_alarm(bus, mark, "drift_critical")  # type: ignore[misc]
            print(f"blur: drift_critical after {cells} cells: {alarm['detail']['statistic']}")
            assert cells <= WINDOW
            # a blur shows in sharpness (and noise), not in brightness
            psi = _psi_after_window(bus, mark, drift)
            print(f"blur: PSI after a window: {psi}")
            assert psi["sharpness"] >= 0.25
            assert psi["brightness"] < 0.1
    finally:
        hmi.stop()
        bus.stop()


def _check_page_and_metrics(hmi: HmiServer, metrics: tuple[str, int] | None) -> None:
    """The operator page's state has the level, the worst statistic and a trend; the metrics
    have the PSI of each statistic."""

    def state() -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{hmi.port}/api/state", timeout=5) as r:
            return dict(json.loads(r.read()))

    # the page learns the level from the daemon's heartbeats: it may show the step before
    # (warning) for up to a heartbeat after the alarm went out, and the trend (one point per
    # heartbeat) its second point a heartbeat after the first
    t_end = time.monotonic() + 10.0
    snap = state()

    def settled(view: dict[str, Any]) -> bool:
        return view["drift"] == "critical" and len(view.get("drift_trend", ())) >= 2

    while not settled(snap["lifecycle"]["pole_piece"]) and time.monotonic() < t_end:
        time.sleep(0.2)
        snap = state()
    view = snap["lifecycle"]["pole_piece"]
    assert view["drift"] == "critical"
    assert view["drift_psi"] >= 0.25
    assert len(view["drift_trend"]) >= 2
    assert "drift_critical" in {a["code"] for a in snap["alarms"]}
    assert metrics is not None
    with urllib.request.urlopen(f"http://{metrics[0]}:{metrics[1]}/metrics", timeout=5) as r:
        text = r.read().decode()
    assert 'linevision_drift_psi{station="pole_piece",statistic="brightness"}' in text
    assert 'linevision_drift_level{station="pole_piece"} 3.0' in text


def test_a_slow_loss_of_gain_alarms_before_false_rejects_pass_two_percent(tmp_path, monkeypatch):
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    cfg, models, frames, originals = _setup(tmp_path)
    bus = BusLog(cfg.bus.publish).start()
    gains: list[tuple[int, float]] = []
    stop = threading.Event()

    def ramp(start: int) -> None:
        """-2.5 % of gain every 25 cells, down to 0.5."""
        g = 1.0
        while not stop.is_set() and g > 0.5:
            n = len(bus.topics("verdict."))
            if n - start >= 25 * (len(gains) + 1):
                g = round(g - 0.025, 4)
                _write(frames, _gain(originals, g))
                gains.append((len(bus.messages), g))
            stop.wait(0.01)

    try:
        with running_daemon(cfg, models) as ops:
            _capture_baseline(cfg)
            drift = ops.lifecycle.drift  # type: ignore[union-attr]
            wait_for(lambda: drift.status()["stations"]["pole_piece"]["level"] == "ok", 20, "ok")
            mark = len(bus.messages)
            t = threading.Thread(target=ramp, args=(len(bus.topics("verdict.")),), daemon=True)
            t.start()
            wait_for(lambda: not t.is_alive() or _frr_passed(bus, mark), 180, "the ramp")
            wait_for(lambda: _frr_passed(bus, mark), 60, "2 % false rejects")
            stop.set()
            t.join(5)
    finally:
        stop.set()
        bus.stop()
    events = _verdicts_and_alarms(bus)[mark:]
    alarm_at = next(
        i for i, (k, b) in enumerate(events) if k == "alarm" and b["alarm"] == "drift_warning"
    )
    frr_at = _frr_passed(bus, mark)
    assert frr_at is not None
    verdicts_before_alarm = [b for k, b in events[:alarm_at] if k == "verdict"]
    gain_at = lambda i: min((g for m, g in gains if m - mark <= i), default=1.0)  # noqa: E731
    print(
        f"ramp: drift_warning after {len(verdicts_before_alarm)} cells (gain {gain_at(alarm_at)}), "
        f"false rejects passed 2 % after "
        f"{sum(1 for k, _ in events[:frr_at] if k == 'verdict')} cells (gain {gain_at(frr_at)})"
    )
    assert alarm_at < frr_at
    rejects = sum(1 for v in verdicts_before_alarm if v["verdict"] == "NG")
    assert rejects / max(1, len(verdicts_before_alarm)) < 0.02


def _psi_after_window(bus: BusLog, mark: int, drift) -> dict[str, float]:
    """The monitor's PSI per statistic once a whole window of cells came after ``mark``."""

    def seen() -> int:
        return sum(1 for k, _ in _verdicts_and_alarms(bus)[mark:] if k == "verdict")

    wait_for(lambda: seen() >= WINDOW + 20, 30, "a window of cells")
    return dict(drift.status()["stations"]["pole_piece"]["psi"])


def _frr_passed(bus: BusLog, mark: int, window: int = 100) -> int | None:
    """Index (in the events from ``mark``) where false rejects in the last ``window`` cells
    first pass 2 % (every frame is a good cell: any NG of the model is a false reject)."""
    recent: list[int] = []
    for i, (kind, body) in enumerate(_verdicts_and_alarms(bus)[mark:]):
        if kind != "verdict":
            continue
        recent.append(1 if body["verdict"] == "NG" and body["reason"] == "defect" else 0)
        recent = recent[-window:]
        if len(recent) == window and sum(recent) / window > 0.02:
            return i
    return None


def test_a_baseline_stored_with_the_model_is_used_and_a_bad_request_is_refused(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    cfg, models, _frames, originals = _setup(tmp_path)
    stats = [image_stats(img) for img in originals] * 5
    baseline = {
        "schema": 1,
        "station": "pole_piece",
        "recipe": None,
        "model_sha256": None,
        "captured_ns": 0,
        "stats": {k: [s[k] for s in stats] for k in stats[0]},
    }
    (models / "dark_is_ng" / "baseline.json").write_text(json.dumps(baseline))
    with running_daemon(cfg, models) as ops:
        drift = ops.lifecycle.drift  # type: ignore[union-attr]
        wait_for(lambda: drift.status()["stations"]["pole_piece"]["level"] == "ok", 20, "ok")
        st = drift.status()["stations"]["pole_piece"]
        assert st["baseline"] == str(models / "dark_is_ng" / "baseline.json")
        # another model's baseline: the score is not compared, the images are
        assert "score" not in st["psi"]
        assert st["psi"]["brightness"] < 0.1
        bad = cli("baseline", "capture", "--station", "nope", "--endpoint", cfg.control.endpoint)
        assert bad.returncode == 1
        assert "station: unknown station 'nope'" in bad.stderr
        bad = cli(
            "baseline",
            "capture",
            "--station",
            "pole_piece",
            "--cells",
            "5",
            "--endpoint",
            cfg.control.endpoint,
        )
        assert "cells: must be 10..100000, got 5" in bad.stderr
