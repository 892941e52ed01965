"""Master samples: a folder in the contract of docs/data.md, as the station's cameras see it.

Each sample becomes the frames its station takes, as its cameras would deliver them (after
their ROI): one image per camera in view order (six_view: ``1.png`` .. ``6.png``), decoded in
the camera's pixel format, or for a line-scan station the frame cut into its strips. The
expected verdict is the label: ``OK``/``NG``, or for pole_piece OK when the class is one of the
station's ``decision.ok_labels``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from linevision.config import CameraConfig, StationConfig
from linevision.synth.contract import DataError, read_labels
from linevision.types import Image, VerdictValue


class SampleError(ValueError):
    """A sample folder that cannot be sent through a station; the message names the file."""


@dataclass(frozen=True, slots=True)
class MasterSample:
    name: str
    """The sample's path relative to its folder (a six_view cell's folder)."""
    label: str
    expected: VerdictValue
    views: tuple[Image, ...]
    """The frames of the cell: one per camera, or the strips of a line-scan frame."""
    sha256: str
    """Of the sample's files, in view order."""


def expected_verdict(sc: StationConfig, label: str) -> VerdictValue:
    """The verdict a station must give a sample of class ``label``.

    >>> from linevision.config import StationConfig
    >>> sc = StationConfig(name="p", type="pole_piece", cameras=("c",), model="m")
    >>> expected_verdict(sc, "Normal"), expected_verdict(sc, "Long")
    ('OK', 'NG')
    """
    if sc.type == "pole_piece":
        return "OK" if label in sc.decision.ok_labels else "NG"
    return "OK" if label == "OK" else "NG"


def _read(path: Path, cam: CameraConfig) -> Image:
    flag = cv2.IMREAD_GRAYSCALE if cam.pixel_format == "Mono8" else cv2.IMREAD_COLOR
    img = cv2.imread(str(path), flag)
    if img is None:
        msg = f"{path}: not a readable image"
        raise SampleError(msg)
    out = np.asarray(img, dtype=np.uint8)
    if cam.pixel_format == "RGB8":
        out = np.asarray(cv2.cvtColor(out, cv2.COLOR_BGR2RGB), dtype=np.uint8)
    return np.ascontiguousarray(out)


def _strips(path: Path, image: Image, cam: CameraConfig) -> tuple[Image, ...]:
    """A line-scan frame cut into the strips its camera delivers."""
    assert cam.line_scan is not None
    assert cam.roi is not None
    lines, width = cam.roi.height, cam.roi.width
    n = cam.line_scan.strips_per_cell
    want = (lines * n, width)
    if image.shape[:2] != want:
        msg = (
            f"{path}: {image.shape[1]} x {image.shape[0]} px; camera {cam.id!r} makes frames "
            f"of {want[1]} x {want[0]} ({n} strips of {lines} lines)"
        )
        raise SampleError(msg)
    return tuple(np.ascontiguousarray(image[i * lines : (i + 1) * lines]) for i in range(n))


def load_samples(
    folder: Path, sc: StationConfig, cameras: tuple[CameraConfig, ...]
) -> list[MasterSample]:
    """Every sample of ``folder`` for station ``sc`` whose cameras are ``cameras``."""
    try:
        rows = read_labels(folder, sc.type)
    except DataError as exc:
        raise SampleError(str(exc)) from exc
    out: list[MasterSample] = []
    for row in rows:
        files = list(row.views) if row.views else [row.path]
        if sc.type == "six_view" and len(files) != len(cameras):
            msg = f"{row.path}: {len(files)} views for {len(cameras)} cameras"
            raise SampleError(msg)
        digest = hashlib.sha256()
        views: list[Image] = []
        for i, f in enumerate(files):
            digest.update(f.read_bytes())
            cam = cameras[min(i, len(cameras) - 1)]
            image = _read(f, cam)
            views.extend(_strips(f, image, cam) if cam.line_scan is not None else (image,))
        name = row.path.relative_to(folder).as_posix()
        out.append(
            MasterSample(
                name, row.label, expected_verdict(sc, row.label), tuple(views), digest.hexdigest()
            )
        )
    return out


def check_masters(folder: Path, samples: list[MasterSample]) -> None:
    """A challenge needs at least one OK and one NG master: a model that calls everything
    OK, or everything NG, must not pass it."""
    kinds = {s.expected for s in samples}
    if kinds != {"OK", "NG"}:
        missing = sorted({"OK", "NG"} - kinds)
        msg = f"{folder}: a challenge needs OK and NG masters; it has no {' and no '.join(missing)}"
        raise SampleError(msg)
