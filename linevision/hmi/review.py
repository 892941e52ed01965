"""The operator review on the HMI: the one page that writes (docs/lifecycle.md).

- ``GET /review``: the page (``static/review.html``, apart from the main page);
- ``GET /api/review``: the stations and their labels; with ``?station=S`` (``since`` ns,
  ``limit`` 1..500, ``ok_below`` 0..1) its NG and low-margin OK cells from the archive,
  newest first, with picture and latest review;
- ``POST /api/review``: one review, JSON ``{run_id, seq, decision, operator, label?,
  note?}``; the operator's name is recorded with it.

Off loopback the whole HMI needs its token (``hmi.token_file``), this page included. A POST
must be ``application/json`` and, when the browser says where it comes from (``Origin``),
come from this page's own origin: another site open in the operator's browser cannot post
a review. Everything else on the HMI stays read-only.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from linevision.lifecycle.review import (
    DECISIONS,
    ReviewError,
    StationRules,
    candidates,
    record,
)
from linevision.log import RateLimitedLog, get_logger

log = get_logger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
MAX_BODY = 4096
_STATION = re.compile(r"^[a-z0-9_]{1,64}$")
_RUN_ID = re.compile(r"^[0-9a-f]{8,64}$")


def _error(param: str, problem: str, status: int = 400) -> Response:
    return JSONResponse({"error": f"{param}: {problem}", "param": param}, status_code=status)


class ReviewApi:
    def __init__(
        self, archive: Path, review: Path, rules: dict[str, StationRules], ok_below: float
    ) -> None:
        self.archive = archive
        self.review = review
        self.rules = rules
        self.ok_below = ok_below
        self.bad_input = RateLimitedLog(log)
        self.written = 0

    async def page(self, _request: Request) -> Response:
        return FileResponse(STATIC / "review.html", headers={"Cache-Control": "no-store"})

    async def api(self, request: Request) -> Response:
        if request.method == "POST":
            return await self._post(request)
        return await self._list(request)

    def _bad(self, param: str, problem: str, status: int = 400) -> Response:
        self.bad_input.warning("review_bad_request", param=param)
        return _error(param, problem, status)

    async def _list(self, request: Request) -> Response:
        q = request.query_params
        station = q.get("station")
        if station is None:
            stations = {
                name: {
                    "kind": r.kind,
                    "ok_label": r.ok_label(),
                    "defect_labels": list(r.defect_labels()),
                }
                for name, r in self.rules.items()
            }
            return JSONResponse(
                {"stations": stations, "decisions": list(DECISIONS), "ok_below": self.ok_below}
            )
        if not _STATION.match(station) or station not in self.rules:
            return self._bad("station", f"one of {', '.join(self.rules)}")
        try:
            since = int(q.get("since", "0"))
            limit = int(q.get("limit", "100"))
            ok_below = float(q.get("ok_below", str(self.ok_below)))
        except ValueError:
            return self._bad("since", "since (ns), limit and ok_below must be numbers")
        if not 1 <= limit <= 500 or not 0.0 <= ok_below <= 1.0 or since < 0:
            return self._bad("limit", "limit 1..500, ok_below 0..1, since >= 0")
        rows = await asyncio.to_thread(
            candidates,
            self.archive,
            self.review,
            station,
            self.rules[station],
            ok_below=ok_below,
            since_ns=since,
            limit=limit,
        )
        for r in rows:
            r["image_url"] = f"/img/{station}/{r['run_id']}/{r['seq']}.jpg?t={r['t_frame_ns']}"
        return JSONResponse({"station": station, "ok_below": ok_below, "cells": rows})

    async def _post(self, request: Request) -> Response:
        checked = await self._check_post(request)
        if isinstance(checked, Response):
            return checked
        try:
            row = await asyncio.to_thread(record, self.archive, self.review, self.rules, **checked)
        except ReviewError as exc:
            return self._bad(exc.param, str(exc).split(": ", 1)[-1])
        self.written += 1
        log.info(
            "review_recorded",
            station=row["station"],
            cell_id=row["cell_id"],
            decision=row["decision"],
            label=row["label"],
            operator=row["operator"],
        )
        return JSONResponse({"review": row})

    async def _check_post(self, request: Request) -> dict[str, Any] | Response:
        """The review's fields, or the refusal naming the first bad one."""
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return self._bad("content-type", "application/json", 415)
        origin = request.headers.get("origin")
        if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
            return self._bad("origin", "a review comes from this HMI's own page", 403)
        body = await request.body()
        if len(body) > MAX_BODY:
            return self._bad("body", f"at most {MAX_BODY} bytes", 413)
        try:
            data = json.loads(body)
        except ValueError:
            return self._bad("body", "not JSON")
        problem = _fields_problem(data)
        if problem is not None:
            return self._bad(*problem)
        return {
            "run_id": data["run_id"],
            "seq": data["seq"],
            "decision": data["decision"],
            "operator": data["operator"],
            "label": data.get("label"),
            "note": data.get("note"),
        }


def _fields_problem(data: object) -> tuple[str, str] | None:
    """``(field, problem)`` of the first bad field of a review, None when all are good."""
    if not isinstance(data, dict):
        return "body", "a JSON object"
    unknown = sorted(set(data) - {"run_id", "seq", "decision", "operator", "label", "note"})
    if unknown:
        return str(unknown[0])[:64], "no such field"
    run_id, seq = data.get("run_id"), data.get("seq")
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
        return "run_id", "the verdict's run id (hex)"
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        return "seq", "the verdict's seq (an integer >= 1)"
    for key in ("decision", "operator", "label", "note"):
        value = data.get(key)
        required = key in ("decision", "operator")
        if (value is not None and not isinstance(value, str)) or (required and not value):
            return key, "a string" + (", required" if required else "")
    return None
