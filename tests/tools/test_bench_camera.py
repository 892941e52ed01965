"""``linevision bench --camera aravis``: the fake GigE camera against the pylon emulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from ipaddress import IPv4Address
from pathlib import Path

from linevision.cameras.aravis import answers
from tests.cameras.gige import address_lock
from tests.helpers import free_tcp_endpoint


def _bench(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"), PYLON_CAMEMU="1")
    return subprocess.run(
        [sys.executable, "-m", "linevision", "bench", "--endpoint", free_tcp_endpoint(), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )


def test_bench_camera_reports_both_cameras_at_both_rates(tmp_path: Path) -> None:
    with address_lock("127.0.0.1"):
        res = _bench(
            tmp_path, "--stations", "pole_piece", "--camera", "aravis", "--duration", "1", "--json"
        )
        assert not answers(IPv4Address("127.0.0.1"))  # the bench stopped its camera
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert set(out["runs"]) == {"pylon@20", "aravis@20", "pylon@100", "aravis@100"}
    for name, run in out["runs"].items():
        assert run["n"] > 0, name
        assert run["p50_ms"] <= run["p99_ms"] <= run["max_ms"], name
        assert run["cells_duplicated"] == 0, name
        # a cell decided after the measured window closed, while a later one made it in
        assert run["cells_missing"] <= 2, name
        assert run["seq_gaps"] == 0, name  # no verdict lost on the bus
        assert run["cpu_percent"] > 0, name
        if name.startswith("aravis"):
            assert 0 < run["camera_to_host"]["p50_ms"] <= run["camera_to_host"]["p99_ms"]
            assert run["camera_cpu_percent"] >= 0
    assert set(out["aravis_over_pylon_p50"]) == {"20", "100"}
    assert out["frame"] == "224 x 224 Mono8, free run"


def test_bench_camera_runs_pole_piece_only(tmp_path: Path) -> None:
    res = _bench(tmp_path, "--stations", "seal_edge", "--camera", "aravis")
    assert res.returncode == 2
    assert "--camera aravis runs --stations pole_piece" in res.stderr
