"""Chaos soak: the four-station demo, the PLC and reject bridges, faults at random, then audit.

    python -m tests.soak --minutes 60 [--seed 1] [--json]

What runs (all on loopback):
- the daemon: the embedded demo's four stations on emulated pylon cameras, journal and replay
  on, in this process (so camera faults can be injected);
- a stand-in PLC (``tests.bridges.plc_sim``, its own process, records what it applied) and
  the PLC bridge (``linevision bridge plc``, its own process);
- a stand-in reject station (a Modbus server here: the line's cell counter in registers 0-1,
  the reject coil, the rejected cell's id, the bridge's decision per cell) with the reject
  interlock of docs/plc.md, and the reject bridge (its own process);
- an independent subscriber: its own SUB socket and JSON parsing, no project code.

The line moves one pole-piece cell per trigger slot (the counter steps on the camera's trigger
grid, as a PLC that triggers the camera does); the reject station is ``DISTANCE`` cells
downstream. A fault every few seconds, chosen at random (each kind at least once): camera
loss and return, failed buffers, ``kill -9`` of a bridge and its restart, PLC restart,
the line counter jumping forward or back, resetting to 0 and wrapping at 32 bits, a CPU hog
on one core for 10 s, and fuzz on the replay endpoint.

At the end it checks, from the outside:
- every triggered cell of every station has exactly one verdict;
- every NG pole-piece cell was pushed off: the coil rose while that cell stood at the reject
  station (whatever the bridge's own bookkeeping says), or the station's interlock rejected
  it because no pass for it arrived while it stood there (a killed, starved or late bridge);
  an NG cell passes only if the bridge said "pass" for it;
- no verdict other than NG ``timeout`` was published with a latency above its deadline;
- the PLC applied every journaled verdict once: nothing lost, nothing applied twice.
Exit status 0 when all hold; the figures are printed (``--json``: one JSON object).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from tests.bridges.harness import Proc, account, free_port, journal_rows, read_records, write_yaml
from tests.helpers import free_tcp_endpoint

ROOT = Path(__file__).resolve().parents[1]
DISTANCE = 20
"""Pole-piece cells between the inspection and the reject station (1 s at 20 cells/s)."""
COUNTER_REGISTER = 0
CELL_REGISTER = 10
DECISION_REGISTER = 12
FAULTS = (
    "camera_loss",
    "failed_buffers",
    "kill_plc_bridge",
    "kill_reject_bridge",
    "plc_restart",
    "counter_jump",
    "counter_back",
    "counter_reset",
    "counter_wrap",
    "cpu_hog",
    "replay_fuzz",
)
HOG_S = 10.0
INTERLOCK_MARGIN_MS = 10
"""A read in a cell's last milliseconds at the station comes too late to fire the coil."""
WRAP = 1 << 32


# ---- the independent subscriber -----------------------------------------------------------


@dataclass
class Feed:
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    invalid: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def subscribe_all(endpoint: str, feed: Feed, stop: threading.Event) -> None:
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, 1_000_000)
    sock.setsockopt(zmq.SUBSCRIBE, b"verdict.")
    sock.connect(endpoint)
    try:
        while not stop.is_set():
            if not sock.poll(100):
                continue
            frames = sock.recv_multipart()
            try:
                msg = json.loads(frames[1])
                assert frames[0].decode() == f"verdict.{msg['station']}"
            except (ValueError, KeyError, IndexError, AssertionError):
                feed.invalid += 1
                continue
            with feed.lock:
                feed.verdicts.append(msg)
    finally:
        sock.close()


# ---- the stand-in reject station and the line ---------------------------------------------


