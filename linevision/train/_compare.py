"""What the reference-compare trainers (seal_edge, six_view) share.

Both freeze a pretrained EfficientNet-Lite0 stem, compute its features once per image with
onnxruntime, and train only the trainable layers on those cached features; this module holds
the onnxruntime helpers, the time-budgeted training loop, the OK/NG metrics and the
calibration of the decision threshold on P(NG).
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import cv2
import numpy as np
import numpy.typing as npt
import onnx
import torch
from torch import nn
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
from linevision.train.loop import lr_at
from linevision.train.progress import format_duration

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

ONNX_OPSET: Final = 18
TARGET_NG_RECALL: Final = 0.99
TARGET_OK_FALSE_REJECT: Final = 0.02
CALIBRATION_NG_RECALL: Final = 0.995
CALIBRATION_OK_FALSE_REJECT: Final = 0.01
MARGIN_LIMIT: Final = 30.0

F32Array = npt.NDArray[np.float32]
F64Array = npt.NDArray[np.float64]
U8Image = npt.NDArray[np.uint8]
Labels = npt.NDArray[np.int64]

log = get_logger(__name__)


def read_gray(path: Path) -> U8Image:
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        msg = f"cannot read image {path}"
        raise OSError(msg)
    return np.asarray(image, dtype=np.uint8)


def export_onnx(
    module: nn.Module,
    example: tuple[torch.Tensor, ...],
    path: Path,
    names: tuple[Sequence[str], Sequence[str]],
    dynamic_axes: Mapping[str, Mapping[int, str]],
) -> None:
    """Legacy exporter at opset 18, then ``onnx.checker``; ``names`` = (inputs, outputs)."""
    module.eval()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript")
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
        torch.onnx.export(
            module,
            example,
            str(path),
            input_names=list(names[0]),
            output_names=list(names[1]),
            opset_version=ONNX_OPSET,
            dynamo=False,
            dynamic_axes={k: dict(v) for k, v in dynamic_axes.items()},
        )
    onnx.checker.check_model(onnx.load(str(path)))


def ng_margin(logits: F32Array) -> F64Array:
    """logit(P(NG)) from (N, 2) logits ordered (OK, NG); P(NG) = sigmoid(margin)."""
    z = np.asarray(logits, dtype=np.float64)
    return np.asarray(z[:, 1] - z[:, 0], dtype=np.float64)


def sigmoid(x: F64Array | float) -> F64Array:
    return np.asarray(1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64))), dtype=np.float64)


def _auroc(labels: Labels, scores: F64Array) -> float:
    """:func:`evaluate.auroc` with NG (label 1) positive; nan without both classes."""
    area = evaluate.auroc(labels == 1, scores)
    return float("nan") if area is None else area


def binary_metrics(labels: Labels, margins: F64Array, threshold: float) -> dict[str, float | int]:
    """OK/NG figures at P(NG) >= ``threshold`` (labels: 0 OK, 1 NG)."""
    predicted = sigmoid(margins) >= threshold
    ng, ok = labels == 1, labels == 0
    return {
        "accuracy": round(float(np.mean(predicted == ng)), 4),
        "ng_recall": round(float(np.mean(predicted[ng])) if ng.any() else float("nan"), 4),
        "ok_false_reject": round(float(np.mean(predicted[ok])) if ok.any() else float("nan"), 4),
        "auroc": round(_auroc(labels, margins), 5),
        "ng": int(ng.sum()),
        "ok": int(ok.sum()),
        "missed_ng": int((~predicted[ng]).sum()),
        "rejected_ok": int(predicted[ok].sum()),
    }


def false_reject_at_recall(labels: Labels, margins: F64Array, recall: float) -> float:
    """OK false-reject rate at the highest threshold that keeps NG recall >= ``recall``."""
    ng = np.sort(margins[labels == 1])
    ok = margins[labels == 0]
    if len(ng) == 0 or len(ok) == 0:
        return float("nan")
    cut = ng[math.floor((1.0 - recall) * len(ng) + 1e-9)]
    return float(np.mean(ok >= cut))


def calibrate_threshold(labels: Labels, margins: F64Array) -> tuple[float, str]:
    """The P(NG) threshold, and how it was chosen, from held-out margins.

    With the stricter calibration targets (NG recall 0.995, OK false reject 0.01) the lowest
    and highest admissible margins bound an interval; the threshold is its midpoint in logit
    space. When that interval is empty, the same with the line's targets (0.99, 0.02), so a
    model that separates the validation cells well keeps its distance from both sides. When
    that one is empty too, recall wins: the highest threshold with NG recall 0.99.
    """
    ng = np.sort(margins[labels == 1])
    ok = np.sort(margins[labels == 0])[::-1]
    if len(ng) == 0 or len(ok) == 0:
        msg = "threshold calibration needs both OK and NG samples"
        raise ValueError(msg)
    for recall, false_reject in (
        (CALIBRATION_NG_RECALL, CALIBRATION_OK_FALSE_REJECT),
        (TARGET_NG_RECALL, TARGET_OK_FALSE_REJECT),
    ):
        high = float(ng[math.floor((1.0 - recall) * len(ng) + 1e-9)])
        allowed = math.floor(false_reject * len(ok) + 1e-9)
        low = float(ok[allowed]) if allowed < len(ok) else -MARGIN_LIMIT
        if low < high:
            margin = (low + high) / 2.0
            how = (
                f"midpoint (logit space) of the interval meeting recall {recall:g} "
                f"and false reject {false_reject:g}"
            )
            break
    else:
        margin = float(ng[math.floor((1.0 - TARGET_NG_RECALL) * len(ng) + 1e-9)]) - 1e-3
        how = "highest threshold keeping NG recall 0.99 (targets not both reachable)"
    margin = float(np.clip(margin, -MARGIN_LIMIT, MARGIN_LIMIT))
    return float(sigmoid(margin)), how


def latency_ms(
    run: Callable[[], object], runs: int, warmup: int = 10, max_s: float = 1.5
) -> dict[str, float]:
    """Median and p90 of ``runs`` timed calls after ``warmup`` untimed ones; a slow model or a
    busy machine stops after ``max_s`` seconds of timing (at least 5 calls) and a third of it
    of warm-up, so measuring never takes a large part of a short training budget."""
    t_end = time.perf_counter() + max_s / 3
    for _ in range(warmup):
        run()
        if time.perf_counter() > t_end:
            break
    t_end = time.perf_counter() + max_s
    done: list[float] = []
    while len(done) < runs and (len(done) < 5 or time.perf_counter() < t_end):
        t0 = time.perf_counter()
        run()
        done.append(time.perf_counter() - t0)
    times = np.asarray(done)
    return {
        "median": round(float(np.median(times)) * 1e3, 3),
        "p90": round(float(np.percentile(times, 90)) * 1e3, 3),
    }


@dataclass(frozen=True)
class FitConfig:
    epochs: int | None
    """At most this many epochs; None: the budget and patience decide."""
    batch_size: int
    lr: float
    weight_decay: float
    seed: int
    deadline: float
    """``time.monotonic()`` by which training must stop."""
    patience: int | None = DEFAULT_PATIENCE
    """Stop after this many epochs without a better validation key; None: never."""


@dataclass
class FitResult:
    epochs_run: int = 0
    best_epoch: int = -1
    best_key: tuple[float, float] = (-math.inf, -math.inf)
    seconds: float = 0.0
    stop_reason: str = ""
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass
class _Fit:
    """One run's moving parts: the model, its optimiser, the budget and the best state."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    budget: Budget
    config: FitConfig
    best_state: dict[str, Any]
    step: int = 0


