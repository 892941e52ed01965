"""The Prometheus endpoint of a running pipeline, over real HTTP."""

from __future__ import annotations

import threading
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from linevision.daemon.operations import Operations
from tests.daemon.parts import ops_config


def _scrape(host: str, port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def test_metrics_endpoint_reports_the_pipeline(tmp_path, models, frames):
    cfg = ops_config(tmp_path, frames, rate_hz=100)
    ops = Operations(cfg, models)
    svc = ops.make_service()
    other = Operations(ops_config(tmp_path / "2", frames), models)
    other.make_service()
    stop = threading.Event()
    try:
        ops.start()
        svc.start()
        assert ops.ready(stop, camera_timeout_s=10)
        assert ops.metrics_address is not None
        deadline = time.monotonic() + 10
        while svc.publisher.seq < 40 and time.monotonic() < deadline:
            time.sleep(0.05)
        m = _scrape(*ops.metrics_address)
    finally:
        ops.stopping()
        svc.stop()
        ops.close()
    verdicts = {
        (lb["station"], lb["verdict"], lb["reason"]): v for lb, v in m["linevision_verdicts_total"]
    }
    assert verdicts[("pole_piece", "OK", "none")] >= 20
    assert verdicts[("pole_piece", "NG", "defect")] >= 5
    stages = {lb["stage"] for lb, _ in m["linevision_stage_seconds_count"]}
    assert stages == {"acquire", "queue", "inference", "publish", "total"}
    for lb, v in m["linevision_stage_seconds_sum"]:
        assert v > 0, lb
    infer = [
        v
        for lb, v in m["linevision_stage_seconds_bucket"]
        if lb["stage"] == "inference" and lb["le"] == "0.03"
    ]
    count = [v for lb, v in m["linevision_stage_seconds_count"] if lb["stage"] == "inference"]
    assert infer == count
    assert m["linevision_camera_frames_total"][0][0] == {"camera": "cam0"}
    assert m["linevision_camera_frames_total"][0][1] >= 40
    assert m["linevision_camera_reconnects_total"][0][1] == 0
    assert m["linevision_camera_up"][0][1] == 1
    assert m["linevision_queue_depth"][0][0] == {"station": "pole_piece"}
    assert m["linevision_drops_total"][0][1] == 0
    ((labels, load_s),) = m["linevision_model_load_seconds"]
    assert labels == {"station": "pole_piece", "model": "tiny@1.0"}
    assert 0 < load_s < 10
    assert 0 < m["linevision_model_warmup_seconds"][0][1] < 10
    assert m["linevision_archive_records"][0][1] >= 0
    assert "linevision_recipe_switches" in m
