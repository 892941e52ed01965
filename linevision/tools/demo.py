"""The embedded demo: emulated pylon cameras serving generated images to all four stations.

``linevision run`` without a configuration starts it: pole_piece (one camera, 20 images/s),
seal_edge (one camera, 4 cells/s), six_view (six cameras, 2 cells/s) and blue_film (one
line-scan camera, 4000 x 18000 BGR frames in strips of 1000 lines at 40,000 lines/s, one
frame/s), each on an emulated Basler camera in file mode, with software triggers on one grid.
The images are generated once into the cache folder (about 0.5 GB, most of it film strips).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from linevision.config import Config
from linevision.paths import state_dir
from linevision.synth import blue_film, pole_piece, seal_edge, six_view

DEMO_IMAGES = 60
DEMO_SEED = 20261124


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "linevision" / "demo"


def find_models_root() -> Path:
    """``$LINEVISION_MODELS``, else ``models/`` beside the package (source checkout), else cwd."""
    env = os.environ.get("LINEVISION_MODELS")
    if env:
        return Path(env)
    beside = Path(__file__).resolve().parent.parent / "models"
    if beside.is_dir():
        return beside
    return Path.cwd() / "models"


def ensure_pole_piece_images(folder: Path, count: int = DEMO_IMAGES, seed: int = DEMO_SEED) -> Path:
    """Write ``count`` generated images (mixed classes, mostly Normal) once; reuse after."""

    def write(out: Path) -> None:
        rng = np.random.default_rng(seed)
        weights = np.array([0.6, 0.1, 0.1, 0.1, 0.1])
        for i in range(count):
            label = pole_piece.CLASSES[int(rng.choice(len(pole_piece.CLASSES), p=weights))]
            cv2.imwrite(str(out / f"{i:04d}_{label}.png"), pole_piece.generate(label, rng))

    return _once(folder, f"{count}-{seed}", write)


def demo_config(images: Path, rate_hz: float = 20.0) -> Config:
    return Config.model_validate(
        {
            "cameras": [
                {
                    "id": "pole_piece_cam",
                    "backend": "pylon",
                    "device": {"serial": "0815-0000"},
                    "pixel_format": "Mono8",
                    "trigger": {"mode": "software", "rate_hz": rate_hz},
                    "grab_timeout_ms": 500,
                    "emulation": {"image_path": str(images), "frame_period_us": 2000},
                }
            ],
            "stations": [
                {
                    "name": "pole_piece",
                    "type": "pole_piece",
                    "cameras": ["pole_piece_cam"],
                    "model": "pole_piece",
                    "deadline_ms": 30,
                }
            ],
        }
    )


RATED_HZ = {"pole_piece": 20.0, "seal_edge": 4.0, "six_view": 2.0, "blue_film": 1.0}
"""Rated load on the 2-core reference machine: images (pole_piece) or cells per second."""
DEVICES = 9
REPLAY_ENDPOINT = "tcp://127.0.0.1:5557"
"""The replay endpoint's documented default (docs/protocol.md)."""
"""Emulated cameras the four-station demo uses (1 + 1 + 6 + 1)."""
LINE_RATE_HZ = 40_000.0
SIX_VIEW_STAGGER_MS = 30.0
"""The six_view cell passes six camera positions, one every 30 ms (faces first, edges after)."""
STATION_OFFSETS_MS = {"pole_piece": 0.0, "six_view": 5.0, "blue_film": 12.5, "seal_edge": 25.0}
"""Where each station's (first) camera triggers on the shared grid. The stations stand at
different places along the line, so their cells do not reach the cameras at the same instant;
with every offset 0 each seal_edge image, pole_piece image and film strip of a slot is
triggered together (the worst case, ``linevision bench --aligned-triggers``)."""


@dataclass(frozen=True)
class FilmSize:
    width: int = blue_film.WIDTH
    lines: int = blue_film.HEIGHT
    strip_lines: int = 1000

    @property
    def strips(self) -> int:
        return self.lines // self.strip_lines


@dataclass(frozen=True)
class DemoData:
    """Where the generated images of each station are served from."""

    pole_piece: Path
    seal_images: Path
    seal_reference: Path
    six_views: tuple[Path, ...]
    six_reference: Path
    film_strips: Path
    film: FilmSize


