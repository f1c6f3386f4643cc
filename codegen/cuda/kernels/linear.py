"""Linear layers (GEMM with a few rows: batch x features) and softmax.

At the batches a CNN's classifier sees (1-64 rows) a linear layer is a matrix-vector product bound by reading its
weights once, so the schedule spreads the weights over the whole GPU: ``linear_partial`` splits the input features
into ``S`` slices (grid: output tiles x slices); each thread owns one output feature, walks its slice with the weights
packed transposed (``(I, O)``: a warp reads 32 consecutive floats) and keeps one accumulator per row in registers.
``linear_reduce`` sums the ``S`` partial results and applies bias and the fused epilogue. ``S`` is chosen so the grid
has a few blocks per multiprocessor (:func:`linear_slices`).

``softmax`` / ``log_softmax`` over the last axis of ``(N, C)``: one row per thread (max, sum of exponentials, then
the outputs), the reference's formulas.
"""

from __future__ import annotations

from typing import Any

from cnncc.codegen.cuda.families import (
    Dims,
    Family,
    KernelSpec,
    apply_epilogue,
    f32,
    family,
    placeholders,
    reader,
    reduce_per_thread,
)

THREADS = 128


def linear_slices(i: int, o: int, sms: int = 132) -> int:
    """Input slices: enough blocks for ~4 per multiprocessor, each slice at least 64 features long."""
    tiles = -(-o // THREADS)
    want = max(1, -(-4 * sms // tiles))
    return max(1, min(want, i // 64))


# linear_partial geometry: (N, I, O, S); arguments x (N, I), wt (I, O), partial (S, N, O)


def _partial_compute(spec: KernelSpec) -> list[Any]:
    from tvm import te, tirx

    n_, i_, o_, s_ = spec.geometry
    chunk = -(-i_ // s_)
    x, wt = placeholders([(n_, i_), (i_, o_)])
    ri = te.reduce_axis((0, chunk), name="ri")

    def dot(s: Any, n: Any, o: Any) -> Any:
        i = s * chunk + ri
        return te.sum(tirx.if_then_else(i < i_, x[n, i] * wt[i, o], f32(0)), axis=ri)

    part = te.compute((s_, n_, o_), dot, name="y")
    return [x, wt, part]


def _partial_schedule(sch: Any, spec: KernelSpec, dims: Dims) -> None:
    blk = sch.get_sblock("y")
    s, n, o, ri = sch.get_loops(blk)
    o0, o1 = sch.split(o, [None, min(THREADS, spec.geometry[2])])
    sch.reorder(s, o0, o1, ri, n)
    dims.bind(sch, s, "blockIdx.y")
    dims.bind(sch, o0, "blockIdx.x")
    dims.bind(sch, o1, "threadIdx.x")
    local = sch.cache_write(blk, 0, "local")
    sch.reverse_compute_at(local, o1)
    sch.decompose_reduction(blk, ri)


# linear_reduce geometry: (N, O, S); arguments partial (S, N, O), bias (O,), residuals (N, O)..., y (N, O)


def _reduce_compute(spec: KernelSpec) -> list[Any]:
    from tvm import te

    n_, o_, s_ = spec.geometry
    part, b = placeholders([(s_, n_, o_), (o_,)])
    nres = sum(1 for st in spec.epilogue if st.op == "add")
    res = placeholders([(n_, o_)] * nres, first=2)
    rs = te.reduce_axis((0, s_), name="rs")
    acc = te.compute((n_, o_), lambda n, o: te.sum(part[rs, n, o], axis=rs), name="acc")

    def out(n: Any, o: Any) -> Any:
        return apply_epilogue(acc[n, o] + b[o], spec.epilogue, [reader(t, n, o) for t in res])

    y = te.compute((n_, o_), out, name="y")
    return [part, b, *res, y]


def _reduce_schedule(sch: Any, spec: KernelSpec, dims: Dims) -> None:
    reduce_per_thread(sch, dims)


LINEAR_PARTIAL = family(Family("linear_partial", _partial_compute, _partial_schedule,
                               lambda s: 2 * s.geometry[0] * s.geometry[1] * s.geometry[2],
                               "split-K matrix-vector product, weights read once"))
LINEAR_REDUCE = family(Family("linear_reduce", _reduce_compute, _reduce_schedule,
                              lambda s: s.geometry[0] * s.geometry[1] * s.geometry[2],
                              "sum of the slices, bias and epilogue"))


# softmax geometry: (N, C, log)


def _softmax_compute(spec: KernelSpec) -> list[Any]:
    from tvm import te, tirx

    n_, c_, log = spec.geometry
    (x,) = placeholders([(n_, c_)])
    r1, r2 = te.reduce_axis((0, c_), name="r1"), te.reduce_axis((0, c_), name="r2")
    m = te.compute((n_,), lambda n: te.max(x[n, r1], axis=r1), name="m")
    e = te.compute((n_,), lambda n: te.sum(tirx.exp(x[n, r2] - m[n]), axis=r2), name="e")
    if log:
        y = te.compute((n_, c_), lambda n, c: x[n, c] - m[n] - tirx.log(e[n]), name="y")
    else:
        y = te.compute((n_, c_), lambda n, c: tirx.exp(x[n, c] - m[n]) / e[n], name="y")
    return [x, y]


def _softmax_schedule(sch: Any, spec: KernelSpec, dims: Dims) -> None:
    y = sch.get_sblock("y")
    n, _ = sch.get_loops(y)
    bx, tx = sch.split(n, [None, min(64, spec.geometry[0])])
    dims.bind(sch, bx, "blockIdx.x")
    dims.bind(sch, tx, "threadIdx.x")
    for name in ("e", "m"):
        blk = sch.get_sblock(name)
        sch.compute_at(blk, tx)
        sch.set_scope(blk, 0, "local")


SOFTMAX = family(Family("softmax", _softmax_compute, _softmax_schedule,
                        lambda s: 4 * s.geometry[0] * s.geometry[1], "one row per thread"))
