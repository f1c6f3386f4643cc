"""Measuring convolution candidates on this machine: one layer compiled on its own with a given algorithm and
schedule, timed, and checked against the float64 reference; and the tuner that fills the tuning database.

A layer's time is the sum of its own kernels (halo padding, transforms, GEMM, output transform or the direct
kernel), each the best of ``repeats`` profiled runs; the conversions at the single-layer graph's edges (plain NCHW
in and out) are left out, as a layer inside a network does not pay them. Its error is max |y - ref| / max |ref| of
the compiled float32 output against the float64 interpreter on the same seeded random input and weights.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from cnncc.codegen.select import Candidate, CpuConvChooser
from cnncc.convalgo import FORWARD_CONV_OPS, ConvShape, baseline_for, lookup
from cnncc.ir import Graph, GraphBuilder
from cnncc.ops.conv2d import Conv2dAttrs, ConvImpl

EDGE_KERNELS = ("relayout",)  # the single-layer graph's own input/output conversions


@dataclass
class Measurement:
    impl: ConvImpl
    seconds: float
    error: float
    macs: int

    @property
    def gflops(self) -> float:
        return 2 * self.macs / self.seconds / 1e9


def layer_graph(cs: ConvShape, impl: ConvImpl | None,
                seed: int = 0) -> tuple[Graph, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """conv2d (with bias) of shape ``cs`` using ``impl``, seeded He-scaled weights and a standard-normal input."""
    rng = np.random.default_rng(seed)
    cg = cs.c // cs.groups
    b = GraphBuilder("layer")
    x = b.input("x", (cs.n, cs.c, cs.h, cs.w))
    w = b.param("w", (cs.k, cg, cs.r, cs.s))
    bias = b.param("b", (cs.k,))
    attrs = Conv2dAttrs(cs.stride, cs.padding, cs.dilation, cs.groups, impl)
    b.output(b.apply("conv2d", [x, w, bias], attrs, layer="conv"), "y")
    params = {"w": (rng.standard_normal((cs.k, cg, cs.r, cs.s)) * np.sqrt(2.0 / (cg * cs.r * cs.s))).astype(
        np.float32), "b": rng.standard_normal(cs.k).astype(np.float32) * 0.1}
    inputs = {"x": rng.standard_normal((cs.n, cs.c, cs.h, cs.w)).astype(np.float32)}
    return b.build(), params, inputs


def measure(cs: ConvShape, impl: ConvImpl, cpu: str = "host", threads: int = 1, repeats: int = 10,
            check: bool = True) -> Measurement:
    """Compile the layer with ``impl``, time it (best of ``repeats`` per kernel) and measure its error."""
    return measure_many(cs, [impl], cpu, threads, repeats, rounds=1, check=check)[0]


def measure_many(cs: ConvShape, impls: Sequence[ConvImpl], cpu: str = "host", threads: int = 1, repeats: int = 10,
                 rounds: int = 3, check: bool = True) -> list[Measurement]:
    """Compile the layer once per ``impl``, then time the candidates round-robin for ``rounds`` rounds and keep each
    one's best: a slow spell of a shared machine hits every candidate alike instead of one."""
    from cnncc.driver import compile_graph
    from cnncc.runtime import interpret

    graph, params, inputs = layer_graph(cs, None)
    want = None
    if check:
        want = interpret(graph, {k: v.astype(np.float64) for k, v in inputs.items()},
                         {k: v.astype(np.float64) for k, v in params.items()}, dtype="float64")["y"]
    compiled, errors = [], []
    for impl in impls:
        g, _, _ = layer_graph(cs, impl)
        cm = compile_graph(g, params, cpu, threads)
        got = cm.run(inputs)["y"]
        errors.append(float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-30)) if want is not None
                      else float("nan"))
        compiled.append(cm)
    best = [float("inf")] * len(impls)
    for _ in range(rounds):
        for i, cm in enumerate(compiled):
            timings = cm.profile(inputs, repeats=repeats, threads=threads)
            best[i] = min(best[i], sum(t.seconds for t in timings if t.kernel not in EDGE_KERNELS))
    return [Measurement(impl, t, e, cs.macs) for impl, t, e in zip(impls, best, errors, strict=True)]


@dataclass
class TuneResult:
    signature: str
    layers: list[str]
    measured: dict[str, Measurement]
    best: str
    skipped: bool  # already in the database


def tune_shapes(shapes: dict[ConvShape, list[str]], chooser: CpuConvChooser, cpu: str = "host", top: int = 3,
                budget_s: float | None = None, repeats: int = 10,
                progress: Callable[[str, int, int], None] | None = None) -> list[TuneResult]:
    """Measure the ``top`` candidates (by the model, within the error budget) of every shape, plus direct and two
    direct schedule variants, and write each layer's result to the database as soon as it is measured (an
    interrupted run resumes where it stopped; shapes already in the database are skipped)."""
    results = []
    t0 = time.perf_counter()
    items = list(shapes.items())
    for i, (cs, layers) in enumerate(items):
        if progress:
            progress(layers[0], i, len(items))
        key = chooser.key(cs)
        rec = chooser.db.get(key) if chooser.db is not None else None
        if rec is not None:
            results.append(TuneResult(cs.signature(), layers, {}, rec.get("best", ""), True))
            continue
        cands, _ = chooser.candidates(cs)
        for c in cands:
            chooser.check_error(cs, c)
        allowed = sorted((c for c in cands if not c.excluded), key=lambda c: c.estimate_s)
        pick: list[ConvImpl] = [c.impl for c in allowed[:top]]
        baseline = ConvImpl(baseline_for(cs, "cpu").name)  # direct, or depthwise
        if baseline not in pick:
            pick.append(baseline)
        pick += chooser.schedule_variants(cs)
        measured = {Candidate(m.impl, 0.0).label: m
                    for m in measure_many(cs, pick, cpu, chooser.threads, max(1, repeats // 3))}
        best = min(measured, key=lambda k: measured[k].seconds)
        if chooser.db is not None:
            chooser.db.put(key, {"signature": cs.signature(), "best": best, "measured": {
                label: {"seconds": m.seconds, "error": m.error, "impl": vars(m.impl)}
                for label, m in measured.items()}})
        results.append(TuneResult(cs.signature(), layers, measured, best, False))
        if budget_s is not None and time.perf_counter() - t0 > budget_s:
            break  # the budget ran out during this layer: the rest waits for the next run
    if progress:
        progress("", len(items), len(items))
    return results


def model_convs(graph: Graph) -> dict[ConvShape, list[str]]:
    """The distinct conv shapes of an (optimized) graph with the layers that have each."""
    out: dict[ConvShape, list[str]] = {}
    for node in graph.nodes:
        if node.op in FORWARD_CONV_OPS:
            out.setdefault(ConvShape.of(node), []).append(node.layer)
    return out


def applicable(cs: ConvShape, algorithms: Sequence[str], target: str = "cpu") -> list[str]:
    """Those of ``algorithms`` whose record applies to ``cs`` (what ``cnncc bench`` times)."""
    return [a for a in algorithms if lookup(a, target).why_not(cs) is None]
