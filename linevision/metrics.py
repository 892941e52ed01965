"""Prometheus metrics of one Service: a registry per instance, a listener and a collector.

Stage latencies of a cell (seconds, histogram ``linevision_stage_seconds``):

- ``acquire``: frame grabbed -> registered and handed to the station queue (camera thread);
- ``queue``: waiting in the station queue until the station thread takes it;
- ``inference``: the model run (``Decision.infer_ms``);
- ``publish``: verdict decided -> sent on the bus;
- ``total``: frame grabbed -> sent (the wire's ``latency_ms``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from linevision.config import split_listen
from linevision.log import get_logger
from linevision.service import Service
from linevision.types import Verdict

log = get_logger(__name__)

_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.015,
    0.02,
    0.025,
    0.03,
    0.05,
    0.1,
    0.25,
    1.0,
)


@dataclass(frozen=True, slots=True)
class ModelTiming:
    station: str
    model: str
    version: str
    load_s: float
    warm_up_s: float


def stage_seconds(v: Verdict, latency_ms: float) -> dict[str, float]:
    """The stage durations of one verdict, from its monotonic instants."""
    out = {"total": latency_ms / 1000.0}
    st = v.stages
    if st is None:
        return out
    out["acquire"] = max(st.queued_mono_ns - v.t_frame_mono_ns, 0) / 1e9
    if st.started_mono_ns is not None:
        out["queue"] = max(st.started_mono_ns - st.queued_mono_ns, 0) / 1e9
    if v.decision.infer_ms is not None:
        out["inference"] = v.decision.infer_ms / 1000.0
    decided_ms = (st.decided_mono_ns - v.t_frame_mono_ns) / 1e6
    out["publish"] = max(latency_ms - decided_ms, 0.0) / 1000.0
    return out


class _ServiceCollector(Collector):
    """Reads the service's own counters at scrape time (no work on the hot path)."""

    def __init__(
        self,
        service: Service,
        models: Callable[[], list[ModelTiming]],
        extra: Callable[[], dict[str, float]],
    ) -> None:
        self._service = service
        self._models = models
        self._extra = extra

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        svc = self._service
        frames = CounterMetricFamily(
            "linevision_camera_frames", "Frames delivered by each camera", labels=["camera"]
        )
        reconnects = CounterMetricFamily(
            "linevision_camera_reconnects", "Camera reconnects", labels=["camera"]
        )
        up = GaugeMetricFamily(
            "linevision_camera_up", "1 while the camera is running", labels=["camera"]
        )
        for cam_id, cam in list(svc.cameras.items()):
            stats = cam.stats()
            frames.add_metric([cam_id], stats.frames)
            reconnects.add_metric([cam_id], stats.reconnects)
            up.add_metric([cam_id], 1.0 if stats.state == "running" else 0.0)
        depth = GaugeMetricFamily(
            "linevision_queue_depth", "Frames waiting in each station queue", labels=["station"]
        )
        drops = CounterMetricFamily(
            "linevision_drops", "Frames dropped at a full station queue", labels=["station"]
        )
        for name, worker in list(svc.stations.items()):
            depth.add_metric([name], worker.queue_depth())
            drops.add_metric([name], worker.counters.get("dropped", 0))
        arbiter = CounterMetricFamily(
            "linevision_arbiter_events", "Arbiter events", labels=["event"]
        )
        for event in ("deadline_missed", "late_result", "duplicate_cell"):
            arbiter.add_metric([event], svc.arbiter.counters.get(event, 0))
        load = GaugeMetricFamily(
            "linevision_model_load_seconds", "Model load time", labels=["station", "model"]
        )
        warm = GaugeMetricFamily(
            "linevision_model_warmup_seconds", "Model warm-up time", labels=["station", "model"]
        )
        for m in self._models():
            tag = f"{m.model}@{m.version}"
            load.add_metric([m.station, tag], m.load_s)
            warm.add_metric([m.station, tag], m.warm_up_s)
        yield from (frames, reconnects, up, depth, drops, arbiter, load, warm)
        for name, value in self._extra().items():
            yield GaugeMetricFamily(f"linevision_{name}", name.replace("_", " "), value=value)


class ServiceMetrics:
    """Metrics for one Service; ``listener`` goes into ``Service.listeners``."""

    def __init__(
        self,
        service: Service,
        models: Callable[[], list[ModelTiming]] = list,
        extra: Callable[[], dict[str, float]] = dict,
    ) -> None:
        self.registry = CollectorRegistry()
        self.verdicts = Counter(
            "linevision_verdicts",
            "Verdicts published",
            ["station", "verdict", "reason"],
            registry=self.registry,
        )
        self.stages = Histogram(
            "linevision_stage_seconds",
            "Per-cell latency of each pipeline stage",
            ["station", "stage"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_ServiceCollector(service, models, extra))
        self._server: WSGIServer | None = None

    def listener(self, v: Verdict, _seq: int, latency_ms: float) -> None:
        d = v.decision
        self.verdicts.labels(v.station, d.verdict, d.reason or "none").inc()
        for stage, seconds in stage_seconds(v, latency_ms).items():
            self.stages.labels(v.station, stage).observe(seconds)

    def serve(self, listen: str) -> tuple[str, int]:
        """Serve ``/metrics`` on ``host:port`` in a thread; returns the bound address."""
        host, port = split_listen(listen)
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        bound_host, bound_port = server.server_address[:2]
        log.info("metrics_listening", host=bound_host, port=bound_port)
        return str(bound_host), int(bound_port)

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
