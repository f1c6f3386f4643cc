"""Convolution as implicit GEMM (family ``conv``) and depthwise convolution (family ``depthwise``).

``conv``: per image and group, ``y[k, p] = sum_q A[q, p] * w[q, k]`` over ``q = (c, r, s)`` (``Cg*R*S``) and output
pixels ``p = (oh, ow)``, where ``A`` is the patch matrix gathered from the zero-padded input. It is never stored:
each block gathers its ``RK x tileP`` slice of ``A`` straight into shared memory, next to a ``RK x tileK`` slice of
the packed weights, and every thread accumulates a ``K2 x P2`` register tile (virtual threads, so consecutive threads
touch consecutive pixels and channels: coalesced stores, no shared-memory bank conflicts). Bias, activations and
residual adds run on the registers before the one store (the epilogue). Grouped convolutions run one group per block
row (``blockIdx.z`` = image x group).

``depthwise``: one output per thread, the 3x3 (any RxS) window unrolled from global memory (cached in L1), bias and
epilogue fused.

Schedules are parametric: ``tk``/``tp`` (block tile over output channels / pixels), ``rk`` (reduction slice per
shared-memory stage); :func:`conv_schedule` is the rule the lowering uses, the tuner's space is its neighbours.
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

# geometry: (N, G, Cg, H, W, Kg, R, S, sh, sw, pt, pl, dh, dw, OH, OW)


def conv_schedule(n: int, g: int, kg: int, p: int, sms: int = 132) -> tuple[tuple[str, int], ...]:
    """Block tile (tk output channels x tp pixels): 64x64 (256 threads, 16 outputs each), halved along the larger
    side (down to 16) while the grid would leave the GPU's ``sms`` multiprocessors under two blocks each, and never
    much larger than the layer."""
    tk, tp = 64, 64
    while tk > 16 and tk // 2 >= kg:
        tk //= 2
    while tp > 16 and tp // 2 >= p:
        tp //= 2

    def blocks(tk: int, tp: int) -> int:
        return n * g * -(-kg // tk) * -(-p // tp)

    while blocks(tk, tp) < 2 * sms and max(tk, tp) > 16:
        if tp >= tk:
            tp //= 2
        else:
            tk //= 2
    return (("tk", tk), ("tp", tp), ("rk", 8))


def _conv_compute(spec: KernelSpec) -> list[Any]:
    from tvm import te, tirx

    n_, g_, cg, h, w, kg, r, s, sh, sw, pt, pl, dh, dw, oh, ow = spec.geometry
    p_ = oh * ow
    q_ = cg * r * s
    x, wt, b = placeholders([(n_, g_ * cg, h, w), (g_, q_, kg), (g_ * kg,)])
    nres = sum(1 for st in spec.epilogue if st.op == "add")
    res = placeholders([(n_, g_, kg, p_)] * nres, first=3)

    def patch(n: Any, g: Any, q: Any, p: Any) -> Any:
        c, rs = q // (r * s), q % (r * s)
        ih = (p // ow) * sh - pt + (rs // s) * dh
        iw = (p % ow) * sw - pl + (rs % s) * dw
        inside = tirx.all(ih >= 0, ih < h, iw >= 0, iw < w)
        return tirx.if_then_else(inside, x[n, g * cg + c, ih, iw], f32(0))

    a = te.compute((n_, g_, q_, p_), patch, name="A")
    rq = te.reduce_axis((0, q_), name="rq")
    acc = te.compute((n_, g_, kg, p_), lambda n, g, k, p: te.sum(a[n, g, rq, p] * wt[g, rq, k], axis=rq), name="acc")

    def out(n: Any, g: Any, k: Any, p: Any) -> Any:
        thunks = [reader(t, n, g, k, p) for t in res]
        return apply_epilogue(acc[n, g, k, p] + b[g * kg + k], spec.epilogue, thunks)

    y = te.compute((n_, g_, kg, p_), out, name="y")
    return [x, wt, b, *res, y]


def gemm_schedule(sch: Any, dims: Dims, tiles: dict[str, int], acc: Any, y: Any, batch: list[Any], k: Any, p: Any,
                  q: Any, a_block: Any = None, a_read: int = 0, w_read: int = 1) -> None:
    """The tiled GEMM schedule shared by ``conv`` and Winograd's batched GEMM: ``acc`` (a reduction over ``q``
    computing ``[batch..., k, p]``) in registers, its operands staged ``rk`` deep in shared memory -- the patch
    stage ``a_block`` computed there (conv: the gather never touches global memory), or else ``acc``'s read
    ``a_read`` cached there -- and the weights (read ``w_read``); ``y`` (the epilogue) stores from the registers."""
    tk, tp, rk = tiles["tk"], tiles["tp"], tiles["rk"]
    k2 = 4 if tk >= 32 else 2
    p2 = 4 if tp >= 32 else 2
    k1, p1 = tk // k2, tp // p2
    k0, kv, kt = sch.split(k, [None, k2, k1])
    p0, pv, pt = sch.split(p, [None, p2, p1])
    q0, q1 = sch.split(q, [None, rk])
    sch.reorder(*batch, k0, p0, kv, pv, kt, pt, q0, q1)
    dims.bind(sch, sch.fuse(*batch) if len(batch) > 1 else batch[0], "blockIdx.z")
    dims.bind(sch, k0, "blockIdx.y")
    dims.bind(sch, p0, "blockIdx.x")
    dims.bind(sch, kv, "vthread.y")
    dims.bind(sch, pv, "vthread.x")
    dims.bind(sch, kt, "threadIdx.y")
    dims.bind(sch, pt, "threadIdx.x")
    if a_block is not None:  # shared scope first, then compute_at (the other order computes per-thread windows)
        sch.set_scope(a_block, 0, "shared")
        a_stage = a_block
    else:
        a_stage = sch.cache_read(acc, a_read, "shared")
    w_shared = sch.cache_read(acc, w_read, "shared")
    for blk in (a_stage, w_shared):
        sch.compute_at(blk, q0)
        loops = sch.get_loops(blk)
        below = [i for i, loop in enumerate(loops) if sch.get(loop).same_as(sch.get(q0))][0] + 1
        inner = loops[below:]  # the stage's own loops (unit extents may have been dropped)
        if not inner:
            continue  # one element per stage: every thread computes it (no cooperative split needed)
        fused = sch.fuse(*inner) if len(inner) > 1 else inner[0]
        _, ty, tx = sch.split(fused, [None, k1, p1])
        dims.bind(sch, ty, "threadIdx.y")
        dims.bind(sch, tx, "threadIdx.x")
    sch.set_scope(acc, 0, "local")
    sch.reverse_compute_at(y, pt)
    sch.decompose_reduction(acc, q0)


def _conv_schedule(sch: Any, spec: KernelSpec, dims: Dims) -> None:
    acc = sch.get_sblock("acc")
    n, g, k, p, q = sch.get_loops(acc)
    tiles = {"tk": spec.tile("tk", 64), "tp": spec.tile("tp", 64), "rk": spec.tile("rk", 8)}
    gemm_schedule(sch, dims, tiles, acc, sch.get_sblock("y"), [n, g], k, p, q, a_block=sch.get_sblock("A"))


def _conv_flops(spec: KernelSpec) -> int:
    n, g, cg, _, _, kg, r, s, *_, oh, ow = spec.geometry
    return 2 * n * g * kg * oh * ow * cg * r * s


CONV = family(Family("conv", _conv_compute, _conv_schedule, _conv_flops,
                     "implicit GEMM: shared-memory tiles of patches and weights, a register tile per thread"))


# -- depthwise ------------------------------------------------------------------------------------------------------
# geometry: (N, C, H, W, R, S, sh, sw, pt, pl, dh, dw, OH, OW)


def _dw_compute(spec: KernelSpec) -> list[Any]:
    from tvm import te, tirx

    n_, c_, h, w, r, s, sh, sw, pt, pl, dh, dw, oh, ow = spec.geometry
    x, wt, b = placeholders([(n_, c_, h, w), (c_, r, s), (c_,)])
    nres = sum(1 for st in spec.epilogue if st.op == "add")
    res = placeholders([(n_, c_, oh, ow)] * nres, first=3)
    rr, rs = te.reduce_axis((0, r), name="rr"), te.reduce_axis((0, s), name="rs")

    def tap(n: Any, c: Any, i: Any, j: Any) -> Any:
        ih, iw = i * sh - pt + rr * dh, j * sw - pl + rs * dw
        inside = tirx.all(ih >= 0, ih < h, iw >= 0, iw < w)
        return te.sum(tirx.if_then_else(inside, x[n, c, ih, iw], f32(0)) * wt[c, rr, rs], axis=[rr, rs])

    acc = te.compute((n_, c_, oh, ow), tap, name="acc")

    def out(n: Any, c: Any, i: Any, j: Any) -> Any:
        thunks = [reader(t, n, c, i, j) for t in res]
        return apply_epilogue(acc[n, c, i, j] + b[c], spec.epilogue, thunks)

    y = te.compute((n_, c_, oh, ow), out, name="y")
    return [x, wt, b, *res, y]


def _dw_schedule(sch: Any, spec: KernelSpec, dims: Dims) -> None:
    reduce_per_thread(sch, dims, unroll=2)


def _dw_flops(spec: KernelSpec) -> int:
    n, c, _, _, r, s, *_, oh, ow = spec.geometry
    return 2 * n * c * oh * ow * r * s


DEPTHWISE = family(Family("depthwise", _dw_compute, _dw_schedule, _dw_flops,
                          "one output per thread, the window unrolled"))
