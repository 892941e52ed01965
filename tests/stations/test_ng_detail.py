"""What an NG shows beyond its verdict: the six_view view that failed (and where), the
blue-film crops at full resolution. Worked out by ``Decision.detail``, off the hot path."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from linevision.inference.film.inspector import FilmInspector
from linevision.inference.reference import ReferenceModel
from linevision.stations.blue_film import BlueFilmStation
from linevision.stations.reference import DIFFERENCE, ReferenceStation
from linevision.synth import blue_film as film_synth
from linevision.synth import six_view
from linevision.types import Frame

MODELS = Path(
    os.environ.get("LINEVISION_MODELS", str(Path(__file__).resolve().parents[2] / "models"))
)
CAMERAS = tuple(f"six_{v}" for v in six_view.VIEWS)


def test_six_view_ng_names_the_view_that_failed_and_boxes_the_defect(tmp_path: Path) -> None:
    data = tmp_path / "six"
    six_view.write_dataset(data, 24, seed=515)
    model = ReferenceModel(MODELS / "six_view")
    station = ReferenceStation("six_view", "six_view", model, CAMERAS, data / "reference", 200.0)
    design = six_view.dataset_design(515)
    right = located = ng = 0
    for i in range(24):
        kind = six_view.dataset_kind(i, 0.5)
        capture = six_view.generate(design, kind, six_view.sample_rng(515, 1, i))
        decision = None
        for cam, image in zip(CAMERAS, capture.views, strict=True):
            decision = station.inspect(Frame(cam, i + 1, i, 0, 0, image)) or decision
        assert decision is not None
        # the six frames go with the decision, in view order, for the archive (no copies)
        assert len(decision.views) == 6
        assert all(a is b for a, b in zip(decision.views, capture.views, strict=True))
        if decision.verdict == "OK":
            assert decision.detail is None  # an OK cell costs nothing more
            continue
        ng += 1
        assert decision.detail is not None
        detail = decision.detail()
        assert detail.views == 6
        index = int(str(detail.view)) - 1
        assert detail.image is capture.views[index]  # the failed view's own frame, no copy
        truth = [v for v, mask in enumerate(capture.masks) if mask.any()]
        right += index in truth
        for d in detail.defects:
            assert d.kind == DIFFERENCE
            mask = capture.masks[index][d.y : d.y + d.h, d.x : d.x + d.w]
            located += bool(mask.any())
    assert ng >= 10
    # measured on 120 generated cells: 60 of 60 NG cells named the defect's view
    assert right >= ng - 1, (right, ng)
    assert located >= ng - 2, (located, ng)


def test_blue_film_ng_keeps_full_resolution_crops_around_its_masks() -> None:
    width, height, lines = 1024, 2048, 256
    bad = film_synth.generate_frame(
        np.random.default_rng([4343, 1]), ("white", "break"), width=width, height=height
    )
    inspector = FilmInspector(MODELS / "blue_film", height, width, threads=1)
    station = BlueFilmStation("blue_film", inspector, height // lines, 100.0)
    decision = None
    for p in range(height // lines):
        strip = bad.image[p * lines : (p + 1) * lines]
        frame = Frame("film_cam", 1, p, time.monotonic_ns(), 0, strip, part=p, parts=8)
        decision = station.inspect(frame) or decision
    assert decision is not None
    assert decision.verdict == "NG"
    assert decision.detail is not None
    detail = decision.detail()
    assert detail.strip
    assert detail.crops
    for crop in detail.crops:
        h, w = crop.pixels.shape[:2]
        assert min(h, w) >= 64
        assert max(h, w) <= 512
        # the frame's own pixels, not the reduced copy, and the buffer may be reused now
        assert np.array_equal(crop.pixels, bad.image[crop.y : crop.y + h, crop.x : crop.x + w])
        assert crop.pixels.base is None
        assert crop.mask is not None
        assert crop.mask.shape == (h, w)
        assert crop.mask.any()
    truth = bad.mask
    for d in decision.defects:
        near = [
            c
            for c in detail.crops
            if c.x <= d.x + d.w // 2 < c.x + c.pixels.shape[1]
            and c.y <= d.y + d.h // 2 < c.y + c.pixels.shape[0]
        ]
        assert near, d
    covered = np.zeros_like(truth)
    for c in detail.crops:
        covered[c.y : c.y + c.pixels.shape[0], c.x : c.x + c.pixels.shape[1]] = 1
    assert covered[truth > 0].mean() > 0.5
