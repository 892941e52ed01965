"""The PLC handshake over OPC UA variables (asyncua client).

Scalars: Ready, Ack (Boolean), Count, Heartbeat, Status (UInt16), RunTag, Lost (UInt32).
Arrays of ``slots`` elements: Seq (UInt32), CellId (Int64), Station, Verdict, Reason (UInt16).
A block is one Write service call for all data nodes, then one for Ready.

With ``plc.security`` the link opens a Basic256Sha256 SignAndEncrypt channel, and only to a
server whose certificate is in the trust list: it asks the server for its endpoints (the one
unsecured request OPC UA discovery allows), compares the certificate of the secured endpoint
with the trust list, and pins it for the channel. An untrusted server gets nothing else: no
session, no credentials, no values.
"""

from __future__ import annotations

import asyncio

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.crypto import uacrypto
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.ua import uaerrors
from asyncua.ua.uaerrors import UaError
from cryptography import x509

from linevision.bridges import opcua_certs
from linevision.bridges.config import OpcUaSecurity, OpcUaTarget
from linevision.bridges.plc_link import U32, Block, PlcError
from linevision.paths import credential

_ERRORS = (UaError, OSError, TimeoutError, ConnectionError)
_AUTH_REFUSED = (
    uaerrors.BadUserAccessDenied,
    uaerrors.BadIdentityTokenInvalid,
    uaerrors.BadIdentityTokenRejected,
    uaerrors.BadUserSignatureInvalid,
    uaerrors.BadCertificateUntrusted,
    uaerrors.BadCertificateInvalid,
    uaerrors.BadCertificateUriInvalid,
    uaerrors.BadCertificateUseNotAllowed,
    uaerrors.BadCertificateTimeInvalid,
    uaerrors.BadSecurityChecksFailed,
)
"""The server refused the bridge's user or certificate: ``plc_auth_refused``."""
_FIELDS = (
    "ready",
    "ack",
    "heartbeat",
    "status",
    "lost",
    "count",
    "run_tag",
    "seq",
    "cell_id",
    "station",
    "verdict",
    "reason",
)

VT = ua.VariantType


def node_id(text: str, namespace: int | None) -> str:
    """``s=Lv.Ready`` with namespace 3 -> ``ns=3;s=Lv.Ready``; a full id is kept.

    >>> node_id("s=Lv.Ready", 3)
    'ns=3;s=Lv.Ready'
    >>> node_id("ns=2;i=7", None)
    'ns=2;i=7'
    """
    if namespace is None or text.startswith("ns="):
        return text
    return f"ns={namespace};{text}"


def _dv(value: object, vtype: ua.VariantType) -> ua.DataValue:
    return ua.DataValue(ua.Variant(value, vtype))


