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

import numpy as np
import pytest
import yaml
from playwright.sync_api import sync_playwright
from pydantic import ValidationError

from linevision.bus.wire import parse_message, verdict_payload
from linevision.config import HmiConfig
from linevision.hmi.state import HmiState, shift_start
from linevision.types import Decision, Defect, ModelRef, StageTimes, Verdict
from tests.daemon.parts import free_port, make_frames, ops_config
from tests.hmi.line import BROWSER_ARGS, CHROMIUM, Line, chromium_or_skip, verdict
from tests.hmi.test_page import Watched

MODEL = ModelRef("pole_piece", "0.3.1", "3b9e" * 16)


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
        image=np.zeros((224, 224), np.uint8),
        recipe="cell_21700",
        stages=StageTimes(t0 + 100_000, t0 + 300_000, now - 200_000),
    )


def test_an_ng_shows_on_its_tile_within_a_second(tmp_path):
    chromium_or_skip()
    with Line(tmp_path) as line, sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        w = Watched(b, (1920, 1080))
        page = w.open(line.url)
        for cell in range(1, 30):
            line.publish(verdict("pole_piece", cell), wait=False)
        line.publish(verdict("pole_piece", 30))
        page.wait_for_function(
            "document.querySelector('.tile[data-station=\"pole_piece\"] .t-cell')"
            ".textContent.includes('cell 30')"
        )
        t0 = time.monotonic()
        seq = line.publish(verdict("pole_piece", 31, ng=True), wait=False)
        page.wait_for_function(
            "document.querySelector('.tile[data-station=\"pole_piece\"] .word')"
            ".textContent === 'NG'",
            timeout=1000,
        )
        page.wait_for_function(
            "(s) => { const i = document.querySelector("
            "'.tile[data-station=\"pole_piece\"] .t-ng img');"
            " return i.dataset.seq === s && i.complete && i.naturalWidth > 0; }",
            arg=str(seq),
            timeout=1500,
        )
        elapsed = time.monotonic() - t0
        tile = page.inner_text('.tile[data-station="pole_piece"]')
        assert "defect · Long" in tile
        assert "1 NG" in tile
        w.close()
        b.close()
    assert elapsed < 1.5
    assert w.errors == []


def test_token_required_when_set(tmp_path):
    token = "t0ken-abcdefghijklmnop"
    with Line(tmp_path, token=token) as line:
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(line.url, timeout=5)
        assert err.value.code == 401
        line.publish(verdict("seal_edge", 3, ng=True, reason="timeout", picture=False))
        body = json.dumps({"alarm": "fault_timeout:seal_edge", "operator": "Ana"}).encode()
        ack = urllib.request.Request(
            line.url + "api/alarms/ack", data=body, headers={"Content-Type": "application/json"}
        )
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(ack, timeout=5)
        assert err.value.code == 401  # acknowledging needs the token too
        ack.add_header("Authorization", f"Bearer {token}")
        deadline = time.monotonic() + 5
        while "fault_timeout:seal_edge" not in {
            a["key"] for a in line.hmi.state.snapshot()["alarms"]
        }:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with urllib.request.urlopen(ack, timeout=5) as r:
            assert json.loads(r.read())["alarm"]["acked"]["by"] == "Ana"
        with urllib.request.urlopen(line.url + "favicon.ico", timeout=5) as r:
            assert r.headers["content-type"].startswith("image/svg")
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
    state = HmiState(HmiConfig(latency_budget_ms=30, min_yield=0.95), book={})
    for seq in range(1, 61):
        v = _verdict(seq, ng=seq % 5 == 0)
        payload = verdict_payload(v, "ab" * 16, seq if seq < 40 else seq + 3, time.time_ns(), 45.0)
        state.ingest(parse_message(b"verdict.pole_piece", payload))
    snap = state.snapshot()
    st = snap["stations"]["pole_piece"]
    assert (st["shift"]["ok"], st["shift"]["ng"], st["shift"]["yield"]) == (48, 12, 0.8)
    assert st["shift"]["pareto"]["reason"] == [{"key": "defect", "n": 12, "cum": 1.0}]
    assert len(st["recent"]) == 12
    assert st["last_ng"]["cell_id"] == 60
    codes = {a["code"] for a in snap["alarms"]}
    assert {"latency_budget", "low_yield", "verdict_gap"} <= codes


def test_hmi_command_serves_with_a_credential_token_and_stops_on_sigterm(tmp_path):
    frames = make_frames(tmp_path / "frames")
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
