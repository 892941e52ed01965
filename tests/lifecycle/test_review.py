"""Operator review -> dataset export -> linevision train, through the real daemon and HMI."""

from __future__ import annotations

import csv
import json
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from linevision.config import Config, HmiConfig
from linevision.hmi.server import HmiServer, review_api
from linevision.synth import pole_piece
from linevision.synth.contract import read_labels
from linevision.tools.demo import find_models_root
from tests.daemon.parts import free_port
from tests.lifecycle.parts import cli, lifecycle_config, running_daemon, wait_for


def _crops(folder: Path, per_class: int = 6) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(5)
    for i in range(per_class * 5):
        img = pole_piece.generate(pole_piece.CLASSES[i % 5], rng)
        assert cv2.imwrite(str(folder / f"{i:03d}.png"), img)
    return folder


def _config(tmp_path: Path) -> Config:
    cfg = lifecycle_config(
        tmp_path,
        _crops(tmp_path / "crops"),
        rate_hz=20,
        challenge={"on_start": False},
        drift={"enabled": False},
        review={"ok_below": 1.0, "dir": str(tmp_path / "review")},
    )
    station = cfg.stations[0].model_copy(update={"model": Path("pole_piece")})
    return cfg.model_copy(update={"stations": (station,)})


def _http(url: str, body: object | None = None, headers: dict[str, str] | None = None):
    data = (
        None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    )
    hdrs = {"Content-Type": "application/json"} if body is not None else {}
    hdrs.update(headers or {})
    req = urllib.request.Request(url, data=data, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _review_everything(base: str) -> dict[str, int]:
    """What an operator does on the page: each NG confirmed (two marked false rejects), each
    OK confirmed (one marked a missed defect)."""
    status, raw = _http(f"{base}/api/review?station=pole_piece&limit=500")
    assert status == 200
    cells = json.loads(raw)["cells"]
    ng = [c for c in cells if c["verdict"] == "NG"]
    ok = [c for c in cells if c["verdict"] == "OK"]
    assert len(ng) >= 20, len(ng)
    assert len(ok) >= 5, len(ok)
    assert all(c["raw"] for c in cells)
    status, jpeg = _http(base + ng[0]["image_url"])
    assert status == 200
    assert jpeg[:2] == b"\xff\xd8"
    done = {"confirm_ng": 0, "false_reject": 0, "confirm_ok": 0, "missed_defect": 0}
    for i, c in enumerate(ng):
        decision = "false_reject" if i < 2 else "confirm_ng"
        body = {"run_id": c["run_id"], "seq": c["seq"], "decision": decision, "operator": "anna"}
        status, raw = _http(f"{base}/api/review", body)
        assert status == 200, raw
        done[decision] += 1
    for i, c in enumerate(ok):
        body = {"run_id": c["run_id"], "seq": c["seq"], "operator": "anna"}
        body.update(
            {"decision": "missed_defect", "label": "Powder"}
            if i == 0
            else {"decision": "confirm_ok"}
        )
        status, raw = _http(f"{base}/api/review", body)
        assert status == 200, raw
        done[str(body["decision"])] += 1
    return done


def _bad_requests(base: str, cell: dict[str, object]) -> None:
    """Each refusal of a review of an NG ``cell`` names its field; nothing is written."""
    url = f"{base}/api/review"
    key = {"run_id": cell["run_id"], "seq": cell["seq"]}
    cases = [
        ({**key, "decision": "confirm_ng"}, {}, 400, "operator"),
        ({**key, "decision": "confirm_ok", "operator": "x"}, {}, 400, "decision"),
        ({**key, "decision": "confirm_ng", "operator": "x", "label": "Burr"}, {}, 400, "label"),
        ({**key, "seq": 10**9, "decision": "confirm_ng", "operator": "x"}, {}, 400, "seq"),
        ({**key, "decision": "confirm_ng", "operator": "x", "extra": 1}, {}, 400, "extra"),
        (b"{not json", {}, 400, "body"),
        (
            {**key, "decision": "confirm_ng", "operator": "x"},
            {"Content-Type": "text/plain"},
            415,
            "content-type",
        ),
        (
            {**key, "decision": "confirm_ng", "operator": "x"},
            {"Origin": "http://evil.example"},
            403,
            "origin",
        ),
    ]
    for body, headers, code, param in cases:
        status, raw = _http(url, body, headers)
        assert (status, json.loads(raw)["param"]) == (code, param), (body, raw)


@pytest.fixture
def reviewed_line(tmp_path, monkeypatch):
    """A daemon (the shipped pole_piece model, generated crops), its HMI; reviews posted."""
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    cfg = _config(tmp_path)
    with running_daemon(cfg, find_models_root()) as ops:
        archive = ops.archive.folder  # type: ignore[union-attr]
        hmi = HmiServer(
            HmiConfig(listen=f"127.0.0.1:{free_port()}"),
            cfg.bus.publish,
            archive,
            review=review_api(cfg, archive),
        )
        hmi.start()
        try:
            base = f"http://127.0.0.1:{hmi.port}"
            wait_for(lambda: ops.archive.counters["images"] >= 60, 60, "60 archived pictures")  # type: ignore[union-attr]
            cfg_file = tmp_path / "config.yaml"
            cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude_none=True)))
            yield cfg_file, base, hmi
        finally:
            hmi.stop()


