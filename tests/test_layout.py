"""The package's shape: which room may import which, module counts and sizes; the length
of the models page.

A frame walks cameras -> scheduler -> stations -> inference -> bus -> bridges once; the rules
below are the one list of allowed arrows between the packages of ``linevision/``. A new
import that is not on it fails here, with the file and line that made it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "linevision"

ROOTS = frozenset(
    {"__init__", "__main__", "config", "lifecycle_config", "log", "types", "paths", "tiling"}
)
"""The shared roots at the top of the package: anyone may import them."""

ALLOWED: dict[str, frozenset[str]] = {
    # roots import roots only (and __main__ starts the CLI)
    "__main__": frozenset({"cli"}),
    "cameras": frozenset(),
    "inference": frozenset(),
    "stations": frozenset({"inference"}),
    "scheduler": frozenset({"stations"}),
    "bus": frozenset(),
    "bridges": frozenset({"bus"}),
    "hmi": frozenset({"bus", "bridges", "lifecycle"}),
    "plant": frozenset({"bridges"}),
    "lifecycle": frozenset({"inference", "stations", "scheduler", "bus", "synth"}),
    "daemon": frozenset(
        {"cameras", "inference", "stations", "scheduler", "bus", "hmi", "lifecycle"}
    ),
    "synth": frozenset(),
    "train": frozenset({"synth", "inference", "tools"}),
    "tools": frozenset(
        {"cameras", "inference", "stations", "scheduler", "bus", "daemon", "synth", "train"}
    ),
    "cli": frozenset(
        {"cameras", "inference", "stations", "scheduler", "bus", "bridges", "hmi", "daemon"}
        | {"plant", "synth", "train", "tools", "lifecycle"}
    ),
}
"""Room -> the rooms it may import from, besides itself and the roots."""

NO_TORCH = (
    "cameras",
    "inference",
    "stations",
    "scheduler",
    "bus",
    "bridges",
    "hmi",
    "daemon",
    "plant",
    "lifecycle",
)
"""Rooms the daemon and the bridges load: torch stays in train (and what tools call lazily)."""

MAX_TOP_LEVEL = 8
MAX_LINES = 500
MODELS_DOC = PACKAGE.parent / "docs" / "models.md"
MAX_MODELS_DOC_LINES = 250
"""docs/models.md is a reference: each shipped model, its inputs and outputs, the figures that
hold now and how to re-train it."""


def room_of(module: str) -> str:
    """``linevision.bus.wire`` -> ``bus``; a top-level module is its own room."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"  # ``linevision`` itself: the root


def _module_name(path: Path, package: Path) -> str:
    rel = path.relative_to(package.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, package: Path = PACKAGE) -> list[tuple[int, str]]:
    """(line, imported module) for every ``linevision`` or third-party import in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = _module_name(path, package)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target == "linevision":
                out.extend(
                    (
                        node.lineno,
                        "linevision" if a.name.startswith("__") else f"linevision.{a.name}",
                    )
                    for a in node.names
                )
            else:
                out.append((node.lineno, target))
    return out


def forbidden_arrows(package: Path = PACKAGE) -> list[str]:
    """Every import between rooms that ALLOWED does not list, as ``file:line a -> b``."""
    bad: list[str] = []
    for path in sorted(package.rglob("*.py")):
        src_module = _module_name(path, package)
        src = room_of(src_module) if "." in src_module else "__init__"
        if src in ROOTS and src != "__main__":
            allowed: frozenset[str] = frozenset()
        else:
            allowed = ALLOWED.get(src, frozenset())
        for line, target in imports_of(path, package):
            top = target.split(".")[0]
            where = f"{path.relative_to(package.parent)}:{line}"
            if top == "torch" and src in NO_TORCH:
                bad.append(f"{where} {src} -> torch")
            if top != "linevision":
                continue
            dst = room_of(target)
            if dst in ROOTS or dst == src or dst in allowed:
                continue
            bad.append(f"{where} {src} -> {dst}")
    return bad


def test_every_arrow_between_rooms_is_allowed() -> None:
    assert forbidden_arrows() == []


def test_a_forbidden_arrow_is_caught(tmp_path: Path) -> None:
    # a copy of two rooms where cameras reaches into the bus: the walker must name it
    fake = tmp_path / "linevision"
    (fake / "cameras").mkdir(parents=True)
    (fake / "bus").mkdir()
    for f in ("__init__.py", "cameras/__init__.py", "bus/__init__.py", "bus/wire.py"):
        (fake / f).write_text("")
    (fake / "cameras" / "pylon.py").write_text(
        "from linevision.bus.wire import context\nfrom linevision import config\nimport torch\n"
    )
    assert forbidden_arrows(fake) == [
        "linevision/cameras/pylon.py:1 cameras -> bus",
        "linevision/cameras/pylon.py:3 cameras -> torch",
    ]


def test_top_level_modules_and_file_sizes() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL, top
    long = {
        str(p.relative_to(PACKAGE.parent)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}


@pytest.mark.parametrize(
    "module", ["linevision.daemon.operations", "linevision.cli", "linevision.bridges.plc"]
)
def test_the_daemon_and_bridges_load_without_torch(module: str) -> None:
    code = f"import sys, {module}; sys.exit(1 if 'torch' in sys.modules else 0)"
    proc = subprocess.run([sys.executable, "-c", code], check=False, timeout=120)
    assert proc.returncode == 0, f"{module} imports torch"


def test_the_models_page_stays_a_reference() -> None:
    n = len(MODELS_DOC.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_MODELS_DOC_LINES, (
        f"docs/models.md has {n} lines, at most {MAX_MODELS_DOC_LINES}: the history of runs and "
        "measurement detail go to docs/lab/<station>.md, runtimes and precisions to "
        "docs/runtimes.md, training on a plant's own folders to docs/training.md"
    )
