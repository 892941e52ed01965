"""Figures of the shipped blue-film model on held-out generated tiles and frames.

    python -m linevision.train.blue_film_eval --model models/blue_film --seed 7000 \
        --out artifacts/blue_film_eval.json

Runs the runtime (onnxruntime, no torch): tile-level AUROC of the anomaly graph alone and of
the two stages, the screen's miss rate by defect size, frame-level AUROC and verdicts, the
fraction of tiles flagged on good frames, localisation of every defect, the whole-frame
work of two stages against the anomaly graph on every tile, and the time from the last strip
to the result. The seeds differ from training (0) and calibration (1000).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

from linevision.inference.film.geometry import box_contains
from linevision.inference.film.inspector import FilmInspector, FilmResult
from linevision.inference.film.screen import screen_score
from linevision.inference.film.segment import CROP, FilmSegmenter, frame_mask
from linevision.log import configure, get_logger
from linevision.synth import blue_film as synth
from linevision.tools import evaluate

SIZE_BINS: Final = {"3-5px": (3.0, 5.0), "6-20px": (6.0, 20.0), ">20px": (21.0, 60.0)}
STRIP: Final = 256

log = get_logger(__name__)


def _auroc(good: list[float], bad: list[float]) -> float:
    """:func:`evaluate.auroc` of defects (``bad``) over good samples; nan without both.

    >>> _auroc([0.1, 0.2], [0.3, 0.2])
    0.875
    """
    area = evaluate.auroc([False] * len(good) + [True] * len(bad), [*good, *bad])
    return float("nan") if area is None else area


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng([seed, *key])


def tile_figures(inspector: FilmInspector, seed: int, n: int) -> dict[str, object]:
    """Tile-level AUROC (graph alone and two stages) and misses by defect size.

    The anomaly graph alone scores the whole tile; the two stages are the runtime's rule
    on a tile-sized frame (screen, windows, segmentation of screen-only regions), a miss
    being an OK verdict on a tile with a defect.
    """
    spec = inspector.spec
    threshold = spec.score_threshold
    tiles = FilmInspector(inspector.model_dir, synth.TILE, synth.TILE)
    good_any, good_two = [], []
    wrong_good = 0
    for i in range(n):
        tile = synth.generate_tile(_rng(seed, 0, i)).image
        good_any.append(float(inspector.score_tile(tile).max()))
        decision = tiles.inspect_frame(tile).decision
        good_two.append(float(decision.score or 0.0))
        wrong_good += int(decision.verdict == "NG")
    bins: dict[str, dict[str, float | int]] = {}
    bad_any, bad_two = [], []
    for b, (name, (lo, hi)) in enumerate(SIZE_BINS.items(), start=1):
        screened = detected = 0
        for i in range(n):
            rng = _rng(seed, b, i)
            kind = synth.NG_KINDS[i % len(synth.NG_KINDS)]
            size = float(rng.uniform(lo, hi))
            tile = synth.generate_tile(rng, kind, defect_px=size).image
            screened += int(screen_score(tile, spec.screen) >= spec.screen.threshold)
            decision = tiles.inspect_frame(tile).decision
            detected += int(decision.verdict == "NG")
            bad_any.append(float(inspector.score_tile(tile).max()))
            bad_two.append(float(decision.score or 0.0))
        bins[name] = {
            "tiles": n,
            "screen_miss_rate": round(1.0 - screened / n, 4),
            "two_stage_miss_rate": round(1.0 - detected / n, 4),
        }
    return {
        "good_tiles": n,
        "defect_tiles": len(bad_any),
        "tile_auroc_anomaly_only": round(_auroc(good_any, bad_any), 4),
        "tile_auroc_two_stage": round(_auroc(good_two, bad_two), 4),
        "good_tiles_above_threshold": int(sum(s > threshold for s in good_any)),
        "good_tiles_ng_two_stage": wrong_good,
        "by_size": bins,
    }


def _defect_boxes(mask: npt.NDArray[np.uint8]) -> list[tuple[int, int, int, int]]:
    count, _, stats, _ = cv2.connectedComponentsWithStats((mask > 0).astype(np.uint8))
    return [
        (int(x), int(y), int(x + w), int(y + h))
        for x, y, w, h in (stats[i, :4] for i in range(1, count))
    ]


def _stream(inspector: FilmInspector, image: npt.NDArray[np.uint8]) -> tuple[FilmResult, float]:
    """Feed ``image`` in strips; return the result and ms from the last strip to the result."""
    inspector.reset()
    last = 0.0
    for y in range(0, image.shape[0], STRIP):
        if y + STRIP >= image.shape[0]:
            last = time.perf_counter()
        inspector.add_strip(image[y : y + STRIP])
    result = inspector.finish()
    return result, (time.perf_counter() - last) * 1e3


def frame_figures(
    inspector: FilmInspector, seed: int, n: int, full_tiles: int
) -> dict[str, object]:
    """Frame verdicts, AUROC, flags on good frames, localisation, work and latency."""
    height, width = inspector.buffer.shape[:2]
    scores: dict[str, list[float]] = {"OK": [], "NG": []}
    wrong = {"OK": 0, "NG": 0}
    flagged_good = located = missed = 0
    latency: dict[str, list[float]] = {"OK": [], "NG": []}
    two_stage_ms: dict[str, list[float]] = {"OK": [], "NG": []}
    all_tiles_ms: list[float] = []
    for i in range(2 * n):
        rng = _rng(seed, 9, i)
        label = "NG" if i % 2 else "OK"
        kinds = synth.frame_kinds(rng) if label == "NG" else ()
        frame = synth.generate_frame(rng, kinds, width=width, height=height)
        result, ms = _stream(inspector, frame.image)
        latency[label].append(ms)
        two_stage_ms[label].append(result.screen_ms + result.anomaly_ms)
        scores[label].append(result.decision.score or 0.0)
        wrong[label] += int(result.decision.verdict != label)
        if label == "OK":
            flagged_good += len(result.flagged)
        for box in _defect_boxes(frame.mask):
            hit = any(box_contains(d, *box) for d in result.decision.defects)
            located += int(hit)
            missed += int(not hit)
        if i < full_tiles:
            t0 = time.perf_counter()
            for t in inspector.plan:
                inspector.score_tile(frame.image[t.y0 : t.y1, t.x0 : t.x1])
            all_tiles_ms.append((time.perf_counter() - t0) * 1e3)
    tiles = len(inspector.plan)
    every = float(np.median(all_tiles_ms))
    return {
        "frame": f"{width} x {height}",
        "good_frames": n,
        "ng_frames": n,
        "frame_auroc": round(_auroc(scores["OK"], scores["NG"]), 4),
        "good_frames_ng": wrong["OK"],
        "ng_frames_ok": wrong["NG"],
        "good_frame_tiles_flagged_fraction": round(flagged_good / (n * tiles), 5),
        "defects_located": located,
        "defects_missed": missed,
        "two_stage_work_ms_median": {
            label: round(float(np.median(v)), 1) for label, v in two_stage_ms.items()
        },
        "anomaly_every_tile_ms_median": round(every, 1),
        "work_ratio": {
            label: round(every / float(np.median(v)), 1) for label, v in two_stage_ms.items()
        },
        "last_strip_to_result_ms": {
            label: {
                "p50": round(float(np.percentile(v, 50)), 1),
                "p99": round(float(np.percentile(v, 99)), 1),
                "max": round(float(np.max(v)), 1),
            }
            for label, v in latency.items()
        },
        "strip_lines": STRIP,
    }


@dataclass
class _Method:
    ms: list[float] = field(default_factory=list)
    inter: int = 0
    union: int = 0
    wrong: int = 0
    marked: int = 0
    missed: int = 0

    def add(self, mask: npt.NDArray[np.bool_], frame: synth.FilmImage, verdict: str) -> None:
        truth = frame.mask > 0
        self.inter += int((mask & truth).sum())
        self.union += int((mask | truth).sum())
        self.wrong += int(verdict != ("NG" if truth.any() else "OK"))
        for x0, y0, x1, y1 in _defect_boxes(frame.mask):
            hit = bool(mask[y0:y1, x0:x1].any())
            self.marked += int(hit)
            self.missed += int(not hit)

    def figures(self) -> dict[str, object]:
        return {
            "frames": len(self.ms),
            "ms_per_frame_median": round(float(np.median(self.ms)), 1),
            "pixel_iou": round(self.inter / max(self.union, 1), 4),
            "wrong_verdicts": self.wrong,
            "defects_marked": self.marked,
            "defects_missed": self.missed,
        }


def direct_segmentation_figures(
    inspector: FilmInspector, seed: int, n: int
) -> dict[str, dict[str, object]]:
    """Seed 003's comparison on ``n`` good + ``n`` NG frames: the segmentation network on every
    tile of the plan (the direct method) against the two stages (screen, windows, then the
    network on crops around the decision's boxes, as ``linevision eval`` does); time per frame
    on the inspector's threads, pooled pixel IoU, wrong verdicts, defects with a marked pixel."""
    segmenter = FilmSegmenter(inspector.model_dir, threads=1)
    segmenter.mask(np.zeros((CROP, CROP, 3), dtype=np.uint8))
    height, width = inspector.buffer.shape[:2]
    direct, two_stage = _Method(), _Method()
    for i in range(2 * n):
        rng = _rng(seed, 9, i)
        kinds = synth.frame_kinds(rng) if i % 2 else ()
        frame = synth.generate_frame(rng, kinds, width=width, height=height)
        t0 = time.perf_counter()
        marked = np.zeros(frame.mask.shape, dtype=bool)
        for t in inspector.plan:
            crop = frame.image[t.y0 : t.y1, t.x0 : t.x1]
            marked[t.y0 : t.y1, t.x0 : t.x1] |= segmenter.mask(crop) > 0
        direct.ms.append((time.perf_counter() - t0) * 1e3)
        direct.add(marked, frame, "NG" if marked.any() else "OK")
        t0 = time.perf_counter()
        result = inspector.inspect_frame(frame.image)
        mask = frame_mask(segmenter, frame.image, result.decision.defects) > 0
        two_stage.ms.append((time.perf_counter() - t0) * 1e3)
        two_stage.add(mask, frame, result.decision.verdict)
    return {"direct": direct.figures(), "two_stage": two_stage.figures()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/blue_film"))
    parser.add_argument("--seed", type=int, default=7000)
    parser.add_argument("--tiles", type=int, default=60, help="good tiles, and per size bin")
    parser.add_argument("--frames", type=int, default=12, help="good frames, and NG frames")
    parser.add_argument("--full-tiles-frames", type=int, default=2)
    parser.add_argument(
        "--direct-frames",
        type=int,
        default=0,
        help="good and NG frames for the segmentation network on every tile vs the two stages",
    )
    parser.add_argument("--height", type=int, default=synth.HEIGHT)
    parser.add_argument("--width", type=int, default=synth.WIDTH)
    parser.add_argument("--out", type=Path, default=Path("artifacts/blue_film_eval.json"))
    args = parser.parse_args(argv)
    configure(level="warning")
    inspector = FilmInspector(args.model, args.height, args.width)
    t0 = time.monotonic()
    figures = {
        "seed": args.seed,
        "tiles": tile_figures(inspector, args.seed, args.tiles),
        "frames": frame_figures(inspector, args.seed, args.frames, args.full_tiles_frames),
        **(
            {"direct_segmentation": direct_segmentation_figures(inspector, args.seed, n)}
            if (n := args.direct_frames) > 0
            else {}
        ),
        "seconds": round(time.monotonic() - t0, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    sys.stdout.write(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
