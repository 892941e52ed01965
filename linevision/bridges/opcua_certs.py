"""OPC UA application certificates: the bridge's own (generated here) and the trust list.

An OPC UA application instance certificate (OPC 10000-6, 6.2.2) is an X.509 v3 RSA
certificate whose subjectAltName carries the application URI (the client announces the same
URI when it opens a session) and the host name; key usage allows signatures, key and data
encipherment; extended key usage says client (or server). The extensions follow
``asyncua.crypto.cert_gen``, which the asyncua server's validator checks against.

The trust list is explicit: the server's certificate itself must be in it (compared byte for
byte), a folder of ``.der``/``.pem`` files or a list of files. Paths relative to
``$CREDENTIALS_DIRECTORY`` when that is set (systemd ``LoadCredential=``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from linevision.log import get_logger
from linevision.paths import credential

log = get_logger(__name__)

KEY_BITS = 2048
"""Basic256Sha256 takes RSA keys of 2048 to 4096 bits."""
CERT_SUFFIXES = (".der", ".pem", ".crt", ".cer")


class CertificateError(RuntimeError):
    """A certificate, key or trust list that is missing, unreadable or unusable."""


@dataclass(frozen=True, slots=True)
class ClientFiles:
    certificate: Path
    private_key: Path


def default_application_uri(host: str | None = None) -> str:
    """``urn:<host>:linevision:bridge``: unique per machine, as OPC UA asks.

    >>> default_application_uri("line3-ipc")
    'urn:line3-ipc:linevision:bridge'
    """
    return f"urn:{host or socket.gethostname()}:linevision:bridge"


def generate_client(
    directory: Path,
    name: str,
    application_uri: str,
    days: int = 1825,
    host: str | None = None,
) -> ClientFiles:
    """Write ``NAME-cert.der`` (0644) and ``NAME-key.pem`` (0600); refuses to overwrite."""
    files = ClientFiles(directory / f"{name}-cert.der", directory / f"{name}-key.pem")
    for p in (files.certificate, files.private_key):
        if p.exists():
            msg = f"{p} exists; remove it first to replace the certificate"
            raise CertificateError(msg)
    host = host or socket.gethostname()
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"linevision bridge {name}@{host}"[:64]),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "linevision"),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    public = key.public_key()
    serial = x509.random_serial_number()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(serial)
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier(
                x509.SubjectKeyIdentifier.from_public_key(public).digest,
                [x509.DirectoryName(subject)],
                serial,
            ),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(application_uri), x509.DNSName(host)]
            ),
            critical=False,
        )
        # self-signed: it is its own issuer, as asyncua's generator makes them
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=True,
                data_encipherment=True,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(files.private_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    files.certificate.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    files.certificate.chmod(0o644)
    log.info(
        "opcua_certificate_generated",
        certificate=str(files.certificate),
        private_key=str(files.private_key),
        application_uri=application_uri,
        thumbprint=thumbprint(cert),
    )
    return files


def parse_certificate(data: bytes, source: str) -> x509.Certificate:
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        msg = f"{source} is not an X.509 certificate (PEM or DER): {exc}"
        raise CertificateError(msg) from exc


def load_certificate(path: Path) -> x509.Certificate:
    full = credential(path)
    try:
        data = full.read_bytes()
    except OSError as exc:
        msg = f"cannot read certificate {full}: {exc.strerror}"
        raise CertificateError(msg) from exc
    return parse_certificate(data, str(full))


def read_private(path: Path, what: str) -> bytes:
    """A secret file's bytes; refuses one that group or others can read."""
    full = credential(path)
    try:
        mode = full.stat().st_mode
        data = full.read_bytes()
    except OSError as exc:
        msg = f"cannot read {what} {full}: {exc.strerror}"
        raise CertificateError(msg) from exc
    if mode & 0o077:
        msg = f"{what} {full} is readable by group or others (mode {mode & 0o777:o}); chmod 600 it"
        raise CertificateError(msg)
    return data


def load_private_key(path: Path, cert: x509.Certificate) -> bytes:
    """The key for ``cert`` as unencrypted PKCS#8 DER; refuses a key of another certificate."""
    data = read_private(path, "private key")
    full = credential(path)
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_private_key(data, password=None)
        else:
            key = serialization.load_der_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        msg = f"private key {full} is not an unencrypted PEM or DER key: {exc}"
        raise CertificateError(msg) from exc
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    mine = key.public_key().public_bytes(serialization.Encoding.DER, spki)
    if mine != cert.public_key().public_bytes(serialization.Encoding.DER, spki):
        msg = f"private key {full} does not belong to certificate {describe(cert)}"
        raise CertificateError(msg)
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def read_password(path: Path) -> str:
    """The first line of a password file (mode 600)."""
    data = read_private(path, "password file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        msg = f"password file {credential(path)} is not UTF-8"
        raise CertificateError(msg) from exc
    lines = text.splitlines()
    if not lines or not lines[0]:
        msg = f"password file {credential(path)} is empty"
        raise CertificateError(msg)
    return lines[0]


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def application_uri(cert: x509.Certificate) -> str:
    """The URI in the certificate's subjectAltName: the client must announce exactly this."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = x509.SubjectAlternativeName([])
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if not uris:
        msg = f"certificate {describe(cert)} has no application URI in its subjectAltName"
        raise CertificateError(msg)
    return uris[0]


def thumbprint(cert: x509.Certificate) -> str:
    """SHA-1 of the DER encoding, in hex: what OPC UA tools show as the thumbprint."""
    return hashlib.sha1(der(cert), usedforsecurity=False).hexdigest()


def describe(cert: x509.Certificate) -> str:
    return f"subject {cert.subject.rfc4514_string()!r}, thumbprint {thumbprint(cert)}"


def trust_files(paths: tuple[Path, ...]) -> list[Path]:
    """Every certificate file of the trust list (a folder contributes its certificate files)."""
    out: list[Path] = []
    for path in paths:
        full = credential(path)
        if full.is_dir():
            out += sorted(p for p in full.iterdir() if p.suffix.lower() in CERT_SUFFIXES)
        elif full.is_file():
            out.append(full)
        else:
            msg = f"trust list entry {full} does not exist"
            raise CertificateError(msg)
    return out


def load_trust(paths: tuple[Path, ...]) -> set[bytes]:
    """The DER encodings of every trusted certificate (re-read at each connect)."""
    return {der(load_certificate(p)) for p in trust_files(paths)}


def trust_where(paths: tuple[Path, ...]) -> str:
    return ", ".join(str(credential(p)) for p in paths)
