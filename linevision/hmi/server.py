"""The HMI server: a SUB socket in a thread feeds :class:`HmiState`; Starlette serves the page.

Routes (GET but the acknowledgement and the review page's POST: ``hmi/review.py``):

- ``/`` the page; ``/static/*`` its scripts and styles (package data, no build step, one
  file per concern: ``static/js/``, ``static/css/``); ``/favicon.ico``;
- ``/events`` server-sent events: one JSON snapshot per ``1 / push_hz`` s when it changed;
- ``/api/state`` the same snapshot once;
- ``/img/...`` and ``/api/picture/...`` a verdict's pictures from the archive folder the
  daemon writes (:mod:`linevision.hmi.pictures`);
- ``POST /api/alarms/ack`` ``{"alarm": <key>, "operator": <name>}``: an operator
  acknowledges an active alarm (recorded in the log and on the page); 400 names a bad field;
- ``/healthz``.

With ``hmi.bridges``, a second thread subscribes to each bridge's health and alarms
(:mod:`linevision.hmi.bridges`). With ``hmi.curve``, the bus subscription is a CURVE client.

With a token, every route but ``/healthz`` needs it: ``Authorization: Bearer``, ``?token=``
(which also sets an HttpOnly cookie for the page's own requests) or that cookie.
"""

from __future__ import annotations

import asyncio
import hmac
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
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from linevision.bus import curve as keys
from linevision.bus.subscriber import open_sub
from linevision.bus.wire import (
    HEARTBEAT_TOPIC,
    VERDICT_PREFIX,
    BusMessageError,
    context,
    parse_message,
)
from linevision.config import Config, HmiConfig, split_listen
from linevision.hmi.alarms import MAX_ACK_BYTES, AckError, parse_ack
from linevision.hmi.bridges import ReportFeed
from linevision.hmi.pictures import Pictures
from linevision.hmi.review import ReviewApi
from linevision.hmi.state import HmiState, StationMeta, stations_of
from linevision.lifecycle.review import StationRules
from linevision.log import RateLimitedLog, get_logger
from linevision.paths import archive_dir, credential, review_dir

log = get_logger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
_COOKIE = "linevision_hmi"
TICK_S = 0.5
"""How often the feed evaluates the alarms when no page asks for a snapshot."""


