"""The budget drives the classifier loop: time, patience, the cap, the best epoch, Ctrl-C."""

from __future__ import annotations

import copy
import io
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from linevision.tools import evaluate  # noqa: E402
from linevision.train.budget import Budget  # noqa: E402
from linevision.train.folder_data import ImageSet  # noqa: E402
from linevision.train.loop import LoopConfig, fit, lr_at, predict  # noqa: E402
from linevision.train.progress import Progress  # noqa: E402

torch.optim.AdamW(nn.Linear(1, 1).parameters())  # its first use imports for seconds


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: on a loaded 2-core machine two threads wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


SIDE = 12
OLD_DEFAULT_EPOCHS = 6


def tiny_set(n_per_class: int, seed: int, *, random_labels: bool = False) -> ImageSet:
    """Two classes told apart by brightness (or labels drawn at random)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(2), n_per_class).astype(np.int64)
    level = np.where(labels == 1, 170, 90)[:, None, None]
    images = np.clip(level + rng.normal(0, 25, (len(labels), SIDE, SIDE)), 0, 255)
    if random_labels:
        labels = rng.integers(0, 2, len(labels)).astype(np.int64)
    return ImageSet(images.astype(np.uint8), labels, ("dark", "bright"), "tiny", "-")


def normalise(images: np.ndarray) -> np.ndarray:
    return np.asarray((images[:, None].astype(np.float32) / 255.0 - 0.5) / 0.25)


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    )


class Recorder(Progress):
    """Keeps every epoch's line and weights; can raise Ctrl-C at a chosen point."""

    def __init__(self, model: nn.Module, *, interrupt_epoch: int | None = None) -> None:
        super().__init__(0, None, stream=io.StringIO(), tty=False)
        self.model = model
        self.interrupt_epoch = interrupt_epoch
        self.lines: list[dict[str, object]] = []
        self.states: dict[int, dict[str, torch.Tensor]] = {}

    def step(self, done: int, epoch: int, loss: float | None) -> None:
        if self.interrupt_epoch == 0:
            raise KeyboardInterrupt
        super().step(done, epoch, loss)

    def epoch_done(self, **entry: object) -> None:
        self.lines.append(entry)
        epoch = int(str(entry["epoch"]))
        self.states[epoch] = copy.deepcopy(self.model.state_dict())
        if epoch == self.interrupt_epoch:
            raise KeyboardInterrupt


def run_fit(
    seconds: float, config: LoopConfig, *, random_val: bool = False, interrupt: int | None = None
):
    model = tiny_model()
    recorder = Recorder(model, interrupt_epoch=interrupt)
    t0 = time.monotonic()
    result = fit(
        model,
        train_set=tiny_set(24, 1),
        val_set=tiny_set(10, 2, random_labels=random_val),
        normalise=normalise,
        config=config,
        deadline=t0 + seconds,
        progress=recorder,
    )
    return result, recorder, time.monotonic() - t0


def test_the_budget_not_an_epoch_count_ends_the_run() -> None:
    budget_s = 3.0
    config = LoopConfig(batch_size=16, bf16=False, patience=None)
    result, recorder, elapsed = run_fit(budget_s, config)
    assert result.stop_reason == "budget"
    assert result.epochs_run > OLD_DEFAULT_EPOCHS
    assert elapsed <= budget_s + 1.0
    assert result.seconds >= 0.8 * budget_s
    # the schedule was fitted to the budget: the rate is near its low at the end
    assert float(result.history[-1]["lr"]) < 0.1 * config.lr
    assert float(result.history[len(result.history) // 2]["lr"]) > 0.3 * config.lr
    # one line per epoch with the best so far and an ETA
    assert [line["epoch"] for line in recorder.lines] == list(range(1, result.epochs_run + 1))
    assert {"best_epoch", "best_macro_f1", "eta"} <= set(recorder.lines[0])


def test_patience_stops_when_validation_is_flat() -> None:
    config = LoopConfig(batch_size=16, bf16=False, lr=0.0, patience=3)
    result, _, elapsed = run_fit(60.0, config)
    assert result.stop_reason == "patience"
    assert result.best_epoch == 1
    assert result.epochs_run == 1 + 3
    assert elapsed < 30.0


def test_the_epoch_cap_is_optional_and_still_honoured() -> None:
    config = LoopConfig(batch_size=16, bf16=False, epochs=2, patience=None)
    result, _, _ = run_fit(60.0, config)
    assert (result.stop_reason, result.epochs_run) == ("epochs", 2)


def macro_f1(model: nn.Module, images: ImageSet) -> float:
    predicted = predict(model, images.images, normalise).argmax(axis=1)
    return evaluate.macro_f1(evaluate.confusion_matrix(images.labels, predicted, 2))


def test_the_best_epoch_not_the_last_is_what_comes_back() -> None:
    config = LoopConfig(batch_size=16, bf16=False, lr=2e-2, patience=2, epochs=60)
    result, recorder, _ = run_fit(60.0, config, random_val=True)
    assert result.stop_reason == "patience"
    assert result.best_epoch < result.epochs_run
    best = recorder.states[result.best_epoch]
    for name, tensor in result.model.state_dict().items():
        assert torch.equal(tensor, best[name]), name
    val = tiny_set(10, 2, random_labels=True)
    assert macro_f1(result.model, val) == pytest.approx(result.best_macro_f1)
    scores = [float(str(line["val_macro_f1"])) for line in recorder.lines]
    assert round(result.best_macro_f1, 4) == max(scores)


def test_ctrl_c_keeps_the_best_epoch_so_far() -> None:
    config = LoopConfig(batch_size=16, bf16=False, patience=None)
    result, recorder, elapsed = run_fit(60.0, config, random_val=True, interrupt=3)
    assert result.stop_reason == "interrupted"
    assert result.epochs_run == 3
    assert elapsed < 30.0
    best = recorder.states[result.best_epoch]
    for name, tensor in result.model.state_dict().items():
        assert torch.equal(tensor, best[name]), name


def test_ctrl_c_before_any_epoch_was_validated_propagates() -> None:
    config = LoopConfig(batch_size=16, bf16=False)
    with pytest.raises(KeyboardInterrupt):
        run_fit(60.0, config, interrupt=0)


def test_budget_plans_steps_from_the_measured_time() -> None:
    budget = Budget(started=0.0, deadline=100.0, patience=None, steps_per_epoch=5)
    assert budget.progress(5, now=10.0) == pytest.approx(0.1)  # no step time yet: time only
    assert budget.replan(5, now=10.0) == 50  # 5 steps in 10 s, 90 s left
    assert budget.progress(25, now=40.0) == pytest.approx(0.5)
    assert budget.replan(30, now=50.0) == 60  # slower steps: fewer planned
    assert budget.progress(60, now=99.0) == 1.0
    assert lr_at(budget.progress(60, now=99.0), 1.0) == pytest.approx(0.02)
    assert budget.eta(3, now=40.0) == pytest.approx(60.0)
    capped = Budget(started=0.0, deadline=100.0, epochs=4, steps_per_epoch=5)
    assert capped.replan(5, now=10.0) == 20
    assert capped.eta(1, now=10.0) == pytest.approx(30.0)
    with pytest.raises(ValueError, match="--patience"):
        Budget(started=0.0, deadline=1.0, patience=0)
