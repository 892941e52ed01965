"""The operator page in a real browser (Debian's chromium), fed by a real verdict bus, the
archive writing real pictures, at the two screen sizes of the line: a 1920 x 1080 monitor
and a 1280 x 1024 panel PC. Screenshots go to ``build/artefacts/hmi/``."""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from datetime import datetime, timedelta

import cv2
import numpy as np
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

from linevision.hmi.state import shift_start
from tests.hmi.line import (
    ARTEFACTS,
    BROWSER_ARGS,
    CHROMIUM,
    FILM_DEFECTS,
    MM_PER_LINE,
    POLE_DEFECT,
    STATIONS,
    Line,
    chromium_or_skip,
    pole_image,
    verdict,
)

SIZES = [(1920, 1080), (1280, 1024)]


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


class Watched:
    """A page whose console errors, page errors and failed requests are collected."""

    def __init__(self, browser: Browser, size: tuple[int, int], *, touch: bool = False) -> None:
        self.context = browser.new_context(
            viewport={"width": size[0], "height": size[1]}, has_touch=touch
        )
        self.page: Page = self.context.new_page()
        self.errors: list[str] = []
        self.statuses: dict[str, int] = {}
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.page.on("response", lambda r: self.statuses.__setitem__(r.url, r.status))

    def _console(self, msg: ConsoleMessage) -> None:
        if msg.type == "error":
            self.errors.append(f"console: {msg.text} at {msg.location}")

    def open(self, url: str) -> Page:
        self.page.goto(url)
        self.page.wait_for_selector("#conn.live", timeout=10_000)
        return self.page

    def close(self) -> None:
        self.context.close()


def _fill(line: Line, per_station: int = 60) -> dict[str, int]:
    """Verdicts for every station, one NG each (the last NG of each: its seq)."""
    last_ng: dict[str, int] = {}
    cell = 0
    for i in range(per_station):
        for station in STATIONS:
            cell += 1
            ng = i == per_station - 5
            seq = line.publish(verdict(station, cell, ng=ng, latency_ms=4.0 + i % 7), wait=False)
            if ng:
                last_ng[station] = seq
    line.publish(verdict("pole_piece", cell + 1), wait=True)
    return last_ng


def _in_viewport(page: Page, selector: str) -> list[dict[str, float]]:
    return page.evaluate(
        """(sel) => [...document.querySelectorAll(sel)].map((e) => {
            const r = e.getBoundingClientRect();
            return {name: e.dataset.station, top: r.top, left: r.left, bottom: r.bottom,
                    right: r.right, w: innerWidth, h: innerHeight};
        })""",
        selector,
    )


def _font_px(page: Page, selector: str) -> float:
    return float(
        page.evaluate(
            f"parseFloat(getComputedStyle(document.querySelector('{selector}')).fontSize)"
        )
    )


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_all_four_tiles_are_in_view_readable_and_open_on_touch(tmp_path, browser, size):
    with Line(tmp_path) as line:
        _fill(line)
        w = Watched(browser, size, touch=True)
        page = w.open(line.url)
        page.wait_for_function("document.querySelectorAll('.tile[data-station]').length === 4")
        page.wait_for_function(
            "[...document.querySelectorAll('.t-ng img')].every((i) => !i.hidden && i.complete)"
        )
        boxes = _in_viewport(page, ".tile")
        assert sorted(b["name"] for b in boxes) == sorted(STATIONS)
        for b in boxes:  # every tile whole, inside the viewport, without scrolling
            assert b["top"] >= 0, b
            assert b["left"] >= 0, b
            assert b["bottom"] <= b["h"], b
            assert b["right"] <= b["w"], b
            # ... and large: the four tiles take most of the screen
            assert b["bottom"] - b["top"] >= 260, b
            assert (b["bottom"] - b["top"]) * (b["right"] - b["left"]) >= 0.1 * b["w"] * b["h"], b
        assert page.evaluate("document.scrollingElement.scrollHeight <= innerHeight")
        # readable from two metres: the verdict and the yield large, name and state not small
        assert _font_px(page, ".tile .word") >= 44
        assert _font_px(page, ".tile .t-yield .big") >= 38
        assert _font_px(page, ".tile .t-head h3") >= 24
        assert _font_px(page, ".tile .t-state") >= 18
        assert _font_px(page, ".tile .t-ng-cap") >= 18
        # OK and NG by shape and word, not colour alone
        tile = page.locator('.tile[data-station="pole_piece"]')
        assert tile.locator(".word").inner_text() == "OK"
        assert tile.locator(".g svg").get_attribute("aria-label") == "OK"
        assert tile.locator(".ticker .ng").inner_text() == "✕"
        assert tile.locator(".ticker .ok").first.inner_text() == "✓"
        # the favicon is there, the recipe shows
        assert page.evaluate("fetch('favicon.ico').then((r) => r.status)") == 200
        assert page.inner_text("#recipe") == "cell_21700"
        time.sleep(1.2)  # a chart pass
        page.screenshot(path=str(ARTEFACTS / f"page_{size[0]}x{size[1]}.png"))
        # details on touch: a tap opens the station's last NG
        page.locator('.tile[data-station="six_view"]').tap()
        page.wait_for_selector("#detail[open] .crop img", timeout=5000)
        page.wait_for_function(
            "[...document.querySelectorAll('#detail img')]"
            ".every((i) => i.complete && i.naturalWidth > 0)"
        )
        assert "view 5 of 6 failed" in page.inner_text("#detail .d-ng")
        assert page.inner_text("#detail .views span.bad") == "✕ 5"
        page.screenshot(path=str(ARTEFACTS / f"detail_six_view_{size[0]}x{size[1]}.png"))
        page.locator("#detail [data-close]").tap()
        page.wait_for_selector("#detail", state="hidden")
        time.sleep(0.5)
        w.close()
        assert w.errors == []
        bad = {u: s for u, s in w.statuses.items() if s >= 400}
        assert bad == {}


