import json
import math
import os
import subprocess
import sys

import pytest

from linevision.tools import bench, demo
from tests.helpers import free_tcp_endpoint

NG_REASONS = {"defect", "timeout", "bad_frame", "camera_error", "model_error", "overload"}


def test_bench_json_reports_every_figure(tmp_path):
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), PYLON_CAMEMU="9")
    res = subprocess.run(
        [
            *(sys.executable, "-m", "linevision", "bench", "--duration", "3", "--json"),
            *("--endpoint", free_tcp_endpoint(), "--baseline-cells", "3", "--no-backend-speed"),
            # a small line-scan frame keeps the test short; the bench default is 4000 x 18000
            *("--film-width", "1024", "--film-lines", "2048", "--strip-lines", "256"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert set(out["stations"]) == {"pole_piece", "seal_edge", "six_view", "blue_film"}
    for name, st in out["stations"].items():
        for key in ("p50_ms", "p99_ms", "max_ms", "throughput_per_s", "ng_reasons", "dropped"):
            assert key in st, (name, key)
        assert st["p50_ms"] <= st["p99_ms"] <= st["max_ms"]
        # nan when no cell of the station was inspected in time (a loaded machine: every
        # cell of a 3 s run may be NG timeout); otherwise it is one of the latencies
        if not math.isnan(st["inspected_p99_ms"]):
            assert st["inspected_p99_ms"] <= st["max_ms"]
        assert st["cells_duplicated"] == 0
        assert st["cells_missing"] == 0
        assert (st["load"], st["backend"]) == (1.0, "onnxruntime")
        assert set(st["ng_by_reason"]) == NG_REASONS
        assert sum(st["ng_by_reason"].values()) == sum(st["ng_reasons"].values())
        assert out["baseline"][name]["n"] >= 2
        assert out["baseline_over_pipeline_p50"][name] > 0
    assert out["stations"]["pole_piece"]["n"] >= 40
    assert out["stations"]["blue_film"]["n"] >= 2
    assert out["seq_gaps"] == 0
    assert out["seq_duplicates"] == 0
    work = out["blue_film_work"]
    assert work["frame"] == "1024 x 2048"
    assert work["anomaly_every_tile_frame_ms"] > 0
    assert out["peak_rss_mb"] > 0
    assert out["cpu_percent"] > 0
    assert (out["load"], out["backend"]) == (1.0, "onnxruntime")
    stages = out["cpu"]["stages"]
    assert set(stages) >= {"acquisition_copy", "preprocessing", "inference", "publish"}
    assert stages["inference"] > 0
    assert stages["acquisition_copy"] > 0
    assert any(t.startswith("camera-") for t in out["cpu"]["threads"])
    assert any(t.startswith("infer-") for t in out["cpu"]["threads"])
    assert out["job_cpu"]["pole_piece"]["jobs"] > 0
    assert out["rated_load_per_s"]["six_view"] == 2.0
    offsets = out["trigger_offsets_ms"]
    assert offsets["seal_cam"] == demo.STATION_OFFSETS_MS["seal_edge"]
    assert offsets["film_cam"] == demo.STATION_OFFSETS_MS["blue_film"]


def test_station_trigger_offsets(tmp_path):
    data = demo.demo_data_paths(tmp_path)
    spread = {c.id: c.trigger.offset_ms for c in demo.four_station_config(data).cameras}
    aligned = {
        c.id: c.trigger.offset_ms for c in demo.four_station_config(data, offsets_ms={}).cameras
    }
    six = demo.STATION_OFFSETS_MS["six_view"]
    assert spread["six_1"] == six
    assert spread["six_3"] == six + 2 * demo.SIX_VIEW_STAGGER_MS
    assert spread["pole_piece_cam"] == demo.STATION_OFFSETS_MS["pole_piece"]
    # the demo's stations trigger at distinct instants of the grid, aligned ones together
    firsts = {spread[c] for c in ("pole_piece_cam", "seal_cam", "six_1", "film_cam")}
    assert len(firsts) == 4
    assert {aligned[c] for c in ("pole_piece_cam", "seal_cam", "six_1", "film_cam")} == {0.0}
    assert aligned["six_2"] == demo.SIX_VIEW_STAGGER_MS


def test_bench_refuses_unknown_station():
    res = subprocess.run(
        [sys.executable, "-m", "linevision", "bench", "--stations", "nope", "--duration", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 2
    assert "no bench load defined for stations ['nope']" in res.stderr


def test_bench_at_twice_the_rate_on_openvino(tmp_path):
    pytest.importorskip("openvino")
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), PYLON_CAMEMU="9")
    res = subprocess.run(
        [
            *(sys.executable, "-m", "linevision", "bench", "--duration", "3", "--json"),
            *("--endpoint", free_tcp_endpoint(), "--baseline-cells", "0"),
            *("--stations", "pole_piece", "seal_edge", "--load", "2", "--backend", "openvino"),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert (out["load"], out["backend"]) == (2.0, "openvino")
    assert out["rated_load_per_s"]["pole_piece"] == 20.0
    pole = out["stations"]["pole_piece"]
    assert pole["backend"] == "openvino"
    # 40 images a second for 3 s: every one has a verdict, whatever it is
    assert pole["n"] >= 100
    assert pole["cells_missing"] == 0
    assert out["baseline"] == {}


@pytest.mark.parametrize(
    ("load", "stations", "message"),
    [
        (0.0, ("pole_piece",), "must be above 0"),
        (11.0, ("pole_piece",), "at most 10.0"),
        (3.0, ("blue_film",), "blue_film runs at most 2.22 times"),
    ],
)
def test_a_load_the_line_cannot_run_is_refused(load, stations, message):
    with pytest.raises(ValueError, match=message):
        bench.check_load(load, stations, demo.FilmSize())
    bench.check_load(2.0, ("pole_piece", "blue_film"), demo.FilmSize())
