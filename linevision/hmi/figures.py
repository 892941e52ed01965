"""The page's figures: per station and shift (yield per hour, NG by reason and by label) and
latency over a window of time. Plain counters, cheap per verdict; each view says its window.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

HOUR = timedelta(hours=1)
LATENCY_WINDOW_S = 120
"""The latency figures and chart cover the last this many seconds (one window for both)."""
LATENCY_CAP = 60_000
"""Latencies kept at most (10 minutes of 100 verdicts/s); a faster line shortens the window,
and the view says by how much."""
PARETO_BARS = 8


def label_keys(reason: str | None, label: str | None, kinds: Iterable[str]) -> tuple[str, ...]:
    """What an NG counts under in the Pareto by label: a defect NG by its defects' kinds
    when it has located defects (blue_film), else by its label (pole_piece's class); a
    fail-safe NG (timeout, bad frame...) not at all: the Pareto by reason has those.

    >>> label_keys("defect", "film_anomaly", ["film_anomaly", "film_segment", "film_anomaly"])
    ('film_anomaly', 'film_segment')
    >>> label_keys("defect", "Long", []), label_keys("timeout", "deadline", [])
    (('Long',), ())
    """
    if reason not in (None, "defect"):
        return ()
    distinct = tuple(dict.fromkeys(kinds))
    return distinct or (label or "NG",)


def pareto(counts: Counter[str], total: int) -> list[dict[str, object]]:
    """The largest ``PARETO_BARS`` causes, largest first, with their cumulative share (the
    rest as one ``other`` bar).

    >>> [(b["key"], b["n"], b["cum"]) for b in pareto(Counter({"a": 6, "b": 3, "c": 1}), 10)]
    [('a', 6, 0.6), ('b', 3, 0.9), ('c', 1, 1.0)]
    """
    bars: list[dict[str, object]] = []
    running = 0
    top = counts.most_common(PARETO_BARS)
    rest = sum(counts.values()) - sum(n for _, n in top)
    for key, n in [*top, *([("other", rest)] if rest else [])]:
        running += n
        bars.append({"key": key, "n": n, "cum": round(running / max(total, 1), 4)})
    return bars


@dataclass
class ShiftFigures:
    """One station's counts in one shift (from ``start``, local time)."""

    start: datetime
    ok: int = 0
    ng: int = 0
    hours: dict[int, list[int]] = field(default_factory=dict)
    reasons: Counter[str] = field(default_factory=Counter)
    labels: Counter[str] = field(default_factory=Counter)

    def add(self, at: datetime, verdict: str, reason: str | None, labels: tuple[str, ...]) -> None:
        hour = max(int((at - self.start) / HOUR), 0)
        slot = self.hours.setdefault(hour, [0, 0])
        if verdict == "OK":
            self.ok += 1
            slot[0] += 1
            return
        self.ng += 1
        slot[1] += 1
        self.reasons[reason or "defect"] += 1
        self.labels.update(labels)

    def view(self) -> dict[str, object]:
        total = self.ok + self.ng
        last = max(self.hours, default=-1)
        hourly = []
        for h in range(last + 1):
            ok, ng = self.hours.get(h, (0, 0))
            hourly.append(
                {
                    "from": (self.start + h * HOUR).strftime("%H:%M"),
                    "ok": ok,
                    "ng": ng,
                    "yield": None if ok + ng == 0 else round(ok / (ok + ng), 4),
                }
            )
        return {
            "ok": self.ok,
            "ng": self.ng,
            "yield": None if total == 0 else round(self.ok / total, 4),
            "hourly": hourly,
            "pareto": {
                "reason": pareto(self.reasons, self.ng),
                "label": pareto(self.labels, sum(self.labels.values())),
            },
        }


def _quantiles(a: np.ndarray) -> dict[str, float | None]:
    if a.size == 0:
        return {"p50": None, "p99": None, "max": None}
    p50, p99 = np.percentile(a, (50, 99))
    return {
        "p50": round(float(p50), 2),
        "p99": round(float(p99), 2),
        "max": round(float(a.max()), 2),
    }


class LatencyWindow:
    """Verdict latencies by the second they arrived: the figures and the per-second chart of
    the last ``window_s`` seconds, per station too. The values sit in a ring of ``cap``
    (numpy arrays: a snapshot reads them without a Python loop); a second's chart point is
    worked out once, when the second is over."""

    def __init__(self, window_s: int = LATENCY_WINDOW_S, cap: int = LATENCY_CAP) -> None:
        self.window_s = window_s
        self._cap = cap
        self._seconds = np.zeros(cap, np.int64)
        self._stations = np.zeros(cap, np.int32)
        self._ms = np.zeros(cap, np.float64)
        self._written = 0
        self._names: dict[str, int] = {}
        self._points: deque[dict[str, object]] = deque(maxlen=window_s)
        self._second: int | None = None
        self._open: list[float] = []

    def add(self, second: int, station: str, latency_ms: float) -> None:
        if second != self._second:
            self._close()
            self._second = second
        self._open.append(latency_ms)
        i = self._written % self._cap
        self._seconds[i] = second
        self._stations[i] = self._names.setdefault(station, len(self._names))
        self._ms[i] = latency_ms
        self._written += 1

    def _close(self) -> None:
        if self._second is not None and self._open:
            quantiles = _quantiles(np.asarray(self._open))
            self._points.append({"s": self._second, "n": len(self._open), **quantiles})
        self._open = []

    def _since(self, first: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        k = min(self._written, self._cap)
        keep = self._seconds[:k] >= first
        return self._seconds[:k][keep], self._stations[:k][keep], self._ms[:k][keep]

    def p99(self, now_s: int, span_s: float) -> float | None:
        """p99 of the last ``span_s`` seconds (the latency alarm's window)."""
        _, _, values = self._since(now_s - int(span_s) + 1)
        return None if values.size == 0 else float(np.percentile(values, 99))

    def view(self, now_s: int) -> dict[str, object]:
        first = now_s - self.window_s + 1
        seconds, stations, values = self._since(first)
        chart = [
            {"t": int(str(p["s"])) - now_s, **{k: v for k, v in p.items() if k != "s"}}
            for p in self._points
            if int(str(p["s"])) >= first
        ]
        if self._second is not None and self._second >= first and self._open:
            chart.append(
                {
                    "t": self._second - now_s,
                    "n": len(self._open),
                    **_quantiles(np.asarray(self._open)),
                }
            )
        per_station = {}
        for name, index in self._names.items():
            mine = values[stations == index]
            if mine.size:
                per_station[name] = {"n": int(mine.size), **_quantiles(mine)}
        oldest = int(seconds.min()) if seconds.size else first
        truncated = self._written > self._cap and oldest > first
        return {
            "window_s": self.window_s,
            "covered_s": now_s - oldest + 1 if truncated else self.window_s,
            "n": int(values.size),
            **_quantiles(values),
            "stations": per_station,
            "chart": chart,
        }
