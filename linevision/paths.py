"""Where the daemon keeps state and finds credentials, under systemd or a user session."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from linevision.config import ArchiveConfig

IMAGES = "images"
"""The archive's image folder, under the archive folder."""
RAW = "raw"
"""The frames of the cells an operator may review (NG and low-margin OK), as PNG, for a
dataset (the JPEGs under ``images`` carry the overlay)."""


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


MAX_CROPS = 6
"""Crops the archive writes of one NG at most (its first located defects)."""
PARTS = ("", *(f"-d{k}" for k in range(1, MAX_CROPS + 1)), ".json")
"""A verdict's files besides its picture: the crops of its defects and their description."""


def image_relpath(station: str, run_id: str, seq: int, t_frame_ns: int, part: str = "") -> str:
    """Where a verdict's picture lives under the archive folder (also used by the HMI);
    ``part`` ``-d<k>``: the crop of its k-th defect, ``.json``: what the pictures show.

    >>> image_relpath("pole_piece", "ab12", 7, 0)
    'images/1970-01-01/pole_piece/ab12-0000000007.jpg'
    >>> image_relpath("blue_film", "ab12", 7, 0, "-d2")
    'images/1970-01-01/blue_film/ab12-0000000007-d2.jpg'
    """
    if part not in PARTS:
        msg = f"part {part!r} is none of {PARTS}"
        raise ValueError(msg)
    day = datetime.fromtimestamp(t_frame_ns / 1e9, tz=UTC).strftime("%Y-%m-%d")
    suffix = part if part == ".json" else f"{part}.jpg"
    return f"{IMAGES}/{day}/{station}/{run_id}-{seq:010d}{suffix}"


def sibling_relpaths(picture: str) -> list[str]:
    """The files that may go with the picture ``picture`` (its crops and description).

    >>> sibling_relpaths("images/d/s/ab-0000000007.jpg")[::6]
    ['images/d/s/ab-0000000007-d1.jpg', 'images/d/s/ab-0000000007.json']
    """
    stem = picture.removesuffix(".jpg")
    return [f"{stem}{p}.jpg" for p in PARTS[1:-1]] + [f"{stem}.json"]


def picture_of(relpath: str) -> str:
    """The picture a crop or description belongs to (a picture is its own).

    >>> picture_of("images/d/s/ab-0000000007-d3.jpg"), picture_of("images/d/s/ab-1.json")
    ('images/d/s/ab-0000000007.jpg', 'images/d/s/ab-1.jpg')
    """
    stem = relpath.removesuffix(".json").removesuffix(".jpg")
    head, sep, tail = stem.rpartition("-d")
    if sep and tail.isdigit() and "/" not in tail and head.rpartition("-")[2].isdigit():
        stem = head
    return f"{stem}.jpg"


def raw_relpath(image_rel: str) -> str:
    """Where the frame behind an archived picture is kept (PNG, no overlay).

    >>> raw_relpath("images/1970-01-01/pole_piece/ab12-0000000007.jpg")
    'raw/1970-01-01/pole_piece/ab12-0000000007.png'
    """
    stem = image_rel.removeprefix(f"{IMAGES}/").removesuffix(".jpg")
    return f"{RAW}/{stem}.png"


def raw_cell_relpath(image_rel: str) -> str:
    """Where the frames of a multi-view cell behind an archived picture are kept: a folder of
    ``1.png`` .. ``<views>.png`` (PNG, no overlay), in view order.

    >>> raw_cell_relpath("images/1970-01-01/six_view/ab12-0000000007.jpg")
    'raw/1970-01-01/six_view/ab12-0000000007'
    """
    return raw_relpath(image_rel).removesuffix(".png")


def review_dir(dir_: Path | None, env: Mapping[str, str] | None = None) -> Path:
    """``review.dir``, else ``review/`` in the state folder: the operators' reviews."""
    return dir_ if dir_ is not None else state_dir(env) / "review"


def archive_dir(cfg: ArchiveConfig, env: Mapping[str, str] | None = None) -> Path:
    """``archive.dir``, else ``archive/`` in the state folder (see :func:`state_dir`)."""
    return cfg.dir if cfg.dir is not None else state_dir(env) / "archive"
