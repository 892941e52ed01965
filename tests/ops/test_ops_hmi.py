"""The operator page in a real browser (Debian's chromium), fed by a real verdict bus."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Self

import cv2
import numpy as np
import pytest
import yaml
from conftest import free_port, ops_config
from playwright.sync_api import sync_playwright
from pydantic import ValidationError

from linevision.archive import Archive
from linevision.bus import VerdictPublisher, parse_message, verdict_payload
from linevision.config import ArchiveConfig, HmiConfig
from linevision.hmi.server import HmiServer
from linevision.hmi.state import HmiState, shift_start
from linevision.types import Decision, Defect, ModelRef, StageTimes, Verdict
from tests.helpers import free_tcp_endpoint

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
MODEL = ModelRef("pole_piece", "0.3.1", "3b9e" * 16)
IMAGE_SHOWN = """(seq) => {
  const i = document.querySelector('.station[data-station="pole_piece"] img.ng-image');
  return i !== null && i.dataset.seq === seq && i.complete && i.naturalWidth > 0;
}"""
BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _image(cell: int, ng: bool) -> np.ndarray:
    img = np.full((224, 224), 70, np.uint8)
    cv2.rectangle(img, (30, 20), (194, 204), 150, -1)
    if ng:
        cv2.line(img, (150, 60), (200, 45 + cell % 30), 250, 3)
    return img


def _verdict(cell: int, ng: bool, station: str = "pole_piece", reason: str = "defect") -> Verdict:
    now = time.monotonic_ns()
    t0 = now - 4_000_000 - (cell % 7) * 1_000_000
    defects = (Defect("burr", 0.93, 140, 35, 64, 40),) if ng else ()
    return Verdict(
        station=station,
        cell_id=cell,
        decision=Decision(
            "NG" if ng else "OK",
            reason if ng else None,  # type: ignore[arg-type]
            "Long" if ng else "Normal",
            0.97 if ng else 0.99,
            defects,
            MODEL,
            1.3,
        ),
        t_frame_ns=time.time_ns(),
        t_frame_mono_ns=t0,
        image=_image(cell, ng),
        recipe="cell_21700",
        stages=StageTimes(t0 + 100_000, t0 + 300_000, now - 200_000),
    )


class Line:
    """A verdict publisher, the archive writing NG images, and the HMI server."""

    def __init__(self, tmp: Path, token: str | None = None) -> None:
        self.archive_dir = tmp / "archive"
        self.endpoint = free_tcp_endpoint()
        self.publisher = VerdictPublisher(self.endpoint, heartbeat_s=0.2, state=self._state)
        self.archive = Archive(
            self.archive_dir, ArchiveConfig(dir=self.archive_dir), self.publisher.run_id
        )
        self.publisher._on_published = self.archive.listener
        self.port = free_port()
        cfg = HmiConfig(listen=f"127.0.0.1:{self.port}", push_hz=5)
        self.hmi = HmiServer(cfg, self.endpoint, self.archive_dir, token)
        self.url = f"http://127.0.0.1:{self.port}/"

    @staticmethod
    def _state():
        cams = {"pole_piece_cam": {"state": "running", "frames": 1200, "reconnects": 0}}
        return {"pole_piece": {"queue": 0}}, cams

    def __enter__(self) -> Self:
        self.archive.start()
        self.publisher.start()
        self.hmi.start()
        deadline = time.monotonic() + 5
        while self.hmi.state.snapshot()["run_id"] is None and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.hmi.stop()
        self.publisher.stop()
        self.archive.stop()


@pytest.fixture
def browser():
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        try:
            yield b
        finally:
            b.close()


def test_ng_row_and_image_appear_within_a_second(tmp_path, browser):
    ARTIFACTS.mkdir(exist_ok=True)
    with Line(tmp_path) as line:
        page = browser.new_page(viewport={"width": 1920, "height": 1080})
        page.goto(line.url)
        page.wait_for_selector("#conn.on", timeout=5000)
        for cell in range(1, 30):
            line.publisher.publish(_verdict(cell, ng=cell % 9 == 0))
        line.publisher.publish(_verdict(7, ng=True, station="seal_edge", reason="timeout"))
        page.wait_for_selector('.station[data-station="pole_piece"] tr.ng', timeout=5000)
        time.sleep(0.3)
        t0 = time.monotonic()
        line.publisher.publish(_verdict(30, ng=True))
        seq = line.publisher.seq + 1
        page.wait_for_selector(
            f'.station[data-station="pole_piece"] tr.ng[data-seq="{seq}"]', timeout=1000
        )
        page.wait_for_function(IMAGE_SHOWN, arg=str(seq), timeout=1000)
        elapsed = time.monotonic() - t0
        assert elapsed < 1.0
        row = page.inner_text(f'tr.ng[data-seq="{seq}"]')
        assert "NG" in row
        assert "defect / Long" in row
        assert page.inner_text('.station[data-station="pole_piece"] .counters').count("NG") == 2
        assert "cell_21700" in page.inner_text('.station[data-station="pole_piece"] .tags')
        assert page.query_selector('#alarms li[data-code="fault_timeout"]') is not None
        assert "running" in page.inner_text("#health")
        time.sleep(1.2)
        page.screenshot(path=str(ARTIFACTS / "hmi.png"))
        page.close()


def test_page_stays_responsive_at_100_verdicts_per_second(tmp_path, browser):
    ARTIFACTS.mkdir(exist_ok=True)
    with Line(tmp_path) as line:
        page = browser.new_page(viewport={"width": 1920, "height": 1080})
        page.goto(line.url)
        page.wait_for_selector("#conn.on", timeout=5000)
        page.evaluate("window.hmiStats.maxFrameGapMs = 0")
        n, rate = 500, 100.0
        t0 = time.monotonic()
        late = 0.0
        for i in range(n):
            due = t0 + i / rate
            late = max(late, time.monotonic() - due)
            time.sleep(max(0.0, due - time.monotonic()))
            line.publisher.publish(_verdict(1000 + i, ng=i % 10 == 3))
        sent_s = time.monotonic() - t0
        last_seq = line.publisher.seq + 0
        deadline = time.monotonic() + 3
        while line.publisher.seq < n and time.monotonic() < deadline:
            time.sleep(0.01)
        last_seq = line.publisher.seq
        page.wait_for_selector(f'tr[data-seq="{last_seq}"]', timeout=1500)
        caught_up_s = time.monotonic() - t0 - sent_s
        stats = page.evaluate("window.hmiStats")
        snap = line.hmi.state.snapshot()
        snapshots = line.hmi.app.state.snapshots
        result = {
            "verdicts_published": line.publisher.seq,
            "verdicts_seen_by_hmi": line.hmi.state.verdicts,
            "publish_seconds": round(sent_s, 2),
            "page_caught_up_after_last_s": round(caught_up_s, 3),
            "sse_events": stats["events"],
            "renders": stats["renders"],
            "max_render_ms": round(stats["maxRenderMs"], 2),
            "max_frame_gap_ms": round(stats["maxFrameGapMs"], 1),
            "snapshot_builds": snapshots.builds,
            "max_snapshot_build_ms": round(snapshots.build_ms_max, 2),
            "archive_records": line.archive.counters["records"],
        }
        (ARTIFACTS / "hmi_load.json").write_text(json.dumps(result, indent=2))
        page.screenshot(path=str(ARTIFACTS / "hmi_load.png"))
        page.close()
    assert result["verdicts_seen_by_hmi"] == n
    assert snap["stations"]["pole_piece"]["run"]["ng"] == 50
    assert result["page_caught_up_after_last_s"] < 1.0
    assert result["sse_events"] <= result["publish_seconds"] * 5 + 10
    assert result["sse_events"] >= result["publish_seconds"] * 3
    assert result["max_render_ms"] < 100
    assert result["max_frame_gap_ms"] < 500


def test_token_required_when_set(tmp_path):
    token = "t0ken-abcdefghijklmnop"
    with Line(tmp_path, token=token) as line:
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(line.url, timeout=5)
        assert err.value.code == 401
        with urllib.request.urlopen(line.url + "healthz", timeout=5) as r:
            assert r.status == 200
        with urllib.request.urlopen(f"{line.url}?token={token}", timeout=5) as r:
            assert r.status == 200
            assert "linevision_hmi=" in r.headers["set-cookie"]
        req = urllib.request.Request(
            line.url + "api/state", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            assert json.loads(r.read())["run_id"] == line.publisher.run_id
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(line.url + "img/pole_piece/00/1.jpg?t=1", timeout=5)
        assert err.value.code == 401
    with pytest.raises(ValidationError, match=r"set hmi\.token_file"):
        HmiConfig(listen="0.0.0.0:8080")
    assert HmiConfig(listen="0.0.0.0:8080", token_file=Path("hmi-token")).token_file == Path(
        "hmi-token"
    )


def test_state_counts_shifts_and_raises_alarms():
    local = datetime(2026, 5, 1, 21, 59)  # noqa: DTZ001  (shifts are local wall-clock time)
    assert shift_start(local, ("06:00", "14:00", "22:00")).hour == 14
    state = HmiState(budget_ms=30, min_yield=0.95)
    for seq in range(1, 61):
        v = _verdict(seq, ng=seq % 5 == 0)
        payload = verdict_payload(v, "ab" * 16, seq if seq < 40 else seq + 3, time.time_ns(), 45.0)
        state.ingest(parse_message(b"verdict.pole_piece", payload))
    snap = state.snapshot()
    st = snap["stations"]["pole_piece"]
    assert st["shift"] == {"ok": 48, "ng": 12, "yield": 0.8}
    assert len(st["recent"]) == 12
    assert st["last_ng"]["cell_id"] == 60
    codes = {a["code"] for a in snap["alarms"]}
    assert {"latency_budget", "low_yield", "verdict_gap"} <= codes


def test_hmi_command_serves_with_a_credential_token_and_stops_on_sigterm(tmp_path, frames):
    port = free_port()
    cfg = ops_config(
        tmp_path, frames, hmi={"listen": f"127.0.0.1:{port}", "token_file": "hmi-token"}
    )
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "hmi-token").write_text("s3cret-token-0123456789\n")
    env = dict(os.environ, CREDENTIALS_DIRECTORY=str(creds))
    proc = subprocess.Popen(
        [sys.executable, "-m", "linevision", "hmi", "--config", str(cfg_file)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(base + "healthz", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "the HMI did not come up"
                time.sleep(0.1)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(base, timeout=5)
        assert err.value.code == 401
        with urllib.request.urlopen(base + "?token=s3cret-token-0123456789", timeout=5) as r:
            assert "linevision" in r.read().decode()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=5)
