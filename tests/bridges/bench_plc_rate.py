"""Figures for the PLC bridge: latency and the highest sustained rate with 0 loss.

``python -m tests.bridges.bench_plc_rate [--seconds 3] [--rates 250,500,1000,2000]``.
Daemon publisher in this process; PLC stand-in and bridge in their own processes, all on
127.0.0.1. A rate is sustained when every verdict reaches the PLC, none twice, and the p99
publish -> PLC latency stays under 250 ms (the bridge keeps up instead of queueing).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from pathlib import Path

from tests.bridges.daemon_sim import Daemon
from tests.bridges.harness import (
    Proc,
    account,
    free_port,
    journal_rows,
    percentile,
    read_records,
    wait_for,
    write_yaml,
)
from tests.helpers import free_tcp_endpoint


def publish_times(journal: Path) -> dict[tuple[str, int], int]:
    db = sqlite3.connect(str(journal))
    try:
        rows = db.execute("SELECT run_id, seq, payload FROM verdicts").fetchall()
    finally:
        db.close()
    return {(r[:8], s): json.loads(p)["t_publish_ns"] for r, s, p in rows}


def run(kind: str, rate: int, seconds: float, tmp: Path) -> dict[str, object]:
    tmp.mkdir(parents=True)
    daemon = Daemon(free_tcp_endpoint(), free_tcp_endpoint(), tmp / "journal.db").start()
    port, record = free_port(), tmp / "plc.jsonl"
    args = ["-m", "tests.bridges.plc_sim", kind, "--port", str(port), "--record", str(record)]
    plc = Proc(args, tmp / "plc.log").start()
    target = (
        {"kind": "modbus", "host": "127.0.0.1", "port": port}
        if kind == "modbus"
        else {"kind": "opcua", "url": f"opc.tcp://127.0.0.1:{port}/linevision/"}
    )
    cfg = write_yaml(
        tmp / "bridge.yaml",
        {
            "source": {"verdicts": daemon.publisher.endpoint, "replay": daemon.replay.endpoint},
            "report": {"publish": free_tcp_endpoint()},
            "plc": target,
            "stations": {"pole_piece": 1},
        },
    )
    bridge = Proc(
        ["-m", "linevision", "bridge", "plc", "--config", str(cfg), "--log-level", "warning"],
        tmp / "bridge.log",
    ).start(wait_ready=False)
    n = int(rate * seconds)
    try:
        time.sleep(2.0)
        daemon.stream(1, n, rate_hz=rate)
        daemon.wait_sent(n)
        t_end = time.monotonic()
        wait_for(lambda: len(read_records(record)) >= n, 30, "all verdicts", 0.05)
        drain_s = time.monotonic() - t_end
    finally:
        bridge.terminate()
        plc.terminate()
        daemon.stop()
    applied = read_records(record)
    acct = account(journal_rows(tmp / "journal.db"), applied)
    t_pub = publish_times(tmp / "journal.db")
    tags = {int(k[0], 16): k[0] for k in t_pub}
    lat = [(r["t_ns"] - t_pub[(tags[r["tag"]], r["seq"])]) / 1e6 for r in applied]
    return {
        "kind": kind,
        "rate": rate,
        "n": n,
        "lost": acct["lost"],
        "twice": acct["applied_twice"],
        "p50_ms": round(percentile(lat, 50), 2),
        "p99_ms": round(percentile(lat, 99), 2),
        "drain_s": round(drain_s, 2),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--rates", default="100,250,500,1000,2000")
    p.add_argument("--kinds", default="modbus,opcua")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        for kind in args.kinds.split(","):
            for rate in [int(r) for r in args.rates.split(",")]:
                res = run(kind, rate, args.seconds, Path(d) / f"{kind}-{rate}")
                ok = res["lost"] == 0 and res["twice"] == 0 and float(res["p99_ms"]) < 250.0
                print(json.dumps({**res, "sustained": ok}), flush=True)


if __name__ == "__main__":
    main()
