import json
import os
import subprocess
import sys

from linevision import demo
from tests.helpers import free_tcp_endpoint


def test_bench_json_reports_every_figure(tmp_path):
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), PYLON_CAMEMU="9")
    res = subprocess.run(
        [
            *(sys.executable, "-m", "linevision", "bench", "--duration", "3", "--json"),
            *("--endpoint", free_tcp_endpoint(), "--baseline-cells", "3"),
            # a small line-scan frame keeps the test short; the bench default is 4000 x 18000
            *("--film-width", "1024", "--film-lines", "2048", "--strip-lines", "256"),
        ],
        capture_output=True,
        text=True,
        timeout=240,
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
        assert st["inspected_p99_ms"] <= st["max_ms"]
        assert st["cells_duplicated"] == 0
        assert st["cells_missing"] == 0
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
