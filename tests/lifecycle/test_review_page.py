"""The review page in a real browser (Debian's chromium): an operator marks a false reject,
and the station's challenge (failed) and drift (ok) show above the cells.

Its screenshot goes to ``artifacts/review.png`` (docs/lifecycle.md shows it).
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from playwright.sync_api import sync_playwright

from linevision.config import Config, HmiConfig
from linevision.hmi.server import HmiServer, review_api
from linevision.synth import pole_piece
from linevision.tools.demo import find_models_root
from tests.daemon.parts import free_port
from tests.hmi.test_hmi import BROWSER_ARGS, CHROMIUM
from tests.lifecycle.parts import running_daemon, wait_for
from tests.lifecycle.test_review import _config as review_config

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


def _masters(folder: Path) -> Path:
    """A challenge the shipped model fails: a good crop listed as a Long burr."""
    folder.mkdir()
    rng = np.random.default_rng(9)
    for name in ("good", "not_long"):
        assert cv2.imwrite(str(folder / f"{name}.png"), pole_piece.generate("Normal", rng))
    (folder / "labels.csv").write_text("image,label\ngood.png,Normal\nnot_long.png,Long\n")
    return folder


def _with_lifecycle(cfg: Config, masters: Path) -> Config:
    station = cfg.stations[0].model_copy(update={"challenge": masters})
    drift = cfg.drift.model_copy(
        update={"enabled": True, "window": 30, "min_cells": 20, "every": 5}
    )
    challenge = cfg.challenge.model_copy(update={"on_start": True})
    return cfg.model_copy(update={"stations": (station,), "drift": drift, "challenge": challenge})


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


def test_an_operator_marks_a_false_reject_on_the_review_page(tmp_path, browser, monkeypatch):
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    cfg = _with_lifecycle(review_config(tmp_path), _masters(tmp_path / "masters"))
    ARTIFACTS.mkdir(exist_ok=True)
    with running_daemon(cfg, find_models_root()) as ops:
        archive = ops.archive.folder  # type: ignore[union-attr]
        wait_for(lambda: ops.archive.counters["images"] >= 12, 30, "pictures")  # type: ignore[union-attr]
        lc = ops.lifecycle
        assert lc is not None
        assert lc.drift is not None
        lc.drift.capture("pole_piece", 30)
        wait_for(lambda: lc.drift.status()["stations"]["pole_piece"]["level"] == "ok", 30, "ok")  # type: ignore[union-attr]
        wait_for(lambda: lc.challenge.state_of("pole_piece") == "failed", 30, "challenge")
        hmi = HmiServer(
            HmiConfig(listen=f"127.0.0.1:{free_port()}"),
            cfg.bus.publish,
            archive,
            review=review_api(cfg, archive),
        )
        hmi.start()
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.goto(f"http://127.0.0.1:{hmi.port}/review")
            page.wait_for_selector("article.cell.NG img", timeout=15000)
            page.wait_for_function(
                "() => [...document.querySelectorAll('article.cell img')].slice(0, 8).every("
                "i => i.complete && i.naturalWidth > 0)",
                timeout=15000,
            )
            page.fill("#operator", "Anna Berg")
            first = page.locator("article.cell.NG").first
            seq = int(first.get_attribute("data-seq") or "0")
            first.locator("button[data-decision=false_reject]").click()
            page.wait_for_function(
                "() => document.getElementById('status').textContent.startsWith('recorded')",
                timeout=10000,
            )
            page.wait_for_function(
                "() => document.getElementById('lifecycle').textContent.includes('drift: ok')",
                timeout=10000,
            )
            shown = page.inner_text("#lifecycle")
            page.screenshot(path=str(ARTIFACTS / "review.png"))
            url = f"http://127.0.0.1:{hmi.port}/api/review?station=pole_piece&limit=500"
            with urllib.request.urlopen(url, timeout=5) as r:
                cells = json.loads(r.read())["cells"]
        finally:
            hmi.stop()
    assert "NOT verified: challenge failed" in shown
    (cell,) = [c for c in cells if c["seq"] == seq]
    assert cell["review"]["decision"] == "false_reject"
    assert cell["review"]["label"] == "Normal"
    assert cell["verdict"] == "NG"
    assert cell["review"]["operator"] == "Anna Berg"
