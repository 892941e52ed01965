"""``linevision train --station pole_piece`` end to end on a tiny folder, within --minutes."""

from __future__ import annotations

import json
import time

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")

from linevision.cli import main
from linevision.inference.manifest import load_manifest
from linevision.synth import pole_piece

BUDGET_S = 12.0


def test_minutes_stops_training_in_time_and_still_ships(tmp_path) -> None:
    data = tmp_path / "data"
    pole_piece.write_dataset(data, 6, seed=11)
    out = tmp_path / "model"
    args = ["train", "--station", "pole_piece", "--data", str(data), "--out", str(out)]
    args += ["--epochs", "500", "--minutes", str(BUDGET_S / 60.0), "--seed", "1"]
    t0 = time.monotonic()
    code = main([*args, "--", "--batch-size", "8", "--no-timing", "--val-fraction", "0.2"])
    elapsed = time.monotonic() - t0
    assert code == 0
    manifest, onnx_path = load_manifest(out)
    training = manifest.training
    assert training["stopped_by_time"] is True
    assert 1 <= int(str(training["epochs_run"])) < 500
    assert float(str(training["minutes_used"])) * 60.0 <= BUDGET_S + 3.0
    assert elapsed < BUDGET_S + 90.0
    assert onnx_path.name == "model.onnx"
    assert manifest.metrics["runtime_precision"] in {"int8", "fp32"}
    held_out = manifest.metrics["held_out"]
    assert isinstance(held_out, dict)
    assert "int8_accepted" in held_out
    if manifest.metrics["runtime_precision"] == "int8":
        assert (out / "model_fp32.onnx").is_file()
    for key in ("accuracy", "macro_f1", "per_class", "confusion", "latency_ms"):
        assert key in manifest.metrics
    assert json.loads((out / "manifest.json").read_text())["sha256"] == manifest.sha256
