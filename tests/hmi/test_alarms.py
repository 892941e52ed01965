"""Alarm hygiene: thresholds from the configuration with hysteresis, a hold before clearing,
acknowledgement by an operator (who and when), and the runbook of docs/operations.md."""

from __future__ import annotations

import doctest
import time
from pathlib import Path

import pytest

from linevision import paths
from linevision.bus.wire import parse_message, verdict_payload
from linevision.config import HmiConfig
from linevision.daemon import overlay, pictures
from linevision.hmi import alarms, figures, runbook
from linevision.hmi.alarms import AckError, AlarmBoard, Condition
from linevision.hmi.state import HmiState
from linevision.inference import residual
from tests.hmi.line import verdict

ROOT = Path(__file__).resolve().parents[2]
RUN = "ab" * 16


def test_doctests_of_the_page_and_picture_modules():
    for module in (alarms, figures, runbook, overlay, pictures, paths, residual):
        failures, tried = doctest.testmod(module)
        assert (failures, tried > 0) == (0, True), module.__name__


class Feeder:
    def __init__(self, cfg: HmiConfig) -> None:
        self.state = HmiState(cfg, book=runbook.load())
        self.seq = 0

    def send(self, station: str, *, ng: bool = False, n: int = 1, latency_ms: float = 5.0) -> None:
        for _ in range(n):
            self.seq += 1
            v = verdict(station, self.seq, ng=ng, picture=False)
            payload = verdict_payload(v, RUN, self.seq, time.time_ns(), latency_ms)
            self.state.ingest(parse_message(f"verdict.{station}".encode(), payload))

    def alarm(self, key: str) -> dict[str, object] | None:
        snap = self.state.snapshot()
        found = [a for a in snap["alarms"] if a["key"] == key]  # type: ignore[union-attr]
        return found[0] if found else None


def test_low_yield_raises_under_one_threshold_and_clears_over_another():
    cfg = HmiConfig.model_validate(
        {"min_yield": 0.95, "alarms": {"yield_clear": 0.97, "yield_cells": 100,
                                       "yield_min_cells": 50, "clear_after_s": 0}}
    )  # fmt: skip
    f = Feeder(cfg)
    f.send("seal_edge", n=45)
    f.send("seal_edge", ng=True, n=4)
    assert f.alarm("low_yield:seal_edge") is None  # 49 cells: too few to judge
    f.send("seal_edge", ng=True)
    raised = f.alarm("low_yield:seal_edge")  # 45 of 50: 90 %
    assert raised is not None
    assert raised["count"] == 1
    assert raised["level"] == "warning"
    assert "90.0 %" in str(raised["text"])
    assert raised["runbook"]["action"] == "process drift, a wrong recipe, a dirty lens"  # type: ignore[index]
    f.send("seal_edge", n=75)  # 100 cells, 5 NG: 95 %, over the threshold, under the clear value
    assert f.alarm("low_yield:seal_edge") is not None
    f.send("seal_edge", n=60)  # the 5 NG leave the window: 100 %
    assert f.alarm("low_yield:seal_edge") is None
    f.send("seal_edge", ng=True, n=8)  # and again: a new raise, counted
    again = f.alarm("low_yield:seal_edge")
    assert again is not None
    assert again["count"] == 2


def test_latency_alarm_has_hysteresis_over_its_window():
    cfg = HmiConfig.model_validate(
        {"latency_budget_ms": 30, "alarms": {"latency_clear_ms": 24, "latency_window_s": 1,
                                             "clear_after_s": 0}}
    )  # fmt: skip
    f = Feeder(cfg)
    f.send("pole_piece", n=50, latency_ms=45)
    assert f.alarm("latency_budget") is not None
    time.sleep(1.2)
    f.send("pole_piece", n=50, latency_ms=27)  # under the budget, over the clear value
    assert f.alarm("latency_budget") is not None
    time.sleep(1.2)
    f.send("pole_piece", n=50, latency_ms=10)
    assert f.alarm("latency_budget") is None


