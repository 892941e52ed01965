"""The lifecycle's state on the operator page, from the daemon's heartbeat (docs/lifecycle.md).

Per station: whether its challenge verified it (``verified``, ``challenge``: ``none``,
``pending``, ``passed``, ``failed``, ``overdue``; ``challenge_running``) and its drift
(``drift``: ``no_baseline``, ``ok``, ``warning``, ``critical``; the worst ``drift_statistic``
and its ``drift_psi``), with a trend of that PSI (one point per heartbeat, the last
``TREND_POINTS``). Only data: the page decides how to show it.
"""

from __future__ import annotations

from collections import deque

FIELDS = (
    "verified",
    "challenge",
    "challenge_running",
    "drift",
    "drift_statistic",
    "drift_psi",
)
TREND_POINTS = 600


def lifecycle_view(stations: dict[str, dict[str, object]]) -> dict[str, dict[str, object]]:
    """The lifecycle fields of each station that has them.

    >>> lifecycle_view({"p": {"frames": 3, "verified": False, "challenge": "failed"}, "q": {}})
    {'p': {'verified': False, 'challenge': 'failed'}}
    """
    out: dict[str, dict[str, object]] = {}
    for name, entry in stations.items():
        fields = {k: entry[k] for k in FIELDS if k in entry}
        if fields:
            out[name] = fields
    return out


def lifecycle_alarms(stations: dict[str, dict[str, object]]) -> list[dict[str, str]]:
    """A failed or overdue challenge (the line must not run on this station's verdicts), and
    a drifting station.

    >>> lifecycle_alarms({"p": {"challenge": "overdue"}})[0]["code"]
    'challenge_overdue'
    >>> lifecycle_alarms({"p": {"drift": "warning", "drift_statistic": "noise", "drift_psi": 0.12}})
    [{'level': 'warning', 'code': 'drift_warning', 'text': 'p: drift of noise, PSI 0.12'}]
    """
    out: list[dict[str, str]] = []
    for name, entry in sorted(stations.items()):
        state = entry.get("challenge")
        if state in ("failed", "overdue"):
            text = f"{name}: challenge {state}, vision not verified"
            out.append({"level": "critical", "code": f"challenge_{state}", "text": text})
        drift = entry.get("drift")
        if drift in ("warning", "critical"):
            text = f"{name}: drift of {entry.get('drift_statistic')}, PSI {entry.get('drift_psi')}"
            level = "critical" if drift == "critical" else "warning"
            out.append({"level": level, "code": f"drift_{drift}", "text": text})
    return out


class LifecycleBoard:
    """The last heartbeat's lifecycle fields and each station's drift trend."""

    def __init__(self) -> None:
        self._stations: dict[str, dict[str, object]] = {}
        self._trend: dict[str, deque[tuple[float, float]]] = {}

    def ingest(self, stations: dict[str, dict[str, object]], now: float) -> None:
        self._stations = stations
        for name, entry in stations.items():
            value = entry.get("drift_psi")
            if isinstance(value, int | float):
                trend = self._trend.setdefault(name, deque(maxlen=TREND_POINTS))
                trend.append((now, float(value)))

    def view(self, now: float) -> dict[str, dict[str, object]]:
        out = lifecycle_view(self._stations)
        for name, trend in self._trend.items():
            out.setdefault(name, {})["drift_trend"] = [
                {"t": round(t - now, 1), "psi": v} for t, v in trend
            ]
        return out

    def alarms(self) -> list[dict[str, str]]:
        return lifecycle_alarms(self._stations)
