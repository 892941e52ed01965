"""The blue-film station in the daemon: an emulated line-scan camera delivers each frame as
strips (pylon Camera Emulation, BGR8, file mode); the station screens every strip as it
arrives and decides when the last one is in."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from linevision.config import Config, InferenceConfig
from linevision.inference.classifier import PreprocessError
from linevision.inference.film.inspector import FilmInspector
from linevision.inference.session import SessionOptions
from linevision.stations import build_station
from linevision.stations.blue_film import BlueFilmStation
from linevision.synth import blue_film as synth
from linevision.tools import demo
from linevision.types import Frame
from tests.helpers import free_tcp_endpoint, run_service_and_collect

MODELS = Path(
    os.environ.get("LINEVISION_MODELS", str(Path(__file__).resolve().parents[2] / "models"))
)
WIDTH, HEIGHT, LINES = 1024, 2048, 256
STRIPS = HEIGHT // LINES


def _frames(seed: int) -> list[synth.FilmImage]:
    good = synth.generate_frame(np.random.default_rng([seed, 0]), width=WIDTH, height=HEIGHT)
    bad = synth.generate_frame(
        np.random.default_rng([seed, 1]), ("white", "break"), width=WIDTH, height=HEIGHT
    )
    return [good, bad]


def _config(strips: Path) -> Config:
    return Config.model_validate(
        {
            "cameras": [
                {
                    "id": "film_cam",
                    "backend": "pylon",
                    "device": {"serial": "0815-0003"},
                    "pixel_format": "BGR8",
                    "roi": {"width": WIDTH, "height": LINES},
                    # 25.6 ms a strip: a late camera loop (a busy 2-core machine) still
                    # catches a cell's first slot; the rated 40,000 lines/s is `linevision bench`
                    "line_scan": {"strips_per_cell": STRIPS, "line_rate_hz": 10000},
                    "trigger": {"mode": "software", "rate_hz": 4},
                    "grab_timeout_ms": 500,
                    "max_buffers": 4,
                    "emulation": {"image_path": str(strips), "frame_period_us": 500},
                }
            ],
            "stations": [
                {
                    "name": "blue_film",
                    "type": "blue_film",
                    "cameras": ["film_cam"],
                    "model": "blue_film",
                    "deadline_ms": 500,
                    "assembly_ms": 300,
                }
            ],
            "bus": {"publish": free_tcp_endpoint()},
            "archive": {"enabled": False},
            "metrics": {"enabled": False},
            "control": {"enabled": False},
        }
    )


def test_line_scan_frames_are_inspected_strip_by_strip(tmp_path: Path) -> None:
    frames = _frames(4242)
    (tmp_path / "strips").mkdir()
    demo.write_strips(tmp_path / "strips", frames, LINES)
    got, service = run_service_and_collect(_config(tmp_path / "strips"), 6, MODELS, 30.0)
    assert len(got) == 6
    cells = [m.cell_id for m in got]
    assert cells == list(range(cells[0], cells[0] + 6))
    # a loaded machine may miss a cell's first trigger slot or its deadline (NG overload or
    # timeout); every other cell is inspected and decided right
    decided = [m for m in got if m.reason in (None, "defect")]
    assert len(decided) >= 4
    assert {m.reason for m in got} <= {None, "defect", "overload", "timeout"}
    for m in decided:
        # the emulator serves the strip files in name order: odd cells good, even cells NG
        frame = frames[(m.cell_id - 1) % 2]
        if frame.mask.any():
            assert (m.verdict, m.reason) == ("NG", "defect")
            ys, xs = np.nonzero(frame.mask)
            assert (
                any(
                    d.x <= xs.min() + 2 and d.y <= ys.max() and ys.min() <= d.y + d.h
                    for d in m.defects
                )
                or len(m.defects) >= 1
            )
        else:
            assert (m.verdict, m.reason) == ("OK", None), m
        assert m.model is not None
        assert m.model.name == "blue_film"
        assert m.latency_ms < 500
    counters = service.stations["blue_film"].counters
    # every strip but the last of each cell was screened on arrival
    assert counters["views_encoded"] >= (STRIPS - 1) * counters["inspected"]
    assert counters.get("model_error", 0) == 0


def _strip_frame(cell: int, part: int, image: np.ndarray) -> Frame:
    return Frame("film_cam", cell, part, 0, 0, image, part=part, parts=STRIPS)


def test_a_missing_strip_is_a_bad_frame_and_the_next_cell_is_clean() -> None:
    good, bad = _frames(4343)
    inspector = FilmInspector(MODELS / "blue_film", HEIGHT, WIDTH, threads=1)
    station = BlueFilmStation("blue_film", inspector, STRIPS, 100.0)

    def strips(frame: np.ndarray) -> list[np.ndarray]:
        return [frame[s * LINES : (s + 1) * LINES] for s in range(STRIPS)]

    results = [station.inspect(_strip_frame(1, p, s)) for p, s in enumerate(strips(bad.image))]
    assert results[:-1] == [None] * (STRIPS - 1)
    assert results[-1] is not None
    assert results[-1].verdict == "NG"
    # the verdict's picture: the frame reduced 8 times (bilinear), built strip by strip
    picture = results[-1].image
    assert picture is not None
    assert results[-1].image_scale == 1 / 8
    whole = cv2.resize(bad.image, (WIDTH // 8, HEIGHT // 8), interpolation=cv2.INTER_LINEAR)
    assert picture.shape == whole.shape
    # ... with the segmentation network's defect pixels painted red, on the defects only
    painted = np.all(picture == (0, 0, 255), axis=2)
    assert painted.any()
    assert np.abs(picture.astype(int) - whole)[~painted].max() <= 1
    near = cv2.dilate(bad.mask, np.ones((17, 17), np.uint8))[::8, ::8] > 0
    assert near[painted].all()
    # cell 2 loses strip 3: the cell cannot pass
    good_strips = strips(good.image)
    for p in (0, 1, 2, 4, 5, 6):
        assert station.inspect(_strip_frame(2, p, good_strips[p])) is None
    with pytest.raises(PreprocessError, match="strip 3 missing"):
        station.inspect(_strip_frame(2, 7, good_strips[7]))
    # cell 3 starts clean at its part 0
    decisions = [station.inspect(_strip_frame(3, p, s)) for p, s in enumerate(good_strips)]
    assert decisions[-1] is not None
    assert decisions[-1].verdict == "OK"
    # a strip of the wrong width is refused as well
    narrow = np.zeros((LINES, WIDTH // 2, 3), np.uint8)
    for p in range(STRIPS - 1):
        assert station.inspect(_strip_frame(4, p, narrow)) is None
    with pytest.raises(PreprocessError, match="shape"):
        station.inspect(_strip_frame(4, STRIPS - 1, narrow))


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        ("basic", ort.GraphOptimizationLevel.ORT_ENABLE_BASIC),
        ("disable", ort.GraphOptimizationLevel.ORT_DISABLE_ALL),
    ],
)
def test_the_blue_film_sessions_use_the_configured_graph_optimization(
    tmp_path: Path, level: str, expected: ort.GraphOptimizationLevel
) -> None:
    config = _config(tmp_path).model_copy(
        update={"inference": InferenceConfig(graph_optimization=level)}
    )
    sc = config.stations[0]
    # the options as the service makes them from ``inference``
    options = SessionOptions(
        intra_op_threads=config.inference.intra_op_threads,
        graph_optimization=config.inference.graph_optimization,
    )
    built = build_station(sc, MODELS, options, config.camera(sc.cameras[0]))
    assert isinstance(built.station, BlueFilmStation)
    inspector = built.station.inspector
    segmenter = inspector._masks.segmenter
    assert segmenter is not None
    for session in (inspector._session, segmenter._session):
        got = session._session.get_session_options().graph_optimization_level
        assert got == expected
