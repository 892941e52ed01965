"""blue_film review -> export: the archive keeps full-resolution tiles around an NG frame's
defects (the frame itself, 4000 x 18000, is 133 MB as PNG), and the export writes them in the
folder contract: NG tiles with their masks, a false reject's tiles as good film.

The line-scan camera is the pylon Camera Emulation (strips), the daemon runs in the test's
process with the shipped blue_film model.
"""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import yaml

from linevision.config import HmiConfig
from linevision.hmi.server import HmiServer, review_api
from linevision.synth.contract import read_labels
from linevision.tools import demo
from tests.daemon.parts import free_port
from tests.helpers import free_tcp_endpoint
from tests.lifecycle.parts import cli, running_daemon, wait_for
from tests.lifecycle.test_review import _http
from tests.stations.test_blue_film import LINES, MODELS, _config, _frames

TILE = 1024


def test_film_ng_tiles_are_kept_reviewed_and_exported(tmp_path, monkeypatch):
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    good, bad = _frames(4242)
    (tmp_path / "strips").mkdir()
    demo.write_strips(tmp_path / "strips", [good, bad], LINES)
    base = _config(tmp_path / "strips")
    station = base.stations[0].model_copy(update={"deadline_ms": 3000.0})  # a loaded machine
    cfg = base.model_copy(
        update={
            "stations": (station,),
            "control": base.control.model_copy(
                update={"enabled": True, "endpoint": free_tcp_endpoint()}
            ),
            "archive": base.archive.model_copy(update={"enabled": True, "dir": tmp_path / "a"}),
            "review": base.review.model_copy(update={"dir": tmp_path / "review"}),
            "challenge": base.challenge.model_copy(update={"on_start": False}),
            "drift": base.drift.model_copy(update={"enabled": False}),
        }
    )
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude_none=True)))
    archive = tmp_path / "a"
    with running_daemon(cfg, MODELS):
        hmi = HmiServer(
            HmiConfig(listen=f"127.0.0.1:{free_port()}"),
            cfg.bus.publish,
            archive,
            review=review_api(cfg, archive),
        )
        hmi.start()
        try:
            url = f"http://127.0.0.1:{hmi.port}/api/review?station=blue_film"

            def ng_cells() -> list[dict[str, object]]:
                return [c for c in json.loads(_http(url)[1])["cells"] if c["raw"]]

            wait_for(lambda: len(ng_cells()) >= 2, 60, "two NG frames kept")
            cells = ng_cells()[:2]
            for c, decision in zip(cells, ("confirm_ng", "false_reject"), strict=True):
                body = {"run_id": c["run_id"], "seq": c["seq"], "decision": decision}
                status, raw = _http(url.split("?", maxsplit=1)[0], {**body, "operator": "ines"})
                assert status == 200, raw
        finally:
            hmi.stop()
    assert all(c["verdict"] == "NG" for c in cells)

    out = tmp_path / "dataset"
    run = cli(
        "dataset", "export", "--station", "blue_film", "--out", str(out), "--config", str(cfg_file)
    )
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["cells"] == 2
    samples = read_labels(out, "blue_film")
    assert len(samples) == summary["samples"] >= 2
    with (out / "labels.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    by_review = {r["review"] for r in rows}
    assert by_review == {"confirm_ng", "false_reject"}
    for r in rows:
        tile = cv2.imread(str(out / r["image"]), cv2.IMREAD_COLOR)
        assert tile.shape == (TILE, TILE, 3)
        # the camera's own pixels: a full-resolution window of the defective frame
        top = range(bad.image.shape[0] - TILE + 1)
        y = next(y for y in top if np.array_equal(tile[0], bad.image[y]))
        assert np.array_equal(tile, bad.image[y : y + TILE])
        if r["review"] == "confirm_ng":
            assert r["label"] == "NG"
            mask = cv2.imread(str(out / r["mask"]), cv2.IMREAD_GRAYSCALE)
            # the model's outline lies on a true defect
            assert (mask > 0).any()
            assert ((mask > 0) & (bad.mask[y : y + TILE] > 0)).any()
        else:
            assert (r["label"], r["mask"]) == ("OK", "")
