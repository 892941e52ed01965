"""The HMI server: a SUB socket in a thread feeds :class:`HmiState`; Starlette serves the page.

Routes (all GET, read-only):

- ``/`` the page; ``/static/*`` its script and style (package data, no build step);
- ``/events`` server-sent events: one JSON snapshot per ``1 / push_hz`` s when it changed;
- ``/api/state`` the same snapshot once;
- ``/img/<station>/<run_id>/<seq>.jpg?t=<t_frame_ns>`` a verdict's image with its overlay,
  read from the archive folder the daemon writes (it may take a moment to appear, so the
  server waits up to ``IMAGE_WAIT_S`` before answering 404);
- ``/healthz``.

With ``hmi.bridges``, a second thread subscribes to each bridge's health and alarms
(:mod:`linevision.hmi.bridges`). With ``hmi.curve``, the bus subscription is a CURVE client.

With a token, every route but ``/healthz`` needs it: ``Authorization: Bearer``, ``?token=``
(which also sets an HttpOnly cookie for the page's own requests) or that cookie.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path

import uvicorn
import zmq
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from linevision import keys
from linevision.archive import archive_dir, image_relpath
from linevision.bus import BusMessageError, context, parse_message
from linevision.config import Config, HmiConfig, split_listen
from linevision.hmi.bridges import ReportFeed
from linevision.hmi.state import HmiState
from linevision.log import get_logger
from linevision.paths import credential

log = get_logger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
IMAGE_WAIT_S = 2.0
_COOKIE = "linevision_hmi"
_STATION = re.compile(r"^[a-z0-9_]+$")
_RUN_ID = re.compile(r"^[0-9a-f]{8,64}$")


class BusFeed:
    """Subscribes to verdicts and heartbeats and feeds the state; never talks back."""

    def __init__(
        self, endpoint: str, state: HmiState, curve: keys.ClientKeys | None = None
    ) -> None:
        self.endpoint = endpoint
        self.state = state
        self._curve = curve
        self.invalid = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="hmi-feed", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        sock = context().socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, 100_000)
        for topic in (b"verdict.", b"heartbeat"):
            sock.setsockopt(zmq.SUBSCRIBE, topic)
        if self._curve is not None:
            keys.make_client(sock, self._curve)
        sock.connect(self.endpoint)
        log.info("hmi_subscribed", endpoint=self.endpoint, curve=self._curve is not None)
        try:
            while not self._stop.is_set():
                if not sock.poll(200):
                    continue
                while True:
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._one(frames)
        finally:
            sock.close(0)

    def _one(self, frames: list[bytes]) -> None:
        if len(frames) != 2:
            self.invalid += 1
            return
        try:
            self.state.ingest(parse_message(frames[0], frames[1]))
        except BusMessageError:
            self.invalid += 1


class _Snapshots:
    """One JSON snapshot shared by every client, rebuilt at most ``push_hz`` times a second."""

    def __init__(self, state: HmiState, push_hz: float) -> None:
        self.state = state
        self.period = 1.0 / push_hz
        self._at = 0.0
        self._json = ""
        self._lock = threading.Lock()
        self.builds = 0
        self.build_ms_max = 0.0

    def get(self) -> str:
        with self._lock:
            now = time.monotonic()
            if not self._json or now - self._at >= self.period:
                t0 = time.perf_counter()
                self._json = self.state.snapshot_json()
                self.build_ms_max = max(self.build_ms_max, (time.perf_counter() - t0) * 1000)
                self.builds += 1
                self._at = now
            return self._json


def _token_guard(
    token: str,
) -> Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]:
    async def guard(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if request.url.path == "/healthz":
            return await call_next(request)
        given = request.query_params.get("token") or request.cookies.get(_COOKIE, "")
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            return PlainTextResponse("token required", status_code=401)
        response = await call_next(request)
        if request.query_params.get("token"):
            response.set_cookie(_COOKIE, token, httponly=True, samesite="strict")
        return response

    return guard


class _Handlers:
    def __init__(
        self, state: HmiState, archive: Path | None, push_hz: float, stop: threading.Event
    ) -> None:
        self.state = state
        self.archive = archive
        self.snapshots = _Snapshots(state, push_hz)
        self.stop = stop

    async def index(self, _request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def api_state(self, _request: Request) -> Response:
        return Response(self.snapshots.get(), media_type="application/json")

    async def healthz(self, _request: Request) -> Response:
        return JSONResponse({"ok": True, "verdicts_seen": self.state.verdicts})

    async def events(self, _request: Request) -> Response:
        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(self._stream(), media_type="text/event-stream", headers=headers)

    async def _stream(self) -> AsyncIterator[str]:
        yield "retry: 1000\n\n"
        last = ""
        quiet_since = time.monotonic()
        while not self.stop.is_set():
            data = self.snapshots.get()
            if data != last:
                last = data
                quiet_since = time.monotonic()
                yield f"data: {data}\n\n"
            elif time.monotonic() - quiet_since > 10.0:
                quiet_since = time.monotonic()
                yield ": keep-alive\n\n"
            await asyncio.sleep(self.snapshots.period)

    async def image(self, request: Request) -> Response:
        station = str(request.path_params["station"])
        run_id = str(request.path_params["run_id"])
        seq = int(request.path_params["seq"])
        t_raw = request.query_params.get("t", "")
        if self.archive is None or not _STATION.match(station) or not _RUN_ID.match(run_id):
            return PlainTextResponse("not found", status_code=404)
        if not t_raw.isdigit():
            return PlainTextResponse("t (t_frame_ns) required", status_code=400)
        path = self.archive / image_relpath(station, run_id, seq, int(t_raw))
        deadline = time.monotonic() + IMAGE_WAIT_S
        while not path.is_file():
            if time.monotonic() > deadline or self.stop.is_set():
                return PlainTextResponse("no image (yet)", status_code=404)
            await asyncio.sleep(0.05)
        headers = {"Cache-Control": "max-age=3600"}
        return FileResponse(path, media_type="image/jpeg", headers=headers)


def create_app(
    state: HmiState,
    archive: Path | None,
    push_hz: float = 5.0,
    token: str | None = None,
    stopping: threading.Event | None = None,
) -> Starlette:
    h = _Handlers(state, archive, push_hz, stopping if stopping is not None else threading.Event())
    routes = [
        Route("/", h.index),
        Route("/events", h.events),
        Route("/api/state", h.api_state),
        Route("/healthz", h.healthz),
        Route("/img/{station}/{run_id}/{seq:int}.jpg", h.image),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = []
    if token is not None:
        middleware.append(Middleware(BaseHTTPMiddleware, dispatch=_token_guard(token)))
    app = Starlette(routes=routes, middleware=middleware)
    app.state.snapshots = h.snapshots
    return app


class HmiServer:
    """The feed and the web server on their own threads; ``stop()`` ends both."""

    def __init__(
        self,
        cfg: HmiConfig,
        bus_endpoint: str,
        archive: Path | None,
        token: str | None = None,
        curve: keys.ClientKeys | None = None,
    ) -> None:
        host, port = split_listen(cfg.listen)
        self.state = HmiState(cfg.shifts, cfg.latency_budget_ms, cfg.min_yield, cfg.bridges)
        self.feed = BusFeed(bus_endpoint, self.state, curve)
        self.bridge_feed = ReportFeed(
            cfg.bridges, self.state.ingest_report, self.state.report_invalid
        )
        self._stopping = threading.Event()
        self.app = create_app(self.state, archive, cfg.push_hz, token, self._stopping)
        self._server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                host=host,
                port=port,
                log_config=None,
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=1,
            )
        )
        self._thread = threading.Thread(target=self._server.run, name="hmi-http", daemon=True)

    @property
    def port(self) -> int:
        servers = getattr(self._server, "servers", [])
        for srv in servers:
            for sock in srv.sockets:
                return int(sock.getsockname()[1])
        return self._server.config.port

    def start(self, timeout_s: float = 10.0) -> None:
        self.feed.start()
        if self.bridge_feed.endpoints:
            self.bridge_feed.start()
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.feed.stop()
                self.bridge_feed.stop()
                cfg = self._server.config
                msg = f"HMI did not start on {cfg.host}:{cfg.port}"
                raise RuntimeError(msg)
            time.sleep(0.02)
        log.info("hmi_listening", host=self._server.config.host, port=self.port)

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stopping.set()
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        self.feed.stop()
        self.bridge_feed.stop()


class HmiConfigError(Exception):
    """The HMI cannot start as configured (token or key file missing, empty or unsafe)."""


def _client_keys(cfg: HmiConfig, env: Mapping[str, str] | None) -> keys.ClientKeys | None:
    if cfg.curve is None:
        return None
    try:
        return keys.ClientKeys(
            keys.load_pair(credential(cfg.curve.secret_key_file, env)),
            keys.load_public(credential(cfg.curve.server_public_key_file, env)),
        )
    except keys.KeyFileError as exc:
        msg = f"hmi.curve: {exc}"
        raise HmiConfigError(msg) from exc


def from_config(cfg: Config, env: Mapping[str, str] | None = None) -> HmiServer:
    """An HMI for ``cfg``: its bus endpoint, the archive folder and the token, if any."""
    token = None
    if cfg.hmi.token_file is not None:
        path = credential(cfg.hmi.token_file, env)
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            msg = f"hmi.token_file: cannot read {path}: {exc.strerror}"
            raise HmiConfigError(msg) from exc
        if len(token) < 16:
            msg = f"hmi.token_file {path}: the token must be at least 16 characters"
            raise HmiConfigError(msg)
    curve = _client_keys(cfg.hmi, env)
    if cfg.bus.curve is not None and curve is None:
        log.warning("hmi_without_curve", hint="the bus uses CURVE: set hmi.curve")
    folder = archive_dir(cfg.archive, env) if cfg.archive.enabled else None
    return HmiServer(cfg.hmi, cfg.hmi.bus or cfg.bus.publish, folder, token, curve)
