"""The classifier training loop: AdamW, warm-up + cosine fitted to the budget, best epoch kept.

The run lasts until the time budget is spent, validation has not improved for
``patience`` epochs, or the optional epoch cap is reached (``linevision.train.budget``).
The learning rate's schedule is planned from the measured cost per step, re-estimated after
every epoch, so it reaches its low at the end of the budget. Before each batch the loop
checks that one more batch and a validation pass fit before the deadline. After each epoch
the held-out set is scored; the best epoch's weights (by macro F1, then accuracy) are kept
in memory and restored at the end, also when Ctrl-C stops the run (``LoopResult.stop_reason``
is then ``"interrupted"``; with no epoch finished the interrupt propagates). Each batch is
varied by ``LoopConfig.augment`` (``linevision.train.augment``; default: rotations by 90
degrees and flips of the whole batch). On CPUs with bfloat16 support the forward pass runs
under bfloat16 autocast (weights, optimiser and BatchNorm statistics stay float32). With
``coarse_size`` the first ``coarse_fraction`` of the run (as the learning rate counts it)
sees the images downscaled to that side, about half the cost per step at 160 px; the rest,
and every validation, is at full size (progressive resizing: the network is fully
convolutional with global pooling). Each epoch draws as many images as the set holds, class
balanced (``LoopConfig.balanced``: a class of 30 images comes as often as one of 200); a
model with ``parameter_groups()`` (a pretrained backbone) gets each group's ``lr_scale``
of the scheduled learning rate.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import numpy.typing as npt
import torch
from torch.nn import functional

from linevision.log import get_logger
from linevision.tools import evaluate
from linevision.train.budget import (
    DEFAULT_PATIENCE,
    STOP_BUDGET,
    STOP_INTERRUPTED,
    Budget,
    interruptible,
)
from linevision.train.progress import format_duration

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from torch import nn

    from linevision.train.folder_data import ImageSet
    from linevision.train.progress import Progress

F32Array = npt.NDArray[np.float32]
U8Images = npt.NDArray[np.uint8]

log = get_logger(__name__)


@dataclass(frozen=True)
class LoopConfig:
    epochs: int | None = None
    """At most this many epochs; None: the budget and patience decide."""
    patience: int | None = DEFAULT_PATIENCE
    """Stop after this many epochs without a better validation score; None: never."""
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 5e-4
    label_smoothing: float = 0.05
    seed: int = 0
    bf16: bool = True
    warmup: float = 0.05
    coarse_size: int | None = None
    coarse_fraction: float = 0.7
    augment: Callable[[U8Images, np.random.Generator], U8Images] | None = None
    """Varies each training batch (uint8 in, uint8 out); None: rot90 and flip per batch."""
    balanced: bool = True
    """Draw each epoch's images so every class comes equally often (rare classes repeat)."""


@dataclass
class LoopResult:
    model: nn.Module
    epochs_run: int = 0
    best_epoch: int = 0
    best_macro_f1: float = -1.0
    best_accuracy: float = -1.0
    steps: int = 0
    seconds: float = 0.0
    stopped_by_time: bool = False
    stop_reason: str = ""
    planned_steps: int = 0
    history: list[dict[str, float | int]] = field(default_factory=list)


def lr_at(progress: float, peak: float, warmup: float = 0.05) -> float:
    """Linear warm-up to ``peak``, then cosine decay to 2 % of it at ``progress`` 1.

    >>> round(lr_at(0.0, 1.0), 3), round(lr_at(0.05, 1.0), 3), round(lr_at(1.0, 1.0), 3)
    (0.05, 1.0, 0.02)
    """
    if progress < warmup:
        return peak * max(progress / warmup, 0.05)
    t = min((progress - warmup) / (1.0 - warmup), 1.0)
    return peak * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * t)))


def bf16_supported() -> bool:
    """True when oneDNN reports native bfloat16 (AVX-512 BF16 or AMX) on this CPU."""
    mkldnn: Any = getattr(torch.backends, "mkldnn", None)
    check = getattr(getattr(torch.ops, "mkldnn", None), "_is_mkldnn_bf16_supported", None)
    if mkldnn is None or not mkldnn.is_available() or check is None:
        return False
    return bool(check())


def class_balanced_weights(labels: npt.NDArray[np.int64]) -> F32Array | None:
    """Per-image draw probabilities giving every present class the same share; None when the
    classes are already equally frequent (a plain shuffle is then the same in expectation)."""
    counts = np.bincount(labels)
    present = counts[counts > 0]
    if present.min() == present.max():
        return None
    weights = 1.0 / counts[labels]
    return np.asarray(weights / weights.sum(), dtype=np.float32)


