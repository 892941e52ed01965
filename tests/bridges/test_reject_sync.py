"""The numbering's pure core: the counter's history, the shift learned from capture times.

A line stepping every ``P`` ns; the bridge reads the counter every ``POLL`` ns (so it sees
each step up to a poll late); frames are captured at the count step itself.
"""

from __future__ import annotations

import pytest

from linevision.bridges.reject_sync import CounterHistory, Learned, Mismatch, NumberingSync
from linevision.bridges.reject_track import CellTracker

P = 50_000_000
"""The cell period: 50 ms (20 cells a second)."""
POLL = 2_000_000
M = 1 << 32


def line(history: CounterHistory, counter_of, t_from: int, t_to: int, phase: int = 0) -> None:
    """Reads every POLL from ``t_from`` to ``t_to``; the count steps at multiples of P
    (plus ``phase``): slot ``(t - phase) // P``, counter ``counter_of(slot)``."""
    prev = None
    for t in range(t_from, t_to, POLL):
        value = counter_of((t - phase) // P) % M
        history.read(t, value, single_step=prev is not None and (value - prev) % M == 1)
        prev = value


def test_counter_at_is_the_value_in_force_at_a_wall_time():
    h = CounterHistory()
    assert h.at(0) is None
    assert h.period_ns is None
    line(h, lambda s: s + 100, 10 * P, 20 * P)
    assert h.period_ns == P
    assert h.at(10 * P - 1) is None  # before the history
    assert h.at(20 * P) is None  # after the last read: not known yet
    for slot in range(10, 20):
        # the step is dated within a poll of the true instant
        assert h.at(slot * P + POLL) == slot + 100
        assert h.at(slot * P + P // 2) == slot + 100
        assert h.at(slot * P - POLL) in {slot + 99, None}


def test_the_history_stays_bounded():
    h = CounterHistory(size=16)
    line(h, lambda s: s, 0, 200 * P)
    assert len(h._first) <= 32
    assert h.at(199 * P + P // 2) == 199


def learn(sync: NumberingSync, history: CounterHistory, captures) -> Learned | Mismatch | None:
    """Observe every ``(t_frame_ns, cell_id)``; evaluate what the history covers."""
    out = None
    for t, cell in captures:
        sync.observe(t, "a", cell % M)
        got = sync.evaluate(history)
        out = got or out
    return out


@pytest.mark.parametrize("jitter", [0, 1, -1, POLL, -POLL, P // 4, -(P // 4)])
def test_a_capture_exactly_at_the_count_step_gives_the_right_shift(jitter):
    """The capture and the count step are the same instant (or nearly): looked up at the
    capture itself, half the reads would give the count before; half a period later gives
    the right one, whichever side of the step the capture time lands on."""
    h = CounterHistory()
    sync = NumberingSync(M)
    shift = M - 11  # the counter went back by 11
    line(h, lambda s: s + shift, 0, 40 * P)
    sync.start_learning(since_ns=20 * P)
    got = learn(sync, h, [(s * P + jitter, s) for s in range(21, 30)])
    assert got == Learned(shift, 0)
    assert (sync.shift, sync.learning) == (shift, False)


def test_six_of_eight_agreeing_candidates_settle_the_shift():
    sync = NumberingSync(M)
    sync.start_learning(since_ns=100)
    # counter - cell: 5, 5, 6 (one capture late), 5, 5 (a frame from before the jump: no
    # evidence), 5, 7, 5, 5
    seen = [(10, 100, 15), (11, 100, 16), (12, 100, 18), (13, 100, 18), (14, 99, 20)]
    seen += [(14, 100, 19), (15, 100, 22), (16, 100, 21), (17, 100, 22)]
    got = [sync.candidate("a", c, t, counter) for c, t, counter in seen]
    assert got[:-1] == [None] * 8
    assert sync.learning is False
    assert got[-1] == Learned(5, 0)


def test_scattered_candidates_teach_nothing():
    """Captures late by more than half a period (a loaded machine) give the next count: as
    long as they are not the great majority, no shift is learned from them."""
    sync = NumberingSync(M)
    sync.start_learning(since_ns=0)
    for c in range(40):
        assert sync.candidate("a", c, 1, c + 5 + c % 2) is None
    assert sync.learning


def test_verdicts_captured_before_the_jump_are_no_evidence():
    h = CounterHistory()
    sync = NumberingSync(M)
    line(h, lambda s: s if s < 20 else s + 500, 0, 40 * P)
    sync.start_learning(since_ns=20 * P + POLL)
    # frames of slots 17..19 arrive late (old numbering), then 21..25 (new)
    got = learn(sync, h, [(s * P, s) for s in (17, 18, 19, 21, 22, 23, 24, 25)])
    assert got is None
    assert sync.learning
    assert learn(sync, h, [(26 * P, 26)]) == Learned(500, 0)


def test_a_step_the_bridge_did_not_see_is_no_evidence():
    """A starved bridge read nothing for 3 periods: the counter's values in that gap are
    unknown, and captures looked up there count neither for nor against a shift."""
    h = CounterHistory()
    line(h, lambda s: s + 40, 0, 10 * P)
    line(h, lambda s: s + 40, 13 * P, 20 * P)
    assert h.at(9 * P + P // 2) == 49
    assert h.at(10 * P + P // 2) is None
    assert h.at(12 * P + P // 2) is None
    assert h.at(13 * P + P // 2) == 53
    sync = NumberingSync(M)
    sync.start_learning(since_ns=0)
    # the gap's captures, looked up at the wrong count, would make a run of 6 equal
    # candidates if the history guessed (dated the step between the reads)
    assert learn(sync, h, [(s * P - P // 4, s) for s in range(9, 13)]) is None
    assert len(sync._seen) == 1


def test_a_station_further_down_the_line_has_its_phase_configured():
    """Station b captures each cell 7 counts after the counter's step for it
    (``tracking.phases``): no mismatch in normal operation, and after a jump both agree."""
    h = CounterHistory()
    sync = NumberingSync(M, phases={"b": 7})
    line(h, lambda s: s if s < 60 else s + 1000, 0, 100 * P)
    for s in range(10, 50):
        sync.observe(s * P, "a", s)
        sync.observe(s * P, "b", s - 7)
        assert sync.evaluate(h) is None
    sync.start_learning(since_ns=60 * P + POLL)
    got = None
    for s in range(61, 65):
        sync.observe(s * P, "b", s - 7)
        sync.observe(s * P, "a", s)
        got = sync.evaluate(h) or got
    assert got == Learned(1000, 0)


def test_an_unconfigured_phase_is_a_mismatch_not_a_learned_offset():
    """Without its phase configured, station b's verdicts disagree with the numbering: the
    bridge says so (and rejects every cell) rather than learning b's lag as the truth."""
    h = CounterHistory()
    sync = NumberingSync(M)
    line(h, lambda s: s, 0, 100 * P)
    out = learn(sync, h, [(s * P, s - 7) for s in range(10, 20)])
    assert out == Mismatch(0, 7)


def test_disagreeing_verdicts_in_normal_operation_are_a_mismatch():
    h = CounterHistory()
    sync = NumberingSync(M)
    line(h, lambda s: s if s < 30 else s + 3, 0, 60 * P)
    assert learn(sync, h, [(s * P, s) for s in range(10, 30)]) is None
    # a few odd verdicts (a cell re-inspected, a late trigger) are not enough
    assert learn(sync, h, [(31 * P, 31 + 3), (32 * P, 32), (33 * P, 33 + 3)]) is None
    assert learn(sync, h, [(34 * P, 34), (35 * P, 35)]) is None
    assert learn(sync, h, [(36 * P, 36)]) == Mismatch(0, 3)


def test_buffered_verdicts_are_keyed_with_the_learned_shift():
    t = CellTracker({"a": 0}, modulus=M)
    t.arrive(95)  # the counter's numbering: cell 95 is at the station
    sync = NumberingSync(M)
    sync.start_learning(0)
    sync.hold("a", 1005, "NG", 5)  # the daemon's numbering: 905 ahead of the counter
    sync.hold("a", 1000, "OK", 5)  # its cell (95) is at the station already: late
    for c in range(1, 7):
        sync.candidate("a", c, 1, c - 905)
    assert sync.shift == M - 905
    assert sync.release(t) == 1
    assert (t.late, len(sync.buffer)) == (1, 0)
    assert t.arrive(96).reason == "no_verdict"
    assert t.arrive(100).reason == "ng"
