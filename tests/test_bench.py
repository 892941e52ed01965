import json
import os
import subprocess
import sys

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