def _train_epoch(
    fit_: _Fit, batch_loss: Callable[[npt.NDArray[np.int64]], torch.Tensor], order: np.ndarray
) -> tuple[list[float], float]:
    fit_.model.train()
    losses: list[float] = []
    lr = fit_.config.lr
    size = fit_.config.batch_size
    for start in range(0, fit_.budget.steps_per_epoch * size, size):
        lr = lr_at(fit_.budget.progress(fit_.step), fit_.config.lr)
        for group in fit_.optimizer.param_groups:
            group["lr"] = lr
        loss = batch_loss(order[start : start + size])
        fit_.optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(loss)
        fit_.optimizer.step()
        losses.append(float(loss.item()))
        fit_.step += 1
    return losses, lr


def _epochs(
    fit_: _Fit,
    batch_loss: Callable[[npt.NDArray[np.int64]], torch.Tensor],
    n_train: int,
    validate: Callable[[], tuple[Labels, F64Array]],
    result: FitResult,
) -> None:
    rng = np.random.default_rng(fit_.config.seed)
    epoch_seconds = 0.0
    while not result.stop_reason:
        t_epoch = time.monotonic()
        if t_epoch + epoch_seconds > fit_.budget.deadline:
            result.stop_reason = STOP_BUDGET
            break
        epoch = result.epochs_run + 1
        losses, lr = _train_epoch(fit_, batch_loss, rng.permutation(n_train))
        labels, margins = validate()
        val_loss = float(np.mean(np.logaddexp(0.0, np.where(labels == 1, -margins, margins))))
        false_reject = false_reject_at_recall(labels, margins, TARGET_NG_RECALL)
        epoch_seconds = time.monotonic() - t_epoch
        key = (-false_reject, -val_loss)
        improved = key > result.best_key
        if improved:
            result.best_key, result.best_epoch = key, epoch
            fit_.best_state = copy.deepcopy(fit_.model.state_dict())
        result.epochs_run = epoch
        result.stop_reason = fit_.budget.epoch_done(epoch, improved=improved)
        fit_.budget.replan(fit_.step)
        entry: dict[str, float] = {
            "epoch": epoch,
            "loss": round(float(np.mean(losses)), 5),
            "val_loss": round(val_loss, 5),
            "val_auroc": round(_auroc(labels, margins), 5),
            "val_false_reject_at_recall_0.99": round(false_reject, 4),
            "best_epoch": result.best_epoch,
            "lr": round(lr, 6),
            "seconds": round(time.monotonic() - fit_.budget.started, 1),
        }
        result.history.append(entry)
        eta = 0.0 if result.stop_reason else fit_.budget.eta(epoch)
        log.info("epoch_done", **entry, eta=format_duration(eta), stop=result.stop_reason or "-")


