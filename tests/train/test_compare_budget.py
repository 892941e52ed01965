"""seal_edge and six_view: the same budget rules in ``_compare.fit``, the split over folders."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from torch import nn  # noqa: E402

from linevision.synth.contract import DataError  # noqa: E402
from linevision.train import _compare  # noqa: E402
from linevision.train._cells import Cells, LazyViews, split_cells  # noqa: E402

torch.optim.AdamW(nn.Linear(1, 1).parameters())  # its first use imports for seconds


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: on a loaded 2-core machine two threads wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


RNG = np.random.default_rng(0)
X = torch.from_numpy(RNG.normal(size=(64, 4)).astype(np.float32))
Y = (X[:, 0] > 0).long()


def run_fit(seconds: float, *, lr: float = 1e-2, patience: int | None, stop_at: int = 0):
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    calls = {"validate": 0}

    def batch_loss(index: np.ndarray) -> torch.Tensor:
        i = torch.from_numpy(index)
        return _compare.cross_entropy(model(X[i]), Y[i], 1.0)

    def validate() -> tuple[np.ndarray, np.ndarray]:
        calls["validate"] += 1
        if calls["validate"] == stop_at:
            raise KeyboardInterrupt
        with torch.inference_mode():
            return Y.numpy(), _compare.ng_margin(model(X).numpy())

    config = _compare.FitConfig(None, 16, lr, 0.0, 0, time.monotonic() + seconds, patience)
    t0 = time.monotonic()
    result = _compare.fit(model, batch_loss, len(Y), validate, config)
    return result, time.monotonic() - t0


def test_the_budget_ends_the_run_without_an_epoch_count() -> None:
    result, elapsed = run_fit(2.0, patience=None)
    assert result.stop_reason == "budget"
    assert result.epochs_run > 6
    assert elapsed <= 2.0 + 1.0
    assert result.history[-1]["lr"] < 0.1 * 1e-2


def test_patience_stops_a_flat_run() -> None:
    result, _ = run_fit(60.0, lr=0.0, patience=2)
    assert (result.stop_reason, result.best_epoch, result.epochs_run) == ("patience", 1, 3)


def test_ctrl_c_keeps_the_epochs_already_validated() -> None:
    result, _ = run_fit(60.0, patience=None, stop_at=3)
    assert result.stop_reason == "interrupted"
    assert result.epochs_run == 2
    assert result.best_epoch in {1, 2}
    with pytest.raises(KeyboardInterrupt):
        run_fit(60.0, patience=None, stop_at=1)


def cells(folder: str, ok: int, ng: int) -> Cells:
    labels = np.array([0] * ok + [1] * ng, dtype=np.int64)
    names = [f"c{i}" for i in range(len(labels))]
    views = LazyViews([(Path(folder) / n,) for n in names])
    return Cells(Path(folder), names, views, labels, ())


def test_the_split_holds_out_ok_and_ng_over_all_folders() -> None:
    train, val = split_cells([cells("a", 30, 2), cells("b", 20, 3), cells("c", 10, 0)], seed=0)
    held = np.concatenate([c.labels for c in val])
    kept = np.concatenate([c.labels for c in train])
    assert np.bincount(held).tolist() == [12, 1]
    assert np.bincount(kept).tolist() == [48, 4]
    assert all(len(c.labels) for c in [*train, *val])


def test_too_few_ng_cells_is_an_error_naming_the_class() -> None:
    with pytest.raises(DataError, match=r"class 'NG' has 3 image\(s\); .* at least 5 per class"):
        split_cells([cells("a", 30, 2), cells("b", 20, 1)], seed=0)


def test_latency_measurement_stops_at_its_time_cap() -> None:
    calls = []

    def slow() -> None:
        calls.append(1)
        time.sleep(0.02)

    figures = _compare.latency_ms(slow, runs=200, warmup=50, max_s=0.1)
    # without the cap: 250 calls (5 s); with it, about 0.1 s of each (at least 5 timed)
    assert 5 <= len(calls) < 40
    assert figures["median"] >= 20.0
    assert figures["p90"] >= figures["median"]
