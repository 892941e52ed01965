"""pole_piece trained and tested on a folder style ``linevision synth`` never draws.

    python docs/lab/pole_piece_foreign.py write DIR N SEED   # N crops per class
    python docs/lab/pole_piece_foreign.py run WORK SEED      # train with defaults, then eval

``run`` writes 200 crops per class (seed SEED) and cuts one class to 30 (the rare class,
rotating with the seed), trains ``linevision train --station pole_piece`` with its default
options, and scores the exported model with ``linevision eval`` on 100 crops per class of
seed SEED + 1000. One JSON line per step on stdout.

The style is drawn here, not by ``linevision.synth``: 256 x 256 crops, the foil a brushed
metal band on top (or below) a woven separator, the cut edge a wavy line across the crop, and
its own defect shapes at random contrast 45-100 %: Short, 1-3 tapered spikes of 5-15 px;
Long, 1-2 bent spikes of 34-70 px; Powder, 10-40 round specks beside the edge; Other, a
crushed stretch of edge (a notch or a fold). The lighting varies by a gradient, gain, gamma,
blur and noise drawn per crop.
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

CLASSES = ("Normal", "Short", "Long", "Powder", "Other")
S = 256


def _edge_rows(rng: np.random.Generator) -> np.ndarray:
    base = rng.uniform(95, 135)
    slope = rng.uniform(-0.12, 0.12)
    x = np.arange(S, dtype=np.float32)
    wave = sum(
        rng.uniform(0.3, 1.4) * np.sin(x / rng.uniform(8, 40) + rng.uniform(0, 6.3))
        for _ in range(3)
    )
    return (base + slope * (x - S / 2) + wave).astype(np.float32)


def _background(edge: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32)
    foil_level = rng.uniform(150, 210)
    sep_level = rng.uniform(45, 95)
    brushed = cv2.GaussianBlur(
        rng.normal(0, 1, (S, S)).astype(np.float32), (0, 0), sigmaX=9.0, sigmaY=0.6
    )
    foil = foil_level + 14.0 * brushed / (brushed.std() + 1e-6)
    period = rng.uniform(5, 9)
    weave = np.sin(xx / period * 2 * np.pi) * np.sin(yy / period * 2 * np.pi)
    sep = sep_level + rng.uniform(3, 8) * weave + rng.normal(0, 2.5, (S, S))
    foil_mask = (yy < edge[None, :]).astype(np.float32)
    img = foil * foil_mask + sep * (1 - foil_mask)
    return img, foil_mask


def _spike(
    img: np.ndarray, x0: float, y0: float, length: float, level: float, rng: np.random.Generator
) -> None:
    angle = rng.uniform(-0.5, 0.5)
    bend = rng.uniform(-0.006, 0.006)
    width = rng.uniform(1.5, 3.5)
    steps = max(int(length), 2)
    for i in range(steps):
        t = i / steps
        a = angle + bend * i
        x = x0 + np.sin(a) * i
        y = y0 + np.cos(a) * i
        r = max(width * (1 - 0.8 * t) / 2, 0.5)
        cv2.circle(
            img,
            (round(x * 4), round(y * 4)),
            round(r * 4),
            level,
            -1,
            lineType=cv2.LINE_AA,
            shift=2,
        )


def _draw(label: str, rng: np.random.Generator) -> np.ndarray:
    edge = _edge_rows(rng)
    img, foil_mask = _background(edge, rng)
    clean = img.copy()
    foil_level = float(np.median(img[foil_mask > 0]))
    if label in ("Short", "Long"):
        for _ in range(rng.integers(1, 4) if label == "Short" else rng.integers(1, 3)):
            x0 = rng.uniform(20, S - 20)
            length = rng.uniform(5, 15) if label == "Short" else rng.uniform(34, 70)
            _spike(
                img, x0, float(edge[int(x0)]) - 2, length, foil_level * rng.uniform(0.9, 1.1), rng
            )
    elif label == "Powder":
        for _ in range(rng.integers(10, 41)):
            x = rng.uniform(5, S - 5)
            y = float(edge[int(x)]) + rng.uniform(-25, 30)
            level = rng.uniform(0.8, 1.2) * foil_level if y > edge[int(x)] else rng.uniform(20, 70)
            cv2.circle(
                img,
                (int(x * 4), int(y * 4)),
                int(rng.uniform(1, 3) * 4),
                level,
                -1,
                lineType=cv2.LINE_AA,
                shift=2,
            )
    elif label == "Other":
        x0 = int(rng.uniform(30, S - 80))
        w = int(rng.uniform(20, 50))
        depth = rng.uniform(8, 20)
        xs = np.arange(x0, x0 + w)
        profile = depth * np.sin(np.linspace(0, np.pi, w)) * rng.uniform(0.7, 1.0, w)
        if rng.random() < 0.5:  # a notch: foil torn away
            for x, d in zip(xs, profile, strict=True):
                y1 = int(edge[x])
                img[max(y1 - int(d), 0) : y1, x] = clean[y1 + 3 : y1 + 3 + min(int(d), y1), x][
                    : y1 - max(y1 - int(d), 0)
                ]
        else:  # a fold: the edge pushed out and shaded darker
            for x, d in zip(xs, profile, strict=True):
                y1 = int(edge[x])
                img[y1 : y1 + int(d), x] = foil_level * rng.uniform(0.55, 0.75)
    contrast = 1.0 if label == "Normal" else rng.uniform(0.45, 1.0)
    img = clean + contrast * (img - clean)
    # lighting: gradient, gain, gamma; optics: blur; sensor: noise
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32) / S
    g = 1 + rng.uniform(-0.2, 0.2) * (xx - 0.5) + rng.uniform(-0.2, 0.2) * (yy - 0.5)
    img = img * g * rng.uniform(0.8, 1.2)
    img = 255.0 * (np.clip(img, 0, 255) / 255.0) ** rng.uniform(0.8, 1.25)
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 1.2))
    img = img + rng.normal(0, rng.uniform(1.5, 6), img.shape)
    if rng.random() < 0.5:
        img = img[::-1]
    return np.clip(img, 0, 255).astype(np.uint8)


def write(folder: Path, n: int, seed: int, cut: dict[str, int] | None = None) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for label in CLASSES:
        for i in range((cut or {}).get(label, n)):
            name = f"{label.lower()}_{i:04d}.png"
            cv2.imwrite(str(folder / name), _draw(label, rng))
            rows.append((name, label))
    with (folder / "labels.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "label"])
        w.writerows(rows)


def run(work: Path, seed: int) -> None:
    rare = CLASSES[1 + seed % 4]
    train, test, out = work / f"train{seed}", work / f"test{seed}", work / f"model{seed}"
    for d in (train, test, out):
        shutil.rmtree(d, ignore_errors=True)
    write(train, 200, seed, {rare: 30})
    write(test, 100, seed + 1000)
    t0 = time.monotonic()
    assert main(["train", "--station", "pole_piece", "--data", str(train), "--out", str(out)]) == 0
    minutes = round((time.monotonic() - t0) / 60, 2)
    manifest = json.loads((out / "manifest.json").read_text())
    sys.stdout.write(
        json.dumps(
            {"seed": seed, "rare": rare, "minutes": minutes, "training": manifest.get("training")}
        )
        + "\n"
    )
    sys.stdout.flush()
    assert (
        main(
            ["eval", "--station", "pole_piece", "--data", str(test), "--model", str(out), "--json"]
        )
        == 0
    )


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    else:
        run(Path(sys.argv[2]), int(sys.argv[3]))
