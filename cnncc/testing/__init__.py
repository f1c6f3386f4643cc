"""Helpers shared by the tests (kept in the package so tests/ needs no __init__.py and no sys.path tricks).

The shared checks (compiled vs the interpreter, VJPs vs PyTorch and finite differences, the ``@covers`` record)
live in :mod:`cnncc.testing.checks` and are re-exported here; the PyTorch twins of the zoo in
:mod:`cnncc.testing.twins` (the only module here that imports torch at import time).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cnncc.convalgo import CATALOGUE
from cnncc.ir import DType, Graph, GraphBuilder
from cnncc.testing.checks import (
    COMPILED_OPS,
    COVERED_OPS,
    assert_close_to_float64,
    assert_matches,
    check_graph,
    check_op,
    check_vjp,
    compile_for_test,
    compile_model_for_test,
    covers,
    finite_differences,
    ops_named_by_covers,
    record_compiled,
    rng_for,
    run_op_outputs,
    torch_gradients,
)

if TYPE_CHECKING:
    from cnncc.frontend.model import Model

# The shared checks (cnncc.testing.checks) are re-exported with the helpers defined here.
__all__ = ["COMPILED_OPS", "COVERED_OPS", "TOL_ALGORITHM", "TOL_F32_ELEMENTWISE", "TOL_F32_MODEL",
           "TOL_F32_REDUCTION", "TOL_F64", "VALGRIND_ARGS", "assert_close_to_float64", "assert_matches",
           "build_c_example", "check_graph", "check_op", "check_vjp", "compile_for_test", "compile_model_for_test",
           "covers", "finite_differences", "ops_named_by_covers", "randomize", "record_compiled", "rel_error",
           "repo_root", "rng_for", "run_c_example", "run_op", "run_op_outputs", "single_op_graph", "torch_gradients"]


def single_op_graph(op: str, arrays: Sequence[np.ndarray], attrs: Any = None, layer: str = "layer",
                    param_operands: Sequence[int] = ()) -> tuple[Graph, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A graph holding one ``op`` node; operands listed in ``param_operands`` become parameters."""
    b = GraphBuilder(f"single_{op}")
    values, inputs, params = [], {}, {}
    for i, a in enumerate(arrays):
        a = np.asarray(a)
        dt = DType.INT64 if np.issubdtype(a.dtype, np.integer) else DType.of(a.dtype)
        if i in param_operands:
            values.append(b.param(f"p{i}", a.shape, dt))
            params[f"p{i}"] = a
        else:
            values.append(b.input(f"x{i}", a.shape, dt))
            inputs[f"x{i}"] = a
    outs = b.apply_multi(op, values, attrs, layer=layer)
    for k, o in enumerate(outs):
        b.output(o, f"y{k}")
    return b.build(), inputs, params


def run_op(op: str, arrays: Sequence[np.ndarray], attrs: Any = None, dtype: str = "float32") -> np.ndarray:
    """Run one op through the graph builder (so its shape rule runs) and the reference interpreter."""
    from cnncc.runtime import interpret

    g, inputs, params = single_op_graph(op, arrays, attrs)
    outs = interpret(g, inputs, params, dtype=dtype)
    out = outs["y0"]
    if tuple(out.shape) != g.outputs[0].shape:
        raise AssertionError(f"{op}: reference shape {out.shape} differs from inferred {g.outputs[0].shape}")
    return out


def rel_error(got: np.ndarray, want: np.ndarray) -> float:
    """Max absolute error divided by the max magnitude of ``want`` (the 'output scale')."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        raise AssertionError(f"shape {got.shape} != {want.shape}")
    scale = max(float(np.max(np.abs(want))) if want.size else 0.0, 1e-30)
    return float(np.max(np.abs(got - want))) / scale if want.size else 0.0


# Named tolerances (relative to the output scale) for float32 references vs PyTorch float32.
# Both sides round every product to float32 but sum in different orders; for a dot product of length n the
# reordering error grows like sqrt(n)·2^-24 per term, so 1e-5 covers layers up to ~10^5-long reductions.
TOL_F32_ELEMENTWISE = 1e-6
TOL_F32_REDUCTION = 1e-5
TOL_F32_MODEL = 1e-4
TOL_F64 = 1e-12

# Named tolerances of the convolution algorithms (float32 output against the float64 reference, relative to the
# output scale): each algorithm's record holds its tolerance and the reason (cnncc.convalgo.CATALOGUE).
TOL_ALGORITHM = {name: a.tolerance for name, a in CATALOGUE.items()}


def randomize(model: Model, seed: int) -> dict[str, np.ndarray]:
    """Non-trivial BN statistics and affine parameters, and non-zero biases (the zoo initialises them to 0/1)."""
    rng = np.random.default_rng(seed)
    draw = {"running_mean": lambda n: rng.normal(0.0, 0.1, n), "running_var": lambda n: rng.uniform(0.5, 1.5, n),
            "weight": lambda n: rng.uniform(0.5, 1.5, n), "bias": lambda n: rng.normal(0.0, 0.1, n)}
    params = {k: v.copy() for k, v in model.params.items()}
    bn_layers = {k.removesuffix(".running_mean") for k in params if k.endswith(".running_mean")}
    for key, value in params.items():
        layer, _, local = key.rpartition(".")
        if layer in bn_layers or local == "bias":
            value[...] = draw[local](value.shape)
    model.set_weights(params)
    return {k: v.copy() for k, v in params.items()}  # set_weights keeps (aliases) the arrays it is given


def build_c_example(source: str | os.PathLike, bundle: str | os.PathLike, out: str | os.PathLike,
                    static: bool = False) -> Path:
    """Build the C example ``source`` against a bundle directory with the system C compiler (warnings are errors);
    linked to the shared library by rpath, or to the static archive."""
    bundle = Path(bundle).resolve()
    name = json.loads((bundle / "manifest.json").read_text())["name"]
    exe = Path(out)
    link = ([str(bundle / f"lib{name}.a"), "-fopenmp", "-lm"] if static
            else [f"-L{bundle}", f"-l{name}", f"-Wl,-rpath,{bundle}"])
    cmd = [os.environ.get("CC", "cc"), "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", str(source), f"-I{bundle}",
           "-o", str(exe), *link]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return exe


def run_c_example(exe: str | os.PathLike, *args: str, valgrind: bool = False,
                  timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a built C example with an empty environment (no Python, no PYTHONPATH, no LD_LIBRARY_PATH), optionally
    under valgrind memcheck (any memory error, or a definitely lost block, makes the exit status 99)."""
    cmd = [str(exe), *args]
    if valgrind:
        cmd = [shutil.which("valgrind") or "valgrind", *VALGRIND_ARGS, *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={}, check=False)


# memcheck: every memory error counts; of leaks, only definitely lost blocks (libgomp leaves its worker threads'
# TLS "possibly lost" at exit, by design).
VALGRIND_ARGS = ["-q", "--error-exitcode=99", "--leak-check=full", "--errors-for-leak-kinds=definite"]


def repo_root(near: str | os.PathLike) -> Path:
    """The checkout that holds ``near`` (a test's ``__file__``): the nearest folder above it with a pyproject.toml.
    Tests compute their paths from it, so they work at any depth under tests/."""
    for folder in Path(near).resolve().parents:
        if (folder / "pyproject.toml").is_file():
            return folder
    raise FileNotFoundError(f"no pyproject.toml above {near}")
