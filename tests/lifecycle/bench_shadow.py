"""Does a shadow model delay the active verdicts? Figures for docs/lifecycle.md.

``python -m tests.lifecycle.bench_shadow [--seconds 5] [--rounds 4]
[--rate 100]``

One daemon in this process: a pole_piece station with the shipped model on the folder
camera (generated pole-piece crops). Three modes, taken in turn for ``--seconds`` each,
``--rounds`` times (so a change in the machine's load falls on every mode alike):

- ``none``: no shadow;
- ``shadow``: the candidate (a copy of the shipped model) through ``ModelManager.shadow``: its
  own thread at nice 19, skipping frames while the line's jobs wait for a thread;
- ``inline``: the straightforward way, the candidate run on the pool's thread right after
  the active model (the worker's observer calls it).

Per mode: verdicts, the active verdicts' latency p50 / p99 / max (ms), fail-safe NGs, the
inference time p50, and the shadow's counts.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import cv2
import numpy as np

from linevision.bus.wire import VerdictMessage, parse_message
from linevision.synth import pole_piece
from linevision.tools.demo import find_models_root
from tests.daemon.parts import ops_config
from tests.lifecycle.parts import BusLog, running_daemon

MODES = ("none", "shadow", "inline")


def _crops(folder: Path, n: int = 60) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(3)
    for i in range(n):
        img = pole_piece.generate(pole_piece.CLASSES[i % 5], rng)
        cv2.imwrite(str(folder / f"{i:04d}.png"), img)
    return folder


def _summary(mode: str, verdicts: list[VerdictMessage], shadow: Counter[str]) -> dict[str, object]:
    lat = np.array([v.latency_ms for v in verdicts])
    infer = np.array([v.infer_ms for v in verdicts if v.infer_ms is not None])
    faults = Counter(f"{v.reason}:{v.label}" for v in verdicts if v.reason not in (None, "defect"))
    return {
        "mode": mode,
        "verdicts": len(verdicts),
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2),
        "max_ms": round(float(lat.max()), 2),
        "infer_p50_ms": round(float(np.percentile(infer, 50)), 2) if len(infer) else None,
        "fail_safe_ng": dict(faults),
        "shadow": dict(shadow),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--rate", type=float, default=100.0)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        models = tmp / "models"
        shutil.copytree(find_models_root() / "pole_piece", models / "pole_piece")
        candidate = tmp / "candidate"
        shutil.copytree(find_models_root() / "pole_piece", candidate)
        cfg = ops_config(
            tmp, _crops(tmp / "crops"), rate_hz=args.rate, challenge={"on_start": False}
        )
        station = cfg.stations[0].model_copy(
            update={"model": Path("pole_piece"), "deadline_ms": 30.0, "queue_size": 16}
        )
        cfg = cfg.model_copy(update={"stations": (station,)})
        bus = BusLog(cfg.bus.publish).start()
        per_mode: dict[str, list[VerdictMessage]] = defaultdict(list)
        shadow_counts: dict[str, Counter[str]] = defaultdict(Counter)
        try:
            with running_daemon(cfg, models) as ops:
                lc = ops.lifecycle
                assert lc is not None
                worker = lc.host.live("pole_piece").worker
                built = lc.host.build("pole_piece", candidate)

                def inline(frame, _decision, _station) -> None:
                    built.station.inspect(frame)

                time.sleep(2.0)
                for _ in range(args.rounds):
                    for mode in MODES:
                        if mode == "shadow":
                            lc.models.shadow("pole_piece", candidate, "bench")
                        elif mode == "inline":
                            worker.observer = inline
                        time.sleep(0.5)
                        mark = len(bus.messages)
                        time.sleep(args.seconds)
                        window = list(bus.messages)[mark:]
                        if mode == "shadow":
                            shadow_counts[mode].update(lc.models.shadows["pole_piece"].counts)
                            lc.models.unshadow("pole_piece")
                        worker.observer = None
                        for t, payload in window:
                            if t.startswith("verdict."):
                                m = parse_message(t.encode(), payload)
                                assert isinstance(m, VerdictMessage)
                                per_mode[mode].append(m)
        finally:
            bus.stop()
    for mode in MODES:
        print(json.dumps(_summary(mode, per_mode[mode], shadow_counts[mode])), flush=True)


if __name__ == "__main__":
    main()
