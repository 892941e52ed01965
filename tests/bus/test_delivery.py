"""The full daemon (emulated camera -> model -> bus) with a journal and the replay endpoint."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

from linevision.bus.journal import Journal
from linevision.bus.replay import ReplayClient
from linevision.bus.subscriber import subscribe
from linevision.bus.wire import VerdictMessage
from linevision.config import Config
from linevision.daemon.service import Service
from linevision.tools import demo
from tests.helpers import free_tcp_endpoint

MODELS = Path(__file__).resolve().parents[2] / "models"


def test_service_journals_every_verdict_and_replays_it(tmp_path):
    images = demo.ensure_pole_piece_images(tmp_path / "pp", count=12)
    data = demo.demo_config(images, rate_hz=25).model_dump(mode="json")
    data["bus"].update(publish=free_tcp_endpoint(), replay=free_tcp_endpoint())
    data["journal"] = {"path": str(tmp_path / "journal.db"), "max_entries": 1000}
    cfg = Config.model_validate(data)
    got: list[VerdictMessage] = []
    ready = threading.Event()

    def reader() -> None:
        gen = subscribe(cfg.bus.publish, ("verdict.",), timeout_s=20)
        ready.set()
        for m in gen:
            if isinstance(m, VerdictMessage):
                got.append(m)
            if len(got) >= 15:
                gen.close()
                return

    service = Service(cfg, models_root=MODELS)
    service.start()
    try:
        t = threading.Thread(target=reader, daemon=True)
        t.start()
        t.join(30)

        async def fetch():
            c = ReplayClient(cfg.bus.replay)
            try:
                return await c.fetch(None, got[0].seq, got[-1].seq, 2.0)
            finally:
                c.close()

        batch = asyncio.run(fetch())
        run_id = service.publisher.run_id
    finally:
        service.stop()
    assert len(got) == 15
    assert [v.model_dump() for v in batch.verdicts] == [v.model_dump() for v in got]
    with Journal(tmp_path / "journal.db") as j:
        span = j.span(run_id)
        assert span is not None
        assert span.last_seq is not None
        assert span.last_seq >= got[-1].seq
        first = json.loads(j.read(run_id, got[0].seq, got[0].seq, 1)[0])
    assert first["cell_id"] == got[0].cell_id
