"""``linevision variants``: check a model on other runtimes before its manifest lists them.

A decision threshold is set on one runtime. Before a model may run on another backend or at
another precision, each variant scores the validation folder through the runtime path
(``tools.eval_run``, as ``linevision eval`` does) beside the graphs on onnxruntime at their
own precision, in the same pass. A variant is written into the manifest's ``runtimes``
(``inference.manifest.RuntimeVariant``, with the shipped threshold) when its accuracy, macro
F1, NG recall and OK false reject are all within ``tolerance`` (0.5 points, the INT8 rule)
of onnxruntime's; otherwise it is reported and left out, and the runtime refuses it.

    report = check_variants("seal_edge", val_dir, model_dir, [("openvino", "fp32")])
    write_variants(model_dir, report)
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np

from linevision.inference.manifest import (
    MANIFEST_NAME,
    RuntimeVariant,
    load_manifest,
    write_manifest,
)
from linevision.inference.session import openvino_version
from linevision.tools import eval_run

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from linevision.inference.manifest import Manifest
    from linevision.inference.session import Backend

TOLERANCE: Final = 0.005
FIGURES: Final = ("accuracy", "macro_f1", "ng_recall", "ok_false_reject")


@dataclass
class VariantCheck:
    """One variant's validation figures against the reference's, and whether it passes."""

    backend: str
    precision: str
    figures: dict[str, float]
    agreement: float
    """Share of samples with the same verdict as the reference."""
    score_diff_max: float
    """Largest difference of the NG score from the reference's, over the samples."""
    accepted: bool
    reason: str = ""

    @property
    def label(self) -> str:
        return f"{self.backend}/{self.precision}"


@dataclass
class VariantReport:
    station: str
    checked_on: str
    reference: dict[str, float]
    reference_label: str
    threshold: float
    checks: list[VariantCheck] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        return {
            "station": self.station,
            "checked_on": self.checked_on,
            "reference": {"variant": self.reference_label, **self.reference},
            "threshold": self.threshold,
            "variants": [
                {
                    "variant": c.label,
                    **c.figures,
                    "agreement": c.agreement,
                    "score_diff_max": c.score_diff_max,
                    "accepted": c.accepted,
                    "reason": c.reason,
                }
                for c in self.checks
            ],
        }


def parse_variant(text: str) -> tuple[str, str]:
    """``openvino/fp32`` -> ``("openvino", "fp32")``.

    >>> parse_variant("openvino/bf16")
    ('openvino', 'bf16')
    """
    backend, _, precision = text.partition("/")
    if backend not in ("onnxruntime", "openvino") or precision not in ("fp32", "int8", "bf16"):
        msg = f"variant {text!r}: expected BACKEND/PRECISION, e.g. openvino/fp32 or openvino/bf16"
        raise ValueError(msg)
    return backend, precision


def _figures(evaluation: eval_run.Evaluation) -> dict[str, float]:
    r: dict[str, object] = dict(evaluation.report)
    return {k: float(str(r[k])) for k in FIGURES if r.get(k) is not None}


def describe(data: Path, name: str | None = None) -> str:
    """The validation folder by ``name`` (default: the folder's own name; never a machine
    path) and the sha256 of its labels."""
    labels = data / "labels.csv"
    digest = hashlib.sha256(labels.read_bytes()).hexdigest() if labels.is_file() else "none"
    return f"{name or data.name} (labels.csv sha256 {digest})"


def _candidate_folder(
    model_dir: Path, tmp: Path, manifest: Manifest, variant: RuntimeVariant
) -> Path:
    """A copy of the model folder whose manifest lists ``variant`` provisionally."""
    folder = tmp / model_dir.name
    if not folder.exists():
        shutil.copytree(model_dir, folder)
    others = tuple(v for v in manifest.runtimes if v.label != variant.label)
    write_manifest(folder, manifest.model_copy(update={"runtimes": (*others, variant)}))
    return folder


