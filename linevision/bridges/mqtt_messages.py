"""Payloads of the MQTT topic tree, built from what the bridge knows (see ``mqtt_wire``)."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field

from linevision.bridges.mqtt_wire import SCHEMA, Status, line_topic, station_topic
from linevision.bridges.mqtt_yield import figures
from linevision.bus.wire import HeartbeatMessage, VerdictMessage


def dumps(body: dict[str, object]) -> bytes:
    return json.dumps(body, separators=(",", ":"), default=str).encode()


@dataclass
class Identity:
    """What the line runs: the daemon's run and each station's recipe and model."""

    run_id: str | None = None
    stations: dict[str, dict[str, object]] = field(default_factory=dict)

    def key(self) -> str:
        return json.dumps([self.run_id, self.stations], sort_keys=True, default=str)

    @classmethod
    def restore(cls, key: object) -> Identity:
        """From a saved :meth:`key` (anything else: nothing known)."""
        try:
            run_id, stations = json.loads(str(key))
        except (ValueError, TypeError):
            return cls()
        if not isinstance(stations, dict) or not isinstance(run_id, str | None):
            return cls()
        return cls(run_id, stations)

    def from_heartbeat(self, hb: HeartbeatMessage) -> None:
        self.run_id = hb.run_id
        for name, info in hb.stations.items():
            if "model" in info or "recipe" in info:
                self.stations[name] = {"recipe": info.get("recipe"), "model": info.get("model")}

    def from_verdict(self, v: VerdictMessage) -> None:
        self.run_id = v.run_id
        model = None if v.model is None else v.model.model_dump()
        self.stations[v.station] = {"recipe": v.recipe, "model": model}

    @property
    def recipe(self) -> str | None:
        recipes = {s.get("recipe") for s in self.stations.values()}
        one = recipes.pop() if len(recipes) == 1 else None
        return one if isinstance(one, str) else None


@dataclass(frozen=True)
class Tree:
    """Topic names and payloads of one line."""

    prefix: str
    site: str
    line: str
    bridge: str

    def topic(self, kind: str, station: str | None = None) -> str:
        if station is None:
            return line_topic(self.prefix, self.site, self.line, kind)
        return station_topic(self.prefix, self.site, self.line, station, kind)

    def _head(self) -> dict[str, object]:
        return {"schema": SCHEMA, "site": self.site, "line": self.line}

    def verdict(self, v: VerdictMessage) -> bytes:
        body = v.model_dump(mode="json", by_alias=True)
        body.update(site=self.site, line=self.line)
        return dumps(body)

    def state(self, ident: Identity, status: Status, reason: str | None = None) -> bytes:
        return dumps(
            {
                **self._head(),
                "bridge": self.bridge,
                "status": status,
                "reason": reason,
                "run_id": ident.run_id,
                "recipe": ident.recipe,
                "stations": ident.stations,
                "t_ns": time.time_ns(),
            }
        )

    def yield_report(
        self,
        station: str,
        shift: str,
        counts: Counter[str],
        *,
        final: bool,
        revision: int = 0,
    ) -> bytes:
        return dumps(
            {
                **self._head(),
                "station": station,
                "shift_start": shift,
                **figures(counts),
                "final": final,
                "revision": revision,
                "t_ns": time.time_ns(),
            }
        )

    def alarms(self, station: str | None, active: list[dict[str, object]]) -> bytes:
        return dumps({**self._head(), "station": station, "active": active, "t_ns": time.time_ns()})

    def lost(self, run_id: str, first: int, last: int | None, reason: str) -> bytes:
        body = {"run_id": run_id, "first_seq": first, "last_seq": last, "reason": reason}
        return dumps({**self._head(), **body, "t_ns": time.time_ns()})

    def health(self, body: dict[str, object]) -> bytes:
        return dumps({**self._head(), "bridge": self.bridge, **body, "t_ns": time.time_ns()})