class RejectStation:
    """A Modbus server: the counter in holding registers 0-1, the coil, the cell id in 10-11,
    the bridge's decision in 12-14 (counter value, 1 pass / 2 reject)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.rises: list[tuple[int, int]] = []
        """(monotonic ns, cell id written) of every rising edge of the reject coil."""
        self.decisions: dict[int, list[tuple[int, int]]] = defaultdict(list)
        """Counter value -> (monotonic ns, 1 pass / 2 reject) of the decisions written."""
        self.interlock: list[int] = []
        """Cells the station rejected on its own: no pass for them arrived while they stood
        at the station (docs/plc.md, the reject interlock)."""
        self._cell = -1
        self._coil = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server: Any = None
        self.context: Any = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="reject-station")

    async def _action(self, fc, _start, address, _count, _regs, values):
        if fc == 16 and address == CELL_REGISTER and values is not None:
            self._cell = (values[0] << 16) | values[1]
        if fc == 16 and address == DECISION_REGISTER and values is not None:
            counter = (values[0] << 16) | values[1]
            self.decisions[counter].append((time.monotonic_ns(), values[2]))
        if fc == 5 and values is not None:
            on = bool(values[0])
            if on and not self._coil:
                self.rises.append((time.monotonic_ns(), self._cell))
            self._coil = on

    def passed(self, counter: int, came: int, left: int) -> bool:
        """The interlock: a cell leaves as good only if a pass for the counter value it stood
        at arrived while it stood here, early enough to act on, and no reject did."""
        got = [code for t, code in self.decisions.get(counter, ()) if came <= t <= left]
        early = [
            code
            for t, code in self.decisions.get(counter, ())
            if came <= t <= left - INTERLOCK_MARGIN_MS * 1_000_000
        ]
        return 1 in early and 2 not in got

    def _run(self) -> None:
        from pymodbus.server import ModbusTcpServer  # noqa: PLC0415
        from pymodbus.simulator import DataType, SimData, SimDevice  # noqa: PLC0415

        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            dev = SimDevice(
                id=0,
                simdata=(
                    [SimData(address=0, count=4, values=0, datatype=DataType.BITS)],
                    [SimData(address=0, count=4, values=0, datatype=DataType.BITS)],
                    [SimData(address=0, count=20, values=0, datatype=DataType.REGISTERS)],
                    [SimData(address=0, count=20, values=0, datatype=DataType.REGISTERS)],
                ),
                action=self._action,
            )
            self.server = ModbusTcpServer(dev, address=("127.0.0.1", self.port))
            task = asyncio.create_task(self.server.serve_forever())
            await asyncio.sleep(0.05)
            self._ready.set()
            await task

        asyncio.run(main())

    def start(self) -> RejectStation:
        self._thread.start()
        assert self._ready.wait(10), "the reject station did not start"
        return self

    def stop(self) -> None:
        if self.loop is not None and self.server is not None:
            asyncio.run_coroutine_threadsafe(self.server.shutdown(), self.loop).result(5)
        self._thread.join(5)


class Line:
    """Moves the cells: steps the counter at each pole-piece trigger slot (the count step is
    the trigger, as on a line whose PLC triggers the camera); remembers when each cell reached
    the reject station and left it.

    The counter is the inspection cell's id plus ``offset`` (the faults move ``offset``: a PLC
    that jumps, resets or wraps keeps counting from its new value, mod 2^32).
    """

    def __init__(self, station: RejectStation, grid: Any) -> None:
        self.station = station
        self.port = station.port
        self.grid = grid
        """() -> (first slot, monotonic s; period, s) of the pole-piece camera's triggers."""
        self.offset = 0
        self.arrivals: dict[int, tuple[int, int]] = {}
        """physical cell at the reject station -> (monotonic ns it arrived, counter value)."""
        self.left: dict[int, int] = {}
        """physical cell -> monotonic ns it left the reject station."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="line")

    def slot_now(self) -> int | None:
        """The cell id of the trigger slot in force now (slot k is cell k + 1)."""
        start, period = self.grid()
        now = time.monotonic()
        return None if now < start else int((now - start) // period) + 1

    def _run(self) -> None:
        from pymodbus.client import ModbusTcpClient  # noqa: PLC0415

        client = ModbusTcpClient("127.0.0.1", port=self.port)
        client.connect()
        last = None
        try:
            while not self._stop.is_set():
                slot = self.slot_now()
                if slot is not None and slot != last:
                    value = (slot + self.offset) % WRAP
                    # the cell arrives as the counter steps: dated before the write, whose
                    # reply can come after the bridge has read the new count and decided
                    now = time.monotonic_ns()
                    client.write_registers(
                        COUNTER_REGISTER, [value >> 16, value & 0xFFFF], device_id=1
                    )
                    at_reject = slot - DISTANCE
                    if last is not None:
                        # a stalled line steps over cells: they arrive and leave at once
                        for cell in range(last - DISTANCE + 1, at_reject + 1):
                            shown = (cell + DISTANCE + self.offset) % WRAP
                            self.arrivals.setdefault(cell, (now, shown))
                        for cell in range(last - DISTANCE, at_reject):
                            self._leave(cell, now)
                    last = slot
                time.sleep(0.002)
        finally:
            client.close()

    def _leave(self, cell: int, now: int) -> None:
        self.left[cell] = now
        arrived = self.arrivals.get(cell)
        if arrived is None:
            return
        came, shown = arrived
        if not self.station.passed(shown, came, now):
            self.station.interlock.append(cell)

    def start(self) -> Line:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def shift(self, to: int) -> None:
        """Move the counter so that it reads ``to`` from the next step on."""
        slot = self.slot_now() or 0
        self.offset = to - slot


# ---- the soak ----------------------------------------------------------------------------


@dataclass
class Parts:
    work: Path
    publish: str
    replay: str
    plc_port: int
    reject_port: int
    plc_record: Path
    journal: Path
    plc_bridge_cfg: Path
    reject_bridge_cfg: Path
    procs: dict[str, Proc] = field(default_factory=dict)


def _bridge_configs(p: Parts) -> None:
    source = {
        "verdicts": p.publish,
        "replay": p.replay,
        "heartbeat_timeout_s": 3.0,
        "recover_timeout_s": 2.0,
    }
    write_yaml(
        p.plc_bridge_cfg,
        {
            "source": source,
            "report": {"publish": free_tcp_endpoint()},
            "plc": {"kind": "modbus", "host": "127.0.0.1", "port": p.plc_port, "timeout_s": 0.5},
            "stations": {"pole_piece": 1, "seal_edge": 2, "six_view": 3, "blue_film": 4},
            "backoff": {"min_s": 0.05, "max_s": 0.5},
            "state_file": str(p.work / "plc_bridge_state.json"),
        },
    )
    write_yaml(
        p.reject_bridge_cfg,
        {
            "name": "reject1",
            "source": source,
            "report": {"publish": free_tcp_endpoint()},
            "io": {"host": "127.0.0.1", "port": p.reject_port},
            "tracking": {
                "counter_register": COUNTER_REGISTER,
                "distance": DISTANCE,
                "poll_ms": 2,
                "stations": {"pole_piece": 0},
            },
            "output": {
                "coil": 0,
                "pulse_ms": 10,
                "cell_register": CELL_REGISTER,
                "decision_register": DECISION_REGISTER,
            },
            "backoff": {"min_s": 0.05, "max_s": 0.5},
            "state_file": str(p.work / "reject_state.db"),
        },
    )


def _start(p: Parts, name: str) -> None:
    log = p.work / f"{name}.log"
    if name == "plc":
        args = ["-m", "tests.bridges.plc_sim", "modbus", "--port", str(p.plc_port)]
        # a loaded machine can take long to start it: the line waits, the soak goes on
        p.procs[name] = Proc([*args, "--record", str(p.plc_record)], log).start(timeout_s=90.0)
    elif name == "plc_bridge":
        args = ["-m", "linevision", "bridge", "plc", "--config", str(p.plc_bridge_cfg)]
        p.procs[name] = Proc(args, log).start(wait_ready=False)
    else:
        args = ["-m", "linevision", "bridge", "reject", "--config", str(p.reject_bridge_cfg)]
        p.procs[name] = Proc(args, log).start(wait_ready=False)
    if name.endswith("bridge"):
        _raise_priority(p.procs[name])


def _raise_priority(proc: Proc) -> None:
    """The bridges run 5 steps of niceness above the daemon, as their systemd unit sets."""
    assert proc.popen is not None
    pid = proc.popen.pid
    with contextlib.suppress(PermissionError):  # not root: equal priority, as it runs
        os.setpriority(os.PRIO_PROCESS, pid, os.getpriority(os.PRIO_PROCESS, 0) - 5)


def _replay_fuzz(endpoint: str, rng: random.Random, n: int = 200) -> bool:
    """Hostile frames at the replay endpoint; True if it still answers a valid request."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    hostile = [
        b'{"schema":1,"id":"x","from_seq":9223372036854775808}',
        b'{"schema":1,"id":"x","from_seq":"1"}',
        b'{"schema":1,"id":"x","from_seq":true}',
        b"\xff\xfe",
        b"[" * 5000,
        b"{}",
        b"",
    ]
    try:
        for _ in range(n):
            body = rng.choice(hostile) if rng.random() < 0.5 else rng.randbytes(rng.randint(0, 64))
            frames = [b"", body] if rng.random() < 0.8 else [body] * rng.randint(1, 4)
            sock.send_multipart(frames)
        time.sleep(0.2)
        while sock.poll(50):
            sock.recv_multipart()
        req = {"schema": 1, "id": "probe", "run_id": None, "from_seq": 1, "to_seq": 1}
        sock.send_multipart([b"", json.dumps(req).encode()])
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if sock.poll(200):
                frames = sock.recv_multipart()
                if len(frames) >= 2 and json.loads(frames[1]).get("id") == "probe":
                    return True
        return False
    finally:
        sock.close()


