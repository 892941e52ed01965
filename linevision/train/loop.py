"""The classifier training loop: AdamW, warm-up + cosine, a deadline, the best epoch kept.

The learning rate follows whichever ends first, the planned steps or the time budget, so
a run cut short by ``--minutes`` still ends on a low rate. Before each batch the loop
checks that one more batch and a validation pass fit before the deadline; after the last
(possibly partial) epoch the held-out set is scored and the best epoch's weights (by
macro F1, then accuracy) are restored. Batches are rotated by a multiple of 90 degrees
and flipped (the edge may run in any direction); on CPUs with bfloat16 support the
forward pass runs under bfloat16 autocast (weights, optimiser and BatchNorm statistics
stay float32). With ``coarse_size`` the first ``coarse_fraction`` of the run (by steps or
time, as the learning rate) sees the images downscaled to that side, about half the cost
per step at 160 px; the rest, and every validation, is at full size (progressive
resizing: the network is fully convolutional with global pooling).
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

from linevision import evaluate
from linevision.log import get_logger

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from torch import nn

    from linevision.train.folder_data import ImageSet
    from linevision.train.progress import Progress

F32Array = npt.NDArray[np.float32]

log = get_logger(__name__)


@dataclass(frozen=True)
class LoopConfig:
    epochs: int = 4
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 5e-4
    label_smoothing: float = 0.05
    seed: int = 0
    bf16: bool = True
    warmup: float = 0.05
    coarse_size: int | None = None
    coarse_fraction: float = 0.7


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


def _batches(n: int, size: int, rng: np.random.Generator) -> Iterator[npt.NDArray[np.int64]]:
    order = rng.permutation(n)
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
    started: float
    deadline: float
    total_steps: int
    step_seconds: float = 0.0
    val_seconds: float = 0.0

    def out_of_time(self) -> bool:
        reserve = 1.5 * self.step_seconds + 1.2 * self.val_seconds
        return time.monotonic() + reserve > self.deadline

    def progress(self, step: int) -> float:
        budget = max(self.deadline - self.started - 1.2 * self.val_seconds, 1.0)
        return max(step / self.total_steps, (time.monotonic() - self.started) / budget)


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

    def images(self, step: int) -> npt.NDArray[np.uint8]:
        coarse_phase = self.clock.progress(step) < self.config.coarse_fraction
        if self.coarse is not None and coarse_phase:
            return self.coarse
        return self.train_set.images


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
    for index in _batches(len(labels), run.config.batch_size, run.rng):
        if run.clock.out_of_time():
            result.stopped_by_time = True
            break
        t0 = time.monotonic()
        run.lr = lr_at(run.clock.progress(result.steps), run.config.lr, run.config.warmup)
        for group in run.optimizer.param_groups:
            group["lr"] = run.lr
        x = _dihedral(torch.from_numpy(run.normalise(run.images(result.steps)[index])), run.rng)
        x = x.contiguous(memory_format=torch.channels_last)
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
    """Train ``model`` in place; return it with the best epoch's weights restored."""
    torch.manual_seed(config.seed)
    set_memory_format(model, torch.channels_last)
    steps_per_epoch = len(train_set.labels) // config.batch_size
    run = _Run(
        model=model,
        optimizer=torch.optim.AdamW(
            model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        ),
        train_set=train_set,
        normalise=normalise,
        config=config,
        clock=_Clock(time.monotonic(), deadline, max(config.epochs * steps_per_epoch, 1)),
        progress=progress,
        rng=np.random.default_rng(config.seed),
        bf16=config.bf16 and bf16_supported(),
        coarse=None
        if config.coarse_size is None
        else downscale(train_set.images, config.coarse_size),
    )
    result = LoopResult(model)
    best_state: dict[str, Any] = copy.deepcopy(model.state_dict())
    for epoch in range(1, config.epochs + 1):
        losses = _train_epoch(run, epoch, result)
        if not losses:
            break
        t0 = time.monotonic()
        predicted = predict(model, val_set.images, normalise).argmax(axis=1)
        run.clock.val_seconds = time.monotonic() - t0
        confusion = evaluate.confusion_matrix(val_set.labels, predicted, len(val_set.classes))
        f1, acc = evaluate.macro_f1(confusion), evaluate.accuracy(confusion)
        result.epochs_run = epoch
        entry: dict[str, float | int] = {
            "epoch": epoch,
            "steps": len(losses),
            "loss": round(float(np.mean(losses)), 4),
            "val_accuracy": round(acc, 4),
            "val_macro_f1": round(f1, 4),
            "lr": round(run.lr, 6),
            "seconds": round(time.monotonic() - run.clock.started, 1),
        }
        result.history.append(entry)
        progress.epoch_done(**entry, out_of_time=result.stopped_by_time)
        if (f1, acc) > (result.best_macro_f1, result.best_accuracy):
            result.best_macro_f1, result.best_accuracy = f1, acc
            result.best_epoch = epoch
            best_state = copy.deepcopy(model.state_dict())
        if result.stopped_by_time:
            break
    progress.close()
    model.load_state_dict(best_state)
    set_memory_format(model, torch.contiguous_format)
    result.model = model.eval()
    result.seconds = time.monotonic() - run.clock.started
    log.info(
        "fit_done",
        epochs_run=result.epochs_run,
        best_epoch=result.best_epoch,
        best_macro_f1=round(result.best_macro_f1, 4),
        steps=result.steps,
        bf16=run.bf16,
        stopped_by_time=result.stopped_by_time,
        seconds=round(result.seconds, 1),
    )
    return result
