"""The chaos soak, 42 s of it: every fault kind at least once, then the audit.

The faults come 1.5-2.5 s apart instead of 4-9 s (the 34 s before the quiet end, less the
start-up, hold all 11 kinds even at 2.5 s), so they overlap more than in the long soak
(`python -m tests.soak --minutes 60`, docs/reliability.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_chaos_soak_holds_the_fail_safe_contract(tmp_path):
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "tests.soak", "--minutes", "0.7", "--gap", "1.5,2.5"),
            *("--json", "--work", str(tmp_path)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=420,
        check=False,
    )
    lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
    assert lines, proc.stderr[-3000:]
    figures = json.loads(lines[-1])
    print(f"\nFIGURE soak: {json.dumps(figures)}")
    # every cell once, no late verdict, the PLC exact, the wire valid, replay alive, and no
    # NG cell past the reject station (the bridge's decision handshake with the station's
    # interlock: a late, missing or lost decision is a rejected cell)
    assert figures["failed"] == [], figures
    assert figures["ng_passed_count"] == 0
    # every fault kind ran at least once and the line saw NG cells at the reject station
    assert len(figures["faults"]) >= 11
    assert figures["ng_cells_at_reject"] > 0
    assert figures["plc"]["published"] > 500