class Chaos:
    def __init__(self, parts: Parts, service: Any, line: Line, rng: random.Random) -> None:
        self.p = parts
        self.service = service
        self.line = line
        self.rng = rng
        self.counts: Counter[str] = Counter()
        self.replay_alive = True
        self._hogs: list[tuple[subprocess.Popen[bytes], float]] = []

    def inject(self, kind: str) -> None:
        self.counts[kind] += 1
        if kind in ("camera_loss", "failed_buffers"):
            self._camera(kind)
        elif kind in ("kill_plc_bridge", "kill_reject_bridge", "plc_restart"):
            self._restart(kind)
        elif kind.startswith("counter_"):
            self._counter(kind)
        elif kind == "cpu_hog":
            hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            self._hogs.append((hog, time.monotonic() + HOG_S))
        elif kind == "replay_fuzz":
            self.replay_alive = _replay_fuzz(self.p.replay, self.rng) and self.replay_alive

    def _camera(self, kind: str) -> None:
        name = self.rng.choice(sorted(self.service.cameras))
        driver = self.service.cameras[name]._driver
        if driver is None:
            return
        try:
            if kind == "camera_loss":
                driver.emulate_device_removal()
            else:
                driver.force_failed_buffers(self.rng.randint(1, 3))
        except Exception:
            self.counts[f"{kind}_on_closed_camera"] += 1

    def _restart(self, kind: str) -> None:
        names = {"kill_plc_bridge": "plc_bridge", "kill_reject_bridge": "reject_bridge"}
        name = names.get(kind, "plc")
        self.p.procs[name].kill()
        time.sleep(self.rng.uniform(0.2, 1.5))
        _start(self.p, name)

    def _counter(self, kind: str) -> None:
        now = (self.line.slot_now() or 0) + self.line.offset
        to = {
            "counter_jump": now + self.rng.randint(500, 7000),
            "counter_back": now - self.rng.randint(5, 50),
            "counter_reset": 0,
            "counter_wrap": WRAP - self.rng.randint(3, 10),
        }[kind]
        self.line.shift(to)

    def reap(self, *, force: bool = False) -> None:
        left = []
        for hog, until in self._hogs:
            if force or time.monotonic() >= until:
                hog.kill()
                hog.wait(5)
            else:
                left.append((hog, until))
        self._hogs = left


