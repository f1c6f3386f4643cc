"""mypy over the whole package, configured by ``[tool.mypy]`` in pyproject.toml (strict for the core IR).

The checkout is not laid out as the import namespace: setuptools' package-dir maps ``frontend/``, ``passes/``,
``codegen/`` and ``runtime/`` into ``cnncc``. So mypy runs on a tree of symlinks that is the installed layout
(``cnncc/<each entry of cnncc/>`` plus ``cnncc/frontend -> frontend`` and so on). Tree and cache live under the
system temp dir, keyed by the checkout's path, so a second run only re-checks what changed (a few seconds; the first
run, which also reads numpy's and torch's types, takes about 20 s).
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAPPED = ("frontend", "passes", "codegen", "runtime")


def namespace_tree(into: Path) -> Path:
    """A fresh tree of symlinks under ``into`` that lays the checkout out as the one ``cnncc`` package."""
    package = into / "cnncc"
    if package.exists():
        shutil.rmtree(package)
    package.mkdir(parents=True)
    for entry in sorted((ROOT / "cnncc").iterdir()):
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    for name in MAPPED:
        (package / name).symlink_to(ROOT / name, target_is_directory=True)
    return into


@pytest.mark.slow
def test_mypy_reports_no_errors() -> None:
    work = Path(tempfile.gettempdir()) / f"cnncc-mypy-{hashlib.sha256(str(ROOT).encode()).hexdigest()[:12]}"
    work.mkdir(exist_ok=True)
    with open(work / "lock", "w") as lock:  # one run at a time per checkout: they share the tree and the cache
        fcntl.flock(lock, fcntl.LOCK_EX)
        tree = namespace_tree(work / "tree")
        done = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
                               "--cache-dir", str(work / "cache"), "--hide-error-context",
                               "-p", "cnncc"], cwd=tree, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        pytest.fail(f"mypy found errors:\n{done.stdout}{done.stderr}", pytrace=False)
