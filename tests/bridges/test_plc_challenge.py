"""The challenge interlock at the PLC over OPC UA: the vision-verified bit follows the daemon's
heartbeat; the PLC's request reaches the daemon's control socket, and waits while it cannot."""

from __future__ import annotations

import json
import threading

import zmq
from asyncua import ua

from linevision.bridges.config import PlcBridgeConfig
from linevision.bridges.plc import run_plc_bridge
from linevision.bridges.plc_link import STATUS_STREAM_ALIVE, STATUS_VERIFIED
from linevision.bus.publisher import VerdictPublisher
from linevision.bus.wire import context
from linevision.daemon.control import ControlServer
from tests.bridges.harness import BridgeThread, free_port, wait_for
from tests.bridges.plc_sim import OpcUaPlc, ThreadedPlc
from tests.helpers import free_tcp_endpoint


class _Alarms:
    """The bridge's alarm messages, as they come."""

    def __init__(self, endpoint: str) -> None:
        self.seen: list[dict[str, object]] = []
        self._stop = threading.Event()
        self._sock = context().socket(zmq.SUB)
        self._sock.setsockopt(zmq.SUBSCRIBE, b"alarm.")
        self._sock.connect(endpoint)
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self._sock.poll(50):
                _, payload = self._sock.recv_multipart()
                self.seen.append(json.loads(payload))

    def active(self, code: str) -> bool | None:
        states = [a["active"] for a in self.seen if a["alarm"] == code]
        return states[-1] if states else None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close(0)


def test_verified_bit_and_the_plc_request_over_opc_ua():
    verified = {"pole_piece": {"verified": False, "challenge_running": False}}
    publisher = VerdictPublisher(free_tcp_endpoint(), heartbeat_s=0.2, state=lambda: (verified, {}))
    publisher.start()
    plc = ThreadedPlc(OpcUaPlc(free_port())).start(timeout_s=60)
    control_endpoint = free_tcp_endpoint()
    requests: list[dict[str, object]] = []
    control = ControlServer(
        control_endpoint, {"challenge.run": lambda req: requests.append(req) or {"runs": {}}}
    )
    report = free_tcp_endpoint()
    cfg = PlcBridgeConfig.model_validate(
        {
            "source": {"verdicts": publisher.endpoint, "replay": None, "heartbeat_timeout_s": 1.0},
            "report": {"publish": report},
            "plc": {
                "kind": "opcua",
                "url": plc.plc.url,
                "timeout_s": 1.0,
                "nodes": {"challenge_request": "s=Linevision.ChallengeRequest"},
            },
            "stations": {"pole_piece": 1},
            "heartbeat_s": 0.2,
            "challenge": {"control": control_endpoint, "timeout_s": 0.5},
        }
    )
    alarms = _Alarms(report)
    bridge = BridgeThread(lambda stop: run_plc_bridge(cfg, stop)).start()

    def status() -> int:
        return int(plc.call(plc.plc.read("Status")))  # type: ignore[call-overload]

    def request_node() -> bool:
        return bool(plc.call(plc.plc.read("ChallengeRequest")))

    try:
        wait_for(lambda: status() & STATUS_STREAM_ALIVE, 10, "the daemon heard")
        assert not status() & STATUS_VERIFIED
        verified["pole_piece"] = {"verified": True, "challenge_running": False}
        wait_for(lambda: status() & STATUS_VERIFIED, 5, "vision verified")

        # the PLC asks while the daemon's control socket is down: the request waits
        node = plc.plc.nodes["ChallengeRequest"]
        value = ua.DataValue(ua.Variant(True, ua.VariantType.Boolean))
        plc.call(plc.plc.server.write_attribute_value(node.nodeid, value))  # type: ignore[attr-defined]
        wait_for(lambda: alarms.active("challenge_request_failed") is True, 10, "the alarm")
        assert request_node() is True
        assert requests == []

        # the daemon takes it: passed on once, cleared at the PLC, the alarm cleared
        control.start()
        wait_for(lambda: not request_node(), 10, "the request cleared")
        assert requests == [{"cmd": "challenge.run", "trigger": "plc", "user": "plc:plc"}]
        wait_for(lambda: alarms.active("challenge_request_failed") is False, 5, "alarm cleared")

        # the daemon goes silent: not verified any more
        publisher.stop()
        wait_for(lambda: not status() & STATUS_VERIFIED, 10, "the bit cleared")
    finally:
        bridge.stop()
        control.stop()
        alarms.stop()
        plc.stop()
        publisher.stop()
