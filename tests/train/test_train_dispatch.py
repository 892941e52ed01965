"""``linevision train`` dispatch, progress lines and held-out splits (no torch needed)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from linevision.cli import main
from linevision.log import configure
from linevision.train import dispatch
from linevision.train.folder_data import stratified_split
from linevision.train.progress import Progress, eta_seconds, format_bar, format_duration


def test_every_station_has_a_trainer() -> None:
    assert set(dispatch.TRAINERS) == {"pole_piece", "seal_edge", "six_view", "blue_film"}
    assert dispatch.NOT_AVAILABLE == {}


def test_a_missing_trainer_module_is_a_clear_error(monkeypatch, capsys) -> None:
    monkeypatch.setitem(dispatch.TRAINERS, "six_view", "linevision.train.no_such_trainer")
    code = main(["train", "--station", "six_view", "--data", "d", "--out", "o"])
    assert code == 2
    assert "not available yet" in capsys.readouterr().err


def test_the_trainer_gets_the_common_options_and_the_rest(monkeypatch) -> None:
    seen: list[list[str]] = []

    def fake_main(argv):
        seen.append(list(argv))
        return 0

    monkeypatch.setattr(dispatch, "trainer_main", lambda station: fake_main)
    args = ["train", "--station", "seal_edge", "--data", "d", "--out", "o", "--minutes", "2"]
    assert main([*args, "--seed", "3", "--", "--val", "v"]) == 0
    assert seen == [["--data", "d", "--out", "o", "--minutes", "2.0", "--seed", "3", "--val", "v"]]


def test_request_argv_leaves_unset_options_to_the_trainer() -> None:
    request = dispatch.TrainRequest("pole_piece", Path("d"), Path("o"), epochs=3)
    assert request.argv() == ["--data", "d", "--out", "o", "--epochs", "3"]


def test_progress_line_and_eta() -> None:
    assert format_duration(59.6) == "1:00"
    assert eta_seconds(0, 10, 0.0) is None
    assert eta_seconds(5, 10, 10.0) == 10.0
    assert eta_seconds(5, 10, 10.0, until_deadline=4.0) == 4.0
    line = format_bar(10, 10, epoch=2, epochs=2, loss=None, eta=0.0, width=4)
    assert line == "epoch 2/2 [####] 100% step 10/10 loss - ETA 0:00"


def test_progress_draws_a_bar_on_a_terminal() -> None:
    stream = io.StringIO()
    progress = Progress(4, 1, stream=stream, tty=True)
    progress.step(2, 1, 0.5)
    progress.epoch_done(epoch=1, loss=0.5)
    progress.close()
    text = stream.getvalue()
    assert text.startswith("\repoch 1/1 [")
    assert "step 2/4 loss 0.5000" in text
    assert "epoch done: epoch=1 loss=0.5\n" in text


def test_progress_without_a_terminal_logs_json(capsys) -> None:
    configure(fmt="json")
    stream = io.StringIO()
    progress = Progress(4, 1, stream=stream, tty=False)
    progress.epoch_done(epoch=1, loss=0.25)
    assert stream.getvalue() == ""
    out = capsys.readouterr().out
    assert '"event": "epoch_done"' in out
    assert '"loss": 0.25' in out


def test_stratified_split_holds_out_every_class() -> None:
    labels = np.array([0] * 20 + [1] * 10 + [2] * 3)
    keep, held = stratified_split(labels, 0.2, seed=1)
    assert sorted(np.concatenate([keep, held]).tolist()) == list(range(len(labels)))
    assert np.bincount(labels[held]).tolist() == [4, 2, 1]
    again = stratified_split(labels, 0.2, seed=1)
    assert np.array_equal(again[1], held)
    with pytest.raises(ValueError, match="fraction"):
        stratified_split(labels, 1.0, seed=0)


def test_patience_goes_to_the_trainers_that_validate(monkeypatch, capsys) -> None:
    seen: list[list[str]] = []
    monkeypatch.setattr(dispatch, "trainer_main", lambda station: seen.append)
    args = ["train", "--data", "d", "--out", "o", "--patience", "3"]
    assert main([*args, "--station", "six_view"]) == 0
    assert seen == [["--data", "d", "--out", "o", "--patience", "3"]]
    assert main([*args, "--station", "blue_film"]) == 2
    assert "blue_film trains on good images only" in capsys.readouterr().err
    assert len(seen) == 1
