"""Held-out figures of the comparison stations' anomaly mode (docs/training.md, "Anomaly mode").

    python docs/lab/anomaly_heldout.py seal WORK SEED      # seal_edge: synth + foreign style
    python docs/lab/anomaly_heldout.py six WORK DESIGN     # six_view: one unseen design
    python docs/lab/anomaly_heldout.py foreign6 WORK SEED  # six_view: the foreign folder style
    python docs/lab/anomaly_heldout.py seal_sup WORK SEED  # seal_edge supervised, foreign style

Every model is trained with ``linevision train`` and its default options on good cells only;
the "+NG" rows train again with some NG cells of two kinds added and test every kind. Each
test folder is scored through the runtime (``ReferenceModel``, as the station does); the
figures are NG recall and OK false reject at the model's own threshold, and the recall at
the highest threshold that keeps OK false reject <= 0.02 on the test folder (an upper bound:
the threshold is chosen on the test cells). One JSON line per row on stdout.

The foreign seal style is drawn here, not by ``linevision.synth``: another band layout,
diagonal embossing instead of a checker, a lighting falloff, other noise, and its own defect
shapes (blot, scratch, edge notch, narrowing, blister) at random contrast.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from linevision.cli import main
from linevision.inference.reference import ReferenceModel
from linevision.inference.session import SessionOptions
from linevision.train._cells import load_cells
from linevision.train.anomaly_eval import folder_scores

FR = 0.02
SEAL_KINDS = ("blot", "scratch", "notch", "narrowing", "blister")


def _figures(model_dir: Path, data: Path, station: str) -> dict[str, object]:
    model = ReferenceModel(model_dir, SessionOptions(intra_op_threads=2))
    assert model.anomaly is not None
    cells = load_cells(data, station)
    u = folder_scores(model, cells)
    y = cells.labels == 1
    with (data / "labels.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    kinds = [r.get("kind") or r["label"] for r in rows]
    t = model.anomaly.threshold
    ok = np.sort(u[~y])
    # the highest threshold with at most 2 % of the OK cells at or over it
    allowed = int(np.floor(FR * len(ok)))
    t_fr = float(ok[len(ok) - allowed - 1]) + 1e-9 if len(ok) else float("inf")
    per_kind = {
        k: round(float(np.mean(u[[i for i, kk in enumerate(kinds) if kk == k]] >= t)), 3)
        for k in sorted(set(kinds))
        if k != "OK"
    }
    return {
        "ok": int((~y).sum()),
        "ng": int(y.sum()),
        "recall": round(float(np.mean(u[y] >= t)), 4),
        "false_reject": round(float(np.mean(u[~y] >= t)), 4),
        "recall_at_fr_0.02": round(float(np.mean(u[y] >= t_fr)), 4),
        "per_kind": per_kind,
    }


def _train(data: Path, out: Path, station: str) -> float:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.monotonic()
    code = main(["train", "--station", station, "--data", str(data), "--out", str(out)])
    assert code == 0, code
    return round((time.monotonic() - t0) / 60.0, 2)


def _row(**fields: object) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def _synth(*args: str) -> None:
    assert main(["synth", *args]) == 0


def _with_ng(good: Path, ng: Path, out: Path, kinds: set[str], n: int) -> Path:
    """A copy of ``good`` plus ``n`` NG cells of ``kinds`` from ``ng`` (same product)."""
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(good, out)
    with (ng / "labels.csv").open() as fh:
        reader = csv.DictReader(fh)
        fields = list(reader.fieldnames or [])
        picked = [r for r in reader if r["label"] == "NG" and r.get("kind") in kinds][:n]
    key = fields[0]
    for r in picked:
        src = ng / r[key]
        dst = out / ("ng_" + r[key].replace("/", "_"))
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copy(src, dst)
        r[key] = dst.name
    with (out / "labels.csv").open("a", newline="") as fh:
        csv.DictWriter(fh, fields).writerows(picked)
    return out


# --- seal_edge -----------------------------------------------------------------------------


def _seal_scene(rng: np.random.Generator) -> dict[str, float]:
    return {
        "top": 30 + rng.uniform(-4, 4),
        "bottom": 92 + rng.uniform(-4, 4),
        "angle": rng.uniform(-0.7, 0.7),
        "gain": rng.uniform(0.85, 1.15),
        "offset": rng.uniform(-10, 10),
        "falloff": rng.uniform(0.1, 0.3),
        "phase": rng.uniform(0, 12),
    }


def _seal_render(scene: dict[str, float], rng: np.random.Generator, *, clean: bool) -> np.ndarray:
    h, w = 128, 512
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.full((h, w), 205.0, np.float32)  # foil above the seal
    img += 6 * np.sin(xx / 37.0)
    top, bottom = scene["top"], scene["bottom"]
    band = (yy >= top) & (yy < bottom)
    emboss = 118 + 14 * np.sign(np.sin((xx + yy + scene["phase"]) * 2 * np.pi / 12))
    img = np.where(band, emboss, img)
    img = np.where(yy >= bottom, 55 + 0.1 * (yy - bottom), img)  # the pouch below
    img = np.where(np.abs(yy - bottom) < 1.5, 235, img)  # the seal's lower edge glints
    img = cv2.GaussianBlur(img, (0, 0), 0.8)
    centre = w / 2 + rng.uniform(-60, 60)
    img *= 1 - scene["falloff"] * ((xx - centre) / w) ** 2 * 4
    m = cv2.getRotationMatrix2D((w / 2, h / 2), scene["angle"], 1.0)
    img = cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
    if not clean:
        img = img * scene["gain"] + scene["offset"] + rng.normal(0, 3.0, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _seal_defect(
    img: np.ndarray, kind: str, scene: dict[str, float], rng: np.random.Generator
) -> np.ndarray:
    out = img.astype(np.float32)
    h, w = out.shape
    top, bottom = int(scene["top"]), int(scene["bottom"])
    x = int(rng.integers(40, w - 40))
    contrast = rng.uniform(0.35, 1.0)
    mask = np.zeros((h, w), np.float32)
    if kind == "blot":
        y = int(rng.integers(top + 4, bottom - 4))
        cv2.ellipse(
            mask,
            (x, y),
            (int(rng.integers(2, 7)), int(rng.integers(2, 6))),
            float(rng.uniform(0, 180)),
            0,
            360,
            1.0,
            -1,
        )
        out -= contrast * 90 * cv2.GaussianBlur(mask, (0, 0), 0.7)
    elif kind == "scratch":
        y = int(rng.integers(top + 4, bottom - 4))
        length = int(rng.integers(20, 60))
        dy = int(rng.integers(-6, 7))
        cv2.line(mask, (x, y), (x + length, y + dy), 1.0, 1)
        out += contrast * 80 * mask
    elif kind == "notch":
        depth = int(rng.integers(4, 11))
        half = int(rng.integers(3, 8))
        pts = np.array([[x - half, bottom], [x + half, bottom], [x, bottom - depth]], np.int32)
        cv2.fillPoly(mask, [pts], 1.0)
        out = out * (1 - mask) + (55 + (1 - contrast) * 60) * mask
    elif kind == "narrowing":
        length = int(rng.integers(60, 150))
        cut = int(rng.integers(5, 11))
        cv2.rectangle(mask, (x - length // 2, bottom - cut), (x + length // 2, bottom), 1.0, -1)
        mask = cv2.GaussianBlur(mask, (0, 0), 2.0)
        out = out * (1 - mask) + (55 + (1 - contrast) * 60) * mask
    elif kind == "blister":
        y = int(rng.integers(top + 8, bottom - 8))
        r = int(rng.integers(4, 9))
        cv2.circle(mask, (x, y), r, 1.0, -1)
        ring = cv2.circle(np.zeros_like(mask), (x, y), r, 1.0, 1)
        out += contrast * (40 * cv2.GaussianBlur(mask, (0, 0), 1.5) - 50 * ring)
    return np.clip(out, 0, 255).astype(np.uint8)


def write_seal(folder: Path, n_ok: int, n_ng: int, seed: int) -> None:
    """A seal-edge folder in the contract's layout, drawn in the foreign style."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    nominal = {
        "top": 30,
        "bottom": 92,
        "angle": 0,
        "gain": 1,
        "offset": 0,
        "falloff": 0.2,
        "phase": 0,
    }
    cv2.imwrite(
        str(folder / "reference.png"), _seal_render(nominal, np.random.default_rng(0), clean=True)
    )
    rows = []
    for i in range(n_ok + n_ng):
        rng = np.random.default_rng([seed, i])
        kind = "OK" if i < n_ok else SEAL_KINDS[i % len(SEAL_KINDS)]
        scene = _seal_scene(rng)
        img = _seal_render(scene, rng, clean=False)
        if kind != "OK":
            img = _seal_defect(img, kind, scene, rng)
        name = f"images/{i:05d}_{kind}.png"
        cv2.imwrite(str(folder / name), img)
        rows.append((name, "OK" if kind == "OK" else "NG", kind))
    with (folder / "labels.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([("image", "label", "kind"), *rows])


def seal(work: Path, seed: int) -> None:
    st = "seal_edge"
    good, test = work / "good", work / "test"
    for f in (good, test):
        shutil.rmtree(f, ignore_errors=True)
    _synth(
        "--station", st, "--out", str(good), "--n", "200", "--seed", str(seed), "--ng-fraction", "0"
    )
    _synth("--station", st, "--out", str(test), "--n", "400", "--seed", str(seed + 1))
    minutes = _train(good, work / "m", st)
    _row(
        station=st,
        style="synth",
        seed=seed,
        train="200 OK",
        minutes=minutes,
        **_figures(work / "m", test, st),
    )
    ng = work / "ng"
    _synth("--station", st, "--out", str(ng), "--n", "240", "--seed", str(seed + 2))
    plus = _with_ng(good, ng, work / "good_ng", {"crack", "bubble"}, 40)
    minutes = _train(plus, work / "m_ng", st)
    _row(
        station=st,
        style="synth",
        seed=seed,
        train="200 OK + 40 NG (crack, bubble)",
        minutes=minutes,
        **_figures(work / "m_ng", test, st),
    )
    fgood, ftest = work / "fgood", work / "ftest"
    for f in (fgood, ftest):
        shutil.rmtree(f, ignore_errors=True)
    write_seal(fgood, 200, 0, seed)
    write_seal(ftest, 200, 200, seed + 1)
    minutes = _train(fgood, work / "fm", st)
    _row(
        station=st,
        style="foreign",
        seed=seed,
        train="200 OK",
        minutes=minutes,
        **_figures(work / "fm", ftest, st),
    )
    fng = work / "fng"
    shutil.rmtree(fng, ignore_errors=True)
    write_seal(fng, 0, 100, seed + 2)
    plus = _with_ng(fgood, fng, work / "fgood_ng", {"blot", "notch"}, 40)
    minutes = _train(plus, work / "fm_ng", st)
    _row(
        station=st,
        style="foreign",
        seed=seed,
        train="200 OK + 40 NG (blot, notch)",
        minutes=minutes,
        **_figures(work / "fm_ng", ftest, st),
    )


def seal_sup(work: Path, seed: int) -> None:
    """The foreign seal style with 300 good and 300 NG strips: ``auto`` trains supervised."""
    st = "seal_edge"
    train, test, out = work / f"sup_train{seed}", work / f"sup_test{seed}", work / f"sup_m{seed}"
    for f in (train, test):
        shutil.rmtree(f, ignore_errors=True)
    write_seal(train, 300, 300, seed)
    write_seal(test, 200, 200, seed + 1)
    minutes = _train(train, out, st)
    manifest = json.loads((out / "manifest.json").read_text())
    _row(
        station=st,
        style="foreign",
        seed=seed,
        train="300 OK + 300 NG",
        minutes=minutes,
        training=manifest.get("training"),
    )
    assert main(["eval", "--station", st, "--data", str(test), "--model", str(out), "--json"]) == 0


# --- six_view ------------------------------------------------------------------------------


def six(work: Path, design: int) -> None:
    st = "six_view"
    good, test = work / f"good{design}", work / f"test{design}"
    for f in (good, test):
        shutil.rmtree(f, ignore_errors=True)
    _synth("--station", st, "--out", str(test), "--n", "200", "--seed", str(design))
    _synth(
        "--station",
        st,
        "--out",
        str(good),
        "--n",
        "50",
        "--ng-fraction",
        "0",
        "--design-seed",
        str(design),
        "--seed",
        str(100000 + design),
    )
    minutes = _train(good, work / f"m{design}", st)
    _row(
        station=st,
        style="synth",
        design=design,
        train="50 OK",
        minutes=minutes,
        **_figures(work / f"m{design}", test, st),
    )


def six_ng(work: Path, design: int) -> None:
    st = "six_view"
    good, test = work / f"good{design}", work / f"test{design}"
    ng = work / f"ng{design}"
    shutil.rmtree(ng, ignore_errors=True)
    _synth(
        "--station",
        st,
        "--out",
        str(ng),
        "--n",
        "120",
        "--ng-fraction",
        "1",
        "--design-seed",
        str(design),
        "--seed",
        str(200000 + design),
    )
    plus = _with_ng(good, ng, work / f"good_ng{design}", {"stain", "scratch"}, 20)
    minutes = _train(plus, work / f"m_ng{design}", st)
    _row(
        station=st,
        style="synth",
        design=design,
        train="50 OK + 20 NG (stain, scratch)",
        minutes=minutes,
        **_figures(work / f"m_ng{design}", test, st),
    )


def foreign6(work: Path, seed: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.train import test_six_view_foreign as foreign  # noqa: PLC0415

    st = "six_view"
    data = work / f"foreign{seed}"
    shutil.rmtree(data, ignore_errors=True)
    foreign.CELLS = 300
    foreign._write_folder(data, seed)  # noqa: SLF001  (the test's own folder writer, reused)
    good = work / f"foreign_good{seed}"
    shutil.rmtree(good, ignore_errors=True)
    good.mkdir()
    shutil.copytree(data / "reference", good / "reference")
    with (data / "labels.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    train_rows = [r for r in rows if r["label"] == "OK"][:50]
    for r in train_rows:
        shutil.move(str(data / r["cell"]), good / r["cell"])
    with (good / "labels.csv").open("w", newline="") as fh:
        csv.DictWriter(fh, ["cell", "label"]).writeheader()
        csv.DictWriter(fh, ["cell", "label"]).writerows(train_rows)
    kept = [r for r in rows if r not in train_rows]
    with (data / "labels.csv").open("w", newline="") as fh:
        csv.DictWriter(fh, ["cell", "label"]).writeheader()
        csv.DictWriter(fh, ["cell", "label"]).writerows(kept)
    minutes = _train(good, work / f"fm{seed}", st)
    _row(
        station=st,
        style="foreign",
        seed=seed,
        train="50 OK",
        minutes=minutes,
        **_figures(work / f"fm{seed}", data, st),
    )


if __name__ == "__main__":
    what, where, number = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    where.mkdir(parents=True, exist_ok=True)
    {"seal": seal, "six": six, "six_ng": six_ng, "foreign6": foreign6, "seal_sup": seal_sup}[what](
        where, number
    )
