"""A process that writes verdicts into an archive as fast as it can until it is killed.

Run by test_ops_archive.py: ``python archive_writer.py FOLDER RUN_ID``. Prints ``committed N``
after each commit; every field of the row for seq N is a function of N (see ``expected``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from linevision.config import ArchiveConfig
from linevision.daemon.archive import Archive
from linevision.types import Decision, Defect, ModelRef, StageTimes, Verdict

MODEL = ModelRef("tiny", "1.0", "ab" * 32)


def expected(seq: int) -> dict[str, object]:
    ng = seq % 5 == 0
    return {
        "seq": seq,
        "station": "a" if seq % 2 else "b",
        "cell_id": seq * 3,
        "verdict": "NG" if ng else "OK",
        "reason": "defect" if ng else None,
        "label": f"L{seq % 7}",
        "score": (seq % 100) / 100.0,
        "recipe": "r1",
        "model_sha256": MODEL.sha256,
        "t_frame_ns": 1_700_000_000_000_000_000 + seq * 1000,
    }


def verdict(seq: int) -> Verdict:
    e = expected(seq)
    image = np.full((48, 64), seq % 256, np.uint8)
    defects = (Defect("burr", 0.9, 4, 4, 10, 8),) if e["verdict"] == "NG" else ()
    now = time.monotonic_ns()
    return Verdict(
        station=str(e["station"]),
        cell_id=int(str(e["cell_id"])),
        decision=Decision(
            verdict="NG" if e["verdict"] == "NG" else "OK",
            reason="defect" if e["reason"] else None,
            label=str(e["label"]),
            score=float(str(e["score"])),
            defects=defects,
            model=MODEL,
            infer_ms=1.0,
        ),
        t_frame_ns=int(str(e["t_frame_ns"])),
        t_frame_mono_ns=now - 2_000_000,
        image=image,
        recipe="r1",
        stages=StageTimes(now - 1_900_000, now - 1_500_000, now - 100_000),
    )


def main() -> None:
    folder, run_id = Path(sys.argv[1]), sys.argv[2]
    cfg = ArchiveConfig(dir=folder, max_age_days=36500, image_queue_size=1000)
    archive = Archive(folder, cfg, run_id, on_commit=lambda s: print("committed", s, flush=True))
    archive.start()
    seq = 0
    while True:
        seq += 1
        archive.listener(verdict(seq), seq, 2.0)
        while archive.queue_depth() > 500:
            time.sleep(0.005)


if __name__ == "__main__":
    main()
