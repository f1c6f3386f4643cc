"""The compiler driver: the one module that owns the pipeline.

    graph -> graph passes -> algorithm selection -> target lowering -> memory plan -> build -> executable -> runtime

for inference (:func:`compile_model`), the training step (:func:`compile_training_step`) and the tuner (which
compiles single layers through :func:`compile_graph`). ``cnncc.compile``, the trainer, the tuner and the CLI call it;
backends are reached only through a target object (:mod:`cnncc.targets`), and the runtime only receives the built
executable. Nothing else orchestrates.
"""

from __future__ import annotations

import os
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from cnncc.errors import CnnccError
from cnncc.executable import CompileStats
from cnncc.ir import Graph
from cnncc.program import Program
from cnncc.targets import Target, make_target

Algorithms = str | Sequence[str] | Mapping[str, str] | None


def resolve_target(target: str | Target = "cpu", cpu: str = "host", cuda_arch: str = "sm_90") -> Target:
    """A target object from its name (``"cpu"``, ``"cuda"``) and what it compiles for: the LLVM CPU name for the CPU
    (``"host"``, ``"x86-64-v3"``), the GPU architecture for CUDA (``"sm_90"``)."""
    if not isinstance(target, str):
        return target
    return make_target(target, cuda_arch if target == "cuda" else cpu)


def optimize(graph: Graph, params: Mapping[str, np.ndarray], passes: Any = None,
             verify: bool = False) -> tuple[Graph, dict[str, np.ndarray], Any]:
    """Run a pass pipeline (the CPU inference pipeline by default); returns the graph, its weights and the context
    (timings, what each pass did, the algorithm choices)."""
    from cnncc.passes import cpu_inference
    from cnncc.passmanager import PassContext, run_passes

    ctx = PassContext(dict(params), verify=verify)
    out = run_passes(graph, cpu_inference() if passes is None else passes, ctx)
    return out, ctx.params, ctx


def conv_selection(target: str | Target = "host", threads: int = 1, algorithms: Algorithms = None,
                   max_error: float | None = None, tuning_db: Any = None, runtime_weights: bool = False) -> Any:
    """The ``select-algorithms`` pass with the target's chooser (``target``: a target object, or for the CPU its
    LLVM CPU name; ``algorithms``: None/"auto" for every algorithm the target registers, candidate names, or a
    mapping layer -> algorithm that forces layers -- the chooser reads it; ``runtime_weights``: a training step,
    whose weights are packed or transformed in every call)."""
    from cnncc.convalgo import DEFAULT_MAX_ERROR
    from cnncc.passes.algorithms import SelectConvAlgorithms
    from cnncc.tuning import TuningDB

    tgt = resolve_target("cpu", target) if isinstance(target, str) else target
    db = tuning_db if isinstance(tuning_db, TuningDB) else TuningDB(tuning_db)
    chooser = tgt.chooser(DEFAULT_MAX_ERROR if max_error is None else max_error, algorithms, db, threads,
                          runtime_weights=runtime_weights)
    return SelectConvAlgorithms(chooser)


def lower_and_plan(graph: Graph, params: Mapping[str, np.ndarray], target: Target | None = None,
                   algorithms: Algorithms = "direct") -> tuple[Graph, Program, Any]:
    """What ``cnncc plan`` and ``cnncc viz`` show: ``graph`` through algorithm selection (by default each
    convolution's baseline, or the algorithm its ``impl`` already names), target lowering and the memory plan.
    Returns the selected graph (same nodes in the same order), the program and the plan report."""
    tgt = target or resolve_target("cpu", "host")
    graph, params, _ = optimize(graph, params, [conv_selection(tgt, 1, algorithms)])
    return (graph, *_lower_and_plan(graph, params, tgt))


def _lower_and_plan(graph: Graph, params: Mapping[str, np.ndarray], target: Target,
                    state: Collection[str] = ()) -> tuple[Program, Any]:
    """Target lowering, then the memory plan (arena offsets by liveness)."""
    from cnncc.passes.memory_plan import plan_arena

    program = target.lower(graph, params, state)
    return program, plan_arena(program)


