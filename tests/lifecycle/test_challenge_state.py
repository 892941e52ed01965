"""When a station counts as verified: at start, after a restart, after a switch, overdue."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from pydantic import ValidationError

from linevision.bridges.config import PlcBridgeConfig
from linevision.config import ConfigError, parse_config
from linevision.daemon.control import request
from tests.lifecycle.parts import BusLog, lifecycle_config, master_folder, running_daemon, wait_for


def _config(tmp_path, frames, masters, **challenge):
    cfg = lifecycle_config(tmp_path, frames, rate_hz=50, challenge=challenge)
    station = cfg.stations[0].model_copy(update={"challenge": masters})
    return cfg.model_copy(update={"stations": (station,)})


def _runs(ops) -> list[dict[str, object]]:
    """Every run the daemon archived, oldest first (the bus message may come before a
    subscriber that joined at the daemon's start is connected: the archive has them all)."""
    folder = ops.archive.folder / "challenge"
    records = [json.loads(p.read_text()) for p in folder.glob("*/*.json")]
    return sorted(records, key=lambda r: r["started_ns"])


def test_start_runs_once_and_a_restart_keeps_the_pass(tmp_path, models, frames, monkeypatch):
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    masters = master_folder(tmp_path / "masters")
    cfg = _config(tmp_path, frames, masters, at=["06:00", "14:00", "22:00"])
    bus = BusLog(cfg.bus.publish).start()
    try:
        with running_daemon(cfg, models) as ops:
            wait_for(lambda: len(_runs(ops)) == 1, 30, "the run at start")
            assert _runs(ops)[0]["trigger"] == "start"
            assert _runs(ops)[0]["passed"] is True
            manager = ops.lifecycle.challenge  # type: ignore[union-attr]
            wait_for(lambda: manager.state_of("pole_piece") == "passed", 5, "passed")
            passed_at = datetime.fromtimestamp(  # noqa: DTZ006  (the plant's local time)
                manager.status()["stations"]["pole_piece"]["last"]["t_ns"] / 1e9
            )  # type: ignore[index]
            next_slot = min(
                d
                for d in (
                    passed_at.replace(hour=h, minute=0, second=0, microsecond=0) + timedelta(days=k)
                    for h in (6, 14, 22)
                    for k in (0, 1)
                )
                if d > passed_at
            )
            # the pass counts until the next shift's time plus the 15 minutes' grace
            assert manager.state_of("pole_piece", next_slot + timedelta(minutes=14)) == "passed"
            assert manager.state_of("pole_piece", next_slot + timedelta(minutes=16)) == "overdue"
    finally:
        bus.stop()
    bus = BusLog(cfg.bus.publish).start()
    try:
        with running_daemon(cfg, models) as ops:
            manager = ops.lifecycle.challenge  # type: ignore[union-attr]
            wait_for(lambda: bus.topics("heartbeat"), 5, "a heartbeat")
            wait_for(lambda: len(bus.topics("heartbeat")) >= 3, 5, "three heartbeats")
            # verified from the state file at once, and not run again
            beat = json.loads(bus.topics("heartbeat")[-1])
            assert beat["stations"]["pole_piece"]["verified"] is True
            assert len(_runs(ops)) == 1
    finally:
        bus.stop()


def test_a_switch_to_another_model_runs_the_challenge_again(tmp_path, models, frames, monkeypatch):
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    recipes = tmp_path / "recipes"
    master_folder(recipes / "masters")
    for name, model in (("good", "tiny"), ("blind", "blind")):
        (recipes / f"{name}.yaml").write_text(
            f"name: {name}\nstations: {{pole_piece: {{model: {model}, challenge: masters}}}}\n"
        )
    cfg = lifecycle_config(
        tmp_path, frames, rate_hz=50, recipes={"dir": str(recipes), "active": "good"}
    )
    bus = BusLog(cfg.bus.publish).start()
    try:
        with running_daemon(cfg, models) as ops:
            wait_for(lambda: len(_runs(ops)) == 1, 30, "the run at start")
            reply = request(cfg.control.endpoint, {"cmd": "recipe.switch", "name": "blind"})
            assert reply["ok"], reply
            wait_for(lambda: len(_runs(ops)) == 2, 30, "the run after the switch")
            after = _runs(ops)[1]
            assert (after["trigger"], after["recipe"], after["passed"]) == (
                "switch",
                "blind",
                False,
            )
            wait_for(
                lambda: any(
                    json.loads(p)["alarm"] == "challenge_failed" for p in bus.topics("alarm.daemon")
                ),
                5,
                "the alarm",
            )
    finally:
        bus.stop()


def test_a_configured_time_runs_the_challenge_and_an_old_pass_turns_overdue(
    tmp_path, models, frames, monkeypatch
):
    """The schedule's clock stepped across 06:00 (the only part not real: the time of day)."""
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    masters = master_folder(tmp_path / "masters")
    cfg = _config(tmp_path, frames, masters, at=["06:00"], grace_min=10, on_start=False)
    bus = BusLog(cfg.bus.publish).start()
    try:
        with running_daemon(cfg, models) as ops:
            manager = ops.lifecycle.challenge  # type: ignore[union-attr]
            day = datetime.now().replace(hour=5, minute=59, second=0, microsecond=0)  # noqa: DTZ005
            manager.clock = lambda: day
            manager.tick()
            assert _runs(ops) == []
            manager.clock = lambda: day + timedelta(minutes=2)
            manager.tick()
            wait_for(lambda: len(_runs(ops)) == 1, 30, "the 06:00 run")
            assert _runs(ops)[0]["trigger"] == "schedule"
            wait_for(lambda: manager.state_of("pole_piece") == "passed", 5, "passed")
            # a day later the 06:00 run did not happen: overdue after the grace, alarm raised
            manager.clock = lambda: day + timedelta(days=1, minutes=15)
            manager.tick()  # the crossing queues a run; the alarm is checked before it ends
            assert manager.state_of("pole_piece") == "overdue"
            wait_for(
                lambda: any(
                    json.loads(p)["alarm"] == "challenge_overdue" and json.loads(p)["active"]
                    for p in bus.topics("alarm.daemon")
                ),
                5,
                "challenge_overdue",
            )
    finally:
        bus.stop()


def test_a_challenge_folder_that_cannot_prove_anything_fails_with_its_reason(
    tmp_path, models, frames, monkeypatch
):
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    only_ok = master_folder(tmp_path / "only_ok", ok=3, ng=0)
    cfg = _config(tmp_path, frames, only_ok, on_start=False)
    with running_daemon(cfg, models) as ops:
        reply = request(cfg.control.endpoint, {"cmd": "challenge.run", "user": "tom"})
        assert reply["ok"], reply
        manager = ops.lifecycle.challenge  # type: ignore[union-attr]
        wait_for(lambda: manager.status()["stations"]["pole_piece"]["record"], 10, "the run")  # type: ignore[index]
        record = manager.status()["stations"]["pole_piece"]["record"]  # type: ignore[index]
        assert record["passed"] is False
        assert "needs OK and NG masters; it has no NG" in record["error"]
        assert manager.state_of("pole_piece") == "failed"
        bad = request(cfg.control.endpoint, {"cmd": "challenge.run", "station": "nope"})
        assert bad == {
            "ok": False,
            "error": "station: unknown station 'nope' (stations: pole_piece)",
        }
        bad = request(cfg.control.endpoint, {"cmd": "challenge.run", "trigger": "schedule"})
        assert "trigger: must be one of cli, plc" in str(bad["error"])


def test_configuration_is_checked():
    with pytest.raises(ConfigError, match=r"challenge.at: '6:00' is not HH:MM"):
        parse_config(
            "cameras: [{id: c, backend: replay, path: x}]\n"
            "stations: [{name: p, type: pole_piece, cameras: [c], model: m}]\n"
            "challenge: {at: ['6:00']}\n"
        )
    plc = {"kind": "modbus", "host": "127.0.0.1", "map": {"challenge_request": 80}}
    with pytest.raises(ValidationError, match=r"needs challenge\.control"):
        PlcBridgeConfig.model_validate({"plc": plc, "stations": {"p": 1}})
    plc["map"] = {"challenge_request": 20}
    with pytest.raises(
        ValidationError, match=r"challenge_request overlaps plc\.map\.slots at register 20"
    ):
        PlcBridgeConfig.model_validate(
            {"plc": plc, "stations": {"p": 1}, "challenge": {"control": "tcp://127.0.0.1:1"}}
        )
    with pytest.raises(ValidationError, match="must be loopback"):
        PlcBridgeConfig.model_validate(
            {
                "plc": {"kind": "modbus", "host": "127.0.0.1"},
                "stations": {"p": 1},
                "challenge": {"control": "tcp://10.0.0.1:5559"},
            }
        )
