"""The load and warm-up time of every station's model reach ``/metrics``, blue film included,
and after a recipe switch they are those of the new build."""

from __future__ import annotations

import threading
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from linevision.config import Config
from linevision.daemon.control import request
from linevision.daemon.operations import Operations
from linevision.tools import demo
from tests.helpers import free_tcp_endpoint

MODELS = Path(__file__).resolve().parents[2] / "models"
FILM = demo.FilmSize(width=1024, lines=2048, strip_lines=256)
FILM_SERIAL = "0815-0003"
"""The tests expose four emulated cameras (``tests/conftest.py``); the demo's film camera is
the ninth, so here it takes the fourth."""


def _demo_film_config(tmp: Path) -> Config:
    """The demo's blue_film station, with free sockets and two recipes of the same model."""
    data = demo.demo_data_paths(tmp / "demo", FILM)
    data.film_strips.mkdir(parents=True)
    demo.write_strips(data.film_strips, demo.film_frames(FILM), FILM.strip_lines)
    recipes = tmp / "recipes"
    recipes.mkdir()
    for name in ("film_a", "film_b"):
        (recipes / f"{name}.yaml").write_text(
            f"name: {name}\nstations:\n  blue_film:\n    model: blue_film\n"
        )
    raw = demo.four_station_config(data, stations=("blue_film",)).model_dump(mode="json")
    raw["cameras"][0]["device"]["serial"] = FILM_SERIAL
    raw.update(
        bus={"publish": free_tcp_endpoint()},
        archive={"enabled": False},
        metrics={"listen": "127.0.0.1:0"},
        control={"endpoint": free_tcp_endpoint()},
        recipes={"dir": str(recipes), "active": "film_a"},
    )
    return Config.model_validate(raw)


def _model_seconds(address: tuple[str, int]) -> dict[str, tuple[str, float, float]]:
    """station -> (model tag, load s, warm-up s), as scraped from ``/metrics``."""
    host, port = address
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    load: dict[str, tuple[str, float]] = {}
    warm: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "linevision_model_load_seconds":
                load[s.labels["station"]] = (s.labels["model"], s.value)
            elif s.name == "linevision_model_warmup_seconds":
                warm[s.labels["station"]] = s.value
    return {name: (tag, seconds, warm[name]) for name, (tag, seconds) in load.items()}


def test_blue_film_load_and_warm_up_reach_the_metrics_also_after_a_switch(tmp_path):
    cfg = _demo_film_config(tmp_path)
    ops = Operations(cfg, MODELS, env={"STATE_DIRECTORY": str(tmp_path / "state")})
    svc = ops.make_service()
    stop = threading.Event()
    try:
        ops.start()
        svc.start()
        assert ops.ready(stop, camera_timeout_s=10)
        assert ops.metrics_address is not None
        before = _model_seconds(ops.metrics_address)
        reply = request(cfg.control.endpoint, {"cmd": "recipe.switch", "name": "film_b"})
        after = _model_seconds(ops.metrics_address)
    finally:
        ops.stopping()
        svc.stop()
        ops.close()
    assert set(before) == {"blue_film"}
    tag, load_s, warm_s = before["blue_film"]
    assert tag.startswith("blue_film@")
    assert 0 < load_s < 60
    assert 0 < warm_s < 60
    assert reply["ok"] is True, reply
    stations = reply["stations"]
    assert isinstance(stations, dict)
    built = stations["blue_film"]
    tag_b, load_b, warm_b = after["blue_film"]
    assert tag_b == tag
    # the switch's own build, as its reply reports it (rounded to 0.1 ms)
    assert abs(load_b * 1000.0 - built["load_ms"]) <= 0.05
    assert abs(warm_b * 1000.0 - built["warm_up_ms"]) <= 0.05
    assert load_b > 0
    assert warm_b > 0