def test_review_export_and_train(reviewed_line, tmp_path):
    cfg_file, base, hmi = reviewed_line
    _, raw = _http(f"{base}/api/review")
    meta = json.loads(raw)
    assert meta["stations"]["pole_piece"]["defect_labels"] == ["Short", "Long", "Powder", "Other"]
    cells = json.loads(_http(f"{base}/api/review?station=pole_piece")[1])["cells"]
    _bad_requests(base, next(c for c in cells if c["verdict"] == "NG"))
    done = _review_everything(base)
    assert hmi.review.written == sum(done.values())  # type: ignore[union-attr]

    out = tmp_path / "dataset"
    run = cli(
        "dataset",
        "export",
        "--station",
        "pole_piece",
        "--since",
        "1h",
        "--out",
        str(out),
        "--config",
        str(cfg_file),
    )
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["cells"] == sum(done.values())
    samples = read_labels(out, "pole_piece")
    assert len(samples) == summary["cells"]
    with (out / "labels.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert {r["operator"] for r in rows} == {"anna"}
    by_review = {}
    for r in rows:
        by_review.setdefault(r["review"], set()).add(r["label"])
    assert by_review["false_reject"] == by_review["confirm_ok"] == {"Normal"}
    assert by_review["missed_defect"] == {"Powder"}
    assert by_review["confirm_ng"] <= {"Short", "Long", "Powder", "Other"}
    # the exported frame is the camera's, not the archive's JPEG with its overlay
    img = cv2.imread(str(out / rows[0]["image"]), cv2.IMREAD_GRAYSCALE)
    assert img is not None
    assert img.shape == (224, 224)
    again = cli(
        "dataset", "export", "--station", "pole_piece", "--out", str(out), "--config", str(cfg_file)
    )
    assert again.returncode == 1
    assert "exists and is not empty" in again.stderr

    pytest.importorskip("torch")
    model = tmp_path / "retrained"
    train = cli(
        "train",
        "--station",
        "pole_piece",
        "--data",
        str(out),
        "--out",
        str(model),
        "--minutes",
        "0.25",
        "--epochs",
        "2",
        "--seed",
        "1",
        "--",
        "--batch-size",
        "8",
        "--no-timing",
        "--val-fraction",
        "0.2",
        "--threads",
        "1",
        timeout_s=600,
    )
    assert train.returncode == 0, train.stderr[-2000:]
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["training"]["data"]["folder"] == "dataset"


def test_the_review_needs_the_token_off_loopback(tmp_path):
    """With a token (required off loopback), a review without it is refused like any page."""
    cfg = lifecycle_config(tmp_path, tmp_path)
    archive = tmp_path / "archive"
    archive.mkdir()
    hmi = HmiServer(
        HmiConfig(listen=f"127.0.0.1:{free_port()}"),
        cfg.bus.publish,
        archive,
        token="t" * 24,
        review=review_api(cfg, archive),
    )
    hmi.start()
    try:
        url = f"http://127.0.0.1:{hmi.port}/api/review"
        body = {"run_id": "ab" * 16, "seq": 1, "decision": "confirm_ng", "operator": "x"}
        assert _http(url, body)[0] == 401
        status, raw = _http(url, body, {"Authorization": "Bearer " + "t" * 24})
        assert (status, json.loads(raw)["param"]) == (400, "seq")
    finally:
        hmi.stop()
