"""blue_film trained on a few good frames of a style ``linevision synth`` never draws.

    python docs/lab/blue_film_foreign.py write DIR N_OK N_NG SEED
    python docs/lab/blue_film_foreign.py run WORK SEED   # train on 10 good frames, then eval

``run`` writes 10 good frames (seed SEED) and a test folder of 10 good and 10 NG frames with
masks (seed SEED + 1000), trains ``linevision train --station blue_film`` with its default
options on the good frames (no NG frame, so no segmentation network), and scores the model
with ``linevision eval --json``. One JSON line per step on stdout.

The style: 2048 x 2048 frames of a cyan-blue film with grain streaked along the scan line,
a slow mottle, soft diagonal wrinkles, a per-column gain pattern, a gain drift from line to
line, light falloff towards both edges and sensor noise. Every defect keeps the film's own
hue (it scales all three channels alike): dark and light spots, a bubble (a bright rim
around a duller centre), a crease (a sharp ridge, light on one side and dark on the other)
and a thin break (a 1-2 px line darker or lighter than the film).
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

SIDE = 2048
KINDS = ("dark_spot", "light_spot", "bubble", "crease", "thin_break")


def _good(rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32)
    grain = cv2.GaussianBlur(
        rng.normal(0, 1, (SIDE, SIDE)).astype(np.float32), (0, 0), sigmaX=4.0, sigmaY=0.7
    )
    mottle = cv2.resize(
        rng.normal(0, 1, (16, 16)).astype(np.float32), (SIDE, SIDE), interpolation=cv2.INTER_CUBIC
    )
    gain = 1 + 0.03 * mottle + 0.02 * grain / (grain.std() + 1e-6)
    for _ in range(rng.integers(2, 5)):  # soft wrinkles
        angle = rng.uniform(0, np.pi)
        d = (xx - rng.uniform(0, SIDE)) * np.cos(angle) + (yy - rng.uniform(0, SIDE)) * np.sin(
            angle
        )
        width = rng.uniform(15, 40)
        gain += rng.uniform(-0.06, 0.06) * (d / width) * np.exp(-((d / width) ** 2))
    gain *= 1 + 0.02 * rng.normal(0, 1, (1, SIDE)).astype(np.float32)  # column pattern
    gain *= 1 + 0.03 * np.sin(yy[:, :1] / rng.uniform(150, 400) + rng.uniform(0, 6))  # drift
    gain *= 1 - 0.15 * ((xx[:1] - SIDE / 2) / (SIDE / 2)) ** 2  # falloff
    colour = np.array(
        [rng.uniform(175, 200), rng.uniform(120, 145), rng.uniform(30, 55)], np.float32
    )
    return gain[..., None] * colour


def _defect(img: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Scale the film's brightness in place; the defect's mask (bool)."""
    m = 60
    cy, cx = int(rng.uniform(m, SIDE - m)), int(rng.uniform(m, SIDE - m))
    factor = np.ones((SIDE, SIDE), np.float32)
    shape = np.zeros((SIDE, SIDE), np.uint8)
    if kind in ("dark_spot", "light_spot"):
        axes = (int(rng.uniform(3, 12)), int(rng.uniform(3, 12)))
        cv2.ellipse(shape, (cx, cy), axes, rng.uniform(0, 180), 0, 360, 1, -1)
        scale = rng.uniform(0.55, 0.8) if kind == "dark_spot" else rng.uniform(1.25, 1.5)
        factor[shape > 0] = scale
    elif kind == "bubble":
        r = int(rng.uniform(6, 18))
        cv2.circle(shape, (cx, cy), r, 1, -1)
        factor[shape > 0] = 0.9
        rim = np.zeros_like(shape)
        cv2.circle(rim, (cx, cy), r, 1, 2)
        factor[rim > 0] = rng.uniform(1.25, 1.4)
    else:
        length = rng.uniform(80, 400) if kind == "crease" else rng.uniform(100, 300)
        a = rng.uniform(0, np.pi)
        p0 = (int(cx - np.cos(a) * length / 2), int(cy - np.sin(a) * length / 2))
        p1 = (int(cx + np.cos(a) * length / 2), int(cy + np.sin(a) * length / 2))
        if kind == "crease":
            light = np.zeros_like(shape)
            cv2.line(light, p0, p1, 1, 2)
            off = (round(-np.sin(a) * 2), round(np.cos(a) * 2))
            cv2.line(
                shape, (p0[0] + off[0], p0[1] + off[1]), (p1[0] + off[0], p1[1] + off[1]), 1, 2
            )
            c = rng.uniform(0.2, 0.3)
            factor[shape > 0] = 1 - c
            factor[light > 0] = 1 + c
            shape |= light
        else:
            cv2.line(shape, p0, p1, 1, int(rng.integers(1, 3)))
            factor[shape > 0] = rng.uniform(0.55, 0.7) if rng.random() < 0.5 else 1.4
    img *= factor[..., None]
    return shape > 0


def write(folder: Path, n_ok: int, n_ng: int, seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_ok + n_ng):
        rng = np.random.default_rng([seed, i])
        img = _good(rng)
        mask = np.zeros((SIDE, SIDE), bool)
        kinds = []
        if i >= n_ok:
            for _ in range(rng.integers(1, 4)):
                kind = KINDS[int(rng.integers(len(KINDS)))]
                mask |= _defect(img, kind, rng)
                kinds.append(kind)
        img += rng.normal(0, rng.uniform(2, 3), img.shape).astype(np.float32)
        name = f"f{i:03d}.png"
        cv2.imwrite(str(folder / name), np.clip(img, 0, 255).astype(np.uint8))
        mask_name = ""
        if kinds:
            mask_name = f"f{i:03d}_mask.png"
            cv2.imwrite(str(folder / mask_name), mask.astype(np.uint8) * 255)
        rows.append((name, "NG" if kinds else "OK", mask_name, "+".join(kinds) or "OK"))
    with (folder / "labels.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([("image", "label", "mask", "kind"), *rows])


def run(work: Path, seed: int) -> None:
    train, test, out = work / f"train{seed}", work / f"test{seed}", work / f"model{seed}"
    for d in (train, test, out):
        shutil.rmtree(d, ignore_errors=True)
    write(train, 10, 0, seed)
    write(test, 10, 10, seed + 1000)
    t0 = time.monotonic()
    assert main(["train", "--station", "blue_film", "--data", str(train), "--out", str(out)]) == 0
    minutes = round((time.monotonic() - t0) / 60, 2)
    sys.stdout.write(json.dumps({"seed": seed, "minutes": minutes}) + "\n")
    sys.stdout.flush()
    assert (
        main(["eval", "--station", "blue_film", "--data", str(test), "--model", str(out), "--json"])
        == 0
    )


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    else:
        run(Path(sys.argv[2]), int(sys.argv[3]))
