"""The page over time: 100 verdicts a second for a minute without its memory growing, stale
data that looks stale, and an alarm acknowledged from the page (recorded: who, when)."""

from __future__ import annotations

import json
import threading
import time

import pytest
from playwright.sync_api import sync_playwright

from tests.hmi.line import (
    ARTEFACTS,
    BROWSER_ARGS,
    CHROMIUM,
    STATIONS,
    Line,
    chromium_or_skip,
    verdict,
)
from tests.hmi.test_page import Watched

RATE_HZ = 100.0
LOAD_S = 22.0
WARM_S = 6.0
"""The memory test: LOAD_S at 100 verdicts/s, measured after the first WARM_S (a bounded run)."""


@pytest.fixture(scope="module")
def browser():
    chromium_or_skip()
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        try:
            yield b
        finally:
            b.close()


def _load(line: Line, stop: threading.Event, done: list[int]) -> None:
    """100 verdicts a second across the four stations, 5 % NG, until ``stop`` or LOAD_S."""
    names = list(STATIONS)
    t0 = time.monotonic()
    i = 0
    while not stop.is_set() and time.monotonic() - t0 < LOAD_S:
        due = t0 + i / RATE_HZ
        time.sleep(max(0.0, due - time.monotonic()))
        station = names[i % len(names)]
        line.publish(verdict(station, 1000 + i, ng=i % 20 == 7, latency_ms=3 + i % 11), wait=False)
        i += 1
    done.append(i)


def _heap(cdp) -> dict[str, float]:
    cdp.send("HeapProfiler.collectGarbage")
    cdp.send("HeapProfiler.collectGarbage")
    used = cdp.send("Runtime.getHeapUsage")["usedSize"]
    metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    return {
        "heap_mb": used / 1e6,
        "nodes": metrics["Nodes"],
        "listeners": metrics["JSEventListeners"],
    }