def _fault(raised: bool, cleared: bool) -> Condition:
    return Condition("fault_timeout", "seal_edge", "critical", "x", raised=raised, cleared=cleared)


def test_an_alarm_clears_only_after_it_stayed_clear_and_a_bridge_alarm_at_once():
    board = AlarmBoard({}, clear_after_s=2.0)
    board.update([_fault(True, False)], 0.0, 1000.0)
    board.update([_fault(False, True)], 1.0, 1001.0)
    board.update([_fault(False, True)], 2.9, 1002.9)
    assert [a["key"] for a in board.view()] == ["fault_timeout:seal_edge"]
    board.update([_fault(True, False)], 3.0, 1003.0)  # back before the hold ran out
    board.update([], 4.0, 1004.0)  # a key not handed over counts as clear
    board.update([], 5.9, 1005.9)
    assert board.view() != []
    board.update([], 6.1, 1006.1)
    assert board.view() == []
    bridge = Condition("plc_unreachable", "plc", "critical", "x", raised=True, cleared=False,
                       bridge=True)  # fmt: skip
    board.update([bridge], 7.0, 1007.0)
    assert board.view()[0]["count"] == 1
    board.update([], 7.1, 1007.1)
    assert board.view() == []


def test_an_acknowledgement_records_who_and_when_and_lasts_until_the_alarm_clears():
    board = AlarmBoard({}, clear_after_s=0.0)
    board.update([_fault(True, False)], 0.0, 1000.0)
    with pytest.raises(AckError) as err:
        board.acknowledge("fault_timeout:seal_edge", "", 1001.0)
    assert err.value.param == "operator"
    with pytest.raises(AckError) as err:
        board.acknowledge("fault_timeout:seal_edge", "<b>x</b>", 1001.0)
    assert err.value.param == "operator"
    with pytest.raises(AckError) as err:
        board.acknowledge("low_yield:nowhere", "Ana", 1001.0)
    assert err.value.param == "alarm"
    view = board.acknowledge("fault_timeout:seal_edge", "Ana", 1001.5)
    assert view["acked"] == {"by": "Ana", "at": 1001500}
    assert board.acknowledge("fault_timeout:seal_edge", "Bo", 1002.0)["acked"]["by"] == "Ana"  # type: ignore[index]
    assert [(a["by"], a["at"]) for a in board.acks] == [("Ana", 1001.5)]
    board.update([], 3.0, 1003.0)
    board.update([_fault(True, False)], 4.0, 1004.0)
    (again,) = board.view()
    assert again["acked"] is None  # raised again: a new acknowledgement is needed
    assert again["count"] == 2
    board.new_shift()
    assert board.view()[0]["count"] == 1


def test_every_alarm_the_page_raises_has_its_runbook_row_in_docs_operations():
    docs = (ROOT / "docs" / "operations.md").read_bytes()
    assert runbook.RUNBOOK.read_bytes() == docs  # the package's copy is that file
    book = runbook.parse(docs.decode())
    raised = {"daemon_down", "camera_down", "thread_dead", "latency_budget", "restart",
              "verdict_gap", "low_yield", "bridge_down"}  # fmt: skip
    raised |= {f"fault_{r}" for r in ("timeout", "overload", "bad_frame", "camera_error",
                                      "model_error")}  # fmt: skip
    for code in raised:
        assert book.get(code), code
        assert book[code]["action"], code
    assert runbook.entry(book, "plc_unreachable", bridge=True) == book["bridge"]
    assert runbook.entry(book, "plc_unreachable") is None
    state = HmiState(book=runbook.load())
    for code in ("daemon_down",):  # no heartbeat yet: raised after 3.5 s
        state._started -= 10
        (a,) = [x for x in state.snapshot()["alarms"] if x["code"] == code]  # type: ignore[union-attr]
        assert a["runbook"] == book[code]
