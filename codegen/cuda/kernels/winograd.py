"""Winograd F(m x m, 3x3) for 3x3 stride-1 convolutions (Lavin & Gray 2016), as three kernels:

1. ``wino_input``: each thread takes one (channel, tile): the ``alpha x alpha`` input window (``alpha = m + 2``,
   zero padding applied) in registers, ``V = B^T d B`` with every coefficient a compile-time constant (the loops are
   unrolled, so the transform is a few additions), stored as ``V[alpha*alpha, C, tiles]``;
2. ``wino_gemm``: ``alpha*alpha`` independent GEMMs ``M[e] = U[e]^T V[e]`` (``U``: the filters transformed at
   compile time in float64, ``U[e, C, K]``), scheduled by the same shared-memory/register tiling as ``conv``;
3. ``wino_output``: each thread takes one (image, channel, tile): the ``alpha*alpha`` products in registers,
   ``Y = A^T M A`` for its ``m x m`` outputs, then bias and the fused epilogue, stored in NCHW.

Tiles run over ``(image, tile row, tile column)``; the last row/column of tiles may hang over the output (its extra
outputs are not stored). The transforms are the CPU backend's (``cnncc.codegen.transforms.winograd``), so the
error the chooser measures is the arithmetic these kernels do.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cnncc.codegen.cuda.families import Dims, Family, KernelSpec, apply_epilogue, f32, family, placeholders, reader
from cnncc.codegen.cuda.kernels.conv import conv_schedule, gemm_schedule


def matrices(m: int) -> tuple[np.ndarray, np.ndarray]:
    """(A^T (m x alpha), B^T (alpha x alpha)) of F(m, 3)."""
    from cnncc.codegen.transforms import _winograd

    at, _, bt = _winograd(m, 3)
    return at, bt


def const(mat: np.ndarray, i: Any, j: Any) -> Any:
    """``mat[i, j]`` for index expressions: a select over the nonzero entries (constants once the loops unroll)."""
    from tvm import tirx

    expr = f32(0)
    for r in range(mat.shape[0]):
        for c in range(mat.shape[1]):
            if mat[r, c] != 0:
                expr = tirx.if_then_else(tirx.all(i == r, j == c), f32(mat[r, c]), expr)
    return expr


# wino_input geometry: (m, N, C, H, W, pt, pl, TH, TW): V[alpha*alpha, C, N*TH*TW]


def _input_compute(spec: KernelSpec) -> list[Any]:
    from tvm import te, tirx

    m, n_, c_, h, w, pt, pl, th, tw = spec.geometry
    a = m + 2
    _, bt = matrices(m)
    (x,) = placeholders([(n_, c_, h, w)])
    tiles = n_ * th * tw

    def window(c: Any, t: Any, u: Any, v: Any) -> Any:
        n, ti, tj = t // (th * tw), (t // tw) % th, t % tw
        ih, iw = ti * m - pt + u, tj * m - pl + v
        inside = tirx.all(ih >= 0, ih < h, iw >= 0, iw < w)
        return tirx.if_then_else(inside, x[n, c, ih, iw], f32(0))

    d = te.compute((c_, tiles, a, a), window, name="d")
    ru, rv = te.reduce_axis((0, a), name="ru"), te.reduce_axis((0, a), name="rv")

    def transform(e: Any, c: Any, t: Any) -> Any:
        xi, nu = e // a, e % a
        return te.sum(const(bt, xi, ru) * d[c, t, ru, rv] * const(bt, nu, rv), axis=[ru, rv])

    v = te.compute((a * a, c_, tiles), transform, name="acc")
    y = te.compute((a * a, c_, tiles), lambda *i: v(*i), name="y")
    return [x, y]


def _input_schedule(sch: Any, spec: KernelSpec, dims: Dims) -> None:
    d, acc, y = sch.get_sblock("d"), sch.get_sblock("acc"), sch.get_sblock("y")
    e, c, t = sch.get_loops(y)
    sch.reorder(c, t, e)
    fused = sch.fuse(c, t)
    bx, tx = sch.split(fused, [None, min(128, int(sch.get(fused).extent))])
    dims.bind(sch, bx, "blockIdx.x")
    dims.bind(sch, tx, "threadIdx.x")
    sch.unroll(e)
    sch.compute_at(acc, e)
    sch.set_scope(acc, 0, "local")
    for loop in sch.get_loops(acc)[-2:]:
        sch.unroll(loop)
    sch.compute_at(d, tx)
    sch.set_scope(d, 0, "local")
    for loop in sch.get_loops(d)[-2:]:
        sch.unroll(loop)


# wino_gemm geometry: (E, C, K, T): M[E, K, T] = sum_c U[E, C, K] V[E, C, T]


def _gemm_compute(spec: KernelSpec) -> list[Any]:
    from tvm import te

    e_, c_, k_, t_ = spec.geometry
    v, u = placeholders([(e_, c_, t_), (e_, c_, k_)])
    rc = te.reduce_axis((0, c_), name="rc")
    acc = te.compute((e_, k_, t_), lambda e, k, t: te.sum(v[e, rc, t] * u[e, rc, k], axis=rc), name="acc")
    y = te.compute((e_, k_, t_), lambda *i: acc(*i), name="y")
    return [v, u, y]


def _gemm_schedule(sch: Any, spec: KernelSpec, dims: Dims) -> None:
    acc = sch.get_sblock("acc")
    e, k, t, q = sch.get_loops(acc)
    tiles = {"tk": spec.tile("tk", 64), "tp": spec.tile("tp", 64), "rk": spec.tile("rk", 8)}
    gemm_schedule(sch, dims, tiles, acc, sch.get_sblock("y"), [e], k, t, q, a_read=0, w_read=1)


# wino_output geometry: (m, N, K, OH, OW, TH, TW): y[N, K, OH, OW] from M[alpha*alpha, K, N*TH*TW]


def _output_compute(spec: KernelSpec) -> list[Any]:
    from tvm import te

    m, n_, k_, oh, ow, th, tw = spec.geometry
    a = m + 2
    at, _ = matrices(m)
    mm, b = placeholders([(a * a, k_, n_ * th * tw), (k_,)])
    nres = sum(1 for st in spec.epilogue if st.op == "add")
    res = placeholders([(n_, k_, oh, ow)] * nres, first=2)
    ru, rv = te.reduce_axis((0, a), name="ru"), te.reduce_axis((0, a), name="rv")

    def inverse(n: Any, k: Any, i: Any, j: Any) -> Any:
        t = n * th * tw + (i // m) * tw + j // m
        return te.sum(const(at, i % m, ru) * mm[ru * a + rv, k, t] * const(at, j % m, rv), axis=[ru, rv])

    acc = te.compute((n_, k_, th * m, tw * m), inverse, name="acc")

    def out(n: Any, k: Any, i: Any, j: Any) -> Any:
        return apply_epilogue(acc[n, k, i, j] + b[k], spec.epilogue, [reader(t, n, k, i, j) for t in res])

    y = te.compute((n_, k_, oh, ow), out, name="y")
    return [mm, b, *res, y]


def _output_schedule(sch: Any, spec: KernelSpec, dims: Dims) -> None:
    m = spec.geometry[0]
    acc, y = sch.get_sblock("acc"), sch.get_sblock("y")
    n, k, i, j = sch.get_loops(y)
    ti, ii = sch.split(i, [None, m])
    tj, jj = sch.split(j, [None, m])
    sch.reorder(n, k, ti, tj, ii, jj)
    fused = sch.fuse(n, k, ti, tj)
    bx, tx = sch.split(fused, [None, min(128, int(sch.get(fused).extent))])
    dims.bind(sch, bx, "blockIdx.x")
    dims.bind(sch, tx, "threadIdx.x")
    sch.unroll(ii)
    sch.unroll(jj)
    sch.compute_at(acc, jj)
    sch.set_scope(acc, 0, "local")
    for loop in sch.get_loops(acc)[-2:]:
        sch.unroll(loop)


def _no_flops(spec: KernelSpec) -> int:
    return 0  # the transforms' few additions are not counted (the convolution's work is the GEMM's)


def _flops(spec: KernelSpec) -> int:
    e, c, k, t = spec.geometry
    return 2 * e * c * k * t


WINO_INPUT = family(Family("wino_input", _input_compute, _input_schedule, _no_flops,
                           "one (channel, tile) per thread: B^T d B with constant coefficients"))
WINO_GEMM = family(Family("wino_gemm", _gemm_compute, _gemm_schedule, _flops,
                          "alpha^2 GEMMs, shared-memory and register tiles as conv"))
WINO_OUTPUT = family(Family("wino_output", _output_compute, _output_schedule, _no_flops,
                            "one m x m output tile per thread: A^T M A, bias and epilogue"))


def gemm_tiles(e: int, k: int, t: int) -> tuple[tuple[str, int], ...]:
    """The batched GEMM's block tile: the conv rule with the alpha^2 points as the batch."""
    return conv_schedule(e, 1, k, t)