def check_variants(  # noqa: PLR0913  (what, where, which variants; how)
    station: str,
    data: Path,
    model_dir: Path,
    variants: Sequence[tuple[str, str]],
    *,
    threads: int = 1,
    tolerance: float = TOLERANCE,
    progress: Callable[[str], Callable[[int, int], None] | None] | None = None,
    data_name: str | None = None,
) -> VariantReport:
    """Score ``data`` with onnxruntime at the graphs' own precision, then with each variant."""
    manifest, _ = load_manifest(model_dir)
    threshold = manifest.decision_threshold

    def run(label: str, backend: str, precision: str | None) -> eval_run.Run:
        callback = progress(label) if progress is not None else None
        chosen: Backend = "openvino" if backend == "openvino" else "onnxruntime"
        return eval_run.Run(progress=callback, backend=chosen, precision=precision)

    own = f"onnxruntime/{manifest.precision}"
    base = eval_run.evaluate_folder(
        station, data, model_dir, threads, run(own, "onnxruntime", None)
    )
    assert base.tally is not None
    reference = _figures(base)
    report = VariantReport(station, describe(data, data_name), reference, own, threshold)
    with tempfile.TemporaryDirectory(prefix="linevision-variants-") as tmp:
        for backend, precision in variants:
            if (backend, precision) == ("onnxruntime", manifest.precision):
                continue
            provisional = RuntimeVariant.model_validate(
                {"backend": backend, "precision": precision, "threshold": threshold}
            )
            folder = _candidate_folder(model_dir, Path(tmp), manifest, provisional)
            label = provisional.label
            try:
                ev = eval_run.evaluate_folder(
                    station, data, folder, threads, run(label, backend, precision)
                )
            except Exception as exc:  # a runtime that cannot run the graph is a failed check
                report.checks.append(
                    VariantCheck(
                        backend,
                        precision,
                        {},
                        0.0,
                        float("nan"),
                        accepted=False,
                        reason=str(exc)[:300],
                    )
                )
                continue
            assert ev.tally is not None
            figures = _figures(ev)
            worst = max((abs(figures[k] - reference[k]) for k in reference), default=0.0)
            same = np.asarray(ev.tally.flagged_ng) == np.asarray(base.tally.flagged_ng)
            diff = np.abs(np.asarray(ev.tally.ng_scores) - np.asarray(base.tally.ng_scores))
            accepted = worst <= tolerance + 1e-12
            reason = (
                ""
                if accepted
                else f"a figure moved by {worst * 100:.2f} points (more than {tolerance * 100:.1f})"
            )
            report.checks.append(
                VariantCheck(
                    backend,
                    precision,
                    figures,
                    float(same.mean()) if same.size else 0.0,
                    float(diff.max()) if diff.size else 0.0,
                    accepted,
                    reason,
                )
            )
    return report


def write_variants(model_dir: Path, report: VariantReport, tolerance: float = TOLERANCE) -> Path:
    """List the accepted variants in the manifest (replacing earlier checks of the same ones,
    removing those that failed now); returns the manifest's path."""
    manifest, _ = load_manifest(model_dir)
    checked = {c.label for c in report.checks}
    kept = [v for v in manifest.runtimes if v.label not in checked]
    version = {"openvino": openvino_version() or "", "onnxruntime": _ort_version()}
    for c in report.checks:
        if not c.accepted:
            continue
        kept.append(
            RuntimeVariant.model_validate(
                {
                    "backend": c.backend,
                    "precision": c.precision,
                    "threshold": report.threshold,
                    "validation": {**c.figures, "agreement": c.agreement},
                    "reference": report.reference,
                    "tolerance": tolerance,
                    "checked_on": report.checked_on,
                    "runtime_version": version[c.backend],
                }
            )
        )
    write_manifest(model_dir, manifest.model_copy(update={"runtimes": tuple(kept)}))
    return model_dir / MANIFEST_NAME


def _ort_version() -> str:
    import onnxruntime  # noqa: PLC0415

    return str(onnxruntime.__version__)


def format_text(report: VariantReport) -> str:
    ref = report.reference
    head = (
        f"{report.station}: validation {report.checked_on}\n"
        f"{'variant':<18} {'accuracy':>9} {'macro F1':>9} {'NG recall':>9} {'OK rej.':>9} "
        f"{'agree':>7} {'max diff':>9}  verdict"
    )
    lines = [head, _row(report.reference_label, ref, 1.0, 0.0, "reference")]
    for c in report.checks:
        verdict = "accepted" if c.accepted else f"refused: {c.reason}"
        lines.append(_row(c.label, c.figures, c.agreement, c.score_diff_max, verdict))
    return "\n".join(lines)


def _row(label: str, f: dict[str, float], agree: float, diff: float, verdict: str) -> str:
    cells = "".join(f" {f[k]:>9.4f}" if k in f else f" {'-':>9}" for k in FIGURES)
    return f"{label:<18}{cells} {agree:>7.3f} {diff:>9.2e}  {verdict}"
