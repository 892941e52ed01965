"""What to check for each alarm: the table of ``docs/operations.md`` ("## Alarms"), read at
start, so the page and the manual say the same (the package's ``operations.md`` is that file).

>>> text = '''## Alarms
...
... | alarm | level | means | what to do |
... |---|---|---|---|
... | `daemon_down` | critical | no heartbeat | `systemctl status linevision` |
... | bridge alarm codes | critical / warning | raised by a bridge | see docs/plc.md |
...
... ## Next'''
>>> book = parse(text)
>>> book["daemon_down"]["action"], book["bridge"]["means"]
('`systemctl status linevision`', 'raised by a bridge')
"""

from __future__ import annotations

import re
from pathlib import Path

from linevision.log import get_logger

log = get_logger(__name__)

RUNBOOK = Path(__file__).resolve().parent / "operations.md"
BRIDGE = "bridge"
"""The entry of alarm codes a bridge raises (docs/protocol.md), which share one row."""
_CODE = re.compile(r"^`([a-z0-9_]+)`$")

Runbook = dict[str, dict[str, str]]


def parse(text: str) -> Runbook:
    """Alarm code -> ``{"level", "means", "action"}`` from the table under ``## Alarms``."""
    book: Runbook = {}
    section = False
    for line in text.splitlines():
        if line.startswith("## "):
            section = line.strip() == "## Alarms"
            continue
        if not section or not line.startswith("|") or set(line) <= {"|", "-", " "}:
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4:
            continue
        match = _CODE.match(cells[0])
        key = match.group(1) if match else (BRIDGE if cells[0].startswith("bridge ") else None)
        if key is not None:
            book[key] = {"level": cells[1], "means": cells[2], "action": cells[3]}
    return book


def load(path: Path = RUNBOOK) -> Runbook:
    """The runbook, or an empty one (logged) when the manual is not there."""
    try:
        return parse(path.read_text(encoding="utf-8"))
    except OSError as exc:
        log.warning("runbook_missing", path=str(path), error=exc.strerror)
        return {}


def entry(book: Runbook, code: str, *, bridge: bool = False) -> dict[str, str] | None:
    """The row for ``code``; a bridge's own codes without a row of their own share one."""
    return book.get(code) or (book.get(BRIDGE) if bridge else None)