def _once(folder: Path, key: str, build: Callable[[Path], None]) -> Path:
    """Run ``build(folder)`` unless the folder's marker says it completed for ``key``.

    The marker lives beside the folder (the emulator serves every file inside it) and holds
    the key the folder was built for: one marker per folder, so a folder rebuilt for another
    key (another film size) is never taken for an earlier one. An interrupted build leaves
    no marker and is redone from an empty folder.
    """
    marker = folder.parent / f".{folder.name}-complete"
    if not marker.is_file() or marker.read_text() != key:
        marker.unlink(missing_ok=True)
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        build(folder)
        marker.write_text(key)
    return folder


def _write_seal(folder: Path) -> None:
    seal_edge.write_dataset(folder, 24, seed=DEMO_SEED)


def _write_six(folder: Path) -> None:
    data = folder / "cells"
    six_view.write_dataset(data, 12, seed=DEMO_SEED)
    cells = sorted(p for p in data.iterdir() if p.is_dir() and p.name != "reference")
    for view in six_view.VIEWS:
        serve = folder / f"view{view}"
        serve.mkdir()
        for i, cell in enumerate(cells):
            shutil.copy(cell / f"{view}.png", serve / f"{i:04d}.png")
    shutil.copytree(data / "reference", folder / "reference")


def film_frames(size: FilmSize, seed: int = DEMO_SEED) -> list[blue_film.FilmImage]:
    """The demo's film: a good frame, then one with a white spot and a film break."""
    rng = np.random.default_rng([seed, 3])
    good = blue_film.generate_frame(rng, width=size.width, height=size.lines)
    bad = blue_film.generate_frame(rng, ("white", "break"), width=size.width, height=size.lines)
    return [good, bad]