def compile_graph(graph: Graph, params: Mapping[str, np.ndarray], target: str | Target = "host",
                  threads: int | None = None, state: Sequence[str] = (), algorithms: Algorithms = "direct") -> Any:
    """``graph`` as it is (no graph passes) through algorithm selection -- by default each convolution's baseline
    (direct or depthwise) or the algorithm already set in its ``impl`` -- and the back half of the pipeline.
    ``target``: a target object, or for the CPU its LLVM CPU name. ``state``: parameters the program updates in
    place (training): they stay in the weights blob, are read at run time, and each graph output ``state:<name>``
    is written over them at the end of a call."""
    from cnncc.runtime.interpreter import check_params

    check_params(graph, params)
    tgt = resolve_target("cpu", target) if isinstance(target, str) else target
    return _compile(graph, params, tgt, threads, [], algorithms, runtime_weights=bool(state), state=state)


def compile_model(model: Any, target: str = "cpu", threads: int | None = None, batch: int = 1, cpu: str = "host",
                  params: Mapping[str, np.ndarray] | None = None, optimize_graph: bool = True, passes: Any = None,
                  algorithms: Algorithms = None, max_error: float | None = None, tuning_db: Any = None,
                  cuda_arch: str = "sm_90") -> Any:
    """The whole inference pipeline (see :func:`cnncc.compile` for the arguments)."""
    for name, value in (("threads", threads), ("batch", batch)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise CnnccError(f"compile: {name} must be a positive integer, got {value!r}")
    tgt = resolve_target(target, cpu, cuda_arch)
    if isinstance(model, Graph):
        graph = model
        if params is None:
            raise CnnccError("compile(graph) needs params= (the weights by parameter name)")
    else:
        graph = model.graph(batch)
        params = model.params if params is None else params
    from cnncc.passes import cpu_inference
    from cnncc.runtime.interpreter import check_params

    check_params(graph, params)  # once, before any work: names, shapes and dtypes of the weights
    pipeline = list(cpu_inference() if passes is None else passes) if optimize_graph else []
    if algorithms is None and not optimize_graph:
        algorithms = "direct"  # the graph as written: each convolution's baseline, or the impl it carries
    return _compile(graph, params, tgt, threads, pipeline, algorithms, max_error, tuning_db)


def compile_training_step(graph: Graph, params: Mapping[str, np.ndarray], state: Sequence[str], cpu: str = "host",
                          threads: int | None = None, algorithms: Algorithms = None) -> tuple[Any, dict[str, Any]]:
    """A training-step graph (forward, loss, backward, updates; see :mod:`cnncc.training`) through algorithm
    selection for run-time weights and the back half of the pipeline; returns the compiled step and the choices."""
    from cnncc.runtime.interpreter import check_params

    check_params(graph, params)
    compiled = _compile(graph, params, resolve_target("cpu", cpu), threads, [], algorithms, runtime_weights=True,
                        state=state)
    return compiled, compiled.choices


def _compile(graph: Graph, params: Mapping[str, np.ndarray], target: Target, threads: int | None,
             passes: list[Any], algorithms: Algorithms, max_error: float | None = None, tuning_db: Any = None,
             runtime_weights: bool = False, state: Sequence[str] = ()) -> Any:
    """The pipeline after the weights were checked: graph passes, algorithm selection (always: lowerings never
    choose), lowering, memory plan, build, and the runtime's compiled model around the executable."""
    from cnncc.runtime.compiled import runtime_model

    select = conv_selection(target, threads or 1, algorithms, max_error, tuning_db, runtime_weights)
    graph, params, ctx = optimize(graph, params, [*passes, select])
    t0 = time.perf_counter()
    program, report = _lower_and_plan(graph, params, target, state)
    stats = CompileStats(time.perf_counter() - t0, 0.0, False, report.arena_bytes, report.lower_bound,
                         report.naive_bytes, len(program.weights), report.inplace_merges)
    nthreads = threads if threads is not None else (os.cpu_count() or 1)
    compiled = runtime_model(target.build(graph, program, nthreads, stats))
    compiled.pass_log = ctx.log if passes else []
    compiled.choices = ctx.choices
    return compiled


def write_bundle(compiled: Any, directory: Any, name: str | None = None, **options: Any) -> Any:
    """Write a compiled model (or training step) as a deployment bundle through its target's bundle writer, with
    each conv layer's algorithm choice and why in the manifest (options: see
    :func:`cnncc.codegen.bundle.write_bundle`)."""
    reasons = {layer: c.reason() for layer, c in compiled.choices.items()}
    if getattr(compiled.executable.target, "kind", "cpu") == "cuda":
        from cnncc.codegen.cuda.bundle import write_cuda_bundle

        return write_cuda_bundle(compiled.executable, directory, name, algorithms=reasons, **options)
    from cnncc.codegen.bundle import write_bundle as write

    return write(compiled.executable, directory, name, algorithms=reasons, **options)
