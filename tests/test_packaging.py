"""Packaging: the design card's folders are one namespace, every sub-package ships, nothing bare is importable."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAPPED = {"frontend": "cnncc.frontend", "passes": "cnncc.passes", "codegen": "cnncc.codegen",
          "runtime": "cnncc.runtime"}


def package_folders() -> set[str]:
    """Every folder holding an __init__.py, named as its import path."""
    names = set()
    for init in ROOT.glob("**/__init__.py"):
        rel = init.parent.relative_to(ROOT).parts
        if rel and rel[0] in MAPPED:
            names.add(".".join((MAPPED[rel[0]], *rel[1:])))
        elif rel and rel[0] == "cnncc":
            names.add(".".join(rel))
    return names


def test_every_subpackage_is_listed() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(config["packages"]) == package_folders()
    assert config["package-dir"] == {v: k for k, v in MAPPED.items()}


def test_no_tests_init() -> None:
    assert not (ROOT / "tests" / "__init__.py").exists()


def test_bare_top_level_names_are_not_importable(tmp_path: Path) -> None:
    code = ("import importlib.util, sys\n"
            "bare = [n for n in ('frontend', 'passes', 'codegen', 'runtime') if importlib.util.find_spec(n)]\n"
            "import cnncc.frontend, cnncc.passes, cnncc.codegen, cnncc.runtime\n"
            "print(bare)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_guard_refuses_a_bare_import(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", "import runtime"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0 and "must be imported as 'cnncc.runtime'" in done.stderr


@pytest.mark.slow
def test_wheel_holds_every_module(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    wheel = next(tmp_path.glob("cnncc-*.whl"))
    files = set(zipfile.ZipFile(wheel).namelist())
    sources = {p.relative_to(ROOT) for d in ("cnncc", *MAPPED) for ext in ("*.py", "*.c")
               for p in (ROOT / d).rglob(ext)}  # .c: the bundle runtime, compiled into every bundle
    for src in sources:
        installed = Path("cnncc", *src.parts) if src.parts[0] in MAPPED else src
        assert str(installed) in files, f"{src} is missing from the wheel"
    assert not any(f.split("/")[0] in MAPPED for f in files), "a bare top-level package landed in the wheel"
    assert any(f.endswith("entry_points.txt") for f in files)
