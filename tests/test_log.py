import io
import json
import logging
import sys
import time

from linevision import log


def test_logs_follow_the_current_stdout_after_it_is_replaced(monkeypatch):
    first = io.StringIO()
    monkeypatch.setattr(sys, "stdout", first)
    log.configure("info", "json")
    first.close()  # a test runner's capture may close the stream it replaced
    second = io.StringIO()
    monkeypatch.setattr(sys, "stdout", second)
    log.get_logger("t").info("camera_state", camera="c1", state="running")
    line = json.loads(second.getvalue().strip().splitlines()[-1])
    assert (line["event"], line["camera"], line["state"]) == ("camera_state", "c1", "running")
    assert line["level"] == "info"


def test_level_filters_debug_events(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    log.configure("info", "json")
    log.get_logger("t").debug("verdict", seq=1)
    assert out.getvalue() == ""


def test_rate_limited_log_counts_everything_and_logs_once_per_period(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    log.configure("info", "json")
    limited = log.RateLimitedLog(log.get_logger("t"), period_s=0.2)
    for _ in range(50):
        limited.warning("bad_frame", size=3)
    limited.warning("other_event")
    time.sleep(0.25)
    limited.warning("bad_frame", size=4)
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [(x["event"], x["count"], x["suppressed"]) for x in lines] == [
        ("bad_frame", 1, 0),
        ("other_event", 1, 0),
        ("bad_frame", 51, 49),
    ]
    assert (limited.count, limited.counts["bad_frame"]) == (52, 51)


def test_library_warnings_are_json_lines_and_rate_limited(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    log.configure("info", "json")
    for i in range(100):
        logging.getLogger("uvicorn.error").warning("Invalid HTTP request received %d", i)
    (line,) = out.getvalue().splitlines()
    assert json.loads(line)["event"] == "Invalid HTTP request received 0"
