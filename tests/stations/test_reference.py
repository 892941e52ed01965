"""Comparison stations in the daemon: seal_edge on an emulated pylon camera, six_view on six
replay cameras (one per view) with software triggers, reference features computed once."""

import csv
import os
import shutil
from pathlib import Path

import cv2
import numpy as np

from linevision.bus.wire import VerdictMessage
from linevision.config import Config
from linevision.daemon.service import Service
from linevision.stations.reference import ReferenceStation
from linevision.synth import seal_edge, six_view
from tests.helpers import free_tcp_endpoint, run_service_and_collect

BLANK_ROWS = (2, 6)
MODELS = Path(
    os.environ.get("LINEVISION_MODELS", str(Path(__file__).resolve().parents[2] / "models"))
)


def _collect(cfg: Config, n: int, timeout_s: float = 30.0) -> tuple[list[VerdictMessage], Service]:
    return run_service_and_collect(cfg, n, MODELS, timeout_s)


def _labels(folder: Path, key: str) -> list[tuple[str, str]]:
    with (folder / "labels.csv").open(newline="") as fh:
        return [(row[key], row["label"]) for row in csv.DictReader(fh)]


def test_seal_edge_station_on_emulated_camera(tmp_path):
    data = tmp_path / "seal"
    seal_edge.write_dataset(data, 24, seed=777)
    rows = _labels(data, "image")
    serve = tmp_path / "serve"
    serve.mkdir()
    for i, (image, _) in enumerate(rows):
        shutil.copy(data / image, serve / f"{i:04d}.png")
    cfg = Config.model_validate(
        {
            "cameras": [
                {
                    "id": "seal_cam",
                    "backend": "pylon",
                    "device": {"serial": "0815-0001"},
                    "trigger": {"mode": "software", "rate_hz": 10},
                    "grab_timeout_ms": 500,
                    "emulation": {"image_path": str(serve), "frame_period_us": 2000},
                }
            ],
            "stations": [
                {
                    "name": "seal_edge",
                    "type": "seal_edge",
                    "cameras": ["seal_cam"],
                    "model": "seal_edge",
                    "reference": str(data / "reference.png"),
                    "deadline_ms": 200,
                }
            ],
            "bus": {"publish": free_tcp_endpoint()},
            "archive": {"enabled": False},
            "metrics": {"enabled": False},
            "control": {"enabled": False},
        }
    )
    got, service = _collect(cfg, 20)
    assert len(got) == 20
    # a loaded machine may skip a trigger slot (NG overload); every other cell is inspected
    decided = [m for m in got if m.reason in (None, "defect")]
    assert len(decided) >= 15
    assert {m.reason for m in got} <= {None, "defect", "overload"}
    expected = {i + 1: label for i, (_, label) in enumerate(rows)}
    agree = sum(m.verdict == expected[(m.cell_id - 1) % len(rows) + 1] for m in decided)
    assert agree >= len(decided) - 1
    worker = service.stations["seal_edge"]
    station = worker.station
    assert isinstance(station, ReferenceStation)
    # the reference is encoded once; after that, one encoding per inspected frame
    assert station.reference_model.encoder_runs == 1 + worker.counters["inspected"]
    assert worker.counters["inspected"] >= len(decided)


def test_six_view_station_assembles_six_cameras_per_cell(tmp_path):
    data = tmp_path / "six"
    six_view.write_dataset(data, 12, seed=555)
    rows = _labels(data, "cell")
    cameras = []
    for view in range(1, 7):
        folder = tmp_path / f"view{view}"
        folder.mkdir()
        for i, (cell, _) in enumerate(rows):
            shutil.copy(data / cell / f"{view}.png", folder / f"{i:04d}.png")
            if view == 3 and i in BLANK_ROWS:  # a view the camera saw empty
                blank = np.full(six_view.VIEW_SHAPES[2], 128, np.uint8)
                cv2.imwrite(str(folder / f"{i:04d}.png"), blank)
        cameras.append(
            {
                "id": f"v{view}",
                "backend": "replay",
                "path": str(folder),
                "rate_hz": 200,
                "trigger": {"mode": "software", "rate_hz": 4},
                "grab_timeout_ms": 500,
            }
        )
    cfg = Config.model_validate(
        {
            "cameras": cameras,
            "stations": [
                {
                    "name": "six_view",
                    "type": "six_view",
                    "cameras": [c["id"] for c in cameras],
                    "model": "six_view",
                    "reference": str(data / "reference"),
                    "deadline_ms": 300,
                    "assembly_ms": 400,
                }
            ],
            "bus": {"publish": free_tcp_endpoint()},
            "archive": {"enabled": False},
            "metrics": {"enabled": False},
            "control": {"enabled": False},
        }
    )
    got, service = _collect(cfg, 10)
    assert len(got) == 10
    cells = [m.cell_id for m in got]
    assert cells == sorted(set(cells))
    decided = [m for m in got if m.reason in (None, "defect")]
    assert len(decided) >= 6
    # a view that cannot be registered onto its reference makes its cell NG with the reason
    unregistered = [m for m in got if m.reason == "bad_frame"]
    assert unregistered
    assert all(m.verdict == "NG" and "registration" in (m.label or "") for m in unregistered)
    assert len(unregistered) <= len(BLANK_ROWS)
    assert all(m.model is not None and m.model.name == "six_view" for m in decided)
    counters = service.stations["six_view"].counters
    assert counters["bad_frame"] >= len(unregistered)
    whole = counters["inspected"] - counters["bad_frame"]  # cells whose six views were encoded
    assert counters["views_encoded"] >= 5 * whole
    station = service.stations["six_view"].station
    assert isinstance(station, ReferenceStation)
    model = station.reference_model
    # the six reference views are encoded once; after that, one encoding per arriving view
    # (a view refused at registration never reaches the encoder)
    assert model.encoder_runs == 6 + counters["views_encoded"] + whole