class BusFeed:
    """Subscribes to verdicts and heartbeats and feeds the state; never talks back."""

    def __init__(
        self, endpoint: str, state: HmiState, curve: keys.ClientKeys | None = None
    ) -> None:
        self.endpoint = endpoint
        self.state = state
        self._curve = curve
        self.bad_input = RateLimitedLog(log)
        """Messages that were not valid verdicts or heartbeats, or that the state refused."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="hmi-feed", daemon=True)

    @property
    def invalid(self) -> int:
        return self.bad_input.count

    def start(self) -> None:
        self._thread.start()

    def threads(self) -> tuple[threading.Thread, ...]:
        return (self._thread,)

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        topics = (VERDICT_PREFIX, HEARTBEAT_TOPIC)
        sock = open_sub(context(), self.endpoint, topics, self._curve)
        log.info("hmi_subscribed", endpoint=self.endpoint, curve=self._curve is not None)
        ticked = time.monotonic()
        try:
            while not self._stop.is_set():
                if time.monotonic() - ticked >= TICK_S:
                    ticked = time.monotonic()
                    self.state.tick()
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
        """Never raises: a bad message is counted, and the feed goes on."""
        if len(frames) != 2:
            self.bad_input.warning("hmi_invalid_message", error=f"{len(frames)} frames")
            return
        try:
            self.state.ingest(parse_message(frames[0], frames[1]))
        except BusMessageError as exc:
            self.bad_input.warning("hmi_invalid_message", error=str(exc)[:300])
        except Exception as exc:
            self.bad_input.exception("hmi_message_failed", error=repr(exc)[:300])


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

    def invalidate(self) -> None:
        """The next ``get`` builds afresh (an operator's action shows at once)."""
        with self._lock:
            self._json = ""

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
        if request.url.path in ("/healthz", "/favicon.ico"):
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


class _LogErrors:
    """Any exception a request raises is one JSON log event and a JSON 500, never more.

    Without it, Starlette answers 500 and re-raises, and uvicorn logs the traceback again.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.failures = RateLimitedLog(log)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            self.failures.exception(
                "hmi_request_failed", path=str(scope.get("path", ""))[:200], error=repr(exc)[:300]
            )
            if not started:
                await JSONResponse({"error": "internal error"}, status_code=500)(
                    scope, receive, send
                )


def bad_parameter(param: str, problem: str) -> Response:
    """HTTP 400 with ``{"error": "<param>: <problem>", "param": "<param>"}``."""
    return JSONResponse({"error": f"{param}: {problem}", "param": param}, status_code=400)


class _Handlers:
    def __init__(
        self, state: HmiState, archive: Path | None, push_hz: float, stop: threading.Event
    ) -> None:
        self.state = state
        self.archive = archive
        self.snapshots = _Snapshots(state, push_hz)
        self.stop = stop
        self.bad_input = RateLimitedLog(log)
        """Requests refused with 400."""
        self.pictures = Pictures(archive, stop, self._bad)

    def _bad(self, param: str, problem: str) -> Response:
        self.bad_input.warning("hmi_bad_request", param=param)
        return bad_parameter(param, problem)

    async def index(self, _request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def api_state(self, _request: Request) -> Response:
        return Response(self.snapshots.get(), media_type="application/json")

    async def favicon(self, _request: Request) -> Response:
        headers = {"Cache-Control": "max-age=86400"}
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml", headers=headers)

    async def ack(self, request: Request) -> Response:
        """``{"alarm": key, "operator": name}`` as JSON; 400 names what is wrong."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_ACK_BYTES:
                break
        try:
            alarm, operator = parse_ack(kind, body)
            view = self.state.acknowledge(alarm, operator)
        except AckError as exc:
            return self._bad(exc.param, exc.problem)
        self.snapshots.invalidate()
        return JSONResponse({"ok": True, "alarm": view})

    async def healthz(self, _request: Request) -> Response:
        return JSONResponse(
            {
                "ok": True,
                "verdicts_seen": self.state.verdicts,
                "bad_requests": self.bad_input.count,
            }
        )

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


def create_app(  # noqa: PLR0913  (the state, the files, the token and the review page)
    state: HmiState,
    archive: Path | None,
    push_hz: float = 5.0,
    token: str | None = None,
    stopping: threading.Event | None = None,
    *,
    review: ReviewApi | None = None,
) -> Starlette:
    h = _Handlers(state, archive, push_hz, stopping if stopping is not None else threading.Event())
    routes = [
        Route("/", h.index),
        Route("/events", h.events),
        Route("/api/state", h.api_state),
        Route("/healthz", h.healthz),
        Route("/favicon.ico", h.favicon),
        Route("/api/alarms/ack", h.ack, methods=["POST"]),
        Route("/img/{station}/{run_id}/{file}", h.pictures.file),
        Route("/api/picture/{station}/{run_id}/{seq}", h.pictures.describe),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    if review is not None:
        routes[-1:-1] = [
            Route("/review", review.page),
            Route("/api/review", review.api, methods=["GET", "POST"]),
        ]
    middleware = [Middleware(_LogErrors)]
    if token is not None:
        middleware.append(Middleware(BaseHTTPMiddleware, dispatch=_token_guard(token)))
    app = Starlette(routes=routes, middleware=middleware)
    app.state.snapshots = h.snapshots
    return app


class HmiServer:
    """The feed and the web server on their own threads; ``stop()`` ends both."""

    def __init__(  # noqa: PLR0913  (where it listens, what it reads; the rest by keyword)
        self,
        cfg: HmiConfig,
        bus_endpoint: str,
        archive: Path | None,
        *,
        token: str | None = None,
        curve: keys.ClientKeys | None = None,
        stations: dict[str, StationMeta] | None = None,
        review: ReviewApi | None = None,
    ) -> None:
        host, port = split_listen(cfg.listen)
        self.state = HmiState(cfg, stations)
        self.feed = BusFeed(bus_endpoint, self.state, curve)
        self.bridge_feed = ReportFeed(
            cfg.bridges, self.state.ingest_report, self.state.report_invalid
        )
        self._stopping = threading.Event()
        self.review = review
        self.app = create_app(
            self.state, archive, cfg.push_hz, token, self._stopping, review=review
        )
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

    def threads(self) -> tuple[threading.Thread, ...]:
        """The HTTP server, the bus feed and (with ``hmi.bridges``) the bridge feed."""
        return (self._thread, *self.feed.threads(), *self.bridge_feed.threads())

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
    endpoint = cfg.hmi.bus or cfg.bus.publish
    review = None if folder is None else review_api(cfg, folder, env)
    return HmiServer(
        cfg.hmi, endpoint, folder, token=token, curve=curve, stations=stations_of(cfg),
        review=review,
    )  # fmt: skip


def review_api(cfg: Config, archive: Path, env: Mapping[str, str] | None = None) -> ReviewApi:
    """The review page's API for ``cfg``'s stations, on ``archive`` (docs/lifecycle.md)."""
    rules = {sc.name: StationRules(sc.type, sc.decision.ok_labels) for sc in cfg.stations}
    return ReviewApi(archive, review_dir(cfg.review.dir, env), rules, cfg.review.ok_below)
