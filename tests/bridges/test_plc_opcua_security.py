"""The OPC UA bridge with security on, against a real asyncua server that allows only
Basic256Sha256 SignAndEncrypt, trusts only the bridge's certificate and checks a password."""

from __future__ import annotations

import socket
import stat
import time
from pathlib import Path

import pytest
from asyncua import Server, ua
from asyncua.crypto import cert_gen
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from linevision.bridges import opcua_certs
from linevision.bridges.alarms import BridgeHealth
from linevision.bridges.config import PlcBridgeConfig
from linevision.bridges.plc import PlcBridge, run_plc_bridge
from linevision.cli import main
from linevision.config import ConfigError, parse_yaml_model
from tests.bridges.daemon_sim import Daemon, is_ng
from tests.bridges.harness import BridgeThread, collect_reports, free_port, wait_for
from tests.bridges.plc_sim import OpcUaPlc, ThreadedPlc
from tests.bridges.test_plc_opcua_bridge import opcua_config
from tests.helpers import free_tcp_endpoint

USER = "line3"
PASSWORD = "s3cret-line3"
SERVER_URI = "urn:test:plc"


class Users:
    """The server's user manager: one user with one password."""

    def get_user(self, _iserver, username=None, password=None, certificate=None):
        if username == USER and password == PASSWORD:
            return User(role=UserRole.User, name=username)
        return None


