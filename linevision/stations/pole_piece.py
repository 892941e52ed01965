"""Pole-piece (electrode edge) station: one frame -> 5-class burr classifier -> OK/NG."""

from __future__ import annotations

import time

from linevision.config import DecisionRule
from linevision.inference.classifier import decide, preprocess, softmax
from linevision.inference.session import ModelSession
from linevision.types import Decision, Frame


class PolePieceStation:
    """Classifies each frame as Normal / Short / Long / Powder / Other (source 002)."""

    kind = "pole_piece"
    parallel = True
    views = 1
    assembly_ms = 0.0
    part_slack_ms = 0.0

    def __init__(self, name: str, session: ModelSession, rule: DecisionRule) -> None:
        self.name = name
        self.session = session
        self.model = session.ref
        classes = session.manifest.classes
        unknown = [lbl for lbl in rule.ok_labels if lbl not in classes]
        if unknown:
            msg = f"station {name!r}: ok_labels {unknown} are not classes of model {classes}"
            raise ValueError(msg)
        self.rule = rule

    def inspect(self, frame: Frame) -> Decision:
        m = self.session.manifest
        x = preprocess(frame.image, m.input, m.normalisation)
        t0 = time.perf_counter()
        logits = self.session.run(x[None])
        infer_ms = (time.perf_counter() - t0) * 1000.0
        probs = softmax(logits)[0]
        min_ok = max(self.rule.min_ok_score, self.session.threshold)
        d = decide(probs, m.classes, self.rule.ok_labels, min_ok, self.model)
        return Decision(
            verdict=d.verdict,
            reason=d.reason,
            label=d.label,
            score=d.score,
            model=d.model,
            infer_ms=infer_ms,
        )
