"""The daemon's side of lossless, authenticated delivery: journal, CURVE keys, replay.

Opened by :class:`linevision.daemon.service.Service` before the verdict socket binds, closed after
it is closed. Everything here is optional: with no ``journal``, ``bus.replay`` or
``bus.curve`` in the config, the bus behaves as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from zmq.auth.thread import ThreadAuthenticator

from linevision.bus import curve as keys
from linevision.bus.curve import KeyPair
from linevision.bus.journal import Journal
from linevision.bus.replay import CurrentFn, ReplayServer
from linevision.bus.wire import context
from linevision.config import Config
from linevision.log import get_logger

log = get_logger(__name__)


@dataclass
class Delivery:
    journal: Journal | None = None
    curve: KeyPair | None = None
    auth: ThreadAuthenticator | None = None
    replay: ReplayServer | None = None
    _config: Config | None = field(default=None, repr=False)

    @classmethod
    def open(cls, config: Config) -> Delivery:
        """Load keys (starting the ZAP handler) and open the journal; raises on bad files."""
        d = cls(_config=config)
        curve_cfg = config.bus.curve
        if curve_cfg is not None:
            d.curve = keys.load_pair(curve_cfg.secret_key_file)
            allowed = keys.authorized_dir(curve_cfg.authorized_keys_dir)
            d.auth = keys.start_authenticator(context(), allowed)
        if config.journal is not None:
            d.journal = Journal(config.journal.path, config.journal.max_entries, shared=True)
        return d

    def start_replay(self, current: CurrentFn) -> None:
        cfg = self._config
        if cfg is None or cfg.bus.replay is None or cfg.journal is None:
            return
        self.replay = ReplayServer(cfg.bus.replay, cfg.journal.path, current, curve=self.curve)
        self.replay.start()

    def close(self) -> None:
        """Call after the verdict publisher has stopped."""
        if self.replay is not None:
            self.replay.stop()
        if self.journal is not None:
            self.journal.close()
        if self.auth is not None:
            self.auth.stop()
