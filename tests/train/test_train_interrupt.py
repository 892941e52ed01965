"""Ctrl-C during ``python -m linevision train`` exports the best epoch so far and exits 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")

from linevision.inference.manifest import load_manifest
from linevision.synth import pole_piece

ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 120.0


def test_ctrl_c_after_the_first_epoch_exports_the_best_so_far(tmp_path: Path) -> None:
    data = tmp_path / "data"
    pole_piece.write_dataset(data, 6, seed=12)
    out = tmp_path / "model"
    command = [sys.executable, "-m", "linevision", "train", "--station", "pole_piece"]
    command += ["--data", str(data), "--out", str(out), "--minutes", "5", "--seed", "2"]
    command += ["--", "--batch-size", "8", "--no-timing", "--no-int8", "--threads", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    watchdog = threading.Timer(WAIT_S, process.kill)  # a hung trainer fails, not hangs
    watchdog.start()
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if '"epoch_done"' in line:
                assert json.loads(line)["best_epoch"] == 1
                break
        else:
            pytest.fail(f"the trainer ended before its first epoch: {process.stderr}")
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=WAIT_S)
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert "interrupted: exported the best epoch so far" in err
    manifest, onnx_path = load_manifest(out)
    assert onnx_path.is_file()
    training = manifest.training
    assert training["stop_reason"] == "interrupted"
    assert int(str(training["best_epoch"])) >= 1
    assert float(str(training["minutes_used"])) < 5.0
