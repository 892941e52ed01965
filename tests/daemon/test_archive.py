"""The verdict archive: every verdict recorded, NG images with overlay, retention, kill -9."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import cv2

from linevision.config import ArchiveConfig
from linevision.daemon.archive import (
    DB_NAME,
    Archive,
    apply_retention,
    connect,
    read_history,
    remove_orphans,
)
from linevision.paths import picture_of
from tests.daemon.archive_writer import expected, verdict

WRITER = Path(__file__).with_name("archive_writer.py")
ROOT = Path(__file__).resolve().parents[2]


def _write(folder: Path, seqs: range, **cfg: object) -> Archive:
    archive = Archive(folder, ArchiveConfig(dir=folder, max_age_days=36500, **cfg), "0123abcd" * 4)
    archive.start()
    for s in seqs:
        archive.listener(verdict(s), s, 2.0)
    archive.stop()
    return archive


def test_every_verdict_recorded_with_ng_images_and_ok_samples(tmp_path):
    archive = _write(tmp_path, range(1, 41), ok_sample_every=4)
    assert archive.counters["records"] == 40
    con = sqlite3.connect(tmp_path / DB_NAME)
    rows = con.execute(
        "SELECT seq, verdict, image, recipe, model_sha256, stages_ms FROM verdicts"
    ).fetchall()
    assert [r[0] for r in rows] == list(range(1, 41))
    ng = [r for r in rows if r[1] == "NG"]
    ok_with_image = [r for r in rows if r[1] == "OK" and r[2]]
    assert len(ng) == 8
    assert all(r[2] for r in ng)
    assert 6 <= len(ok_with_image) <= 9
    assert {r[3] for r in rows} == {"r1"}
    assert '"inference": 1.0' in rows[0][5]
    img = cv2.imread(str(tmp_path / ng[0][2]))
    assert img is not None
    assert img.shape[0] > 48
    assert img.shape[1] == 64 * 4
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()


def test_retention_by_age_and_total_size(tmp_path):
    _write(tmp_path, range(1, 101))
    con = connect(tmp_path / DB_NAME)
    total = con.execute("SELECT SUM(image_bytes), COUNT(image) FROM verdicts").fetchone()
    assert total[1] == 20
    cfg = ArchiveConfig(dir=tmp_path, max_age_days=36500, max_bytes=total[0] // 2)
    removed = apply_retention(con, tmp_path, cfg)
    assert removed["images_trimmed"] >= 10
    left = con.execute("SELECT SUM(image_bytes), COUNT(image), COUNT(*) FROM verdicts").fetchone()
    assert left[0] <= total[0] // 2
    assert left[2] == 100
    files = [f.relative_to(tmp_path).as_posix() for f in (tmp_path / "images").rglob("*.*")]
    pictures = {picture_of(f) for f in files}
    assert len(pictures) == left[1]  # a trimmed picture goes with its crops and description
    assert len(files) == 3 * left[1]  # each NG: its picture, one crop, the description
    oldest_kept = con.execute("SELECT MIN(seq) FROM verdicts WHERE image IS NOT NULL").fetchone()[0]
    assert oldest_kept > 50
    removed = apply_retention(con, tmp_path, ArchiveConfig(dir=tmp_path, max_age_days=1))
    assert removed["rows_expired"] == 100
    assert con.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0] == 0
    assert not list((tmp_path / "images").rglob("*.*"))
    con.close()


def test_kill_9_during_writes_never_corrupts_the_store(tmp_path):
    folder = tmp_path / "archive"
    committed_runs: list[tuple[str, int]] = []
    for round_ in range(3):
        run_id = f"{round_:08x}" * 4
        proc = subprocess.Popen(
            [sys.executable, str(WRITER), str(folder), run_id],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        last = 0
        deadline = time.monotonic() + 30
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if not line.startswith("committed "):
                    continue
                last = int(line.split()[1])
                if last >= 1500 + 700 * round_ or time.monotonic() > deadline:
                    break
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        assert last >= 1500, "the writer did not get going"
        committed_runs.append((run_id, last))

        con = sqlite3.connect(folder / DB_NAME)
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        for run, committed in committed_runs:
            rows = con.execute(
                "SELECT seq, station, cell_id, verdict, reason, label, score, recipe, "
                "model_sha256, t_frame_ns, image FROM verdicts WHERE run_id = ? ORDER BY seq",
                (run,),
            ).fetchall()
            seqs = [r[0] for r in rows]
            assert seqs == list(range(1, len(seqs) + 1))
            assert len(seqs) >= committed
            for r in rows:
                e = expected(r[0])
                got = dict(zip(list(e), r[:10], strict=True))
                assert got == e
                if r[3] == "NG":
                    assert r[10] is not None
                if r[10] is not None:
                    assert (folder / r[10]).stat().st_size > 0
        con.close()
    con = connect(folder / DB_NAME)
    remove_orphans(con, folder, grace_s=0)
    con.close()
    _write(folder, range(1, 11))
    assert len(read_history(folder, 15)) == 4


def test_history_command_prints_a_cell_across_stations(tmp_path):
    _write(tmp_path, range(1, 21))
    archive = Archive(tmp_path, ArchiveConfig(dir=tmp_path), "feed" * 8)
    archive.start()
    archive.listener(replace(verdict(5), station="c"), 1, 3.0)
    archive.stop()
    run = subprocess.run(
        [sys.executable, "-m", "linevision", "history", "--cell", "15", "--archive", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert sorted(line.split()[0] for line in lines) == ["a", "c"]
    for line in lines:
        assert "cell 15 " in line
        assert "NG defect / L5" in line
        assert "recipe r1" in line
        assert "image " in line
    missing = subprocess.run(
        [
            sys.executable,
            "-m",
            "linevision",
            "history",
            "--cell",
            "999",
            "--archive",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert missing.returncode == 1
    assert "no record of cell 999" in missing.stdout
