"""Shared test helpers (imported by tests; not a test module)."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

from linevision.bus.subscriber import subscribe
from linevision.bus.wire import VerdictMessage
from linevision.config import Config
from linevision.daemon.service import Service

EVAL_KEYS = (
    "n",
    "accuracy",
    "macro_f1",
    "per_class",
    "confusion",
    "auroc",
    "ng_recall",
    "ok_false_reject",
    "latency_ms",
)
"""The keys every ``linevision eval --json`` report has (the models issue's contract)."""


def free_tcp_endpoint() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"tcp://127.0.0.1:{port}"


def run_service_and_collect(
    cfg: Config, n: int, models_root: Path, timeout_s: float = 20.0
) -> tuple[list[VerdictMessage], Service]:
    """Start a Service, read ``n`` verdicts from its bus (or until ``timeout_s``), stop it."""
    out: list[VerdictMessage] = []

    def reader() -> None:
        gen = subscribe(cfg.bus.publish, ("verdict.",), timeout_s=timeout_s)
        for m in gen:
            if isinstance(m, VerdictMessage):
                out.append(m)
            if len(out) >= n:
                gen.close()
                return

    service = Service(cfg, models_root=models_root)
    service.start()
    try:
        t = threading.Thread(target=reader, daemon=True)
        t.start()
        t.join(timeout_s)
    finally:
        service.stop()
    return out, service
