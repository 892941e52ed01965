"""Where the daemon keeps state and finds credentials, under systemd or a user session."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def state_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$STATE_DIRECTORY`` (systemd ``StateDirectory=``), else ``$XDG_STATE_HOME/linevision``.

    >>> state_dir({"STATE_DIRECTORY": "/var/lib/linevision"})
    PosixPath('/var/lib/linevision')
    """
    env = os.environ if env is None else env
    first = env.get("STATE_DIRECTORY", "").split(":")[0]
    if first:
        return Path(first)
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "linevision"


def credential(path: Path, env: Mapping[str, str] | None = None) -> Path:
    """A relative path names a systemd credential (``LoadCredential=``) when there are any.

    >>> credential(Path("hmi-token"), {"CREDENTIALS_DIRECTORY": "/run/credentials/x"})
    PosixPath('/run/credentials/x/hmi-token')
    """
    env = os.environ if env is None else env
    creds = env.get("CREDENTIALS_DIRECTORY", "")
    if path.is_absolute() or not creds:
        return path
    return Path(creds) / path
