"""``linevision variants``: a variant is listed in the manifest only after it passed the check."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from linevision.inference.manifest import ModelFileError, load_manifest
from linevision.inference.session import ModelSession, SessionOptions
from linevision.tools import variants

pytest.importorskip("openvino")

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def bare_model(tmp_path: Path) -> Path:
    """The shipped pole_piece model with no runtime variants listed."""
    folder = tmp_path / "pole_piece"
    shutil.copytree(ROOT / "models" / "pole_piece", folder)
    path = folder / "manifest.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["runtimes"] = []
    path.write_text(json.dumps(data), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def val_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("val") / "pp_val"
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "linevision", "synth", "--station", "pole_piece"),
            *("--out", str(out), "--n", "4", "--seed", "61"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    return out


def test_a_checked_variant_is_written_and_then_runs(bare_model: Path, val_folder: Path) -> None:
    with pytest.raises(ModelFileError, match="openvino/int8"):
        ModelSession(bare_model, SessionOptions(backend="openvino"))
    report = variants.check_variants("pole_piece", val_folder, bare_model, [("openvino", "int8")])
    (check,) = report.checks
    assert check.accepted, check.reason
    assert check.agreement == 1.0
    variants.write_variants(bare_model, report)
    manifest, _ = load_manifest(bare_model)
    listed = manifest.runtime_variant("openvino")
    assert listed.threshold == manifest.threshold
    assert listed.checked_on.startswith("pp_val (labels.csv sha256 ")
    assert listed.reference == report.reference
    session = ModelSession(bare_model, SessionOptions(backend="openvino"))
    assert session.variant == listed


def test_a_variant_that_failed_its_check_is_not_listed(bare_model: Path, val_folder: Path) -> None:
    report = variants.check_variants("pole_piece", val_folder, bare_model, [("openvino", "int8")])
    variants.write_variants(bare_model, report)
    report.checks[0].accepted = False  # as if this check had moved a figure too far
    variants.write_variants(bare_model, report)
    with pytest.raises(ModelFileError, match="no threshold calibrated for openvino/int8"):
        ModelSession(bare_model, SessionOptions(backend="openvino"))


def test_the_cli_reports_and_leaves_the_manifest_on_dry_run(
    bare_model: Path, val_folder: Path
) -> None:
    before = (bare_model / "manifest.json").read_bytes()
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "linevision", "variants", "--station", "pole_piece"),
            *("--data", str(val_folder), "--model", str(bare_model), "--dry-run", "--json"),
            *("--variant", "openvino/int8"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["reference"]["variant"] == "onnxruntime/int8"
    assert [v["variant"] for v in out["variants"]] == ["openvino/int8"]
    assert (bare_model / "manifest.json").read_bytes() == before


def test_a_malformed_variant_is_refused() -> None:
    with pytest.raises(ValueError, match="BACKEND/PRECISION"):
        variants.parse_variant("openvino-fp32")
