"""What the drift monitor costs the bus thread, and its own thread. Figures for docs/lifecycle.md.

``python -m tests.lifecycle.bench_drift [--n 2000]``

- the bus thread's cost per OK verdict: ``DriftMonitor.listener`` (queue the cell) against the
  straightforward way, the statistics taken right there in the listener;
- the monitor thread's cost per cell: ``image_stats`` on a pole-piece crop (224 x 224), a
  six-view face (384 x 256) and a blue-film verdict picture (500 x 2250 BGR, reduced to 512).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from linevision.lifecycle.drift import DriftMonitor
from linevision.lifecycle.stats import image_stats
from linevision.lifecycle_config import DriftConfig
from linevision.types import Decision, ModelRef, Verdict

MODEL = ModelRef("m", "1", "0" * 64)


class _Host:
    state_dir = Path("/nonexistent")
    archive_dir = Path("/nonexistent")
    run_id = "0" * 32

    def station_names(self) -> tuple[str, ...]:
        return ("pole_piece",)


def _us(fn, n: int) -> float:
    """Median microseconds of ``n`` calls, in batches of 50."""
    batches = []
    for _ in range(max(1, n // 50)):
        t0 = time.perf_counter_ns()
        for _ in range(50):
            fn()
        batches.append((time.perf_counter_ns() - t0) / 50 / 1000)
    return round(statistics.median(batches), 2)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=2000)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    crop = rng.integers(0, 255, (224, 224), dtype=np.uint8)
    face = rng.integers(0, 255, (384, 256), dtype=np.uint8)
    film = rng.integers(0, 255, (2250, 500, 3), dtype=np.uint8)
    v = Verdict("pole_piece", 1, Decision("OK", None, "Normal", 0.97, model=MODEL), 0, 0, crop)
    monitor = DriftMonitor(_Host(), DriftConfig(queue_size=100_000))  # type: ignore[arg-type]
    queued = _us(lambda: monitor.listener(v, 1, 1.0), args.n)
    inline = _us(lambda: image_stats(crop, 512), args.n)
    print(
        json.dumps(
            {
                "bus_thread_us_per_ok_verdict": {
                    "queued": queued,
                    "stats_inline": inline,
                    "ratio": round(inline / queued, 1),
                },
                "monitor_thread_us_per_cell": {
                    "pole_piece_224x224": inline,
                    "six_view_384x256": _us(lambda: image_stats(face, 512), args.n),
                    "blue_film_picture_2250x500_bgr": _us(
                        lambda: image_stats(film, 512), max(100, args.n // 10)
                    ),
                },
            }
        )
    )


if __name__ == "__main__":
    main()
