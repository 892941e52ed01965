"""ZeroMQ CURVE keys: generation, loading from files, applying to sockets.

Keys live in files in ZeroMQ's certificate format (``NAME.key`` holds the public key,
``NAME.key_secret`` both keys), never in the configuration text. A relative key path is
looked up in ``$CREDENTIALS_DIRECTORY`` when set (systemd ``LoadCredential=``), otherwise in
the working directory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from linevision.log import get_logger

log = get_logger(__name__)

ZAP_DOMAIN = "linevision"


class KeyFileError(RuntimeError):
    """A key file that is missing, unreadable or not a CURVE certificate."""


@dataclass(frozen=True, slots=True)
class KeyPair:
    public: bytes
    secret: bytes


@dataclass(frozen=True, slots=True)
class ClientKeys:
    """What a connecting socket needs: its own key pair and the server's public key."""

    own: KeyPair
    server_public: bytes


def resolve(path: Path) -> Path:
    """A relative path is taken from ``$CREDENTIALS_DIRECTORY`` when that is set."""
    if path.is_absolute():
        return path
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    return Path(creds) / path if creds else path


def generate(directory: Path, name: str) -> tuple[Path, Path]:
    """Write ``NAME.key`` (0644) and ``NAME.key_secret`` (0600); refuses to overwrite."""
    directory.mkdir(parents=True, exist_ok=True)
    public = directory / f"{name}.key"
    secret = directory / f"{name}.key_secret"
    for p in (public, secret):
        if p.exists():
            msg = f"{p} exists; remove it first to replace the key"
            raise KeyFileError(msg)
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        os.chmod(tmp, 0o700)  # noqa: PTH101  (the secret is born in a private folder)
        tmp_public, tmp_secret = zmq.auth.create_certificates(tmp, name)
        os.chmod(tmp_secret, 0o600)  # noqa: PTH101
        os.chmod(tmp_public, 0o644)  # noqa: PTH101  (a public key is meant to be copied)
        shutil.move(tmp_secret, secret)
        shutil.move(tmp_public, public)
    log.info("keys_generated", public=str(public), secret=str(secret))
    return public, secret


def load_public(path: Path) -> bytes:
    full = resolve(path)
    try:
        public, _ = zmq.auth.load_certificate(full)
    except (OSError, ValueError) as exc:
        msg = f"cannot load public key {full}: {exc}"
        raise KeyFileError(msg) from exc
    return public


def load_pair(path: Path) -> KeyPair:
    """Load a ``.key_secret`` file; refuses one that other users can read."""
    full = resolve(path)
    try:
        mode = full.stat().st_mode
        public, secret = zmq.auth.load_certificate(full)
    except (OSError, ValueError) as exc:
        msg = f"cannot load secret key {full}: {exc}"
        raise KeyFileError(msg) from exc
    if secret is None:
        msg = f"{full} holds no secret key (give the .key_secret file)"
        raise KeyFileError(msg)
    if mode & 0o077:
        msg = f"{full} is readable by group or others (mode {mode & 0o777:o}); chmod 600 it"
        raise KeyFileError(msg)
    return KeyPair(public, secret)


def authorized_dir(path: Path) -> Path:
    full = resolve(path)
    if not full.is_dir():
        msg = f"authorized keys directory {full} does not exist"
        raise KeyFileError(msg)
    return full


def make_server(sock: zmq.Socket[Any], pair: KeyPair) -> None:
    """Turn a socket into a CURVE server (call before bind)."""
    sock.curve_secretkey = pair.secret
    sock.curve_publickey = pair.public
    sock.curve_server = True
    sock.zap_domain = ZAP_DOMAIN.encode()


def make_client(sock: zmq.Socket[Any], keys: ClientKeys) -> None:
    """Turn a socket into a CURVE client (call before connect)."""
    sock.curve_secretkey = keys.own.secret
    sock.curve_publickey = keys.own.public
    sock.curve_serverkey = keys.server_public


def start_authenticator(ctx: zmq.Context[zmq.Socket[bytes]], allowed: Path) -> ThreadAuthenticator:
    """ZAP handler: only clients whose public key file is in ``allowed`` may connect."""
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve(domain=ZAP_DOMAIN, location=str(allowed))
    log.info("curve_authenticator_started", allowed=str(allowed))
    return auth