def _rose(rises: list[int], came: int, left: int) -> bool:
    """Did the coil rise in ``[came, left)`` (``rises`` sorted)?"""
    i = bisect.bisect_left(rises, came)
    return i < len(rises) and rises[i] < left


def _audit(
    feed: Feed, line: Line, station: RejectStation, p: Parts, deadlines: dict[str, float]
) -> dict[str, Any]:
    with feed.lock:
        verdicts = list(feed.verdicts)
    per_station: dict[str, Counter[int]] = defaultdict(Counter)
    late_ok = []
    reasons: Counter[str] = Counter()
    for v in verdicts:
        per_station[v["station"]][v["cell_id"]] += 1
        reasons[f"{v['verdict']}:{v.get('reason')}"] += 1
        if v.get("reason") != "timeout" and v["latency_ms"] > deadlines[v["station"]]:
            late_ok.append((v["station"], v["cell_id"], v["verdict"], v["latency_ms"]))
    missing, twice = {}, {}
    for name, cells in per_station.items():
        lo, hi = min(cells), max(cells)
        missing[name] = [c for c in range(lo, hi + 1) if c not in cells]
        twice[name] = [c for c, n in cells.items() if n > 1]
    ng = {v["cell_id"] for v in verdicts if v["station"] == "pole_piece" and v["verdict"] == "NG"}
    rises = sorted(t for t, _ in station.rises)
    interlock = set(station.interlock)
    ok = {v["cell_id"] for v in verdicts if v["station"] == "pole_piece" and v["verdict"] == "OK"}
    passed_ng = []
    checked = by_interlock = stepped_over = 0
    # the interlock's price: good cells rejected because no pass arrived in time
    ok_scrapped = sum(
        c in interlock and c in line.arrivals and not _rose(rises, line.arrivals[c][0], left)
        for c, left in line.left.items()
        if c in ok
    )
    for cell, left in sorted(line.left.items()):
        arrived = line.arrivals.get(cell)
        if cell not in ng or arrived is None:
            continue
        came = arrived[0]
        checked += 1
        stepped_over += came == left
        if _rose(rises, came, left):
            continue  # the coil rose while the cell stood at the station
        if cell in interlock:
            by_interlock += 1
        else:
            passed_ng.append(cell)
    acct = account(journal_rows(p.journal), read_records(p.plc_record))
    return {
        "verdicts": len(verdicts),
        "invalid_messages": feed.invalid,
        "by_station": {k: sum(v.values()) for k, v in per_station.items()},
        "reasons": dict(reasons),
        "cells_missing": {k: len(v) for k, v in missing.items()},
        "cells_twice": {k: len(v) for k, v in twice.items()},
        "late_verdicts": late_ok[:20],
        "late_verdict_count": len(late_ok),
        "ng_cells_at_reject": checked,
        "ng_passed": passed_ng[:20],
        "ng_passed_count": len(passed_ng),
        "ng_rejected_by_station_interlock": by_interlock,
        "ng_stepped_over_by_the_stand_in_line": stepped_over,
        "cells_not_passed_by_station_interlock": len(interlock),
        "ok_cells_rejected_for_want_of_a_pass": ok_scrapped,
        "coil_rises": len(rises),
        "plc": acct,
    }


