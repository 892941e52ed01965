"""``linevision repeatability``: parts re-imaged, N rounds through the live path."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from linevision.bus.wire import VerdictMessage, parse_message
from tests.lifecycle.parts import BusLog, cli, lifecycle_config, running_daemon

LEVELS = {"good": (40, 45, 50), "edge": (118, 127, 136), "burr": (210, 200, 220)}
"""Three images of each part (re-imaged: their grey levels differ): ``edge`` lies across the
model's threshold (0.5 of full scale), so its verdict depends on the image."""


def _data(folder: Path) -> Path:
    folder.mkdir()
    rows = ["image,label,part"]
    for part, levels in LEVELS.items():
        for k, level in enumerate(levels):
            img = np.full((48, 64), level, np.uint8)
            cv2.circle(img, (20 + 5 * k, 24), 5, level + 5, -1)
            name = f"{part}_{k}.png"
            assert cv2.imwrite(str(folder / name), img)
            rows.append(f"{name},{'Normal' if part != 'burr' else 'Long'},{part}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_agreement_and_spread_per_part_through_the_live_path(tmp_path, models, frames, monkeypatch):
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    data = _data(tmp_path / "parts")
    cfg = lifecycle_config(tmp_path, frames, rate_hz=50, challenge={"on_start": False})
    bus = BusLog(cfg.bus.publish).start()
    try:
        with running_daemon(cfg, models):
            run = cli(
                "repeatability",
                "--station",
                "pole_piece",
                "--data",
                str(data),
                "--n",
                "5",
                "--json",
                "--endpoint",
                cfg.control.endpoint,
            )
            assert run.returncode == 0, run.stderr
            report = json.loads(run.stdout)
            text = cli(
                "repeatability",
                "--station",
                "pole_piece",
                "--data",
                str(data),
                "--n",
                "2",
                "--endpoint",
                cfg.control.endpoint,
            )
            bad = cli(
                "repeatability",
                "--station",
                "pole_piece",
                "--data",
                str(tmp_path / "none"),
                "--endpoint",
                cfg.control.endpoint,
            )
    finally:
        bus.stop()
    cells = report["cells"]
    assert set(cells) == {"good", "edge", "burr"}
    assert all(c["n"] == 15 and c["faults"] == 0 for c in cells.values())
    assert cells["good"]["agreement_pct"] == cells["burr"]["agreement_pct"] == 100.0
    # the part across the threshold: two of its three images OK, one NG, in every round
    assert (cells["edge"]["ok"], cells["edge"]["ng"]) == (10, 5)
    assert cells["edge"]["agreement_pct"] == 66.67
    assert cells["edge"]["score_std"] > 0.1
    # the same image gives the same score every round: the good part's spread is its images'
    assert cells["good"]["score_range"] < 0.01
    study = report["study"]
    assert study["within_agreement"]["cells"] == 2
    assert study["vs_standard"]["cells"] == 2
    assert Path(report["archive"]).is_file()
    assert text.returncode == 0
    assert "within agreement: 2 of 3 cells" in text.stdout
    assert bad.returncode == 1
    assert "data:" in bad.stderr
    assert "labels.csv" in bad.stderr
    # 15 + 6 images x rounds went through the station, none of them on the verdict bus
    verdicts = [parse_message(b"verdict.pole_piece", p) for p in bus.topics("verdict.")]
    assert all(isinstance(v, VerdictMessage) and v.cell_id > 0 for v in verdicts)
    seqs = [v.seq for v in verdicts]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
