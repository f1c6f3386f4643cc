"""The architecture as a test: which rooms of the package may import which (every import, function-level ones
included, read with ast), no import cycles, the backends' libraries only in their backend, and a runtime that loads
without LLVM.

Rooms, bottom to top:
- core: ``cnncc/`` (IR, ops, program, errors, pass protocol, executable, targets protocol, algorithm registry,
  tuning database, formats) -- imports nothing above it;
- ``runtime/`` (a leaf: core only), ``passes/`` (core only), ``codegen/`` (core and llvmlite), ``frontend/`` (core,
  and the runtime's interpreter, which runs ``model(x)``);
- the top: the driver and what calls it (API, trainer, tuner, CLI, the CLI's views, model loader, test helpers).
  Only these cross rooms.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"cnncc": "cnncc", "frontend": "cnncc.frontend", "passes": "cnncc.passes", "codegen": "cnncc.codegen",
           "runtime": "cnncc.runtime"}
# The top room: modules of cnncc/ that orchestrate or present, with why each is there.
TOP = {
    "cnncc": "the package: re-exports compile/compile_training/load",
    "cnncc.api": "the public entry points (the driver's)",
    "cnncc.driver": "owns the pipeline",
    "cnncc.training": "builds the training-step graph and runs it through the driver",
    "cnncc.tuner": "compiles single layers through the driver and times them",
    "cnncc.cli": "the command line",
    "cnncc.viz": "cnncc viz: lowers through the driver to show layouts",
    "cnncc.viz_dot": "cnncc viz's DOT renderer",
    "cnncc.viz_html": "cnncc viz's HTML renderer",
    "cnncc.plan_view": "cnncc plan: lowers and plans through the driver",
    "cnncc.loader": "loads a model by zoo name or file (frontend) for the CLI",
    "cnncc.datasets": "training data for cnncc train",
    "cnncc.testing": "test helpers and the PyTorch twins",
}
ALLOWED = {  # room -> rooms it may import (besides itself)
    "core": set(),
    "runtime": {"core"},
    "passes": {"core"},
    "codegen": {"core"},
    "frontend": {"core", "runtime"},
    "top": {"core", "runtime", "passes", "codegen", "frontend"},
}
BACKEND_LIBRARIES = {"llvmlite": "codegen", "tvm": "codegen"}


def module_files() -> dict[str, Path]:
    out = {}
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join([package, *parts])
            if folder == "cnncc" and len(parts) and parts[0] in ("frontend", "passes", "codegen", "runtime"):
                continue  # not a real location (the mapped folders live at the top)
            out[name] = path
    return out


def room(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ("frontend", "passes", "codegen", "runtime"):
        return parts[1]
    if any(module == t or module.startswith(t + ".") for t in TOP if t != "cnncc") or module == "cnncc":
        return "top"
    return "core"


def imports(module: str, path: Path, known: set[str]) -> list[tuple[str, int, bool]]:
    """(imported module, line, at module level) for every import statement in the file, at any depth."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    top_level = {id(n) for n in tree.body} | {id(n) for s in tree.body if isinstance(s, ast.If)
                                               and "TYPE_CHECKING" not in ast.unparse(s.test) for n in s.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno, id(node) in top_level) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - (0 if is_pkg else 1) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            for a in node.names:
                full = f"{prefix}.{a.name}"
                out.append((full if full in known else prefix, node.lineno, id(node) in top_level))
    return out


@pytest.fixture(scope="module")
def graph() -> nx.DiGraph:
    files = module_files()
    g = nx.DiGraph()
    for module, path in files.items():
        g.add_node(module, path=path)
        for target, line, eager in imports(module, path, set(files)):
            top = target.split(".")[0]
            if top == "cnncc":
                while target not in files and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target != module:
                    g.add_edge(module, target, line=line, eager=eager or g.get_edge_data(module, target, {}).get(
                        "eager", False))
            elif top in BACKEND_LIBRARIES or top == "torch":
                g.add_edge(module, top, line=line, eager=eager)
    return g


def test_every_import_respects_the_rooms(graph: nx.DiGraph) -> None:
    bad = []
    for a, b, data in graph.edges(data=True):
        if not b.startswith("cnncc"):
            continue
        ra, rb = room(a), room(b)
        if rb != ra and rb not in ALLOWED[ra]:
            bad.append(f"{graph.nodes[a]['path'].relative_to(ROOT)}:{data['line']}: {a} ({ra}) imports {b} ({rb})")
    assert not bad, "imports that break the layering:\n" + "\n".join(sorted(bad))