def write_strips(folder: Path, frames: list[blue_film.FilmImage], strip_lines: int) -> None:
    """Each frame as BMP strips of ``strip_lines`` lines, named so that name order is frame
    order, then strip order (the emulator serves a folder's files in name order)."""
    for c, frame in enumerate(frames):
        for s in range(frame.image.shape[0] // strip_lines):
            strip = frame.image[s * strip_lines : (s + 1) * strip_lines]
            if not cv2.imwrite(str(folder / f"{c:03d}_{s:03d}.bmp"), strip):
                msg = f"cannot write {folder}"
                raise OSError(msg)


def _film_writer(size: FilmSize) -> Callable[[Path], None]:
    def write(folder: Path) -> None:
        write_strips(folder, film_frames(size), size.strip_lines)

    return write


def demo_data_paths(root: Path, film: FilmSize | None = None) -> DemoData:
    """Where ``ensure_demo_data`` puts the images (nothing is generated)."""
    film = film or FilmSize()
    return DemoData(
        pole_piece=root / "pole_piece",
        seal_images=root / "seal_edge" / "images",
        seal_reference=root / "seal_edge" / "reference.png",
        six_views=tuple(root / "six_view" / f"view{v}" for v in six_view.VIEWS),
        six_reference=root / "six_view" / "reference",
        film_strips=root / "blue_film",
        film=film,
    )


def ensure_demo_data(root: Path, film: FilmSize | None = None) -> DemoData:
    """Generate (once) and return the images of all four stations under ``root``."""
    data = demo_data_paths(root, film)
    size = data.film
    if size.lines % size.strip_lines:
        msg = f"film lines {size.lines} are not a whole number of {size.strip_lines}-line strips"
        raise ValueError(msg)
    ensure_pole_piece_images(data.pole_piece)
    _once(root / "seal_edge", f"{DEMO_SEED}", _write_seal)
    _once(root / "six_view", f"{DEMO_SEED}", _write_six)
    key = f"{DEMO_SEED}-{size.width}x{size.lines}-{size.strip_lines}"
    _once(data.film_strips, key, _film_writer(size))
    return data


def _emulated(
    cam_id: str, serial: int, image_path: Path, rate_hz: float, offset_ms: float = 0.0
) -> dict[str, object]:
    return {
        "id": cam_id,
        "backend": "pylon",
        "device": {"serial": f"0815-{serial:04d}"},
        "pixel_format": "Mono8",
        "trigger": {"mode": "software", "rate_hz": rate_hz, "offset_ms": offset_ms},
        "grab_timeout_ms": 500,
        "max_buffers": 4,
        "emulation": {"image_path": str(image_path), "frame_period_us": 1000},
    }


def four_station_config(
    data: DemoData,
    rated: dict[str, float] | None = None,
    stations: tuple[str, ...] = (),
    six_view_stagger_ms: float = SIX_VIEW_STAGGER_MS,
    offsets_ms: dict[str, float] | None = None,
) -> Config:
    """All four stations on emulated cameras (or only ``stations``), at ``rated`` load.

    Each station's cameras trigger ``offsets_ms[station]`` into the grid (default
    ``STATION_OFFSETS_MS``). The six_view cameras sit at six positions along the line:
    camera k sees a cell ``k * six_view_stagger_ms`` after the first (0: all six at once).
    """
    rate = {**RATED_HZ, **(rated or {})}
    offsets = STATION_OFFSETS_MS if offsets_ms is None else offsets_ms

    def offset(station: str) -> float:
        return offsets.get(station, 0.0)

    wanted = stations or tuple(RATED_HZ)
    cameras: list[dict[str, object]] = []
    entries: list[dict[str, object]] = []
    if "pole_piece" in wanted:
        cameras.append(
            _emulated(
                "pole_piece_cam", 0, data.pole_piece, rate["pole_piece"], offset("pole_piece")
            )
        )
        entries.append(
            {
                "name": "pole_piece",
                "type": "pole_piece",
                "cameras": ["pole_piece_cam"],
                "model": "pole_piece",
                "deadline_ms": 30,
            }
        )
    if "seal_edge" in wanted:
        cameras.append(
            _emulated("seal_cam", 1, data.seal_images, rate["seal_edge"], offset("seal_edge"))
        )
        entries.append(
            {
                "name": "seal_edge",
                "type": "seal_edge",
                "cameras": ["seal_cam"],
                "model": "seal_edge",
                "reference": str(data.seal_reference),
                "deadline_ms": 30,
            }
        )
    if "six_view" in wanted:
        six = [
            _emulated(
                f"six_{i + 1}",
                2 + i,
                folder,
                rate["six_view"],
                offset("six_view") + i * six_view_stagger_ms,
            )
            for i, folder in enumerate(data.six_views)
        ]
        cameras += six
        entries.append(
            {
                "name": "six_view",
                "type": "six_view",
                "cameras": [c["id"] for c in six],
                "model": "six_view",
                "reference": str(data.six_reference),
                "deadline_ms": 30,
                "assembly_ms": 200,
            }
        )
    if "blue_film" in wanted:
        film = _emulated("film_cam", 8, data.film_strips, rate["blue_film"], offset("blue_film"))
        film.update(
            pixel_format="BGR8",
            roi={"width": data.film.width, "height": data.film.strip_lines},
            line_scan={"strips_per_cell": data.film.strips, "line_rate_hz": LINE_RATE_HZ},
        )
        film["emulation"] = {"image_path": str(data.film_strips), "frame_period_us": 500}
        cameras.append(film)
        entries.append(
            {
                "name": "blue_film",
                "type": "blue_film",
                "cameras": ["film_cam"],
                "model": "blue_film",
                "deadline_ms": 30,
                "assembly_ms": 200,
            }
        )
    return Config.model_validate({"cameras": cameras, "stations": entries})


def prepare_emulation(devices: int = 1) -> None:
    """Expose emulated Basler cameras; must run before pypylon's factory is first used."""
    os.environ.setdefault("PYLON_CAMEMU", str(devices))


def with_delivery(cfg: Config, state: Path | None = None, replay: str = REPLAY_ENDPOINT) -> Config:
    """The demo as a deployment runs it: the journal on disk and the replay endpoint on.

    The journal is ``journal.db`` in the state folder (``$STATE_DIRECTORY`` under systemd,
    else ``$XDG_STATE_HOME/linevision``), so bridges recover gaps from ``make run`` as is.
    """
    folder = state_dir() if state is None else state
    bus = cfg.bus.model_copy(update={"replay": replay})
    data = cfg.model_dump()
    data["bus"] = bus.model_dump()
    data["journal"] = {"path": folder / "journal.db"}
    return Config.model_validate(data)
