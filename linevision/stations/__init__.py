"""Stations: the frames of one cell -> one Decision. ``build_station`` makes any kind."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from linevision.config import CameraConfig, StationConfig
from linevision.inference.film.inspector import FilmInspector
from linevision.inference.reference import ReferenceModel
from linevision.inference.session import ModelSession, SessionOptions
from linevision.stations.base import Station
from linevision.stations.blue_film import BlueFilmStation
from linevision.stations.pole_piece import PolePieceStation
from linevision.stations.reference import ReferenceStation


@dataclass(frozen=True, slots=True)
class BuiltStation:
    """A station ready to inspect, and what it took to make it ready."""

    config: StationConfig
    station: Station
    load_ms: float
    """Reading and checking the model files, making the inference sessions."""
    warm_up_ms: float
    """The first runs (and a reference station's reference features), before any cell."""


def resolve_model_dir(path: Path, models_root: Path | None) -> Path:
    """A relative model path is looked up under ``models_root`` (default: as given)."""
    if path.is_absolute() or models_root is None:
        return path
    return models_root / path


def build_station(
    sc: StationConfig,
    models_root: Path | None,
    options: SessionOptions,
    camera: CameraConfig | None = None,
) -> BuiltStation:
    """Load, verify and warm a station's model; reference features are computed here.

    ``camera`` is the station's (first) camera: a blue_film frame's size comes from it.
    """
    model_dir = resolve_model_dir(sc.model, models_root)
    options = options.for_station(sc)
    if sc.type == "blue_film":
        return _build_blue_film(sc, model_dir, options, camera)
    if sc.type == "pole_piece":
        session = ModelSession(model_dir, options)
        warm = session.warm_up((1,))
        station: Station = PolePieceStation(sc.name, session, sc.decision)
        return BuiltStation(sc, station, session.load_ms, warm)
    t0 = time.perf_counter()
    model = ReferenceModel(model_dir, options)
    load_ms = (time.perf_counter() - t0) * 1000.0
    assert sc.reference is not None
    ref_station = ReferenceStation(
        sc.name, sc.type, model, sc.cameras, sc.reference, sc.assembly_ms
    )
    return BuiltStation(sc, ref_station, load_ms, ref_station.reference_ms)


def _build_blue_film(
    sc: StationConfig, model_dir: Path, options: SessionOptions, camera: CameraConfig | None
) -> BuiltStation:
    if camera is None or camera.line_scan is None or camera.roi is None:
        msg = f"station {sc.name!r}: a blue_film station needs its line-scan camera's config"
        raise ValueError(msg)
    strips = camera.line_scan.strips_per_cell
    height, width = camera.roi.height * strips, camera.roi.width
    t0 = time.perf_counter()
    # the second stage runs on few windows, but those of the last band are on the critical
    # path after the last line: its sessions may use two threads
    threads = max(2, options.intra_op_threads)
    inspector = FilmInspector(
        model_dir,
        height,
        width,
        threads=threads,
        graph_optimization=options.graph_optimization,
        options=options,
    )
    load_ms = (time.perf_counter() - t0) * 1000.0
    warm_ms = inspector.warm_up()
    strip_ms = camera.strip_period_s() * 1000.0
    station = BlueFilmStation(
        sc.name, inspector, strips, strips * strip_ms + sc.assembly_ms, part_slack_ms=strip_ms
    )
    return BuiltStation(sc, station, load_ms, warm_ms)