def test_rooms_form_a_dag_and_modules_no_eager_cycles(graph: nx.DiGraph) -> None:
    """Rooms: no cycle at all, function-level imports included. Modules: no cycle of module-level imports (a room's
    registries -- kernels registering with the module builder that imports them on first use -- may close a cycle
    through a function-level import inside the room)."""
    rooms = nx.DiGraph((room(a), room(b)) for a, b in graph.edges if b.startswith("cnncc") and room(a) != room(b))
    assert nx.is_directed_acyclic_graph(rooms), list(nx.simple_cycles(rooms))
    eager = nx.DiGraph((a, b) for a, b, d in graph.edges(data=True) if d["eager"] and b.startswith("cnncc.")
                       and a != "cnncc")
    cycles = sorted(" -> ".join(c) for c in nx.simple_cycles(eager))
    assert not cycles, "module-level import cycles:\n" + "\n".join(cycles)


def test_backend_libraries_only_in_their_backend(graph: nx.DiGraph) -> None:
    for lib, home in BACKEND_LIBRARIES.items():
        users = [a for a in graph.predecessors(lib)] if lib in graph else []
        assert all(room(u) == home for u in users), f"{lib} imported outside {home}/: {users}"
    torch_users = list(graph.predecessors("torch")) if "torch" in graph else []
    assert all(u.startswith("cnncc.testing") for u in torch_users), torch_users
    # within codegen/: TVM belongs to the CUDA backend alone, llvmlite to the CPU backend alone
    tvm_users = list(graph.predecessors("tvm")) if "tvm" in graph else []
    assert tvm_users and all(u.startswith("cnncc.codegen.cuda") for u in tvm_users), tvm_users
    llvm_users = list(graph.predecessors("llvmlite")) if "llvmlite" in graph else []
    assert not [u for u in llvm_users if u.startswith("cnncc.codegen.cuda")], llvm_users


def test_no_backend_or_runtime_calls_the_public_api() -> None:
    """``cnncc.compile`` is for users: a backend or the runtime that called it would run the pipeline from inside."""
    for folder in ("codegen", "runtime", "passes"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Attribute) and node.attr in ("compile", "compile_training"):
                    assert ast.unparse(node.value) not in ("cnncc", "api", "cnncc.api"), (path, node.lineno)
                if isinstance(node, ast.ImportFrom) and node.module in ("cnncc", "cnncc.api", "cnncc.driver"):
                    raise AssertionError((path, node.lineno, ast.unparse(node)))


def test_the_driver_is_the_only_caller_of_lowering_and_build(graph: nx.DiGraph) -> None:
    """Lowering and building are steps of the pipeline: only the driver (and the backend itself) reach them."""
    for step in ("cnncc.codegen.lower", "cnncc.codegen.module", "cnncc.codegen.jit", "cnncc.passes.memory_plan",
                 "cnncc.codegen.cuda.lower", "cnncc.codegen.cuda.build"):
        callers = {a for a in graph.predecessors(step) if room(a) != "codegen" and a != step}
        assert callers <= {"cnncc.driver", "cnncc.plan_view"}, (step, callers)


def test_runtime_and_bundle_loader_import_without_llvm() -> None:
    """``cnncc.load`` needs only numpy and the bundle's library: importing it must not import llvmlite (or torch)."""
    code = ("import sys, cnncc, cnncc.runtime.bundle, cnncc.runtime.compiled, cnncc.runtime.cuda; "
            "print(sorted(m for m in ('llvmlite', 'torch', 'tvm', 'cnncc.codegen', 'cnncc.passes') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_readme_folder_tree_matches_the_code() -> None:
    """README "Folders": every path it names exists, and every module and sub-package of the source folders is
    named in it (a new module means a line there)."""
    text = (ROOT / "README.md").read_text()
    block = text[text.index("### Folders"):].split("```")[1]
    parents: dict[int, Path] = {}
    named = {w.strip(",;:()") for w in block.split()}
    for line in block.splitlines()[1:]:
        indent = len(line) - len(line.lstrip())
        if not line.strip() or indent > 8:
            continue  # a continuation of the description above
        names = line.strip().split("  ")[0].split()
        base = ROOT if indent == 0 else parents[indent - 2]
        for name in names:
            path = base / name
            assert path.exists(), f"README's folder tree names {path.relative_to(ROOT)}, which does not exist"
            if name.endswith("/"):
                parents[indent] = path
    missing = []
    for folder in ("cnncc", "frontend", "passes", "codegen", "runtime"):
        for path in (ROOT / folder).iterdir():
            if path.name in ("__init__.py", "__pycache__"):
                continue
            word = path.name + ("/" if path.is_dir() else "")
            if (path.suffix in (".py", ".c") or path.is_dir()) and word not in named:
                missing.append(f"{folder}/{word}")
    assert not missing, f"not in README's folder tree: {missing}"