def _crop_checks(crop: np.ndarray, about: dict[str, object], source: np.ndarray) -> None:
    x, y, cw, ch = about["rect"]  # type: ignore[misc]
    k = int(about["zoom"])  # type: ignore[call-overload]
    bx, by, bw, bh = about["box"]  # type: ignore[misc]
    assert crop.shape[:2] == (ch * k, cw * k)
    gray = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY).astype(int)[k // 2 :: k, k // 2 :: k]
    inner = gray[by + 2 : by + bh - 2, bx + 2 : bx + bw - 2]
    want = source[y + by + 2 : y + by + bh - 2, x + bx + 2 : x + bx + bw - 2].astype(int)
    assert np.abs(inner - want).mean() < 8  # the defect's own pixels, at full resolution
    red = crop[:, :, 2].astype(int) - crop[:, :, :2].max(axis=2)
    x0, x1, y0, y1 = bx * k, (bx + bw) * k, by * k, (by + bh) * k
    for side in (red[y0 - 2, x0:x1], red[y1 + 1, x0:x1], red[y0:y1, x0 - 2], red[y0:y1, x1 + 1]):
        assert side.mean() > 60  # the box's outline runs just outside it, all round


def _fetch(page: Page, url: str) -> bytes:
    data = page.evaluate(
        "(u) => fetch(u).then((r) => r.arrayBuffer()).then((b) => Array.from(new Uint8Array(b)))",
        url,
    )
    return bytes(data)


def test_an_ng_shows_its_crop_around_the_defect_box_beside_the_whole_view(tmp_path, browser):
    with Line(tmp_path) as line:
        last = _fill(line, per_station=20)
        w = Watched(browser, (1920, 1080))
        page = w.open(line.url)
        page.wait_for_function("document.querySelectorAll('.tile').length === 4")
        # the tile shows the crop around the defect, not the whole view
        page.wait_for_selector('.tile[data-station="pole_piece"] .t-ng img[data-part="crop"]')
        page.click('.tile[data-station="pole_piece"]')
        page.wait_for_selector(f'#detail .d-ng[data-seq="{last["pole_piece"]}"] .crop img')
        page.wait_for_function(
            "[...document.querySelectorAll('#detail img')]"
            ".every((i) => i.complete && i.naturalWidth > 0)"
        )
        whole = page.locator("#detail .whole img").bounding_box()
        crop_box = page.locator("#detail .crop img").bounding_box()
        assert whole is not None
        assert crop_box is not None
        assert crop_box["x"] > whole["x"] + whole["width"] - 1  # beside the whole view
        assert crop_box["width"] >= 250  # enlarged, and its caption readable
        assert _font_px(page, "#detail .crop figcaption") >= 16
        run = line.publisher.run_id
        about = json.loads(
            _fetch(
                page,
                f"api/picture/pole_piece/{run}/{last['pole_piece']}?t="
                + page.evaluate("document.querySelector('#detail .crop img').src.split('t=')[1]"),
            )
        )
        (crop,) = about["crops"]
        d = POLE_DEFECT
        x, y, cw, ch = crop["rect"]
        assert x <= d.x
        assert y <= d.y
        assert d.x + d.w <= x + cw
        assert d.y + d.h <= y + ch
        image = cv2.imdecode(np.frombuffer(_fetch(page, about["urls"]["crops"][0]), np.uint8), 1)
        _crop_checks(image, crop, pole_image(ng=True))
        page.screenshot(path=str(ARTEFACTS / "detail_pole_piece_1920x1080.png"))
        page.keyboard.press("Escape")
        # blue film: the frame as a strip, each defect's line and metres, a zoomed crop each
        page.click('.tile[data-station="blue_film"]')
        page.wait_for_selector(f'#detail .d-ng.strip[data-seq="{last["blue_film"]}"] .crop img')
        marks = page.eval_on_selector_all(
            "#detail .strip-axis .mark", "(ms) => ms.map((m) => [m.dataset.line, m.innerText])"
        )
        want = [d.y + d.h // 2 for d in FILM_DEFECTS]
        assert [int(m[0]) for m in marks] == want
        for (_, text), line_no in zip(marks, want, strict=True):
            assert f"line {line_no:,}" in text
            assert f"{line_no * MM_PER_LINE / 1000:.3f} m" in text
        captions = page.eval_on_selector_all(
            "#detail .crop figcaption", "(cs) => cs.map((c) => c.innerText)"
        )
        assert len(captions) == 2
        assert "film_anomaly" in captions[0]
        assert "full resolution" in captions[0]
        page.wait_for_function(
            "[...document.querySelectorAll('#detail img')]"
            ".every((i) => i.complete && i.naturalWidth > 0)"
        )
        page.screenshot(path=str(ARTEFACTS / "detail_blue_film_1920x1080.png"))
        w.close()
        assert w.errors == []


def test_the_pareto_and_the_hourly_yield_match_the_verdicts_sent(tmp_path, browser):
    now = datetime.now()  # noqa: DTZ005  (shifts are local wall-clock time)
    start = shift_start(now, ("06:00", "14:00", "22:00"))
    hours = max(1, int((now - start).total_seconds() // 3600) + 1)
    rng = np.random.default_rng(11)
    sent: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    reasons: dict[str, Counter[str]] = defaultdict(Counter)
    labels: dict[str, Counter[str]] = defaultdict(Counter)
    with Line(tmp_path) as line:
        cell = 0
        for h in range(hours):
            at = start + timedelta(hours=h, minutes=1)
            at = min(at, now - timedelta(seconds=5))
            for station in STATIONS:
                for _ in range(int(rng.integers(20, 40))):
                    cell += 1
                    ng = rng.random() < 0.15
                    reason = str(rng.choice(["defect", "defect", "defect", "timeout", "bad_frame"]))
                    label = (
                        str(rng.choice(["Long", "Short", "Powder"]))
                        if station == "pole_piece"
                        else None
                    )
                    v = verdict(station, cell, ng=ng, reason=reason, label=label, picture=False,
                                located=False, t_frame_ns=int(at.timestamp() * 1e9))  # fmt: skip
                    line.publish(v, wait=False)
                    sent[station, at.strftime("%H:%M")]["NG" if ng else "OK"] += 1
                    if ng:
                        reasons[station][reason] += 1
                        if reason == "defect":
                            kinds = [d.kind for d in v.decision.defects]
                            for key in dict.fromkeys(kinds) or [v.decision.label]:
                                labels[station][str(key)] += 1
        line.publish(
            verdict(
                "pole_piece",
                cell + 1,
                t_frame_ns=int((now - timedelta(seconds=5)).timestamp() * 1e9),
            )
        )
        sent["pole_piece", (now - timedelta(seconds=5)).strftime("%H:%M")]["OK"] += 1
        w = Watched(browser, (1920, 1080))
        page = w.open(line.url)
        page.wait_for_function(
            "window.hmiStats.lastVersion > 0 && "
            f"document.querySelectorAll('#yield-chart rect').length >= {len(STATIONS)}"
        )
        time.sleep(1.2)
        bars = page.eval_on_selector_all(
            "#yield-chart rect",
            "(rs) => rs.map((r) => "
            "[r.dataset.station, r.dataset.hour, +r.dataset.ok, +r.dataset.ng])",
        )
        got = {(s, hour): (ok, ng) for s, hour, ok, ng in bars}
        want: dict[tuple[str, str], tuple[int, int]] = {}
        for (station, hhmm), c in sent.items():
            slot = (station, f"{hhmm[:2]}:{start.strftime('%M')}")
            ok, ng = want.get(slot, (0, 0))
            want[slot] = (ok + c["OK"], ng + c["NG"])
        assert got == want
        for station in STATIONS:
            page.click(f'#pareto-pick [data-pick="{station}"]')
            page.wait_for_function(
                f"document.querySelector('#pareto-window').textContent.startsWith('{station}')"
            )
            page.wait_for_function("document.querySelector('#pareto-chart [data-kind]') !== null")
            for kind, expected in (("reason", reasons[station]), ("label", labels[station])):
                shown = page.eval_on_selector_all(
                    f'#pareto-chart rect[data-kind="{kind}"]',
                    "(rs) => rs.map((r) => [r.dataset.key, +r.dataset.n])",
                )
                assert dict(shown) == dict(expected), (station, kind)
                counts = [n for _, n in shown]
                assert counts == sorted(counts, reverse=True)  # a Pareto: largest first
        page.screenshot(path=str(ARTEFACTS / "pareto_and_yield_1920x1080.png"))
        w.close()
        assert w.errors == []
