import io
import json
import sys

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