def _batches(
    n: int, size: int, rng: np.random.Generator, weights: F32Array | None = None
) -> Iterator[npt.NDArray[np.int64]]:
    if weights is None:
        order = rng.permutation(n)
    else:
        p = weights.astype(np.float64)
        order = rng.choice(n, size=n, replace=True, p=p / p.sum())
    for start in range(0, n - size + 1, size):
        yield order[start : start + size]


def _dihedral(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    x = torch.rot90(x, int(rng.integers(0, 4)), dims=(2, 3))
    if rng.random() < 0.5:
        x = torch.flip(x, dims=(3,))
    return x


def predict(
    model: nn.Module,
    images: npt.NDArray[np.uint8],
    normalise: Callable[[npt.NDArray[np.uint8]], F32Array],
    batch: int = 64,
) -> F32Array:
    """float32 logits of ``images`` in eval mode."""
    model.eval()
    out: list[F32Array] = []
    with torch.inference_mode():
        for start in range(0, len(images), batch):
            x = torch.from_numpy(normalise(images[start : start + batch]))
            logits: torch.Tensor = model(x.contiguous(memory_format=torch.channels_last))
            out.append(logits.float().numpy())
    return np.concatenate(out).astype(np.float32)


@dataclass
class _Clock:
    budget: Budget
    step_seconds: float = 0.0
    val_seconds: float = 0.0

    def out_of_time(self) -> bool:
        reserve = 1.5 * self.step_seconds + 1.2 * self.val_seconds
        return time.monotonic() + reserve > self.budget.deadline

    def progress(self, step: int) -> float:
        return self.budget.progress(step)


def set_memory_format(model: nn.Module, memory_format: torch.memory_format) -> None:
    """Lay the 4-D weights out as ``memory_format`` (channels-last trains faster on CPU)."""
    for param in model.parameters():
        if param.dim() == 4:
            param.data = param.data.contiguous(memory_format=memory_format)


@dataclass
class _Run:
    """The state one epoch needs: model, optimiser, data, clock and reporter."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    train_set: ImageSet
    normalise: Callable[[npt.NDArray[np.uint8]], F32Array]
    config: LoopConfig
    clock: _Clock
    progress: Progress
    rng: np.random.Generator
    bf16: bool
    coarse: npt.NDArray[np.uint8] | None = None
    lr: float = 0.0
    best_state: dict[str, Any] = field(default_factory=dict)
    weights: F32Array | None = None

    def images(self, step: int) -> npt.NDArray[np.uint8]:
        coarse_phase = self.clock.progress(step) < self.config.coarse_fraction
        if self.coarse is not None and coarse_phase:
            return self.coarse
        return self.train_set.images

    def batch(self, step: int, index: npt.NDArray[np.int64]) -> torch.Tensor:
        """The augmented, normalised, channels-last input of one batch."""
        images = self.images(step)[index]
        if self.config.augment is None:
            x = _dihedral(torch.from_numpy(self.normalise(images)), self.rng)
        else:
            x = torch.from_numpy(self.normalise(self.config.augment(images, self.rng)))
        return x.contiguous(memory_format=torch.channels_last)


def parameter_groups(model: nn.Module) -> list[dict[str, Any]]:
    """The model's own groups (each with an ``lr_scale``) if it defines them, else one group."""
    groups = getattr(model, "parameter_groups", None)
    if callable(groups):
        return list(groups())
    return [{"params": list(model.parameters()), "lr_scale": 1.0}]


def downscale(images: npt.NDArray[np.uint8], size: int) -> npt.NDArray[np.uint8]:
    """(N, H, W) uint8 -> (N, size, size) with ``INTER_AREA``."""
    out = np.empty((len(images), size, size), dtype=np.uint8)
    for i, image in enumerate(images):
        out[i] = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return out


def _train_epoch(run: _Run, epoch: int, result: LoopResult) -> list[float]:
    """One pass (shorter when the clock runs out); returns the batch losses."""
    run.model.train()
    losses: list[float] = []
    labels = run.train_set.labels
    for index in _batches(len(labels), run.config.batch_size, run.rng, run.weights):
        if run.clock.out_of_time():
            result.stopped_by_time = True
            break
        t0 = time.monotonic()
        run.lr = lr_at(run.clock.progress(result.steps), run.config.lr, run.config.warmup)
        for group in run.optimizer.param_groups:
            group["lr"] = run.lr * float(group.get("lr_scale", 1.0))
        x = run.batch(result.steps, index)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=run.bf16):
            logits = run.model(x)
        loss = functional.cross_entropy(
            logits.float(),
            torch.from_numpy(labels[index]),
            label_smoothing=run.config.label_smoothing,
        )
        run.optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        run.optimizer.step()
        losses.append(float(loss.item()))
        result.steps += 1
        run.clock.step_seconds = time.monotonic() - t0
        run.progress.step(result.steps, epoch, float(np.mean(losses[-20:])))
    return losses


