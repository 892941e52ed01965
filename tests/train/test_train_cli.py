"""``linevision train --station pole_piece`` end to end on a tiny folder, within --minutes.

No ``--epochs``: the budget ends the run, and the best epoch is what ships.
"""

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


def test_the_budget_stops_training_in_time_and_the_best_epoch_ships(tmp_path) -> None:
    data = tmp_path / "data"
    pole_piece.write_dataset(data, 6, seed=11)
    out = tmp_path / "model"
    args = ["train", "--station", "pole_piece", "--data", str(data), "--out", str(out)]
    # patience off: on a quiet machine the tiny set stops improving within the budget,
    # and this test is about the budget (patience has its own tests in test_budget.py)
    args += ["--minutes", str(BUDGET_S / 60.0), "--seed", "1", "--patience", "0"]
    t0 = time.monotonic()
    trainer = ["--batch-size", "8", "--no-timing", "--val-fraction", "0.2", "--threads", "1"]
    code = main([*args, "--", *trainer])
    elapsed = time.monotonic() - t0
    assert code == 0
    manifest, onnx_path = load_manifest(out)
    training = manifest.training
    record = training["data"]
    assert isinstance(record, dict)
    assert record["folder"] == "data"  # the folder's name, not tmp_path's absolute path
    assert training["stop_reason"] == "budget"
    loop = training["loop"]
    assert isinstance(loop, dict)
    assert loop["epochs"] is None
    assert loop["patience"] is None  # 0: never
    assert int(str(training["epochs_run"])) >= 1  # how many fit depends on the machine's load
    assert float(str(training["minutes_used"])) * 60.0 <= BUDGET_S + 3.0
    assert elapsed < BUDGET_S + 90.0
    assert onnx_path.name == "model.onnx"
    assert manifest.metrics["runtime_precision"] in {"int8", "fp32"}
    held_out = manifest.metrics["held_out"]
    assert isinstance(held_out, dict)
    assert "int8_accepted" in held_out
    # the exported float32 model scores on the held-out set what its best epoch scored
    history = training["history"]
    assert isinstance(history, list)
    best = history[int(str(training["best_epoch"])) - 1]
    assert held_out["fp32"]["macro_f1"] == pytest.approx(best["val_macro_f1"], abs=1e-4)
    assert best["val_macro_f1"] == max(e["val_macro_f1"] for e in history)
    if manifest.metrics["runtime_precision"] == "int8":
        assert (out / "model_fp32.onnx").is_file()
    for key in ("accuracy", "macro_f1", "per_class", "confusion", "latency_ms"):
        assert key in manifest.metrics
    assert json.loads((out / "manifest.json").read_text())["sha256"] == manifest.sha256
