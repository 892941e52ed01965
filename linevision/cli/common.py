"""What every command group shares: exit codes, reading a config file, optional extras."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from linevision.config import Config, ConfigError, parse_config

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2

EXTRAS: dict[str, tuple[str, ...]] = {
    "plc": ("pymodbus", "asyncua", "snap7"),
    "hmi": ("starlette", "uvicorn"),
    "mqtt": ("paho",),
}
"""The optional extras of pyproject.toml -> the modules they install."""


def load_config(path: Path) -> Config:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        msg = f"{path}: cannot read: {exc.strerror}"
        raise ConfigError(msg) from exc
    return parse_config(text, str(path))


def missing_extra(extra: str, modules: tuple[str, ...] | None = None) -> str | None:
    """Why a command cannot run without ``extra`` (None when its modules are installed).

    ``modules`` narrows the check to what the command imports (default: the whole extra).
    """
    wanted = EXTRAS[extra] if modules is None else modules
    missing = [m for m in wanted if importlib.util.find_spec(m) is None]
    if not missing:
        return None
    return (
        f"needs the {extra} extra ({', '.join(missing)} not installed): install linevision[{extra}]"
    )