def test_22_s_at_100_verdicts_per_second_keeps_memory_flat(tmp_path, browser):
    with Line(tmp_path) as line:
        w = Watched(browser, (1920, 1080))
        page = w.open(line.url)
        cdp = w.context.new_cdp_session(page)
        cdp.send("Performance.enable")
        stop, done = threading.Event(), []
        loader = threading.Thread(target=_load, args=(line, stop, done), daemon=True)
        t0 = time.monotonic()
        loader.start()
        try:
            time.sleep(WARM_S)
            before = _heap(cdp)
            stats0 = page.evaluate("({...window.hmiStats})")
            loader.join(LOAD_S + 30)
        finally:
            stop.set()
        load_s = time.monotonic() - t0
        last = line.publish(verdict("pole_piece", 99_999), wait=True)
        page.wait_for_function(
            "window.hmiStats.lastVersion > 0 && document.querySelector('#detail') !== null",
            timeout=5000,
        )
        page.wait_for_function(
            "() => document.querySelector('.tile[data-station=\"pole_piece\"] .t-cell')"
            ".textContent.includes('cell 99999')",
            arg=last,
            timeout=5000,
        )
        time.sleep(1.5)
        after = _heap(cdp)
        stats = page.evaluate("({...window.hmiStats})")
        page.screenshot(path=str(ARTEFACTS / "page_after_load_1920x1080.png"))
        seen = line.hmi.state.verdicts
        w.close()
    result = {
        "verdicts_sent": done[0] + 1,
        "verdicts_seen_by_hmi": seen,
        "seconds": round(load_s, 1),
        "rate_per_s": round(done[0] / load_s, 1),
        "heap_mb_after_warmup": round(before["heap_mb"], 3),
        "heap_mb_at_end": round(after["heap_mb"], 3),
        "dom_nodes": [before["nodes"], after["nodes"]],
        "event_listeners": [before["listeners"], after["listeners"]],
        "sse_events": stats["events"],
        "renders": stats["renders"],
        "chart_renders": stats["chartRenders"],
        "renders_during_measure": stats["renders"] - stats0["renders"],
        "mean_render_ms": round(stats["renderMsTotal"] / max(stats["renders"], 1), 2),
        "max_render_ms": round(stats["maxRenderMs"], 1),
        "max_part_ms": {k: round(v, 1) for k, v in stats["partMs"].items()},
        "max_frame_gap_ms": round(stats["maxFrameGapMs"], 1),
    }
    (ARTEFACTS / "memory_100_per_s.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    assert w.errors == []
    assert result["verdicts_seen_by_hmi"] == result["verdicts_sent"]
    assert result["rate_per_s"] >= 90
    # flat: after garbage collection the heap is where it was 16 s earlier
    assert result["heap_mb_at_end"] - result["heap_mb_after_warmup"] < 1.0, result
    assert after["nodes"] - before["nodes"] < 100, result
    assert after["listeners"] <= before["listeners"] + 10, result
    # it kept up: at most push_hz updates a second, each rendered, charts once a second
    assert result["sse_events"] <= (load_s + 5) * 5  # the page is open ~5 s beyond the load
    assert result["renders_during_measure"] >= (load_s - WARM_S) * 3
    # a render is a few ms; the worst one on a loaded 2-core machine stays well under a second
    assert result["mean_render_ms"] < 40, result
    assert result["max_render_ms"] < 1000, result


def test_stale_data_looks_stale_and_says_why(tmp_path, browser):
    with Line(tmp_path) as line:
        for cell in range(1, 9):
            line.publish(verdict(list(STATIONS)[cell % 4], cell))
        w = Watched(browser, (1280, 1024))
        page = w.open(line.url)
        assert page.evaluate("document.body.classList.contains('stale')") is False
        assert "updated" in page.inner_text("#conn")
        line.publisher.stop()  # the daemon's bus goes quiet: no verdicts, no heartbeats
        page.wait_for_function("document.body.classList.contains('stale')", timeout=10_000)
        assert page.inner_text("#conn-state") == "stale"
        assert "no heartbeat from the daemon" in page.inner_text("#stale-banner")
        assert page.evaluate(
            "getComputedStyle(document.querySelector('.tiles')).filter"
        ).startswith("grayscale")
        page.screenshot(path=str(ARTEFACTS / "stale_1280x1024.png"))
        line.hmi.stop()  # the HMI itself goes away: the page says it lost the connection
        page.wait_for_function(
            "document.querySelector('#conn-state').textContent === 'reconnecting'", timeout=15_000
        )
        assert "no connection to the HMI" in page.inner_text("#stale-banner")
        w.close()


def test_an_operator_acknowledges_an_alarm_on_the_page(tmp_path, browser):
    with Line(tmp_path) as line:
        line.publish(verdict("seal_edge", 5, ng=True, reason="timeout", picture=False))
        w = Watched(browser, (1280, 1024), touch=True)
        page = w.open(line.url)
        row = page.locator('.alarm[data-key="fault_timeout:seal_edge"]')
        row.wait_for(timeout=5000)
        assert "since" in row.inner_text()
        assert "1st time this shift" in row.inner_text()
        assert "deadline_missed" in row.inner_text()  # what to check, from docs/operations.md
        row.locator("[data-ack]").tap()
        page.fill("#ack-operator", "")
        page.click("#ack-submit")
        assert page.locator("#ack[open]").count() == 1  # the browser refuses an empty name
        page.fill("#ack-operator", "A. Operator <script>")
        page.click("#ack-submit")
        page.wait_for_function(
            "document.querySelector('#ack-error').textContent.startsWith('operator:')"
        )
        page.fill("#ack-operator", "A. Operator (shift B)")
        page.click("#ack-submit")
        page.wait_for_selector("#ack", state="hidden")
        page.wait_for_function(
            "document.querySelector('.alarm[data-key=\"fault_timeout:seal_edge\"]').classList.contains('acked')"
        )
        assert "acknowledged by A. Operator (shift B) at" in row.inner_text()
        acks = line.hmi.state.snapshot()["acks"]
        assert acks[0]["alarm"] == "fault_timeout:seal_edge"
        assert acks[0]["by"] == "A. Operator (shift B)"
        assert abs(acks[0]["at"] - time.time()) < 30
        page.screenshot(path=str(ARTEFACTS / "alarm_acknowledged_1280x1024.png"))
        w.close()
        assert [e for e in w.errors if "400" not in e] == []
