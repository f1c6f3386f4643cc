"""The public entry points: ``cnncc.compile`` (backends are imported lazily: the core never imports one)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cnncc.errors import CnnccError
from cnncc.ir import Graph


def optimize(graph: Graph, params: Mapping[str, np.ndarray], passes: Any = None,
             verify: bool = False) -> tuple[Graph, dict[str, np.ndarray], Any]:
    """Run a pass pipeline (the CPU inference pipeline by default); returns the graph, its weights and the context
    (timings and what each pass did)."""
    from cnncc.passes import cpu_inference
    from cnncc.passmanager import PassContext, run_passes

    ctx = PassContext(dict(params), verify=verify)
    out = run_passes(graph, cpu_inference() if passes is None else passes, ctx)
    return out, ctx.params, ctx


def compile(model: Any, target: str = "cpu", threads: int | None = None, batch: int = 1,  # noqa: A001
            cpu: str = "host", params: Mapping[str, np.ndarray] | None = None, optimize_graph: bool = True,
            passes: Any = None, algorithms: str | Sequence[str] | None = None, max_error: float | None = None,
            tuning_db: Any = None) -> Any:
    """Compile a DSL model (or a graph with its ``params``) to native code.

    ``target="cpu"`` uses the LLVM backend for ``cpu`` (``"host"``, or an LLVM CPU name such as ``"x86-64-v3"``).
    ``batch`` is the largest batch a call may pass; ``threads`` the default thread count (all cores if None).
    The graph first goes through the CPU inference pipeline (identity removal, constant folding, batch-norm folding,
    epilogue fusion, ...) unless ``optimize_graph=False``; ``passes`` replaces that pipeline.

    Convolution algorithms: each conv layer gets the fastest of ``algorithms`` (default: all of direct, im2col,
    winograd2/4/6, fft8/16 that apply) whose measured error stays within ``max_error`` (default
    ``cnncc.codegen.select.DEFAULT_MAX_ERROR``), by the cost model or by times ``cnncc tune`` stored in the tuning
    database (``tuning_db``: a path or :class:`cnncc.tuning.TuningDB`; default ``$CNNCC_TUNING_DB`` or
    ``~/.cache/cnncc/tuning.json``). ``algorithms="direct"`` compiles every convolution directly. The result's
    ``choices`` say what was chosen and why. With ``optimize_graph=False`` no algorithm is selected (direct) unless
    ``algorithms`` is given.
    """
    for name, value in (("threads", threads), ("batch", batch)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise CnnccError(f"compile: {name} must be a positive integer, got {value!r}")
    if target != "cpu":
        raise CnnccError(f"unknown target '{target}': cnncc compiles for 'cpu' (the CUDA backend comes later)")
    if isinstance(model, Graph):
        graph = model
        if params is None:
            raise CnnccError("compile(graph) needs params= (the weights by parameter name)")
    else:
        graph = model.graph(batch)
        params = model.params if params is None else params
    from cnncc.runtime.compiled import compile_graph

    log: list[str] = []
    choices: dict[str, Any] = {}
    if optimize_graph or algorithms is not None:
        from cnncc.passes import cpu_inference
        from cnncc.runtime.interpreter import check_params

        check_params(graph, params)
        pipeline = list(cpu_inference() if passes is None else passes) if optimize_graph else []
        pipeline.append(conv_selection(cpu, threads or 1, algorithms, max_error, tuning_db))
        graph, params, ctx = optimize(graph, params, pipeline)
        log, choices = ctx.log, ctx.choices
    compiled = compile_graph(graph, params, cpu, threads)
    compiled.pass_log = log
    compiled.choices = choices
    return compiled


def conv_selection(cpu: str = "host", threads: int = 1, algorithms: str | Sequence[str] | None = None,
                   max_error: float | None = None, tuning_db: Any = None, runtime_weights: bool = False) -> Any:
    """The ``select-algorithms`` pass with the CPU backend's chooser (``runtime_weights``: a training step, whose
    weights are packed or transformed in every call)."""
    from cnncc.codegen.select import DEFAULT_ALGORITHMS, DEFAULT_MAX_ERROR, CpuConvChooser
    from cnncc.codegen.target import Target
    from cnncc.passes.algorithms import SelectConvAlgorithms
    from cnncc.tuning import TuningDB

    algos = DEFAULT_ALGORITHMS if algorithms in (None, "auto") else (
        (algorithms,) if isinstance(algorithms, str) else tuple(algorithms))
    db = tuning_db if isinstance(tuning_db, TuningDB) else TuningDB(tuning_db)
    chooser = CpuConvChooser(Target.named(cpu), DEFAULT_MAX_ERROR if max_error is None else max_error, algos, db,
                             threads, runtime_weights=runtime_weights)
    return SelectConvAlgorithms(chooser)
