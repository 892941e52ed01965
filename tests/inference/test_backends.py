"""Both inference backends on the shipped models: the same verdicts on the same images.

Fresh images are generated with seeds no training, validation or test folder used and go
through each station's runtime path once on onnxruntime and once on OpenVINO (the
precision each manifest lists for it). Also: a variant the manifest has not calibrated is
refused with the reason, an OpenVINO session compiles once per input shape, the thread
counts are the configured ones, and the daemon's modules load without openvino.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from linevision.inference.classifier import decide, preprocess, softmax
from linevision.inference.film.inspector import FilmInspector
from linevision.inference.manifest import ModelFileError, load_manifest
from linevision.inference.reference import ReferenceModel
from linevision.inference.session import (
    ModelSession,
    OnnxRuntimeSession,
    OpenVinoSession,
    SessionOptions,
    open_session,
)
from linevision.synth import blue_film, seal_edge, six_view
from linevision.synth import pole_piece as pp
from linevision.synth._common import sample_rng

pytest.importorskip("openvino")

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
SEED = 5151
BACKENDS = ("onnxruntime", "openvino")


def _options(backend: str, threads: int = 1) -> SessionOptions:
    return SessionOptions(intra_op_threads=threads, backend=backend)  # type: ignore[arg-type]


def test_pole_piece_verdicts_are_the_same_on_both_backends() -> None:
    images, labels = pp.generate_batch(12, seed=SEED)
    verdicts: dict[str, list[tuple[str, str | None]]] = {}
    probs: dict[str, np.ndarray] = {}
    for backend in BACKENDS:
        session = ModelSession(MODELS / "pole_piece", _options(backend))
        session.warm_up()
        m = session.manifest
        got, p_all = [], []
        for image in images:
            p = softmax(session.run(preprocess(image, m.input, m.normalisation)[None]))[0]
            d = decide(p, m.classes, m.ok_labels, session.threshold)
            got.append((d.verdict, d.label))
            p_all.append(p)
        verdicts[backend], probs[backend] = got, np.asarray(p_all)
    assert [v for v, _ in verdicts["openvino"]] == [v for v, _ in verdicts["onnxruntime"]]
    # the int8 graph's input quantiser puts every pixel on a half step ((p - 127.5) steps of
    # 4/255 from 0): the runtimes round some of those apart, so between two defect classes
    # of one NG crop the top one may differ; the OK/NG verdict may not
    labels_same = [
        a == b for a, b in zip(verdicts["openvino"], verdicts["onnxruntime"], strict=True)
    ]
    assert sum(labels_same) >= len(labels_same) - 3
    ok = pp.CLASSES.index("Normal")
    assert np.abs(probs["openvino"][:, ok] - probs["onnxruntime"][:, ok]).max() < 0.1
    got = [v[1] for v in verdicts["openvino"]]
    correct = sum(g == pp.CLASSES[int(lbl)] for g, lbl in zip(got, labels, strict=True))
    assert correct >= len(labels) - 2


def test_seal_edge_verdicts_are_the_same_on_both_backends() -> None:
    samples = [
        seal_edge.generate(seal_edge.dataset_kind(i, 0.5), sample_rng(SEED, i)) for i in range(30)
    ]
    out: dict[str, list[tuple[str, float]]] = {}
    for backend in BACKENDS:
        model = ReferenceModel(MODELS / "seal_edge", _options(backend))
        model.set_reference([seal_edge.reference()])
        decisions = [model.decide(model.encode(s.image)) for s in samples]
        out[backend] = [(d.verdict, float(d.score or 0.0)) for d in decisions]
    assert [v for v, _ in out["openvino"]] == [v for v, _ in out["onnxruntime"]]
    diff = [abs(a[1] - b[1]) for a, b in zip(out["openvino"], out["onnxruntime"], strict=True)]
    assert max(diff) < 1e-3
    assert {v for v, _ in out["onnxruntime"]} == {"OK", "NG"}


def test_six_view_verdicts_are_the_same_on_both_backends() -> None:
    design = six_view.dataset_design(SEED)
    cells = [
        six_view.generate(design, six_view.dataset_kind(i, 0.5), sample_rng(SEED, 1, i))
        for i in range(8)
    ]
    out: dict[str, list[tuple[str, float]]] = {}
    for backend in BACKENDS:
        model = ReferenceModel(MODELS / "six_view", _options(backend))
        model.set_reference(six_view.reference_views(design))
        decisions = [
            model.decide(
                *(model.encode(img, v) for img, v in zip(c.views, model.view_names, strict=True))
            )
            for c in cells
        ]
        out[backend] = [(d.verdict, float(d.score or 0.0)) for d in decisions]
    assert [v for v, _ in out["openvino"]] == [v for v, _ in out["onnxruntime"]]
    diff = [abs(a[1] - b[1]) for a, b in zip(out["openvino"], out["onnxruntime"], strict=True)]
    assert max(diff) < 1e-3


def test_blue_film_verdicts_and_defects_are_the_same_on_both_backends() -> None:
    rng = np.random.default_rng([SEED, 2])
    good = blue_film.generate_frame(rng, width=1024, height=2048)
    bad = blue_film.generate_frame(rng, ("white", "break"), width=1024, height=2048)
    results = {}
    for backend in BACKENDS:
        inspector = FilmInspector(MODELS / "blue_film", 2048, 1024, options=_options(backend))
        inspector.warm_up()
        results[backend] = [inspector.inspect_frame(f.image) for f in (good, bad)]
    ort_res, ov_res = results["onnxruntime"], results["openvino"]
    assert [r.decision.verdict for r in ov_res] == [r.decision.verdict for r in ort_res]
    assert [r.decision.verdict for r in ort_res] == ["OK", "NG"]
    for a, b in zip(ort_res, ov_res, strict=True):
        assert [(d.x, d.y, d.w, d.h) for d in a.decision.defects] == [
            (d.x, d.y, d.w, d.h) for d in b.decision.defects
        ]
        assert np.abs(a.anomaly - b.anomaly).max() < 1e-2


def _without_runtimes(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    shutil.copytree(MODELS / name, folder)
    path = folder / "manifest.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["runtimes"] = []
    path.write_text(json.dumps(data), encoding="utf-8")
    return folder


def test_an_uncalibrated_backend_is_refused_and_says_why(tmp_path: Path) -> None:
    folder = _without_runtimes(tmp_path, "seal_edge")
    with pytest.raises(ModelFileError, match=r"no threshold calibrated for openvino/fp32") as err:
        ReferenceModel(folder, _options("openvino"))
    assert "linevision variants" in str(err.value)
    assert "calibrated: onnxruntime/fp32" in str(err.value)
    # the graphs on onnxruntime at their own precision need no entry
    ReferenceModel(folder, _options("onnxruntime"))


def test_an_uncalibrated_precision_is_refused(tmp_path: Path) -> None:
    folder = _without_runtimes(tmp_path, "pole_piece")
    with pytest.raises(ModelFileError, match=r"openvino/bf16"):
        ModelSession(folder, SessionOptions(backend="openvino", precision="bf16"))
    with pytest.raises(ModelFileError, match=r"onnxruntime/fp32"):
        ModelSession(folder, SessionOptions(precision="fp32"))  # the graph is int8
    with pytest.raises(ModelFileError, match="no bf16"):
        open_session(folder / "model.onnx", SessionOptions(precision="bf16"))


def test_the_shipped_manifests_list_their_checked_variants() -> None:
    for name in ("pole_piece", "seal_edge", "six_view", "blue_film"):
        manifest, _ = load_manifest(MODELS / name)
        variant = manifest.runtime_variant("openvino")
        assert variant.precision == manifest.precision
        assert variant.threshold == manifest.decision_threshold
        for key, value in variant.validation.items():
            if key in variant.reference:
                assert abs(value - variant.reference[key]) <= variant.tolerance + 1e-9


def test_openvino_compiles_once_per_shape_with_the_configured_threads() -> None:
    manifest, _ = load_manifest(MODELS / "seal_edge")
    session = open_session(MODELS / "seal_edge" / "encoder.onnx", _options("openvino", 2))
    assert isinstance(session, OpenVinoSession)
    assert session.input_shape("image")[0] is None  # a dynamic batch axis
    shapes = [{"image": (n, 1, manifest.input.height, manifest.input.width)} for n in (1, 3)]
    session.prepare(shapes, repeats=2)
    assert session.compiles == 2
    x = np.zeros(shapes[1]["image"], np.float32)
    out = session.run(None, {"image": x})
    assert out[0].shape[0] == 3
    assert session.compiles == 2  # no compile on the hot path for a prepared shape
    compiled = next(iter(session._compiled.values()))
    assert int(compiled.get_property("INFERENCE_NUM_THREADS")) == 2
    assert str(compiled.get_property("INFERENCE_PRECISION_HINT")) == "<Type: 'float32'>"


def test_onnxruntime_session_has_the_configured_threads() -> None:
    session = open_session(MODELS / "seal_edge" / "encoder.onnx", _options("onnxruntime", 2))
    assert isinstance(session, OnnxRuntimeSession)
    assert session._session.get_session_options().intra_op_num_threads == 2


def test_openvino_requests_serve_one_thread_at_a_time() -> None:
    """Two threads on one session at once: each run has a request of its own."""
    session = open_session(MODELS / "pole_piece" / "model.onnx", _options("openvino"))
    images, _ = pp.generate_batch(2, seed=SEED + 1)
    manifest, _ = load_manifest(MODELS / "pole_piece")
    xs = [preprocess(img, manifest.input, manifest.normalisation)[None] for img in images[:4]]
    alone = [session.run(None, {"image": x})[0] for x in xs]
    with ThreadPoolExecutor(2) as pool:
        for _ in range(5):
            together = list(pool.map(lambda x: session.run(None, {"image": x})[0], xs))
            for a, b in zip(alone, together, strict=True):
                np.testing.assert_array_equal(a, b)


def test_the_daemon_loads_without_openvino_and_names_the_extra() -> None:
    folder = str(MODELS / "pole_piece")
    code = (
        "import sys\n"
        "sys.modules['openvino'] = None\n"
        "from pathlib import Path\n"
        "import linevision.daemon.operations\n"
        "from linevision.inference.session import ModelSession, SessionOptions\n"
        "from linevision.inference.manifest import ModelFileError\n"
        f"ModelSession(Path({folder!r}))\n"
        "try:\n"
        f"    ModelSession(Path({folder!r}), SessionOptions(backend='openvino'))\n"
        "except ModelFileError as exc:\n"
        "    print(exc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert "needs the openvino extra" in proc.stdout
