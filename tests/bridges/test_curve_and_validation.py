"""CURVE on the verdict and replay sockets; key files; loopback rules; invalid messages."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest
import zmq
from pydantic import ValidationError

from linevision.bridges.config import PlcBridgeConfig, RejectBridgeConfig, SourceConfig
from linevision.bridges.subscriber import VerdictStream
from linevision.bus import curve as keys
from linevision.bus.delivery import Delivery
from linevision.bus.replay import ReplayClient, ReplayError
from linevision.bus.subscriber import subscribe
from linevision.bus.wire import (
    BusMessageError,
    VerdictMessage,
    context,
    parse_message,
    verdict_payload,
)
from linevision.cli import main
from linevision.config import BusConfig, Config
from tests.bridges.daemon_sim import Daemon, verdict
from tests.bridges.harness import BridgeThread, wait_for
from tests.helpers import free_tcp_endpoint


@pytest.fixture
def key_dir(tmp_path):
    d = tmp_path / "keys"
    keys.generate(d, "server")
    keys.generate(d, "client")
    keys.generate(d / "other", "intruder")
    (d / "authorized").mkdir()
    (d / "authorized" / "client.key").write_bytes((d / "client.key").read_bytes())
    return d


def test_generated_keys_are_private_and_load_from_credentials_directory(key_dir, monkeypatch):
    assert (key_dir / "server.key_secret").stat().st_mode & 0o777 == 0o600
    assert (key_dir / "server.key").stat().st_mode & 0o777 == 0o644
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(key_dir))
    pair = keys.load_pair(Path("server.key_secret"))
    assert pair.public == keys.load_public(Path("server.key"))
    os.chmod(key_dir / "client.key_secret", 0o644)  # noqa: PTH101
    with pytest.raises(keys.KeyFileError, match="readable by group or others"):
        keys.load_pair(key_dir / "client.key_secret")
    with pytest.raises(keys.KeyFileError, match="holds no secret key"):
        keys.load_pair(key_dir / "server.key")
    with pytest.raises(keys.KeyFileError, match="exists"):
        keys.generate(key_dir, "server")


def test_keys_generate_command(tmp_path, capsys):
    assert main(["keys", "generate", str(tmp_path / "k"), "--name", "plc-bridge"]) == 0
    assert (tmp_path / "k" / "plc-bridge.key_secret").stat().st_mode & 0o777 == 0o600
    assert main(["keys", "generate", str(tmp_path / "k"), "--name", "plc-bridge"]) == 1


def test_non_loopback_needs_keys():
    with pytest.raises(ValidationError, match=r"without CURVE keys only 127\.0\.0\.1"):
        BusConfig(publish="tcp://0.0.0.0:5556")
    with pytest.raises(ValidationError, match=r"without CURVE keys only 127\.0\.0\.1"):
        BusConfig(replay="tcp://10.0.0.5:5557")
    curve = {"secret_key_file": "daemon.key_secret", "authorized_keys_dir": "clients"}
    ok = BusConfig.model_validate({"publish": "tcp://0.0.0.0:5556", "curve": curve})
    assert ok.curve is not None
    with pytest.raises(ValidationError, match=r"set source\.curve"):
        SourceConfig(verdicts="tcp://10.0.0.5:5556")
    with pytest.raises(ValidationError, match=r"set journal\.path"):
        Config.model_validate(
            {
                "cameras": [{"id": "c", "backend": "replay", "path": "/x"}],
                "stations": [{"name": "s", "type": "pole_piece", "cameras": ["c"], "model": "m"}],
                "bus": {"replay": "tcp://127.0.0.1:5557"},
            }
        )


def test_reject_registers_that_overlap_and_unknown_phases_are_refused():
    base = {
        "io": {"host": "127.0.0.1"},
        "tracking": {"counter_register": 0, "stations": {"pole_piece": 0}},
        "output": {"coil": 0, "cell_register": 10, "decision_register": 12},
    }
    RejectBridgeConfig.model_validate(base)
    for decision, other in [(11, "output.cell_register"), (1, "tracking.counter_register")]:
        bad = {**base, "output": {**base["output"], "decision_register": decision}}
        with pytest.raises(ValidationError, match=f"decision_register.*overlap {other}"):
            RejectBridgeConfig.model_validate(bad)
    phases = {**base["tracking"], "phases": {"seal_edge": 3}}
    with pytest.raises(ValidationError, match=r"tracking.phases.seal_edge: not a station"):
        RejectBridgeConfig.model_validate({**base, "tracking": phases})


def test_plc_map_overlaps_are_refused():
    base = {"plc": {"kind": "modbus", "host": "127.0.0.1"}, "stations": {"pole_piece": 1}}
    PlcBridgeConfig.model_validate(base)
    bad = {**base, "plc": {**base["plc"], "map": {"ack": 9}}}
    with pytest.raises(ValidationError, match="overlaps"):
        PlcBridgeConfig.model_validate(bad)
    with pytest.raises(ValidationError, match="one write"):
        PlcBridgeConfig.model_validate(
            {**base, "plc": {**base["plc"], "map": {"slots": 20, "slot_stride": 8}}}
        )
    with pytest.raises(ValidationError, match="Extra inputs"):
        PlcBridgeConfig.model_validate({**base, "stations": {"a": 1}, "colour": "red"})


def _client(key_dir, name, sub="."):
    return keys.ClientKeys(
        keys.load_pair(key_dir / sub / f"{name}.key_secret"),
        keys.load_public(key_dir / "server.key"),
    )


def _received(endpoint, curve, n, timeout_s):
    got = []
    for m in subscribe(endpoint, ("verdict.",), timeout_s=timeout_s, curve=curve):
        got.append(m)
        if len(got) >= n:
            break
    return got


def test_curve_lets_only_authorized_keys_read_and_replay(tmp_path, key_dir):
    d = Daemon(free_tcp_endpoint(), free_tcp_endpoint(), tmp_path / "j.db", key_dir=key_dir)
    d.start()
    results: dict[str, list] = {}
    try:
        good, intruder = _client(key_dir, "client"), _client(key_dir, "intruder", "other")
        threads = {
            "good": BridgeThread(lambda _s: _async(_received, d.publisher.endpoint, good, 5, 3)),
            "intruder": BridgeThread(
                lambda _s: _async(_received, d.publisher.endpoint, intruder, 1, 2)
            ),
            "plain": BridgeThread(lambda _s: _async(_received, d.publisher.endpoint, None, 1, 2)),
        }
        for t in threads.values():
            t.start()
        time.sleep(0.7)
        d.stream(1, 20, rate_hz=50)
        for name, t in threads.items():
            results[name] = t.stop(timeout_s=10)

        async def fetch(curve):
            c = ReplayClient(d.replay.endpoint, curve)
            try:
                return await c.fetch(None, 1, 5, 1.0)
            finally:
                c.close()

        batch = asyncio.run(fetch(good))
        with pytest.raises(ReplayError):
            asyncio.run(fetch(intruder))
        with pytest.raises(ReplayError):
            asyncio.run(fetch(None))
    finally:
        d.stop()
    assert len(results["good"]) == 5
    assert results["intruder"] == []
    assert results["plain"] == []
    assert [v.seq for v in batch.verdicts] == [1, 2, 3, 4, 5]


async def _async(fn, *args):
    return await asyncio.to_thread(fn, *args)


def test_invalid_messages_are_counted_and_never_applied():
    endpoint = free_tcp_endpoint()
    pub = context().socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(endpoint)
    good = verdict_payload(verdict(1), "a" * 32, 1, time.time_ns(), 1.0)
    body = json.loads(good)
    bad = [
        [b"verdict.pole_piece", b"{not json"],
        [b"verdict.pole_piece", json.dumps({**body, "schema": 2}).encode()],
        [b"verdict.pole_piece", json.dumps({**body, "evil": 1}).encode()],
        [b"verdict.pole_piece", json.dumps({**body, "seq": 0}).encode()],
        [b"verdict.pole_piece", json.dumps({**body, "verdict": "MAYBE"}).encode()],
        [b"verdict.seal_edge", good],  # topic and station disagree
        [b"verdict.pole_piece", good, b"extra frame"],
        [b"verdict.pole_piece", b"\xff\xfe"],
    ]
    out: list[object] = []

    async def sink(ev):
        out.append(ev)

    stream = VerdictStream(SourceConfig(verdicts=endpoint, replay=None), sink)
    runner = BridgeThread(stream.run).start()
    try:
        deadline = time.monotonic() + 5
        while stream.counters["invalid"] == 0 and time.monotonic() < deadline:
            pub.send_multipart(bad[0])
            time.sleep(0.05)
        n0 = stream.counters["invalid"]
        for frames in bad[1:]:
            pub.send_multipart(frames)
        pub.send_multipart([b"verdict.pole_piece", good])
        wait_for(lambda: any(isinstance(e, VerdictMessage) for e in out), 5, "the valid one")
    finally:
        runner.stop()
        pub.close()
    assert stream.counters["invalid"] == n0 + len(bad) - 1
    verdicts = [e for e in out if isinstance(e, VerdictMessage)]
    assert [(v.seq, v.cell_id, v.verdict) for v in verdicts] == [(1, 1, "OK")]
    with pytest.raises(BusMessageError):
        parse_message(b"verdict.pole_piece", json.dumps({**body, "schema": 2}).encode())


def test_delivery_opens_keys_journal_and_replay_from_the_config(tmp_path, key_dir):
    data = {
        "cameras": [{"id": "c", "backend": "replay", "path": "/x"}],
        "stations": [{"name": "s", "type": "pole_piece", "cameras": ["c"], "model": "m"}],
        "bus": {
            "publish": "tcp://0.0.0.0:0",
            "replay": free_tcp_endpoint(),
            "curve": {
                "secret_key_file": str(key_dir / "server.key_secret"),
                "authorized_keys_dir": str(key_dir / "authorized"),
            },
        },
        "journal": {"path": str(tmp_path / "j.db")},
    }
    d = Delivery.open(Config.model_validate(data))
    try:
        assert d.curve is not None
        assert d.journal is not None
        assert d.auth is not None
        d.start_replay(lambda: ("a" * 32, 0))
        assert d.replay is not None
    finally:
        d.close()


def test_bridge_command_reports_a_bad_config(tmp_path, capsys):
    bad = tmp_path / "plc.yaml"
    bad.write_text("plc: {kind: modbus, host: 127.0.0.1, map: {ack: 0}}\nstations: {a: 1}\n")
    assert main(["bridge", "plc", "--config", str(bad)]) == 2
    assert "overlaps" in capsys.readouterr().err
    assert main(["bridge", "reject", "--config", str(tmp_path / "missing.yaml")]) == 2