def _validate(run: _Run, val_set: ImageSet) -> tuple[float, float]:
    """(macro F1, accuracy) on the held-out set; times the pass for the deadline's reserve."""
    t0 = time.monotonic()
    predicted = predict(run.model, val_set.images, run.normalise).argmax(axis=1)
    run.clock.val_seconds = time.monotonic() - t0
    confusion = evaluate.confusion_matrix(val_set.labels, predicted, len(val_set.classes))
    return evaluate.macro_f1(confusion), evaluate.accuracy(confusion)


def _epochs(run: _Run, val_set: ImageSet, result: LoopResult) -> None:
    """Train and validate epoch after epoch until a stop rule fires; keep the best state."""
    budget = run.clock.budget
    epoch = 0
    while not result.stop_reason:
        epoch += 1
        losses = _train_epoch(run, epoch, result)
        if not losses:
            result.stop_reason = STOP_BUDGET
            break
        f1, acc = _validate(run, val_set)
        improved = (f1, acc) > (result.best_macro_f1, result.best_accuracy)
        if improved:
            result.best_macro_f1, result.best_accuracy = f1, acc
            result.best_epoch = epoch
            run.best_state = copy.deepcopy(run.model.state_dict())
        result.epochs_run = epoch
        result.stop_reason = budget.epoch_done(epoch, improved=improved)
        if result.stopped_by_time:
            result.stop_reason = STOP_BUDGET
        result.planned_steps = budget.replan(result.steps)
        run.progress.total_steps = result.planned_steps
        entry: dict[str, float | int] = {
            "epoch": epoch,
            "steps": len(losses),
            "loss": round(float(np.mean(losses)), 4),
            "val_accuracy": round(acc, 4),
            "val_macro_f1": round(f1, 4),
            "best_epoch": result.best_epoch,
            "best_macro_f1": round(result.best_macro_f1, 4),
            "lr": round(run.lr, 6),
            "seconds": round(time.monotonic() - budget.started, 1),
        }
        result.history.append(entry)
        eta = 0.0 if result.stop_reason else budget.eta(epoch)
        run.progress.epoch_done(**entry, eta=format_duration(eta), stop=result.stop_reason or "-")


def fit(  # noqa: PLR0913  (the data sets, the budget and the reporter are all needed)
    model: nn.Module,
    *,
    train_set: ImageSet,
    val_set: ImageSet,
    normalise: Callable[[npt.NDArray[np.uint8]], F32Array],
    config: LoopConfig,
    deadline: float,
    progress: Progress,
) -> LoopResult:
    """Train ``model`` in place; return it with the best epoch's weights restored.

    Ctrl-C ends the run like a stop rule (``stop_reason`` "interrupted") once an epoch has
    been validated; before that it raises ``KeyboardInterrupt``.
    """
    torch.manual_seed(config.seed)
    set_memory_format(model, torch.channels_last)
    steps_per_epoch = max(len(train_set.labels) // config.batch_size, 1)
    budget = Budget(
        started=time.monotonic(),
        deadline=deadline,
        epochs=config.epochs,
        patience=config.patience,
        steps_per_epoch=steps_per_epoch,
    )
    run = _Run(
        model=model,
        optimizer=torch.optim.AdamW(
            parameter_groups(model), lr=config.lr, weight_decay=config.weight_decay
        ),
        train_set=train_set,
        normalise=normalise,
        config=config,
        clock=_Clock(budget),
        progress=progress,
        rng=np.random.default_rng(config.seed),
        bf16=config.bf16 and bf16_supported(),
        coarse=None
        if config.coarse_size is None
        else downscale(train_set.images, config.coarse_size),
        weights=class_balanced_weights(train_set.labels) if config.balanced else None,
    )
    result = LoopResult(model)
    run.best_state = copy.deepcopy(model.state_dict())
    try:
        with interruptible():
            _epochs(run, val_set, result)
    except KeyboardInterrupt:
        if result.best_epoch == 0:
            progress.close()
            raise
        result.stop_reason = STOP_INTERRUPTED
    progress.close()
    model.load_state_dict(run.best_state)
    set_memory_format(model, torch.contiguous_format)
    result.model = model.eval()
    result.seconds = time.monotonic() - budget.started
    log.info(
        "fit_done",
        epochs_run=result.epochs_run,
        best_epoch=result.best_epoch,
        best_macro_f1=round(result.best_macro_f1, 4),
        steps=result.steps,
        bf16=run.bf16,
        stop_reason=result.stop_reason,
        seconds=round(result.seconds, 1),
    )
    return result
