"""The MQTT bridge's pure parts: shift tallies and finals, the outbox, topics, the identity."""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime

import pytest

from linevision.bridges.mqtt_messages import Identity
from linevision.bridges.mqtt_store import Append, NewRow, Outbox
from linevision.bridges.mqtt_wire import PayloadError, Topic, parse_payload, parse_topic
from linevision.bridges.mqtt_yield import ShiftTally, figures

SHIFTS = ("06:00", "14:00", "22:00")


def ns(day: int, hour: int, minute: int = 0) -> int:
    return int(datetime(2026, 5, day, hour, minute).timestamp() * 1e9)  # noqa: DTZ001  (local)


def test_a_shift_change_finalises_the_shift_that_ended_once():
    tally = ShiftTally(SHIFTS)
    assert tally.add("pp", "OK", None, ns(1, 13, 50)) == (("2026-05-01T06:00:00", "pp", "OK"), [])
    tally.add("pp", "NG", "timeout", ns(1, 13, 55))
    key, ended = tally.add("pp", "NG", None, ns(1, 14, 1))
    assert key == ("2026-05-01T14:00:00", "pp", "NG:defect")
    assert ended == ["2026-05-01T06:00:00"]
    assert tally.finalised("2026-05-01T06:00:00") == 0
    assert figures(tally.stations("2026-05-01T06:00:00")["pp"]) == {
        "ok": 1,
        "ng": 1,
        "total": 2,
        "yield": 0.5,
        "ng_by_reason": {"timeout": 1},
    }
    # a verdict of the ended shift read late (a backlog) corrects its final at the next tick
    tally.add("pp", "OK", None, ns(1, 13, 59))
    assert tally.tick(ns(1, 14, 5)) == ["2026-05-01T06:00:00"]
    assert tally.finalised("2026-05-01T06:00:00") == 1
    assert tally.tick(ns(1, 14, 6)) == []


def test_the_clock_ends_a_shift_on_an_idle_line():
    tally = ShiftTally(SHIFTS)
    tally.add("pp", "OK", None, ns(1, 21, 0))
    assert tally.tick(ns(1, 21, 30)) == []
    assert tally.tick(ns(1, 22, 0)) == ["2026-05-01T14:00:00"]
    assert tally.current == "2026-05-01T22:00:00"


def test_a_restored_tally_goes_on_counting():
    restored = {
        ("2026-05-01T14:00:00", "pp", "OK"): 10,
        ("2026-05-01T14:00:00", "pp", "NG:defect"): 2,
    }
    tally = ShiftTally(SHIFTS, restored, "2026-05-01T14:00:00")
    tally.add("pp", "OK", None, ns(1, 15))
    assert tally.stations("2026-05-01T14:00:00")["pp"] == Counter({"OK": 11, "NG:defect": 2})


def test_the_outbox_acknowledges_in_order_and_prunes(tmp_path):
    box = Outbox(tmp_path / "o.db", max_entries=1000)
    rows = [NewRow(f"t/{i}", b"{}", run_id="r", seq=i) for i in range(1, 6)]
    last = box.append(Append(rows, {("s", "pp", "OK"): 5}, {"read_run": "r", "read_seq": 5}))
    assert last == 5
    assert [r.seq for r in box.page(2, 10)] == [3, 4, 5]
    box.ack(3, time.time_ns(), {"acked_pos": 3})
    assert box.backlog() == 2
    assert box.first_unacked() == 4
    assert box.first_kept() == 1  # acknowledged, kept for resending after a lost connection
    box.prune(time.time_ns() + 1, {"s"})
    assert box.first_kept() == 4
    assert box.meta()["read_seq"] == 5
    assert box.tally() == {("s", "pp", "OK"): 5}
    box.ack(5, time.time_ns(), {"acked_pos": 5})
    box.prune(time.time_ns() + 1, {"s"})
    assert box.first_kept() is None
    assert box.last_pos() == 5  # positions are never given twice
    assert box.append(Append([NewRow("t/6", b"{}")], {}, {})) == 6
    box.close()


def test_a_full_outbox_drops_the_oldest_and_says_which(tmp_path):
    box = Outbox(tmp_path / "o.db", max_entries=1000)
    box.append(Append([NewRow("t", b"{}", run_id="r", seq=i) for i in range(1, 1006)], {}, {}))
    dropped = box.prune(0, set())
    assert dropped.count == 5
    assert dropped.verdicts == [("r", i) for i in range(1, 6)]
    assert box.backlog() == 1000
    box.close()


def test_a_store_survives_reopening(tmp_path):
    box = Outbox(tmp_path / "o.db", max_entries=1000)
    box.append(Append([NewRow("t", b"x", run_id="r", seq=1)], {}, {"identity": '["r", {}]'}))
    box.close()
    again = Outbox(tmp_path / "o.db", max_entries=1000)
    assert again.page(0, 10)[0].payload == b"x"
    assert Identity.restore(again.meta()["identity"]).run_id == "r"
    assert Identity.restore("not json").run_id is None
    again.close()


def test_topics_parse_and_payloads_must_match_them():
    assert parse_topic("linevision", "linevision/p/l/pp/verdict") == Topic(
        "p", "l", "pp", "verdict"
    )
    assert parse_topic("linevision", "linevision/p/l/state") == Topic("p", "l", None, "state")
    assert parse_topic("linevision", "linevision/p/l/pp/bogus") is None
    assert parse_topic("linevision", "other/p/l/state") is None
    state = (
        b'{"schema":1,"site":"p","line":"other","bridge":"mqtt","status":"running",'
        b'"reason":null,"run_id":null,"recipe":null,"stations":{},"t_ns":0}'
    )
    with pytest.raises(PayloadError, match="payload names p/other"):
        parse_payload(Topic("p", "l", None, "state"), state)
    with pytest.raises(PayloadError, match="malformed state"):
        parse_payload(Topic("p", "l", None, "state"), b"{")
