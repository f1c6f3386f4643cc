"""Packaging: the design card's folders are one namespace, every sub-package ships, nothing bare is importable."""

from __future__ import annotations

import shutil
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


# What a wheel is built from: the build writes build/ and cnncc.egg-info next to pyproject.toml, so it runs on a
# copy of these and leaves the checkout as it was.
BUILD_INPUTS = ("pyproject.toml", "README.md", "cnncc", *MAPPED)


def _build_outputs() -> dict[str, int]:
    """Every file under the checkout's build/ and *.egg-info/, with its modification time."""
    roots = [ROOT / "build", *ROOT.glob("*.egg-info")]
    return {str(f.relative_to(ROOT)): f.stat().st_mtime_ns for r in roots for f in (r, *r.rglob("*")) if f.exists()}


@pytest.mark.slow
def test_wheel_holds_every_module(tmp_path: Path) -> None:
    before = _build_outputs()
    src = tmp_path / "src"
    src.mkdir()
    for name in BUILD_INPUTS:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, src / name)
    dist = tmp_path / "dist"
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(dist), str(src)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    wheel = next(dist.glob("cnncc-*.whl"))
    files = set(zipfile.ZipFile(wheel).namelist())
    sources = {p.relative_to(src) for d in ("cnncc", *MAPPED) for ext in ("*.py", "*.c")
               for p in (src / d).rglob(ext)}  # .c: the bundle runtime, compiled into every bundle
    for path in sources:
        installed = Path("cnncc", *path.parts) if path.parts[0] in MAPPED else path
        assert str(installed) in files, f"{path} is missing from the wheel"
    assert not any(f.split("/")[0] in MAPPED for f in files), "a bare top-level package landed in the wheel"
    assert any(f.endswith("entry_points.txt") for f in files)
    assert _build_outputs() == before, "building the wheel wrote build/ or *.egg-info into the checkout"