def fit(
    model: nn.Module,
    batch_loss: Callable[[npt.NDArray[np.int64]], torch.Tensor],
    n_train: int,
    validate: Callable[[], tuple[Labels, F64Array]],
    config: FitConfig,
) -> FitResult:
    """AdamW on mini-batches of ``n_train`` samples; keeps the best validation epoch.

    An epoch's key is (-OK false reject at NG recall 0.99, -validation loss), higher better.
    Stops when the next epoch would end past ``config.deadline``, after ``config.patience``
    epochs without a better key, or at the ``config.epochs`` cap; the learning rate's
    schedule is planned over the budget from the measured step time
    (``linevision.train.budget``). Ctrl-C after the first validated epoch ends the run with
    the best epoch's weights (``stop_reason`` "interrupted"); before that it propagates.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    budget = Budget(
        started=time.monotonic(),
        deadline=config.deadline,
        epochs=config.epochs,
        patience=config.patience,
        steps_per_epoch=max(n_train // config.batch_size, 1),
    )
    fit_ = _Fit(
        model=model,
        optimizer=torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay),
        budget=budget,
        config=config,
        best_state=copy.deepcopy(model.state_dict()),
    )
    result = FitResult()
    try:
        with interruptible():
            _epochs(fit_, batch_loss, n_train, validate, result)
    except KeyboardInterrupt:
        if result.best_epoch < 1:
            raise
        result.stop_reason = STOP_INTERRUPTED
    model.load_state_dict(fit_.best_state)
    result.seconds = time.monotonic() - budget.started
    log.info(
        "fit_done",
        epochs_run=result.epochs_run,
        best_epoch=result.best_epoch,
        stop_reason=result.stop_reason,
        seconds=round(result.seconds, 1),
    )
    return result


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ng_weight: float) -> torch.Tensor:
    weight = torch.tensor([1.0, ng_weight], dtype=logits.dtype)
    return functional.cross_entropy(logits, labels, weight=weight)