class OpcUaLink:
    def __init__(self, target: OpcUaTarget) -> None:
        self.target = target
        self._client: Client | None = None
        self._nodes: dict[str, Node] = {}

    async def connect(self) -> None:
        client = Client(self.target.url, timeout=self.target.timeout_s)
        if self.target.security is not None:
            # before any session: a refused server is only ever asked for its endpoints
            try:
                await asyncio.wait_for(
                    self._secure(client, self.target.security), self.target.timeout_s * 2
                )
            except (*_ERRORS, ValueError) as exc:
                msg = f"cannot get the endpoints of {self.target.url}: {exc!r}"
                raise PlcError(msg) from exc
        try:
            await asyncio.wait_for(client.connect(), self.target.timeout_s * 2)
            ns = (
                await client.get_namespace_index(self.target.namespace_uri)
                if self.target.namespace_uri is not None
                else None
            )
        except _AUTH_REFUSED as exc:
            await self._disconnect(client)
            msg = f"{self.target.url} refused the bridge's {self._identity()}: {exc!r}"
            raise PlcError(msg, "plc_auth_refused") from exc
        except (*_ERRORS, ValueError) as exc:
            await self._disconnect(client)
            msg = f"cannot connect to {self.target.url}: {exc!r}"
            raise PlcError(msg) from exc
        nodes = self.target.nodes
        self._nodes = {f: client.get_node(node_id(getattr(nodes, f), ns)) for f in _FIELDS}
        if nodes.challenge_request is not None:
            request = client.get_node(node_id(nodes.challenge_request, ns))
            self._nodes["challenge_request"] = request
        self._client = client

    def _identity(self) -> str:
        sec, user = self.target.security, self.target.user
        parts = [] if sec is None else [f"certificate {credential(sec.certificate)}"]
        parts += [] if user is None else [f"user {user.name!r}"]
        return " or ".join(parts) or "anonymous session"

    async def _secure(self, client: Client, sec: OpcUaSecurity) -> None:
        """Load our certificate, key, password and the trust list; refuse an untrusted server."""
        user = self.target.user
        try:
            cert = opcua_certs.load_certificate(sec.certificate)
            key = opcua_certs.load_private_key(sec.private_key, cert)
            trusted = opcua_certs.load_trust(sec.trust)
            password = None if user is None else opcua_certs.read_password(user.password_file)
            client.application_uri = opcua_certs.application_uri(cert)
        except opcua_certs.CertificateError as exc:
            raise PlcError(str(exc), "plc_security") from exc
        server = await self._server_certificate(client)
        if opcua_certs.der(server) not in trusted:
            msg = (
                f"refusing {self.target.url}: its certificate ({opcua_certs.describe(server)}) "
                f"is not in the trust list {opcua_certs.trust_where(sec.trust)}; "
                "add it there only if this is your PLC"
            )
            raise PlcError(msg, "plc_untrusted")
        await client.set_security(
            SecurityPolicyBasic256Sha256,
            certificate=opcua_certs.der(cert),
            private_key=key,
            server_certificate=opcua_certs.der(server),
            mode=ua.MessageSecurityMode.SignAndEncrypt,
        )
        if user is not None and password is not None:
            client.set_user(user.name)
            client.set_password(password)

    async def _server_certificate(self, client: Client) -> x509.Certificate:
        """The certificate of the server's Basic256Sha256 SignAndEncrypt endpoint."""
        endpoints = await client.connect_and_get_server_endpoints()
        for ep in endpoints:
            if (
                ep.SecurityMode == ua.MessageSecurityMode.SignAndEncrypt
                and ep.SecurityPolicyUri == SecurityPolicyBasic256Sha256.URI
                and ep.ServerCertificate
            ):
                try:
                    # a server may send its chain: the first certificate is its own
                    cert: x509.Certificate = uacrypto.x509_from_der(  # type: ignore[no-untyped-call]  # asyncua leaves it untyped
                        ep.ServerCertificate
                    )
                except ValueError as exc:
                    msg = f"{self.target.url} sent an unreadable certificate: {exc}"
                    raise PlcError(msg, "plc_untrusted") from exc
                return cert
        offered = sorted(
            {
                f"{e.SecurityPolicyUri.rsplit('#', 1)[-1]}/{e.SecurityMode.name.rstrip('_')}"
                for e in endpoints
            }
        )
        msg = (
            f"{self.target.url} offers no Basic256Sha256 SignAndEncrypt endpoint "
            f"(it offers {', '.join(offered) or 'none'})"
        )
        raise PlcError(msg, "plc_security")

    @staticmethod
    async def _disconnect(client: Client) -> None:
        try:
            await asyncio.wait_for(client.disconnect(), 1.0)
        except (*_ERRORS, AttributeError):
            pass

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await self._disconnect(client)

    def _live(self) -> Client:
        if self._client is None:
            msg = f"not connected to {self.target.url}"
            raise PlcError(msg)
        return self._client

    async def _write(self, values: dict[str, ua.DataValue]) -> None:
        client = self._live()
        try:
            await asyncio.wait_for(
                client.write_values([self._nodes[f] for f in values], list(values.values())),
                self.target.timeout_s,
            )
        except _ERRORS as exc:
            msg = f"write to {self.target.url} failed: {exc!r}"
            raise PlcError(msg) from exc

    async def write_block(self, block: Block) -> None:
        n = self.target.slots
        pad = [0] * (n - len(block.slots))
        await self._write(
            {
                "count": _dv(len(block.slots), VT.UInt16),
                "run_tag": _dv(block.tag, VT.UInt32),
                "seq": _dv([s.seq for s in block.slots] + pad, VT.UInt32),
                "cell_id": _dv([s.cell_id for s in block.slots] + pad, VT.Int64),
                "station": _dv([s.station for s in block.slots] + pad, VT.UInt16),
                "verdict": _dv([s.verdict for s in block.slots] + pad, VT.UInt16),
                "reason": _dv([s.reason for s in block.slots] + pad, VT.UInt16),
            }
        )

    async def set_ready(self, ready: bool) -> None:  # noqa: FBT001
        await self._write({"ready": _dv(ready, VT.Boolean)})

    async def _read(self, field: str) -> bool:
        self._live()
        try:
            value = await asyncio.wait_for(self._nodes[field].read_value(), self.target.timeout_s)
        except _ERRORS as exc:
            msg = f"read from {self.target.url} failed: {exc!r}"
            raise PlcError(msg) from exc
        return bool(value)

    async def read_ack(self) -> bool:
        return await self._read("ack")

    async def read_request(self) -> bool:
        return "challenge_request" in self._nodes and await self._read("challenge_request")

    async def clear_request(self) -> None:
        if "challenge_request" in self._nodes:
            await self._write({"challenge_request": _dv(False, VT.Boolean)})  # noqa: FBT003

    async def write_status(self, heartbeat: int, status: int, lost: int) -> None:
        await self._write(
            {
                "heartbeat": _dv(heartbeat & 0xFFFF, VT.UInt16),
                "status": _dv(status & 0xFFFF, VT.UInt16),
                "lost": _dv(lost & U32, VT.UInt32),
            }
        )
