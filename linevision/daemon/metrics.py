"""Prometheus metrics of one Service: a registry per instance, a listener and a collector.

Stage latencies of a cell (seconds, histogram ``linevision_stage_seconds``):

- ``acquire``: frame captured -> registered and handed to the station queue (camera thread);
- ``queue``: waiting in the station queue until the station thread takes it;
- ``inference``: the model run (``Decision.infer_ms``);
- ``publish``: verdict decided -> sent on the bus (the wire's ``publish_ms``);
- ``total``: frame captured -> verdict decided (the wire's ``latency_ms``).
"""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from prometheus_client import CollectorRegistry, Counter, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from linevision.config import split_listen
from linevision.daemon.service import Service
from linevision.log import RateLimitedLog, get_logger
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
    if st.sent_mono_ns is not None:
        out["publish"] = max(st.sent_mono_ns - st.decided_mono_ns, 0) / 1e9
    return out


class _ServiceCollector(Collector):
    """Reads the service's own counters at scrape time (no work on the hot path)."""

    def __init__(self, service: Service, extra: Callable[[], dict[str, float]]) -> None:
        self._service = service
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
        stream = CounterMetricFamily(
            "linevision_camera_stream",
            "GigE Vision stream counters of each camera, summed over reconnects (aravis)",
            labels=["camera", "counter"],
        )
        for cam_id, cam in list(svc.cameras.items()):
            stats = cam.stats()
            frames.add_metric([cam_id], stats.frames)
            reconnects.add_metric([cam_id], stats.reconnects)
            up.add_metric([cam_id], 1.0 if stats.state == "running" else 0.0)
            if stats.stream is not None:
                for name, value in asdict(stats.stream).items():
                    stream.add_metric([cam_id, name], value)
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
        for name, built in list(svc.built.items()):
            ref = built.station.model
            tag = f"{ref.name}@{ref.version}"
            load.add_metric([name, tag], built.load_ms / 1000.0)
            warm.add_metric([name, tag], built.warm_up_ms / 1000.0)
        alive = GaugeMetricFamily(
            "linevision_thread_alive",
            "1 while the supervised thread runs; 0 once it died (the daemon must restart)",
            labels=["thread"],
        )
        for name, entry in svc.supervisor.threads().items():
            alive.add_metric([name], 1.0 if entry["alive"] else 0.0)
        yield from (frames, reconnects, up, stream, depth, drops, arbiter, load, warm, alive)
        for name, value in self._extra().items():
            yield GaugeMetricFamily(f"linevision_{name}", name.replace("_", " "), value=value)


class _Handler(WSGIRequestHandler):
    """No access log line per scrape."""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002, ARG002  (base signature)
        return


class _Server(ThreadingWSGIServer):
    """Errors are rate-limited JSON log events, never tracebacks printed to stderr."""

    failures = RateLimitedLog(log)

    def handle_error(self, request: object, client_address: object) -> None:  # noqa: ARG002
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError):  # the client went away: nothing of ours failed
            self.failures.warning("metrics_client_gone", error=repr(exc)[:200])
        else:
            self.failures.exception("metrics_request_failed", error=repr(exc)[:300])


def _guarded(app: WSGIApplication, failures: RateLimitedLog) -> WSGIApplication:
    """A collector that raises is a 500 and one log event, not a traceback on stderr."""

    def guarded(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        try:
            return list(app(environ, start_response))
        except Exception as exc:
            failures.exception("metrics_request_failed", error=repr(exc)[:300])
            start_response(
                "500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info()
            )
            return [b"internal error\n"]

    return guarded


class ServiceMetrics:
    """Metrics for one Service; ``listener`` goes into ``Service.listeners``."""

    def __init__(self, service: Service, extra: Callable[[], dict[str, float]] = dict) -> None:
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
        self.registry.register(_ServiceCollector(service, extra))
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def listener(self, v: Verdict, _seq: int, latency_ms: float) -> None:
        d = v.decision
        self.verdicts.labels(v.station, d.verdict, d.reason or "none").inc()
        for stage, seconds in stage_seconds(v, latency_ms).items():
            self.stages.labels(v.station, stage).observe(seconds)

    def serve(self, listen: str) -> tuple[str, int]:
        """Serve ``/metrics`` on ``host:port`` in a thread; returns the bound address."""
        host, port = split_listen(listen)
        family, _, _, _, sockaddr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]

        class Server(_Server):
            address_family = family

        app = _guarded(make_wsgi_app(self.registry), _Server.failures)
        server = make_server(str(sockaddr[0]), port, app, Server, handler_class=_Handler)
        thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
        thread.start()
        self._server, self._thread = server, thread
        bound_host, bound_port = server.server_address[:2]
        log.info("metrics_listening", host=bound_host, port=bound_port)
        return str(bound_host), int(bound_port)

    def threads(self) -> tuple[threading.Thread, ...]:
        """The ``/metrics`` server thread, once ``serve`` has started it."""
        return () if self._thread is None else (self._thread,)

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
