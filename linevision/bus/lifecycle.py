"""The lifecycle's messages on the verdict bus: challenge results (``challenge.<station>``).

A challenge sends master samples through the live station; their verdicts never go out as
``verdict.<station>`` (no ``seq`` is spent on them, no bridge sees them). What goes out is
one message per challenge run, when it ends, with the result of every sample. See
docs/lifecycle.md.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from linevision.bus.wire import BusMessageError, WireModel
from linevision.types import Reason, VerdictValue

CHALLENGE_PREFIX = "challenge."


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


Trigger = Literal["cli", "schedule", "plc", "start", "switch"]
"""What started a challenge run: the command line, a configured time (``challenge.at``), the
PLC's request register, the daemon's start, a recipe switch or a model promotion."""


class SampleResult(_Wire):
    sample: str
    """The sample's path in the challenge folder (a six_view cell's folder)."""
    sha256: str
    """Of the sample's image files (all views, in order): the auditor's proof of what ran."""
    expected: VerdictValue
    verdict: VerdictValue | None
    """None: no verdict came back within the sample's time (the run fails)."""
    reason: Reason | None
    label: str | None
    score: float | None
    latency_ms: float | None
    attempts: int = Field(ge=1)
    """A fail-safe NG (timeout, overload...) proves nothing of the model: the sample is sent
    again, up to ``challenge.retries`` more times."""
    passed: bool


class ChallengeRunMessage(_Wire):
    schema_: Literal[1] = Field(alias="schema")
    run_id: str
    """The daemon's run (as on verdicts)."""
    id: str
    """This challenge run's id (32 hex digits)."""
    station: str
    recipe: str | None
    trigger: Trigger
    user: str | None
    model: WireModel | None
    folder: str
    started_ns: int
    finished_ns: int
    passed: bool
    error: str | None
    """Why the run could not be done (unreadable folder, model changed during the run)."""
    samples: list[SampleResult]


def parse_challenge(topic: bytes, payload: bytes) -> ChallengeRunMessage:
    """Validate one ``challenge.<station>`` message; BusMessageError for anything else."""
    try:
        name = topic.decode("ascii")
        msg = ChallengeRunMessage.model_validate(json.loads(payload.decode("utf-8")))
    except (ValueError, RecursionError) as exc:
        err = f"malformed challenge message on topic {topic[:64]!r}: {str(exc)[:500]}"
        raise BusMessageError(err) from exc
    if name != CHALLENGE_PREFIX + msg.station:
        err = f"topic {name!r} does not match station {msg.station!r}"
        raise BusMessageError(err)
    return msg