def server_certificate(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed server certificate as asyncua's own helper makes it."""
    key = cert_gen.generate_private_key()
    cert = cert_gen.generate_self_signed_app_certificate(
        key,
        f"test plc {name}",
        {},
        [x509.UniformResourceIdentifier(SERVER_URI), x509.DNSName("localhost")],
        extended=[ExtendedKeyUsageOID.SERVER_AUTH],
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.der", directory / f"{name}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    key_path.write_bytes(cert_gen.dump_private_key_as_pem(key))
    return cert_path, key_path


class SecurePlc(OpcUaPlc):
    """The stand-in PLC with security on: SignAndEncrypt only, username/password only, and
    only clients whose certificate is in ``client_trust``."""

    def __init__(self, port: int, cert: Path, key: Path, client_trust: Path) -> None:
        super().__init__(port)
        self.server = Server(user_manager=Users())
        self.cert, self.key, self.client_trust = cert, key, client_trust
        self.writes = 0
        """Values written into the Linevision nodes by a client."""

    async def _on_write(self, event, dispatcher) -> None:
        mine = {n.nodeid for n in self.nodes.values()}
        self.writes += sum(w.NodeId in mine for w in event.request_params.NodesToWrite)
        await super()._on_write(event, dispatcher)

    async def _setup(self) -> None:
        await super()._setup()
        s = self.server
        await s.set_application_uri(SERVER_URI)
        s.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
        s.set_identity_tokens([ua.UserNameIdentityToken])
        await s.load_certificate(str(self.cert))
        await s.load_private_key(str(self.key))
        store = TrustStore([self.client_trust], [])
        await store.load()
        s.set_certificate_validator(
            CertificateValidator(
                CertificateValidatorOptions.TRUSTED_VALIDATION
                | CertificateValidatorOptions.PEER_CLIENT,
                store,
            )
        )


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    """The bridge's certificate (made by the CLI), the PLC's, and an impostor's."""
    root = tmp_path_factory.mktemp("pki")
    assert main(["keys", "generate", "--opcua", str(root / "bridge"), "--name", "b"]) == 0
    plc_cert, plc_key = server_certificate(root / "plc", "plc")
    other_cert, _ = server_certificate(root / "other", "other")
    (root / "trusted").mkdir()
    (root / "trusted" / "plc.der").write_bytes(plc_cert.read_bytes())
    # a trust list that holds another PLC's certificate (PEM), not this one's
    (root / "trusts-other").mkdir()
    pem = x509.load_der_x509_certificate(other_cert.read_bytes()).public_bytes(
        serialization.Encoding.PEM
    )
    (root / "trusts-other" / "other.pem").write_bytes(pem)
    (root / "plc-clients").mkdir()
    (root / "plc-clients" / "b.der").write_bytes((root / "bridge" / "b-cert.der").read_bytes())
    for name, text in (("password", PASSWORD), ("wrong", "not-the-password")):
        (root / name).write_text(text + "\n")
        (root / name).chmod(0o600)
    return {
        "root": root,
        "cert": root / "bridge" / "b-cert.der",
        "key": root / "bridge" / "b-key.pem",
        "plc_cert": plc_cert,
        "plc_key": plc_key,
    }


@pytest.fixture(scope="module")
def plc(pki):
    """One secured server for the module (an asyncua server takes seconds to start)."""
    server = ThreadedPlc(
        SecurePlc(free_port(), pki["plc_cert"], pki["plc_key"], pki["root"] / "plc-clients")
    ).start()
    yield server.plc
    server.stop()


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(free_tcp_endpoint(), free_tcp_endpoint(), tmp_path / "journal.db").start()
    yield d
    d.stop()


def secure_config(
    daemon: Daemon, url: str, pki: dict[str, Path], password: str, trust: str = "trusted"
) -> PlcBridgeConfig:
    cfg = opcua_config(daemon, url)
    plc = cfg.plc.model_dump() | {
        "timeout_s": 2.0,
        "security": {
            "certificate": str(pki["cert"]),
            "private_key": str(pki["key"]),
            "trust": str(pki["root"] / trust),
        },
        "user": {"name": USER, "password_file": str(pki["root"] / password)},
    }
    return PlcBridgeConfig.model_validate(cfg.model_dump() | {"plc": plc})


def run_bridge(
    daemon: Daemon, cfg: PlcBridgeConfig, verdicts: int, until
) -> tuple[PlcBridge, list[BridgeHealth]]:
    """Run the bridge until ``until(health)``, streaming ``verdicts`` meanwhile.

    Alarm conditions are read from the health messages (periodic state: a late subscriber
    still sees them) and their detail from the stopped bridge's reporter.
    """
    health: list[BridgeHealth] = []
    reader = BridgeThread(
        lambda stop: collect_reports(cfg.report.publish, health, stop, BridgeHealth)
    ).start()
    bridge = BridgeThread(lambda stop: run_plc_bridge(cfg, stop)).start()
    try:
        time.sleep(0.3)
        daemon.stream(1, verdicts, rate_hz=None)
        wait_for(lambda: until(health), 12, "the bridge's outcome", step_s=0.05)
    finally:
        result: PlcBridge = bridge.stop()
        reader.stop()
    return result, health


def refused(code: str, backlog: int):
    """``until``: a health message with ``code`` active and ``backlog`` verdicts queued."""
    return lambda health: any(code in h.active and h.backlog == backlog for h in health)


def test_keys_generate_opcua_makes_a_client_certificate_asyncua_accepts(pki):
    cert = opcua_certs.load_certificate(pki["cert"])
    uri = opcua_certs.application_uri(cert)
    assert uri == f"urn:{socket.gethostname()}:linevision:bridge"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert socket.gethostname() in san.get_values_for_type(x509.DNSName)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert stat.S_IMODE(pki["key"].stat().st_mode) == 0o600
    # the key belongs to the certificate; a second run does not overwrite them
    assert opcua_certs.load_private_key(pki["key"], cert)
    assert main(["keys", "generate", "--opcua", str(pki["cert"].parent), "--name", "b"]) == 1
    assert opcua_certs.load_certificate(pki["cert"]) == cert


def test_secured_bridge_delivers_verdicts_into_the_nodes(daemon, pki, plc):
    cfg = secure_config(daemon, plc.url, pki, "password")
    rec = plc.recorder
    plc.writes = 0
    rec.applied.clear()
    _, health = run_bridge(
        daemon,
        cfg,
        6,
        lambda h: (
            bool(rec.applied)
            and rec.applied[-1]["seq"] == 6
            and any(x.state == "connected" for x in h)
        ),
    )
    assert [r["cell_id"] for r in rec.applied] == list(range(1, 7))
    assert all(
        r["station"] == 7 and r["verdict"] == (2 if is_ng(r["cell_id"]) else 1) for r in rec.applied
    )
    assert any(h.state == "connected" for h in health)
    assert plc.writes > 0


def test_a_server_not_in_the_trust_list_is_refused_and_gets_nothing(daemon, pki, plc):
    # the bridge trusts another PLC's certificate only: this server is an impostor to it
    cfg = secure_config(daemon, plc.url, pki, "password", trust="trusts-other")
    plc.writes = 0
    bridge, health = run_bridge(daemon, cfg, 3, refused("plc_untrusted", 3))
    error = str(bridge.reporter.active["plc_untrusted"]["error"])
    server = opcua_certs.load_certificate(pki["plc_cert"])
    assert opcua_certs.thumbprint(server) in error
    assert "CN=test plc plc" in error
    assert str(pki["root"] / "trusts-other") in error
    assert all(h.state == "retrying" for h in health[:-1])
    assert bridge.counters["delivered"] == 0
    assert plc.writes == 0


def test_a_wrong_password_is_refused(daemon, pki, plc):
    cfg = secure_config(daemon, plc.url, pki, "wrong")
    plc.writes = 0
    bridge, health = run_bridge(daemon, cfg, 3, refused("plc_auth_refused", 3))
    error = str(bridge.reporter.active["plc_auth_refused"]["error"])
    assert f"user {USER!r}" in error
    assert "BadUserAccessDenied" in error
    assert all(h.state == "retrying" for h in health[:-1])
    assert bridge.counters["delivered"] == 0
    assert plc.writes == 0


def test_a_server_without_a_secured_endpoint_is_refused(daemon, pki):
    # the unsecured stand-in: the bridge must not fall back to policy None
    plain = OpcUaPlc(free_port())
    server = ThreadedPlc(plain).start()
    cfg = secure_config(daemon, plain.url, pki, "password")
    try:
        bridge, _ = run_bridge(daemon, cfg, 2, refused("plc_security", 2))
        heartbeat = server.call(plain.read("Heartbeat"))
    finally:
        server.stop()
    error = str(bridge.reporter.active["plc_security"]["error"])
    assert "offers no Basic256Sha256 SignAndEncrypt endpoint" in error
    assert "(it offers None/None)" in error
    assert plain.recorder.applied == []
    assert heartbeat == 0


REMOTE = "opc.tcp://10.0.0.20:4840"
FILES = {"certificate": "c", "private_key": "k"}


@pytest.mark.parametrize(
    ("target", "field"),
    [
        ({"url": REMOTE}, "plc.security"),
        ({"url": REMOTE, "security": {**FILES, "trust": "t", "policy": "None"}}, "security.policy"),
        ({"url": REMOTE, "security": {**FILES, "trust": "t", "mode": "Sign"}}, "security.mode"),
        ({"url": REMOTE, "security": FILES}, "security.trust"),
        ({"url": "opc.tcp://[::1]:4840", "user": {"name": "u", "password_file": "p"}}, "plc.user"),
    ],
)
def test_config_refuses_an_unsecured_remote_plc_and_names_the_field(target, field):
    data = {"plc": {"kind": "opcua", **target}, "stations": {"pole_piece": 1}}
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        parse_yaml_model(PlcBridgeConfig, _yaml(data), "plc.yaml")


def test_config_allows_an_unsecured_remote_plc_only_when_told():
    data = {"plc": {"kind": "opcua", "url": "opc.tcp://10.0.0.20:4840", "allow_insecure": True}}
    cfg = parse_yaml_model(PlcBridgeConfig, _yaml(data | {"stations": {"a": 1}}), "plc.yaml")
    assert cfg.plc.kind == "opcua"
    assert cfg.plc.security is None


def _yaml(data: dict[str, object]) -> str:
    import yaml  # noqa: PLC0415

    return yaml.safe_dump(data)


def test_a_readable_key_or_a_key_of_another_certificate_is_refused(pki, tmp_path):
    cert = opcua_certs.load_certificate(pki["cert"])
    loose = tmp_path / "loose-key.pem"
    loose.write_bytes(pki["key"].read_bytes())
    loose.chmod(0o644)
    with pytest.raises(opcua_certs.CertificateError, match="readable by group or others"):
        opcua_certs.load_private_key(loose, cert)
    foreign = tmp_path / "foreign-key.pem"
    foreign.write_bytes(pki["plc_key"].read_bytes())
    foreign.chmod(0o600)
    with pytest.raises(opcua_certs.CertificateError, match="does not belong to certificate"):
        opcua_certs.load_private_key(foreign, cert)
