import json
import os
import subprocess
import sys

from tests.helpers import free_tcp_endpoint


def test_bench_json_reports_every_figure(tmp_path):
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), PYLON_CAMEMU="1")
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "linevision",
            "bench",
            "--duration",
            "2",
            "--json",
            "--endpoint",
            free_tcp_endpoint(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    st = out["stations"]["pole_piece"]
    for key in ("p50_ms", "p99_ms", "max_ms", "throughput_per_s", "ng_reasons", "dropped"):
        assert key in st
    assert st["n"] >= 20
    assert st["p50_ms"] <= st["p99_ms"] <= st["max_ms"]
    assert out["seq_gaps"] == 0
    assert out["seq_duplicates"] == 0
    assert out["baseline"]["pole_piece"]["n"] >= 40
    assert out["peak_rss_mb"] > 0
    assert out["cpu_percent"] > 0


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
