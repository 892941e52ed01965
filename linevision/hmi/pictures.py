"""The archive's pictures for the page: a verdict's whole view, the crops of its defects,
and what they show (written by the daemon's archive, ``linevision.daemon.pictures``).

- ``/img/<station>/<run_id>/<seq>.jpg?t=<t_frame_ns>`` the whole view, ``<seq>-d<k>.jpg``
  the crop of its k-th defect, ``<seq>.json`` the description: files, answered 404 when
  they do not appear within ``IMAGE_WAIT_S`` (the archive writes them a moment after the
  verdict);
- ``/api/picture/<station>/<run_id>/<seq>?t=...`` the description with the URLs of its
  files, or ``{"picture": null, "why": ...}`` when there is none (a fault without a frame,
  the archive off, a picture dropped): the page asks this first and loads only what exists.

A bad ``seq`` or ``t`` is 400 naming it.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response

from linevision.paths import PARTS, image_relpath

IMAGE_WAIT_S = 2.0
MAX_INT64 = 2**63 - 1
_STATION = re.compile(r"^[a-z0-9_]{1,64}$")
_RUN_ID = re.compile(r"^[0-9a-f]{8,64}$")
_NS = re.compile(r"^[0-9]{1,19}$")
_FILE = re.compile(r"^([0-9]{1,60})(-d[0-9])?\.(jpg|json)$")
_SEQ = re.compile(r"^[0-9]{1,60}$")

Bad = Callable[[str, str], Response]


class Pictures:
    def __init__(self, archive: Path | None, stop: threading.Event, bad: Bad) -> None:
        self.archive = archive
        self.stop = stop
        self.bad = bad

    def _where(self, request: Request, seq_raw: str, part: str) -> Path | Response:
        """The file's path, or the answer for a request that names none."""
        station = str(request.path_params["station"])
        run_id = str(request.path_params["run_id"])
        if self.archive is None or not _STATION.match(station) or not _RUN_ID.match(run_id):
            return PlainTextResponse("not found", status_code=404)
        if not _SEQ.match(seq_raw) or part not in PARTS:
            return PlainTextResponse("not found", status_code=404)
        seq = int(seq_raw)
        if not 1 <= seq <= MAX_INT64:
            return self.bad("seq", f"must be 1..{MAX_INT64}")
        t_raw = request.query_params.get("t", "")
        if not _NS.match(t_raw) or int(t_raw) > MAX_INT64:
            return self.bad("t", f"the frame's capture time in ns, an integer 0..{MAX_INT64}")
        return self.archive / image_relpath(station, run_id, seq, int(t_raw), part)

    async def _appeared(self, path: Path) -> bool:
        deadline = time.monotonic() + IMAGE_WAIT_S
        while not await asyncio.to_thread(path.is_file):
            if time.monotonic() > deadline or self.stop.is_set():
                return False
            await asyncio.sleep(0.05)
        return True

    async def file(self, request: Request) -> Response:
        name = _FILE.match(str(request.path_params["file"]))
        if name is None:
            return PlainTextResponse("not found", status_code=404)
        as_json = name.group(3) == "json"
        where = self._where(request, name.group(1), ".json" if as_json else name.group(2) or "")
        if isinstance(where, Response):
            return where
        if not await self._appeared(where):
            return PlainTextResponse("no picture (yet)", status_code=404)
        headers = {"Cache-Control": "max-age=3600"}
        kind = "application/json" if as_json else "image/jpeg"
        return FileResponse(where, media_type=kind, headers=headers)

    async def describe(self, request: Request) -> Response:
        seq = str(request.path_params["seq"])
        where = self._where(request, seq, ".json")
        if isinstance(where, Response):
            if where.status_code == 404 and self.archive is None:
                return JSONResponse({"picture": None, "why": "the archive is off"})
            return where
        if not await self._appeared(where):
            why = "no picture archived (a fault without a frame, or the picture was dropped)"
            return JSONResponse({"picture": None, "why": why})
        try:
            about = json.loads(await asyncio.to_thread(where.read_bytes))
        except (OSError, ValueError) as exc:
            return JSONResponse({"picture": None, "why": f"unreadable description: {exc}"})
        base = "img/{}/{}/{}".format(*(request.path_params[k] for k in ("station", "run_id")), seq)
        t = request.query_params["t"]
        crops = about.get("crops", [])
        about["urls"] = {
            "picture": f"{base}.jpg?t={t}",
            "crops": [f"{base}-d{k}.jpg?t={t}" for k in range(1, len(crops) + 1)],
        }
        return JSONResponse(about, headers={"Cache-Control": "max-age=3600"})