def _trigger_grid(service: Any) -> tuple[float, float]:
    """The pole-piece camera's trigger grid: (first slot, monotonic s; period, s)."""
    (cam_id,) = next(sc.cameras for sc in service.config.stations if sc.name == "pole_piece")
    worker = service.cameras[cam_id]
    return worker._epoch + worker.cfg.trigger.offset_ms / 1000.0, worker._period


def run(  # noqa: PLR0915  (one scenario, start to audit)
    minutes: float, seed: int, work: Path, gap_s: tuple[float, float] = (4.0, 9.0)
) -> dict[str, Any]:
    os.environ.setdefault("PYLON_CAMEMU", "9")
    from linevision.config import Config  # noqa: PLC0415
    from linevision.daemon.service import Service  # noqa: PLC0415
    from linevision.tools import demo  # noqa: PLC0415

    rng = random.Random(seed)
    p = Parts(
        work=work,
        publish=free_tcp_endpoint(),
        replay=free_tcp_endpoint(),
        plc_port=free_port(),
        reject_port=free_port(),
        plc_record=work / "plc_applied.jsonl",
        journal=work / "journal.db",
        plc_bridge_cfg=work / "plc_bridge.yaml",
        reject_bridge_cfg=work / "reject_bridge.yaml",
    )
    cfg = demo.four_station_config(demo.ensure_demo_data(demo.cache_dir()))
    cfg = demo.with_delivery(cfg, state=work, replay=p.replay)
    # the audit compares the PLC with the whole journal: it must hold every verdict of the run
    journal = {"path": p.journal, "max_entries": 10_000_000}
    bus = {**cfg.bus.model_dump(), "publish": p.publish}
    cfg = Config.model_validate({**cfg.model_dump(), "bus": bus, "journal": journal})
    _bridge_configs(p)
    feed = Feed()
    stop = threading.Event()
    sub = threading.Thread(target=subscribe_all, args=(p.publish, feed, stop), daemon=True)
    sub.start()
    station = RejectStation(p.reject_port).start()
    service = Service(cfg, models_root=demo.find_models_root())
    line = Line(station, lambda: _trigger_grid(service))
    chaos = Chaos(p, service, line, rng)
    t_start = time.monotonic()
    try:
        _start(p, "plc")
        _start(p, "plc_bridge")
        _start(p, "reject_bridge")
        service.start()
        line.start()
        end = t_start + minutes * 60.0
        faults = list(FAULTS)
        rng.shuffle(faults)
        quiet_end = end - 8.0  # the last seconds without faults: everything settles
        while time.monotonic() < quiet_end:
            time.sleep(min(rng.uniform(*gap_s), max(0.0, quiet_end - time.monotonic())))
            chaos.reap()
            if time.monotonic() >= quiet_end:
                break
            kind = faults.pop() if faults else rng.choice(FAULTS)
            try:
                chaos.inject(kind)
            except Exception as exc:  # a fault the stand-ins failed to stage: noted, go on
                chaos.counts[f"{kind}_not_staged"] += 1
                print(f"soak: {kind} not staged: {exc!r}", file=sys.stderr, flush=True)
        chaos.reap(force=True)
        while time.monotonic() < end:
            time.sleep(0.2)
    finally:
        chaos.reap(force=True)
        line.stop()
        service.stop()
        time.sleep(3.0)  # the bridges drain what the daemon sent last
        for proc in p.procs.values():
            proc.terminate()
        stop.set()
        sub.join(5)
        station.stop()
    figures = _audit(feed, line, station, p, {s.name: s.deadline_ms for s in cfg.stations})
    figures["faults"] = dict(chaos.counts)
    figures["replay_answers_after_fuzz"] = chaos.replay_alive
    figures["minutes"] = round((time.monotonic() - t_start) / 60.0, 2)
    figures["seed"] = seed
    return figures


