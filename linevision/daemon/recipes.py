"""Product recipes: per station a model, a decision rule and reference images, switched live.

A recipe is ``<recipes.dir>/<name>.yaml``::

    name: cell_21700
    description: 21700 cylindrical, NMC
    stations:
      pole_piece:
        model: pole_piece_21700        # model folder (relative: under --models)
        decision: {min_ok_score: 0.6}
        reference: /etc/linevision/reference/21700   # checked to exist at switch
        challenge: masters/21700/pole_piece  # master samples (relative: under recipes.dir)

A station the recipe does not name keeps its settings from the main configuration.

A comparison station's product is calibrated by pointing its ``model`` at the folder that
``linevision calibrate --station six_view --data GOOD_CELLS --model models/six_view --out
models/six_view_<product>`` wrote from the product's good cells (its manifest carries the
product's threshold and the sha256 of the cells and reference views that set it; the
station refuses other reference views)::

      six_view:
        model: six_view_pouch_a        # a calibrated copy of six_view
        reference: /etc/linevision/reference/pouch_a

Switching builds and warms every new station first, while the pipeline keeps running on the
old recipe, then hands each station worker its new station in one step
(:meth:`Service.use`). A cell belongs to the recipe in force when its frame was
registered: cells already queued are inspected by the old model and their verdicts carry the
old recipe's name; nothing is dropped. The active name is written to ``active_recipe`` in the
state folder, so a restart keeps it.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from linevision.config import Config, DecisionRule, format_validation_error
from linevision.daemon.service import Service
from linevision.inference.session import SessionOptions
from linevision.lifecycle.models import apply_choices, load_choices
from linevision.log import get_logger
from linevision.stations import build_station

log = get_logger(__name__)

ACTIVE_FILE = "active_recipe"
_NAME = r"^[A-Za-z0-9_.-]+$"


class RecipeError(Exception):
    """A recipe that cannot be used: missing file, invalid content, unknown station."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RecipeStation(_Model):
    model: Path | None = None
    decision: DecisionRule | None = None
    reference: Path | None = None
    challenge: Path | None = None
    """The recipe's master samples (a relative path: under the recipes folder)."""


class Recipe(_Model):
    name: str = Field(pattern=_NAME)
    description: str = ""
    stations: dict[str, RecipeStation] = Field(default_factory=dict)


def parse_recipe(text: str, source: str) -> Recipe:
    try:
        data = yaml.safe_load(text)
        return Recipe.model_validate(data)
    except yaml.YAMLError as exc:
        msg = f"{source}: not valid YAML: {exc}"
        raise RecipeError(msg) from exc
    except ValidationError as exc:
        msg = f"{source}: invalid recipe\n{format_validation_error(exc)}"
        raise RecipeError(msg) from exc


def load_recipe(folder: Path, name: str) -> Recipe:
    path = folder / f"{name}.yaml"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        msg = f"recipe {name!r}: cannot read {path}: {exc.strerror}"
        raise RecipeError(msg) from exc
    recipe = parse_recipe(text, str(path))
    if recipe.name != name:
        msg = f"{path}: names recipe {recipe.name!r}, expected {name!r}"
        raise RecipeError(msg)
    missing = [
        str(s.reference)
        for s in recipe.stations.values()
        if s.reference is not None and not s.reference.exists()
    ]
    if missing:
        msg = f"recipe {name!r}: reference images not found: {', '.join(missing)}"
        raise RecipeError(msg)
    return recipe


def apply_recipe(cfg: Config, recipe: Recipe) -> Config:
    """``cfg`` with the recipe's model and decision rule in each named station (pure)."""
    names = {s.name for s in cfg.stations}
    unknown = sorted(set(recipe.stations) - names)
    if unknown:
        msg = f"recipe {recipe.name!r} names unknown stations: {', '.join(unknown)}"
        raise RecipeError(msg)
    stations = []
    for sc in cfg.stations:
        rs = recipe.stations.get(sc.name)
        update: dict[str, object] = {}
        if rs is not None and rs.model is not None:
            update["model"] = rs.model
        if rs is not None and rs.decision is not None:
            update["decision"] = rs.decision
        if rs is not None and rs.reference is not None:
            update["reference"] = rs.reference
        if rs is not None and rs.challenge is not None:
            folder = cfg.recipes.dir
            relative = folder is not None and not rs.challenge.is_absolute()
            update["challenge"] = (
                rs.challenge if folder is None or not relative else folder / rs.challenge
            )
        stations.append(sc.model_copy(update=update))
    return cfg.model_copy(update={"stations": tuple(stations)})


def read_active(state: Path) -> str | None:
    try:
        name = (state / ACTIVE_FILE).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return name or None


def write_active(state: Path, name: str) -> None:
    state.mkdir(parents=True, exist_ok=True)
    tmp = state / f".{ACTIVE_FILE}.tmp"
    tmp.write_text(name + "\n", encoding="utf-8")
    tmp.replace(state / ACTIVE_FILE)


class RecipeManager:
    """Knows the recipes of one daemon and switches its stations between them."""

    def __init__(self, base: Config, state: Path, models_root: Path | None) -> None:
        self.base = base
        self.folder = base.recipes.dir
        self.state = state
        self.models_root = models_root
        self.active: str | None = None
        self.switches = 0
        self._lock = threading.Lock()
        self._options = SessionOptions.of(base.inference)

    def initial(self) -> Config:
        """The configuration to start with: the persisted recipe, else ``recipes.active``,
        with the models promoted under it (``linevision model promote``)."""
        name = None if self.folder is None else read_active(self.state) or self.base.recipes.active
        if self.folder is None or name is None:
            return apply_choices(self.base, None, load_choices(self.state))
        cfg = apply_recipe(self.base, load_recipe(self.folder, name))
        self.active = name
        return apply_choices(cfg, name, load_choices(self.state))

    def switch(self, service: Service, name: str) -> dict[str, object]:
        """Build ``name``'s stations, then swap them in; returns what was done."""
        if self.folder is None:
            msg = "no recipes configured (recipes.dir)"
            raise RecipeError(msg)
        with self._lock:
            t0 = time.perf_counter()
            recipe = load_recipe(self.folder, name)
            cfg = apply_choices(apply_recipe(self.base, recipe), name, load_choices(self.state))
            built = [
                build_station(sc, self.models_root, self._options, cfg.camera(sc.cameras[0]))
                for sc in cfg.stations
            ]
            previous = self.active
            for b in built:
                service.use(b, name)
            self.active = name
            self.switches += 1
            write_active(self.state, name)
            ms = round((time.perf_counter() - t0) * 1000.0, 1)
        log.info("recipe_switched", recipe=name, previous=previous, ms=ms)
        return {
            "recipe": name,
            "previous": previous,
            "ms": ms,
            "stations": {
                b.config.name: {
                    "model": b.station.model.name,
                    "version": b.station.model.version,
                    "sha256": b.station.model.sha256,
                    "load_ms": round(b.load_ms, 1),
                    "warm_up_ms": round(b.warm_up_ms, 1),
                }
                for b in built
            },
        }

    def reload(self, service: Service) -> dict[str, object] | None:
        """SIGHUP: re-read the active name (``active_recipe``) and its file, and switch."""
        name = read_active(self.state) or self.active or self.base.recipes.active
        if name is None or self.folder is None:
            log.info("recipe_reload_skipped", reason="no recipe active")
            return None
        return self.switch(service, name)
