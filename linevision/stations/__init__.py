"""Stations: the frames of one cell -> one Decision. ``build_station`` makes any kind."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from linevision.config import StationConfig
from linevision.inference.reference import ReferenceModel
from linevision.inference.session import ModelSession, SessionOptions
from linevision.scheduler import Station
from linevision.stations.pole_piece import PolePieceStation
from linevision.stations.reference import ReferenceStation
from linevision.types import ModelRef


@dataclass(frozen=True, slots=True)
class BuiltStation:
    config: StationConfig
    station: Station
    ref: ModelRef
    load_ms: float
    warm_up_ms: float


def resolve_model_dir(path: Path, models_root: Path | None) -> Path:
    """A relative model path is looked up under ``models_root`` (default: as given)."""
    if path.is_absolute() or models_root is None:
        return path
    return models_root / path


def build_station(
    sc: StationConfig, models_root: Path | None, options: SessionOptions
) -> BuiltStation:
    """Load, verify and warm a station's model; reference features are computed here."""
    model_dir = resolve_model_dir(sc.model, models_root)
    if sc.type == "pole_piece":
        session = ModelSession(model_dir, options)
        warm = session.warm_up((1,))
        station: Station = PolePieceStation(sc.name, session, sc.decision)
        return BuiltStation(sc, station, session.ref, session.load_ms, warm)
    t0 = time.perf_counter()
    model = ReferenceModel(model_dir, options)
    load_ms = (time.perf_counter() - t0) * 1000.0
    assert sc.reference is not None
    ref_station = ReferenceStation(
        sc.name, sc.type, model, sc.cameras, sc.reference, sc.assembly_ms
    )
    return BuiltStation(sc, ref_station, model.ref, load_ms, ref_station.reference_ms)
