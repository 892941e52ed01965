"""``linevision plant``: subscribe to the topic tree, keep the view, print it."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import socket
import time
from pathlib import Path

from linevision.bridges.mqtt_config import PlantConfig
from linevision.bridges.mqtt_link import Link, LinkError, read_secret
from linevision.log import get_logger
from linevision.plant.view import PlantView
from linevision.types import Backoff

log = get_logger(__name__)


async def run_plant(  # noqa: PLR0913  (the broker, and how to show what it says)
    cfg: PlantConfig,
    stop: asyncio.Event,
    *,
    client_id: str | None = None,
    interval_s: float = 2.0,
    as_json: bool = False,
    quiet: bool = False,
    view: PlantView | None = None,
) -> PlantView:
    """Until ``stop``: (re)connect with a persistent session, take every message, print."""
    view = view if view is not None else PlantView(cfg.topic_prefix)
    password = None if cfg.broker.password_file is None else read_secret(cfg.broker.password_file)
    cid = client_id or cfg.broker.client_id or f"linevision-plant-{socket.gethostname()}"
    backoff = Backoff(0.2, 5.0)
    printer = asyncio.create_task(_print(view, stop, interval_s, as_json=as_json, quiet=quiet))
    try:
        while not stop.is_set():
            lost = asyncio.Event()
            link = Link(
                cfg.broker,
                cid,
                password,
                None,
                on_ack=lambda *_: None,
                on_lost=functools.partial(_set, lost),
                on_message=view.ingest,
            )
            try:
                await link.open(clean_start=False, session_expiry_s=cfg.session_expiry_s)
            except LinkError as exc:
                log.warning("plant_connect_failed", error=str(exc), code=exc.code)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff.failed())
                continue
            backoff.reset()
            link.subscribe(f"{cfg.topic_prefix}/#", qos=1)
            log.info("plant_connected", session_present=link.session_present)
            stopped = asyncio.create_task(stop.wait())
            gone = asyncio.create_task(lost.wait())
            await asyncio.wait({stopped, gone}, return_when=asyncio.FIRST_COMPLETED)
            for t in (stopped, gone):
                t.cancel()
            await link.close()
    finally:
        printer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await printer
    return view


async def _print(
    view: PlantView, stop: asyncio.Event, interval_s: float, *, as_json: bool, quiet: bool
) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
        if quiet:
            continue
        if as_json:
            print(json.dumps(view.snapshot(), separators=(",", ":")), flush=True)  # noqa: T201
        else:
            print(time.strftime("%H:%M:%S"), flush=True)  # noqa: T201
            print(view.render() + "\n", flush=True)  # noqa: T201


def _set(event: asyncio.Event, _why: str) -> None:
    event.set()


def write_stats(view: PlantView, path: Path) -> None:
    path.write_text(json.dumps(view.snapshot(), indent=2), encoding="utf-8")