def verdict_of(figures: dict[str, Any]) -> list[str]:
    """The checks that failed (empty: the soak passed)."""
    failed = []
    if any(figures["cells_missing"].values()) or any(figures["cells_twice"].values()):
        failed.append("every triggered cell has exactly one verdict")
    if figures["ng_passed_count"]:
        failed.append("no NG cell passes the reject station")
    if figures["late_verdict_count"]:
        failed.append("no verdict but NG timeout after its deadline")
    plc = figures["plc"]
    if plc["lost"] or plc["applied_twice"] or plc["unknown"] or plc["wrong_cell"]:
        failed.append("the PLC applied every verdict once")
    if figures["invalid_messages"]:
        failed.append("every message on the wire is valid")
    if not figures["replay_answers_after_fuzz"]:
        failed.append("replay answers after fuzz")
    return failed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--work", type=Path, default=None, help="keep the logs and records here")
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--gap",
        type=lambda text: tuple(float(x) for x in text.split(",", 1)),
        default=(4.0, 9.0),
        metavar="LO,HI",
        help="seconds between two faults, drawn uniformly (default 4,9)",
    )
    args = ap.parse_args(argv)
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
        figures = run(args.minutes, args.seed, args.work, args.gap)
    else:
        with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
            figures = run(args.minutes, args.seed, Path(tmp), args.gap)
    failed = verdict_of(figures)
    figures["failed"] = failed
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key}: {value}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
