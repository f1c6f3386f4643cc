"""Backward kernels of the image ops: pooling gradients (max: to the first maximum of each window; average: spread
evenly with the forward's divisors) and the convolution gradients, lowered onto the direct convolution kernel.

Pooling gradients run on blocked NCHW{W}c values, one work item per (image, channel block): the item zeroes its
plane of dx, then walks the output pixels in order and accumulates each one's gradient into the window cells it
came from, so overlapping windows add up and no two threads write the same element. Max pooling recomputes the
argmax per lane (a float pixel index held in a vector; ties and NaN as ``np.argmax``: the first) and adds ``dy``
where the cell's index matches.

Convolution gradients (``conv2d_grad_input``, ``conv2d_grad_weight``) reuse ``conv_direct`` (see its module):

* grad_input is the full correlation of dy, zero-upsampled by the stride, with the flipped kernel (K and C
  swapped per group, dilated as the forward): ``dx[h] = Σ_r' dy_up[h + r'·dh − P]``, ``P = (R−1)·dh − top``, so
  the conv reads dy_up (row pitch 1) from origin −P with a zero halo of ``max(P, 0)`` rows on top and
  ``max(H + top − U, 0)`` below (U = (OH−1)·sh + 1 the upsampled height): rows no window touches read only
  zeros. P may be negative (padding wider than the kernel): the origin then starts inside the buffer.
  Strided layers do not multiply the upsampled zeros: they run as sh·sw stride-1 convolutions of dy itself, one
  per output phase (dx rows p, p + sh, ...) with the sub-kernel of the taps that reach it (``_phases``), each
  writing its phase with output strides (sh, sw); phases no tap reaches are zero. Depthwise convolutions run the
  depthwise kernel on the upsampled dy; 1x1 images with a 1x1 kernel (a linear layer's gradient) the kernel's
  linear mode.
* grad_weight is the convolution with the roles swapped: images = the input channels c, input channels = the
  batch n, kernel = dy as (K, N, OH, OW), output pixels = (R, S), stride = the forward's dilation, dilation = the
  forward's stride. x is copied to (C, Hp, Wp, N) (n innermost: the kernel's straight-line channels) with the
  padding halo; dy to the packed weight layout with in_cb = N; the result (C, K, R, S) blocked is converted to
  plain (K, C, R, S), not per image. Both copies zero their whole buffer first, so a run at a smaller batch than
  compiled sums only its own images. Grouped convolutions run one such convolution per group; depthwise ones a
  dedicated vector loop (every lane its own channel, all kernel columns of a row at once, float64 per row).
  1x1 kernels (without padding) are a GEMM over the N·OH·OW features instead, on the kernel's linear mode
  (``_grad_weight_gemm``): a 1x1 output would give the convolution a 1-pixel register tile.

The convolutions that run over a compile-time count of "images" (grad_weight's input channels) go through
``fixed_images``, which emits any kernel template with that count in place of the run-time batch.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from llvmlite import ir

from cnncc.codegen.emit import F32, F64, Emitter, i64
from cnncc.codegen.kernels.conv import ConvParams, ConvSchedule, _dense_from_groups, choose_schedule
from cnncc.codegen.kernels.depthwise import DepthwiseParams
from cnncc.codegen.kernels.grad import FillParams, _unbatched
from cnncc.codegen.kernels.pool import _bounds
from cnncc.codegen.kernels.relayout import RelayoutParams
from cnncc.codegen.layout import Addr, Placed, blocked_addr, padded_channels
from cnncc.codegen.lower import Lowering, lowering
from cnncc.codegen.module import KernelEnv, kernel
from cnncc.convalgo import resolve
from cnncc.ir import Node, ValueKind
from cnncc.program import Buffer

# One tap of a pooling window: (input row, input column, carried values) -> the next carried values.
Tap = Callable[[ir.Value, ir.Value, list[ir.Value]], list[ir.Value]]


# -- pooling gradients ------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PoolGradParams:
    kind: str  # "max" or "avg"
    dy: Buffer
    x: Buffer | None  # max: the forward input
    dx: Buffer
    div: Buffer | None  # avg: the divisor of every output pixel (OH, OW)
    dy_addr: Addr
    x_addr: Addr | None
    dx_addr: Addr
    c_blocks: int
    h: int
    w: int
    out_h: int
    out_w: int
    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    top: int
    left: int


def _blocked_src(lw: Lowering, node: Node, index: int) -> Placed:
    v = node.inputs[index]
    p = lw.get(v, node.layer)
    return p if p.blocked and p.halo == (0, 0, 0, 0) else lw.blocked(v, node.layer)


@lowering("max_pool2d_grad", "avg_pool2d_grad")
def lower_pool_grad(lw: Lowering, node: Node) -> None:
    a = node.attrs
    n, c, h, w = node.outputs[0].shape
    if node.op == "max_pool2d_grad":
        x, dy = _blocked_src(lw, node, 0), _blocked_src(lw, node, 1)
        kind, pool, div, dil = "max", a, None, a.dilation
    else:
        from cnncc.ops.avg_pool2d import divisors

        x, dy = None, _blocked_src(lw, node, 0)
        kind, pool, dil = "avg", a.pool, (1, 1)
        div = lw.weights(divisors((h, w), pool, np.dtype(np.float64)).reshape(-1).astype(np.float32),
                         f"{node.layer}.divisors")
    oh, ow = dy.dims[2:]
    out = lw.new_blocked((n, c, h, w), node.layer)
    p = PoolGradParams(kind, dy.buffer, x.buffer if x else None, out.buffer, div, dy.addr, x.addr if x else None,
                       out.addr, padded_channels(c, lw.width) // lw.width, h, w, oh, ow, pool.kernel[0],
                       pool.kernel[1], pool.stride[0], pool.stride[1], dil[0], dil[1], pool.padding[0],
                       pool.padding[2])
    reads = (dy.buffer,) + ((x.buffer,) if x else ()) + ((div,) if div else ())
    lw.call("pool_grad", p, reads, (out.buffer,), node.layer,
            parallel=n * c * oh * ow * pool.kernel[0] * pool.kernel[1] > 50_000)
    lw.placed[node.outputs[0]] = out


@kernel("pool_grad")
def emit_pool_grad(em: Emitter, env: KernelEnv, p: PoolGradParams) -> None:
    b, width = em.b, em.width
    dy, dx = env.ptr(p.dy), env.ptr(p.dx)
    x = env.ptr(p.x) if p.x is not None else None
    lo, hi = em.thread_range(b.mul(env.batch, i64(p.c_blocks)))
    zero = em.vconst(0.0)

    def plane(a: Addr, n: ir.Value, cb: ir.Value) -> ir.Value:
        return b.add(b.add(i64(a.base), b.mul(n, i64(a.img))), b.mul(cb, i64(a.cblk)))

    def item(it: ir.Value) -> None:
        n, cb = b.udiv(it, i64(p.c_blocks)), b.urem(it, i64(p.c_blocks))
        dx_plane, dy_plane = plane(p.dx_addr, n, cb), plane(p.dy_addr, n, cb)
        x_plane = plane(p.x_addr, n, cb) if p.x_addr is not None else None

        def zero_row(hh: ir.Value) -> None:
            row = b.add(dx_plane, b.mul(hh, i64(p.dx_addr.row)))
            em.each(0, p.w, lambda ww: em.store_vec(zero, dx, b.add(row, b.mul(ww, i64(width)))), name="zw")

        em.each(0, p.h, zero_row, name="zh")

        def out_row(oh: ir.Value) -> None:
            h0 = b.sub(b.mul(oh, i64(p.sh)), i64(p.top))
            kh_lo, kh_hi = _bounds(em, h0, p.kh, p.dh, p.h)

            def pixel(ow: ir.Value) -> None:
                w0 = b.sub(b.mul(ow, i64(p.sw)), i64(p.left))
                kw_lo, kw_hi = _bounds(em, w0, p.kw, p.dw, p.w)
                g = em.load_vec(dy, b.add(b.add(dy_plane, b.mul(oh, i64(p.dy_addr.row))), b.mul(ow, i64(width))))

                def taps(body: Tap, carried: list[ir.Value]) -> list[ir.Value]:
                    def over_kh(kh: ir.Value, acc: list[ir.Value]) -> list[ir.Value]:
                        hh = b.add(h0, b.mul(kh, i64(p.dh)))

                        def over_kw(kw: ir.Value, acc: list[ir.Value]) -> list[ir.Value]:
                            ww = b.add(w0, b.mul(kw, i64(p.dw)))
                            return body(hh, ww, acc)

                        return em.loop(kw_lo, kw_hi, over_kw, acc, name="kw")

                    return em.loop(kh_lo, kh_hi, over_kh, carried, name="kh")

                def add_to(hh: ir.Value, ww: ir.Value, v: ir.Value) -> None:
                    off = b.add(b.add(dx_plane, b.mul(hh, i64(p.dx_addr.row))), b.mul(ww, i64(width)))
                    em.store_vec(b.fadd(em.load_vec(dx, off), v), dx, off)

                if p.kind == "avg":
                    r = em.load(env.ptr(p.div), b.add(b.mul(oh, i64(p.out_w)), ow))  # type: ignore[arg-type]
                    share = b.fdiv(g, em.splat(r))

                    def spread(hh: ir.Value, ww: ir.Value, acc: list[ir.Value]) -> list[ir.Value]:
                        add_to(hh, ww, share)
                        return acc

                    taps(spread, [])
                    return

                def index(hh: ir.Value, ww: ir.Value) -> ir.Value:
                    return em.splat(b.sitofp(b.add(b.mul(hh, i64(p.w)), ww), F32))

                def argmax(hh: ir.Value, ww: ir.Value, acc: list[ir.Value]) -> list[ir.Value]:
                    assert x is not None and p.x_addr is not None, "max pooling's gradient reads its input"
                    off = b.add(b.add(x_plane, b.mul(hh, i64(p.x_addr.row))), b.mul(ww, i64(width)))
                    v = em.load_vec(x, off)
                    best, idx = acc
                    nan_v = b.fcmp_unordered("uno", v, v)
                    num_best = b.fcmp_ordered("ord", best, best)
                    upd = b.or_(b.fcmp_ordered(">", v, best), b.and_(nan_v, num_best))
                    return [b.select(upd, v, best), b.select(upd, index(hh, ww), idx)]

                first = index(b.add(h0, b.mul(kh_lo, i64(p.dh))), b.add(w0, b.mul(kw_lo, i64(p.dw))))
                _, idx = taps(argmax, [em.vconst(float("-inf")), first])

                def route(hh: ir.Value, ww: ir.Value, acc: list[ir.Value]) -> list[ir.Value]:
                    add_to(hh, ww, b.select(b.fcmp_ordered("==", idx, index(hh, ww)), g, zero))
                    return acc

                taps(route, [])

            em.each(0, p.out_w, pixel, name="ow")

        em.each(0, p.out_h, out_row, name="oh")

    em.each(lo, hi, item, name="item")


# -- convolution gradients --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FixedImages:
    """Run kernel template ``kernel`` with ``images`` (a compile-time count) in place of the run-time batch: the
    convolution of grad_weight runs over the input channels, the copies after it over its output images."""

    kernel: str
    images: int
    params: object


@kernel("fixed_images")
def emit_fixed_images(em: Emitter, env: KernelEnv, p: FixedImages) -> None:
    from cnncc.codegen.module import KERNELS

    fixed = copy.copy(env)
    fixed.batch = i64(p.images)
    KERNELS[p.kernel](em, fixed, p.params)


@dataclass(frozen=True, eq=False)
class UpsampleParams:
    """dst (blocked, with halo) = 0 everywhere, then dst[n, c, i*sh, j*sw] = src[n, c, i, j]."""

    src: Buffer
    dst: Buffer
    src_addr: Addr
    dst_addr: Addr
    c_blocks: int
    h: int
    w: int
    sh: int
    sw: int
    plane: int  # floats of one padded plane of dst
    origin: int  # dst's float offset of the padded plane's (0, 0)


def _upsampled(lw: Lowering, node: Node, stride: tuple[int, int], halo: tuple[int, int, int, int]) -> Placed:
    """dy zero-upsampled by ``stride`` (blocked, zero ``halo``); dy itself (with the halo) at stride 1."""
    dyv = node.inputs[0]
    if stride == (1, 1):
        return lw.blocked(dyv, node.layer, halo)
    dy = _blocked_src(lw, node, 0)
    n, k, oh, ow = dy.dims
    sh, sw = stride
    uh, uw = (oh - 1) * sh + 1, (ow - 1) * sw + 1
    dst = lw.new_blocked((n, k, uh, uw), f"{node.layer}.upsampled", halo)
    da = dst.addr
    t, _, l, _ = halo
    p = UpsampleParams(dy.buffer, dst.buffer, dy.addr, da, padded_channels(k, lw.width) // lw.width, oh, ow, sh, sw,
                       da.cblk, da.base - t * da.row - l * da.col)
    lw.call("upsample", p, (dy.buffer,), (dst.buffer,), node.layer, parallel=n * k * uh * uw > 50_000)
    return dst


@kernel("upsample")
def emit_upsample(em: Emitter, env: KernelEnv, p: UpsampleParams) -> None:
    b, width = em.b, em.width
    src, dst = env.ptr(p.src), env.ptr(p.dst)
    lo, hi = em.thread_range(b.mul(env.batch, i64(p.c_blocks)))
    zero = em.vconst(0.0)
    sa, da = p.src_addr, p.dst_addr

    def item(it: ir.Value) -> None:
        n, cb = b.udiv(it, i64(p.c_blocks)), b.urem(it, i64(p.c_blocks))
        d_plane = b.add(b.add(i64(p.origin), b.mul(n, i64(da.img))), b.mul(cb, i64(da.cblk)))
        em.each(0, p.plane // width, lambda v: em.store_vec(zero, dst, b.add(d_plane, b.mul(v, i64(width)))),
                name="zero")
        s_plane = b.add(b.add(i64(sa.base), b.mul(n, i64(sa.img))), b.mul(cb, i64(sa.cblk)))
        d_in = b.add(b.add(i64(da.base), b.mul(n, i64(da.img))), b.mul(cb, i64(da.cblk)))

        def row(i: ir.Value) -> None:
            s_row = b.add(s_plane, b.mul(i, i64(sa.row)))
            d_row = b.add(d_in, b.mul(i, i64(p.sh * da.row)))
            em.each(0, p.w, lambda j: em.store_vec(em.load_vec(src, b.add(s_row, b.mul(j, i64(sa.col)))), dst,
                                                   b.add(d_row, b.mul(j, i64(p.sw * da.col)))), name="j")

        em.each(0, p.h, row, name="i")

    em.each(lo, hi, item, name="item")


def _grad_input_transform(lw: Lowering, node: Node, transform: Any) -> None:
    """A 3x3 stride-1 backward-data convolution the selection pass gave a Winograd algorithm: it is itself a 3x3
    stride-1 convolution of dy with the flipped, transposed filters, run as the forward's run-time-weights Winograd
    whose filter transform reads those filters straight from the (K, C, 3, 3) weights (strided loads; no gathered
    copy)."""
    from cnncc.codegen.kernels.transform_conv import ConvOperands, WeightStrides, lower_transform_conv

    a = node.attrs
    dyv, wv = node.inputs
    _, c, r, s = wv.shape
    k = dyv.shape[1]
    t, b, l, rp = ((r - 1) - p for p in a.padding)  # dilation 1: the record's rule checked it
    pad = (t, b, l, rp)
    weights = (lw.tensor(wv, node.layer) if wv.kind is ValueKind.PARAM else lw.plain(wv, node.layer)).buffer
    flipped = WeightStrides(r * s, c * r * s, tuple(range(r * s - 1, -1, -1)))  # (C, K, R, S)[c, k, t] = w[k, c, -t]
    ops = ConvOperands(node.layer, dyv, node.outputs[0], None, (c, k, r, s), None, (1, 1), pad)
    lower_transform_conv(lw, ops, transform(r, s, 1, 1), None, (), None, (), w_buffer=weights, w_strides=flipped)


def _pack_conv(w: np.ndarray, k_blocks: int, ocb: int, width: int, in_blocks: int, in_cb: int) -> np.ndarray:
    """conv.pack_weights keeping the dtype (float64 index arrays for :meth:`Lowering.packed`)."""
    k, cg, r, s = w.shape
    full = np.zeros((k_blocks * width, in_blocks * in_cb, r, s), np.result_type(w.dtype, np.float32))
    full[:k, :cg] = w
    t = full.reshape(k_blocks // ocb, ocb, width, in_blocks, in_cb, r, s)
    return np.ascontiguousarray(t.transpose(0, 3, 5, 6, 4, 1, 2))


@lowering("conv2d_grad_input")
def lower_conv2d_grad_input(lw: Lowering, node: Node) -> None:
    """The algorithm the selection pass wrote (the baseline if none ran; :class:`cnncc.errors.AlgorithmError` if it
    does not apply), recorded in ``program.algorithms``: a transform algorithm, or the baseline's own paths (a
    matrix product for 1x1 maps, polyphase for strides, the depthwise or the direct kernel)."""
    a = node.attrs
    dyv, wv = node.inputs
    rec = resolve(node, "cpu", runtime_weights=not lw.is_constant(wv))
    lw.program.algorithms[node.layer] = rec.name
    n, k, oh, ow = dyv.shape
    _, cg, r, s = wv.shape
    g = a.groups
    kg, c = k // g, cg * g
    h, w = a.size
    (sh, sw), (dh, dw) = a.stride, a.dilation
    t, _, l, _ = a.padding
    if (h, w, r, s, g) == (1, 1, 1, 1, 1) and a.padding == (0, 0, 0, 0):
        return _grad_input_linear(lw, node)
    if (sh, sw) != (1, 1) and not (g > 1 and cg == 1 and kg == 1) and _grad_input_polyphase(lw, node):
        return
    if rec.hooks.transform is not None:
        return _grad_input_transform(lw, node, rec.hooks.transform)
    uh, uw = (oh - 1) * sh + 1, (ow - 1) * sw + 1
    pt, pl = (r - 1) * dh - t, (s - 1) * dw - l  # dx[h] reads dy_up rows h - pt + r'*dh (r' the flipped tap)
    halo = (max(pt, 0), max(h + t - uh, 0), max(pl, 0), max(w + l - uw, 0))
    src = _upsampled(lw, node, (sh, sw), halo)
    width = lw.width
    out = lw.new_blocked((n, c, h, w), node.layer)
    xa, ya = src.addr, out.addr
    origin = xa.base - pt * xa.row - pl * xa.col
    macs = n * k * oh * ow * cg * r * s
    if g > 1 and cg == 1 and kg == 1:  # depthwise: every lane its own channel, the flipped filter
        cb = padded_channels(c, width) // width

        def pack_dw(wa: np.ndarray) -> np.ndarray:
            packed = np.zeros((cb * width, r, s), np.result_type(wa.dtype, np.float32))
            packed[:c] = wa[:, 0, ::-1, ::-1]
            return np.ascontiguousarray(packed.reshape(cb, width, r, s).transpose(0, 2, 3, 1))

        dp = DepthwiseParams(
            x=src.buffer, w=lw.packed(wv, pack_dw, f"{node.layer}.weight", node.layer), bias=None, y=out.buffer,
            x_origin=origin, x_img=xa.img, x_cblk=xa.cblk, x_row=xa.row, x_col=xa.col, y_img=ya.img,
            y_cblk=ya.cblk, y_row=ya.row, y_col=ya.col, c_blocks=cb, out_h=h, out_w=w, r=r, s=s, sh=1, sw=1, dh=dh,
            dw=dw, ur_w=min(8, w))
        lw.call("conv_depthwise", dp, (src.buffer, dp.w), (out.buffer,), node.layer, parallel=macs > 100_000,
                macs=macs)
        lw.placed[node.outputs[0]] = out
        return
    dense = g > 1 and bool(cg % width or kg % width)
    groups = 1 if dense else g
    in_blocks = padded_channels(k if dense else kg, width) // width
    k_blocks = padded_channels(c, width) // width
    sched = choose_schedule(width, k_blocks if groups == 1 else cg // width, w, r * s)

    def pack(wa: np.ndarray) -> np.ndarray:
        flipped = wa.reshape(g, kg, cg, r, s)[:, :, :, ::-1, ::-1]
        wt = flipped.transpose(0, 2, 1, 3, 4).reshape(c, kg, r, s)  # (C, K/g, R, S): grouped conv C <- K
        if dense:
            wt = _dense_from_groups(wt, g, k)
        return _pack_conv(wt, k_blocks, sched.ocb, width, in_blocks, width)

    params = ConvParams(
        x=src.buffer, w=lw.packed(wv, pack, f"{node.layer}.weight", node.layer), bias=None, y=out.buffer,
        x_origin=origin, x_img=xa.img, x_cblk=xa.cblk, x_row=xa.row, x_col=xa.col, in_cb=width, in_blocks=in_blocks,
        grp_in_blocks=in_blocks if groups > 1 else 0, blocks_per_group=k_blocks // groups, y_base=ya.base,
        y_img=ya.img, y_kblk=ya.cblk, y_row=ya.row, y_col=ya.col, out_h=h, out_w=w, k_blocks=k_blocks, k_tail=0,
        r=r, s=s, sh=1, sw=1, dh=dh, dw=dw, sched=sched, zero_tail=c % width)
    lw.call("conv_direct", params, (src.buffer, params.w), (out.buffer,), node.layer, parallel=macs > 200_000,
            macs=macs)
    lw.placed[node.outputs[0]] = out


@dataclass(frozen=True)
class _Phase:
    """One output phase of a strided grad_input along one axis: dx[p + stride*q] for q < count equals
    Σ_m dy[q + origin + m*dil] · w[taps[m]] (a stride-1 convolution with the sub-kernel ``taps``)."""

    p: int
    count: int
    origin: int
    dil: int
    taps: tuple[int, ...]


def _phases(size: int, k: int, stride: int, dil: int, pad: int) -> list[_Phase]:
    """The phases of one axis (input ``size``, kernel ``k``) that some tap reaches."""
    phases = []
    for p in range(min(stride, size)):
        taps = [r for r in range(k) if (p + pad - r * dil) % stride == 0]
        if not taps:
            continue
        d = dil // math.gcd(stride, dil)
        e0 = (p + pad - taps[0] * dil) // stride  # dy row of tap taps[0] at q = 0
        # flipped: m' = M-1-m reads dy row q + e0 - (M-1)*d + m'*d with the weight of taps[M-1-m']
        phases.append(_Phase(p, -(-(size - p) // stride), e0 - (len(taps) - 1) * d, d, tuple(taps[::-1])))
    return phases


def _grad_input_polyphase(lw: Lowering, node: Node) -> bool:
    """Strided grad_input as ``sh*sw`` stride-1 convolutions, one per output phase (dx rows p, p+sh, ...), each
    with the kernel taps that reach it: no multiplications by the zeros of an upsampled dy. Phases no tap reaches
    (a stride larger than the kernel, stride and dilation sharing a factor) are 0: dx is zeroed first."""
    a = node.attrs
    dyv, wv = node.inputs
    n, k, oh, ow = dyv.shape
    _, cg, r, s = wv.shape
    g = a.groups
    kg, c = k // g, cg * g
    h, w = a.size
    t, _, l, _ = a.padding
    rows = _phases(h, r, a.stride[0], a.dilation[0], t)
    cols = _phases(w, s, a.stride[1], a.dilation[1], l)
    if not rows or not cols:
        return False
    halo = (max(0, *(-ph.origin for ph in rows)), max(0, *(ph.origin + ph.count - 1 + (len(ph.taps) - 1) * ph.dil
                                                          - (oh - 1) for ph in rows)),
            max(0, *(-ph.origin for ph in cols)), max(0, *(ph.origin + ph.count - 1 + (len(ph.taps) - 1) * ph.dil
                                                          - (ow - 1) for ph in cols)))
    src = lw.blocked(dyv, node.layer, halo)
    width = lw.width
    out = lw.new_blocked((n, c, h, w), node.layer)
    if len(rows) * len(cols) < min(a.stride[0], h) * min(a.stride[1], w):
        lw.call("fill_value", FillParams(out.buffer, out.addr.img, True, 0.0), (), (out.buffer,), node.layer,
                parallel=n * c * h * w > 100_000)
    xa, ya = src.addr, out.addr
    dense = g > 1 and bool(cg % width or kg % width)
    groups = 1 if dense else g
    in_blocks = padded_channels(k if dense else kg, width) // width
    k_blocks = padded_channels(c, width) // width
    sh, sw = a.stride
    for ph in rows:
        for pw in cols:
            mh, mw = len(ph.taps), len(pw.taps)
            sched = choose_schedule(width, k_blocks if groups == 1 else cg // width, pw.count, mh * mw)
            if mw == 1:  # no kw loop: like a 1x1 kernel, a long straight-line channel block spills (30 vs 100
                sched = replace(sched, unroll=2)  # GFLOP/s measured for a 2x1 phase of ResNet's 3x3/2 layers)

            def pack(wa: np.ndarray, ph: _Phase = ph, pw: _Phase = pw, ocb: int = sched.ocb) -> np.ndarray:
                sub = wa.reshape(g, kg, cg, r, s)[:, :, :, list(ph.taps)][:, :, :, :, list(pw.taps)]
                wt = sub.transpose(0, 2, 1, 3, 4).reshape(c, kg, len(ph.taps), len(pw.taps))
                if dense:
                    wt = _dense_from_groups(wt, g, k)
                return _pack_conv(wt, k_blocks, ocb, width, in_blocks, width)

            name = f"{node.layer}.phase{ph.p}{pw.p}"
            params = ConvParams(
                x=src.buffer, w=lw.packed(wv, pack, f"{name}.weight", node.layer), bias=None, y=out.buffer,
                x_origin=xa.base + ph.origin * xa.row + pw.origin * xa.col, x_img=xa.img, x_cblk=xa.cblk,
                x_row=xa.row, x_col=xa.col, in_cb=width, in_blocks=in_blocks,
                grp_in_blocks=in_blocks if groups > 1 else 0, blocks_per_group=k_blocks // groups,
                y_base=ya.base + ph.p * ya.row + pw.p * ya.col, y_img=ya.img, y_kblk=ya.cblk, y_row=sh * ya.row,
                y_col=sw * ya.col, out_h=ph.count, out_w=pw.count, k_blocks=k_blocks, k_tail=0, r=mh, s=mw, sh=1,
                sw=1, dh=ph.dil, dw=pw.dil, sched=sched, zero_tail=c % width)
            macs = n * kg * g * ph.count * pw.count * cg * mh * mw
            lw.call("conv_direct", params, (src.buffer, params.w), (out.buffer,), node.layer,
                    parallel=macs > 200_000, macs=macs)
    lw.placed[node.outputs[0]] = out
    return True


def _grad_input_linear(lw: Lowering, node: Node) -> None:
    """1x1 images and kernel (a linear layer's gradient): dx (N, C) = dy (N, K) @ w (K, C), the kernel's linear
    mode (the pixels are the batch rows), as ``lower_linear`` with the weights transposed."""
    dyv, wv = node.inputs
    n, k = dyv.shape[:2]
    c = wv.shape[1]
    width = lw.width
    src = lw.plain(dyv, node.layer)
    out = lw.new_plain((n, c, 1, 1), node.layer)
    k_blocks = padded_channels(c, width) // width
    ocb = next(o for o in (4, 3, 2, 1) if k_blocks % o == 0)
    sched = ConvSchedule(ur_w=4 if width >= 16 else 2, ocb=ocb, unroll=16)

    def pack(wa: np.ndarray) -> np.ndarray:
        return _pack_conv(wa.reshape(k, c).T.reshape(c, k, 1, 1), k_blocks, ocb, width, 1, k)

    params = ConvParams(
        x=src.buffer, w=lw.packed(wv, pack, f"{node.layer}.weight", node.layer), bias=None, y=out.buffer,
        x_origin=src.addr.base, x_img=0, x_cblk=0, x_row=0, x_col=src.addr.img, in_cb=k, in_blocks=1,
        grp_in_blocks=0, blocks_per_group=k_blocks, y_base=0, y_img=0, y_kblk=width, y_row=0, y_col=c,
        out_h=1, out_w=0, k_blocks=k_blocks, k_tail=c % width, r=1, s=1, sh=1, sw=1, dh=1, dw=1, sched=sched)
    macs = n * k * c
    lw.call("conv_direct", params, (src.buffer, params.w), (out.buffer,), node.layer, parallel=macs > 200_000,
            macs=macs)
    lw.placed[node.outputs[0]] = out


def _shifted(p: Placed, dims: tuple[int, int, int, int], channel: int) -> tuple[Placed, Addr]:
    """``p`` (contiguous plain) seen from channel ``channel`` on, with ``dims``."""
    a = p.addr
    return Placed(p.buffer, dims, a, False), Addr(a.img, max(dims[1], 1), 0, a.ci, a.row, a.col,
                                                  a.base + channel * a.ci)


@lowering("conv2d_grad_weight")
def lower_conv2d_grad_weight(lw: Lowering, node: Node) -> None:
    a = node.attrs
    xv, dyv = node.inputs
    n, c, h, w = xv.shape
    _, k, oh, ow = dyv.shape
    r, s = a.size
    g = a.groups
    cg, kg = c // g, k // g
    if g > 1 and cg == 1 and kg == 1:
        return _grad_weight_depthwise(lw, node)
    if (r, s, g) == (1, 1, 1) and a.padding == (0, 0, 0, 0) and _grad_weight_gemm(lw, node):
        return
    (sh, sw), (dh, dw) = a.stride, a.dilation
    t, b, l, rp = a.padding
    hp, wp = h + t + b, w + l + rp
    width = lw.width
    size = k * cg * r * s
    result = _unbatched(lw, size, node.layer)
    x_all, dy_all = lw.get(xv, node.layer), lw.get(dyv, node.layer)
    if g > 1 and not (x_all.blocked and cg % width == 0):
        x_all = lw.plain(xv, node.layer)
    if g > 1 and not (dy_all.blocked and kg % width == 0):
        dy_all = lw.plain(dyv, node.layer)
    k_blocks = padded_channels(kg, width) // width
    sched = choose_schedule(width, k_blocks, s, oh * ow)
    ocb = sched.ocb
    macs = n * k * oh * ow * cg * r * s // g
    for gi in range(g):
        name = f"{node.layer}.g{gi}" if g > 1 else node.layer
        # x as (C_g images, Hp, Wp, N): n innermost, the padding halo zero
        xt_addr = Addr(img=1, cb=max(cg, 1), cblk=0, ci=hp * wp * n, row=wp * n, col=n, base=(t * wp + l) * n)
        xt = lw.arena(cg * hp * wp * n, f"{name}.xt", per_image=False)
        lw.call("fill_value", FillParams(xt, cg * hp * wp * n, False, 0.0), (), (xt,), name,
                parallel=cg * hp * wp * n > 100_000)
        if x_all.blocked and (gi * cg) % width == 0:
            xa = x_all.addr
            px = PackXParams(x_all.buffer, xt, replace(xa, base=xa.base + gi * cg // width * xa.cblk), cg, h, w, n,
                             xt_addr)
            lw.call("pack_x", px, (x_all.buffer,), (xt,), name, parallel=n * cg * h * w > 50_000)
        else:
            src_x, x_addr = (x_all, x_all.addr) if g == 1 else _shifted(x_all, (n, cg, h, w), gi * cg)
            _copy(lw, src_x, x_addr, xt, xt_addr, name)
        # dy as the packed weights (K_g/(W*ocb), 1, OH, OW, N, ocb, W)
        dyt_addr = Addr(img=ocb * width, cb=ocb * width, cblk=oh * ow * n * ocb * width, ci=1,
                        row=ow * n * ocb * width, col=n * ocb * width)
        dyt = lw.arena(k_blocks * width * oh * ow * n, f"{name}.dyt", per_image=False)
        if dy_all.blocked and (gi * kg) % width == 0:  # whole vectors; images past the run-time batch zeroed
            da = dy_all.addr
            pd = PackDyParams(dy_all.buffer, dyt, replace(da, base=da.base + gi * kg // width * da.cblk), k_blocks,
                              oh, ow, n, ocb)
            lw.call("pack_dy", pd, (dy_all.buffer,), (dyt,), name, parallel=n * kg * oh * ow > 50_000)
        else:
            lw.call("fill_value", FillParams(dyt, k_blocks * width * oh * ow * n, False, 0.0), (), (dyt,), name,
                    parallel=k_blocks * width * oh * ow * n > 100_000)
            src_dy, dy_addr = (dy_all, dy_all.addr) if g == 1 else _shifted(dy_all, (n, kg, oh, ow), gi * kg)
            _copy(lw, src_dy, dy_addr, dyt, dyt_addr, name)
        ya = blocked_addr(kg, r, s, width)
        y = lw.arena(cg * ya.img, f"{name}.dw", per_image=False)
        params = ConvParams(
            x=xt, w=dyt, bias=None, y=y, x_origin=0, x_img=hp * wp * n, x_cblk=0, x_row=wp * n, x_col=n, in_cb=n,
            in_blocks=1, grp_in_blocks=0, blocks_per_group=k_blocks, y_base=0, y_img=ya.img, y_kblk=ya.cblk,
            y_row=ya.row, y_col=ya.col, out_h=r, out_w=s, k_blocks=k_blocks, k_tail=0, r=oh, s=ow, sh=dh, sw=dw,
            dh=sh, dw=sw, sched=sched)
        lw.call("fixed_images", FixedImages("conv_direct", cg, params), (xt, dyt), (y,), name,
                parallel=macs > 200_000, macs=macs)
        # (C_g, K_g, R, S) blocked -> dW[g*K_g + k, c, r, s] plain
        dst = Addr(img=r * s, cb=max(kg, 1), cblk=0, ci=cg * r * s, row=s, col=1, base=gi * kg * cg * r * s)
        rp_ = RelayoutParams(y, result.buffer, (cg, kg, r, s), ya, dst, 0, False, 0, 0.0, True)
        lw.call("fixed_images", FixedImages("relayout", cg, rp_), (y,), (result.buffer,), name, parallel=False)
    lw.placed[node.outputs[0]] = result


def _grad_weight_gemm(lw: Lowering, node: Node) -> bool:
    """1x1 kernels: dW (K, C) = dy (K, F) @ x (C, F)ᵀ over the F = N·OH·OW features (x sampled at the stride), on
    the kernel's linear mode: the smaller operand transposed to rows of F floats (lane by lane), the larger packed
    as the weights (whole vectors). With the grad_weight convolution above, an output of 1x1 pixels gives a 1-pixel
    register tile (measured 41 GFLOP/s for ResNet-50's 256->64 layer; this: ~100). False (nothing emitted) when
    x or dy is not blocked."""
    a = node.attrs
    xv, dyv = node.inputs
    n, c, _, _ = xv.shape
    _, k, oh, ow = dyv.shape
    x, dy = lw.get(xv, node.layer), lw.get(dyv, node.layer)
    if not (x.blocked and dy.blocked):
        return False
    width = lw.width
    sh, sw = a.stride
    xs = Placed(x.buffer, (n, c, oh, ow), replace(x.addr, row=x.addr.row * sh, col=x.addr.col * sw), True)
    pixels = oh * ow
    f = n * pixels
    rows, cols = (dy, xs) if k <= c else (xs, dy)  # rows: transposed lane by lane; cols: packed as weights
    r_ch, c_ch = rows.dims[1], cols.dims[1]
    # rows (r_ch, F), features f = (image, row, column), images past the run-time batch zero
    ra = Addr(img=pixels, cb=max(r_ch, 1), cblk=0, ci=f, row=ow, col=1)
    rbuf = lw.arena(r_ch * f, f"{node.layer}.rows", per_image=False)
    lw.call("fill_value", FillParams(rbuf, r_ch * f, False, 0.0), (), (rbuf,), node.layer, parallel=r_ch * f > 100_000)
    lw.call("pack_x", PackXParams(rows.buffer, rbuf, rows.addr, r_ch, oh, ow, n, ra), (rows.buffer,), (rbuf,),
            node.layer, parallel=r_ch * f > 50_000)
    k_blocks = padded_channels(c_ch, width) // width
    ocb = next(o for o in (4, 3, 2, 1) if k_blocks % o == 0)
    vec = ocb * width
    wbuf = lw.arena(k_blocks * width * f, f"{node.layer}.cols", per_image=False)
    lw.call("pack_dy", PackDyParams(cols.buffer, wbuf, cols.addr, k_blocks, oh, ow, n, ocb,
                                    (f * vec, ow * vec, vec, pixels * vec)), (cols.buffer,), (wbuf,), node.layer,
            parallel=c_ch * f > 50_000)
    result = _unbatched(lw, k * c, node.layer)
    out = result.buffer if rows is dy else lw.arena(k * c, f"{node.layer}.ck", per_image=False)
    params = ConvParams(
        x=rbuf, w=wbuf, bias=None, y=out, x_origin=0, x_img=0, x_cblk=0, x_row=0, x_col=f, in_cb=f, in_blocks=1,
        grp_in_blocks=0, blocks_per_group=k_blocks, y_base=0, y_img=0, y_kblk=width, y_row=0, y_col=c_ch, out_h=1,
        out_w=0, k_blocks=k_blocks, k_tail=c_ch % width, r=1, s=1, sh=1, sw=1, dh=1, dw=1,
        sched=ConvSchedule(ur_w=4 if width >= 16 else 2, ocb=ocb, unroll=16))
    macs = n * k * c * pixels
    lw.call("fixed_images", FixedImages("conv_direct", r_ch, params), (rbuf, wbuf), (out,), node.layer,
            parallel=macs > 200_000, macs=macs)
    if out is not result.buffer:  # (C, K) -> dW (K, C)
        tp = RelayoutParams(out, result.buffer, (1, c, k, 1), Addr(0, c, 0, k, 1, 0), Addr(0, c, 0, 1, c, 0), 0,
                            False, 0, 0.0, False)
        lw.call("relayout", tp, (out,), (result.buffer,), node.layer, parallel=False)
    lw.placed[node.outputs[0]] = result
    return True


def _copy(lw: Lowering, src: Placed, src_addr: Addr, dst: Buffer, dst_addr: Addr, layer: str) -> None:
    """The run-time batch of ``src`` copied element by element to ``dst_addr`` (zeroed before). Serial: the images
    are interleaved in dst, so threads splitting them would share every cache line (measured: 0.8 ms on one
    thread, 10 ms on two for ResNet's 8x64x56x56)."""
    p = RelayoutParams(src.buffer, dst, src.dims, src_addr, dst_addr, 0, False, 0, 0.0, True)
    lw.call("relayout", p, (src.buffer,), (dst,), layer, parallel=False)


@dataclass(frozen=True, eq=False)
class PackXParams:
    """x (blocked) -> dst_addr's layout (for grad_weight's convolution: C images, padded rows, padded columns, N;
    for the 1x1 GEMM: C rows of (N, OH, OW)): lane by lane, images < the run-time batch (``dst_addr.img``: the
    image stride in dst)."""

    src: Buffer
    dst: Buffer
    src_addr: Addr
    channels: int
    h: int
    w: int
    n: int  # compiled batch (xt's innermost extent)
    dst_addr: Addr


@kernel("pack_x")
def emit_pack_x(em: Emitter, env: KernelEnv, p: PackXParams) -> None:
    b, width = em.b, em.width
    src, dst = env.ptr(p.src), env.ptr(p.dst)
    blocks = -(-p.channels // width)
    lo, hi = em.thread_range(i64(blocks * p.h))
    sa, da = p.src_addr, p.dst_addr
    i32 = ir.IntType(32)

    def item(it: ir.Value) -> None:
        cb, hh = b.udiv(it, i64(p.h)), b.urem(it, i64(p.h))
        s_row = b.add(b.add(i64(sa.base), b.mul(cb, i64(sa.cblk))), b.mul(hh, i64(sa.row)))
        d_row = b.add(b.add(i64(da.base), b.mul(b.mul(cb, i64(width)), i64(da.ci))), b.mul(hh, i64(da.row)))
        lanes = b.sub(i64(p.channels), b.mul(cb, i64(width)))

        def col(ww: ir.Value) -> None:
            def image(nn: ir.Value) -> None:
                v = em.load_vec(src, b.add(b.add(s_row, b.mul(nn, i64(sa.img))), b.mul(ww, i64(sa.col))))
                d = b.add(b.add(d_row, b.mul(ww, i64(da.col))), b.mul(nn, i64(da.img)))
                for lane in range(width):
                    def put(lane: int = lane) -> None:
                        em.store(b.extract_element(v, ir.Constant(i32, lane)), dst, b.add(d, i64(lane * da.ci)))

                    if lane == 0 or p.channels % width == 0:
                        put()
                    else:
                        em.if_then(b.icmp_signed("<", i64(lane), lanes), put)

            em.each(0, env.batch, image, name="n")

        em.each(0, p.w, col, name="w")

    em.each(lo, hi, item, name="item")


@dataclass(frozen=True, eq=False)
class PackDyParams:
    """dy (blocked) -> the packed weights (K/(W*ocb), OH, OW, N, ocb, W) of grad_weight's convolution: whole
    vectors; the images past the run-time batch are zeros."""

    src: Buffer
    dst: Buffer
    src_addr: Addr
    k_blocks: int
    oh: int
    ow: int
    n: int
    ocb: int
    strides: tuple[int, int, int, int] = (0, 0, 0, 0)  # dst floats per (output group, row, column, image); 0: the
    # convolution's layout above


@kernel("pack_dy")
def emit_pack_dy(em: Emitter, env: KernelEnv, p: PackDyParams) -> None:
    b, width = em.b, em.width
    src, dst = env.ptr(p.src), env.ptr(p.dst)
    lo, hi = em.thread_range(i64(p.k_blocks * p.oh))
    sa = p.src_addr
    vec = p.ocb * width
    zero = em.vconst(0.0)

    gs, rs, cs, ns = p.strides if any(p.strides) else (p.oh * p.ow * p.n * vec, p.ow * p.n * vec, p.n * vec, vec)

    def item(it: ir.Value) -> None:  # (output group, row, block within the group): neighbours share dst lines
        kg, i, o = em.digits(it, (p.oh, p.ocb))
        kb = b.add(b.mul(kg, i64(p.ocb)), o)
        s_row = b.add(b.add(i64(sa.base), b.mul(kb, i64(sa.cblk))), b.mul(i, i64(sa.row)))
        d_row = b.add(b.add(b.mul(kg, i64(gs)), b.mul(i, i64(rs))), b.mul(o, i64(width)))

        def copy(j: ir.Value, nn: ir.Value) -> None:
            em.store_vec(em.load_vec(src, b.add(b.add(s_row, b.mul(j, i64(sa.col))), b.mul(nn, i64(sa.img)))), dst,
                         b.add(b.add(d_row, b.mul(j, i64(cs))), b.mul(nn, i64(ns))))

        def zero_at(j: ir.Value, nn: ir.Value) -> None:
            em.store_vec(zero, dst, b.add(b.add(d_row, b.mul(j, i64(cs))), b.mul(nn, i64(ns))))

        if ns > cs:  # images outermost in dst (the GEMM's features): walk them outside the columns
            em.each(0, env.batch, lambda nn: em.each(0, p.ow, lambda j: copy(j, nn), name="j"), name="n")
            em.each(env.batch, p.n, lambda nn: em.each(0, p.ow, lambda j: zero_at(j, nn), name="jz"), name="z")
        else:
            def column(j: ir.Value) -> None:
                em.each(0, env.batch, lambda nn: copy(j, nn), name="n")
                em.each(env.batch, p.n, lambda nn: zero_at(j, nn), name="z")

            em.each(0, p.ow, column, name="j")

    em.each(lo, hi, item, name="item")


@dataclass(frozen=True, eq=False)
class DwGradParams:
    """Depthwise dW: per channel lane, Σ_{n,i,j} dy[n,c,i,j] · x_pad[n,c,i*sh + r*dh, j*sw + s*dw]."""

    x: Buffer
    dy: Buffer
    y: Buffer
    x_origin: int
    x_addr: Addr
    dy_addr: Addr
    y_addr: Addr
    c_blocks: int
    oh: int
    ow: int
    r: int
    s: int
    sh: int
    sw: int
    dh: int
    dw: int


def _grad_weight_depthwise(lw: Lowering, node: Node) -> None:
    a = node.attrs
    xv, dyv = node.inputs
    n, c, h, w = xv.shape
    _, k, oh, ow = dyv.shape
    r, s = a.size
    width = lw.width
    t, _, l, _ = a.padding
    x = lw.blocked(xv, node.layer, a.padding)
    dy = _blocked_src(lw, node, 1)
    ya = blocked_addr(c, r, s, width)
    y = Placed(lw.arena(ya.img, f"{node.layer}.blocked", per_image=False), (1, c, r, s), ya, True, batched=False)
    xa = x.addr
    p = DwGradParams(x.buffer, dy.buffer, y.buffer, xa.base - t * xa.row - l * xa.col, xa, dy.addr, ya,
                     padded_channels(c, width) // width, oh, ow, r, s, a.stride[0], a.stride[1], a.dilation[0],
                     a.dilation[1])
    lw.call("dw_grad_weight", p, (x.buffer, dy.buffer), (y.buffer,), node.layer, parallel=n * c * oh * ow * r * s >
            100_000, macs=n * c * oh * ow * r * s)
    result = _unbatched(lw, c * r * s, node.layer)
    lw.relayout(y, Placed(result.buffer, (1, c, r, s), Addr(c * r * s, c, 0, r * s, s, 1), False, batched=False),
                node.layer)
    lw.placed[node.outputs[0]] = result


@kernel("dw_grad_weight")
def emit_dw_grad_weight(em: Emitter, env: KernelEnv, p: DwGradParams) -> None:
    b, width = em.b, em.width
    x, dy, y = env.ptr(p.x), env.ptr(p.dy), env.ptr(p.y)
    lo, hi = em.thread_range(i64(p.c_blocks * p.r))
    v64 = ir.VectorType(F64, width)
    zero64 = ir.Constant(v64, [ir.Constant(F64, 0.0)] * width)
    xa, da, ya = p.x_addr, p.dy_addr, p.y_addr

    def item(it: ir.Value) -> None:
        cb, rr = b.udiv(it, i64(p.r)), b.urem(it, i64(p.r))

        def image(nn: ir.Value, acc: list[ir.Value]) -> list[ir.Value]:
            x_img = b.add(b.add(i64(p.x_origin), b.mul(nn, i64(xa.img))), b.mul(cb, i64(xa.cblk)))
            x_tap = b.add(x_img, b.mul(rr, i64(p.dh * xa.row)))
            d_img = b.add(b.add(i64(da.base), b.mul(nn, i64(da.img))), b.mul(cb, i64(da.cblk)))

            def row(i: ir.Value, acc: list[ir.Value]) -> list[ir.Value]:
                xr = b.add(x_tap, b.mul(i, i64(p.sh * xa.row)))
                dr = b.add(d_img, b.mul(i, i64(da.row)))

                def col(j: ir.Value, a32: list[ir.Value]) -> list[ir.Value]:  # every tap s of the row at once
                    g = em.load_vec(dy, b.add(dr, b.mul(j, i64(da.col))))
                    xj = b.add(xr, b.mul(j, i64(p.sw * xa.col)))
                    return [em.fma(g, em.load_vec(x, b.add(xj, i64(ss * p.dw * xa.col))), a32[ss])
                            for ss in range(p.s)]

                part = em.loop(0, p.ow, col, [em.vconst(0.0)] * p.s, name="j")
                return [b.fadd(acc[ss], b.fpext(part[ss], v64)) for ss in range(p.s)]  # float64 per row

            return em.loop(0, p.oh, row, acc, name="i")

        totals = em.loop(0, env.batch, image, [zero64] * p.s, name="n")
        for ss in range(p.s):
            em.store_vec(b.fptrunc(totals[ss], em.vec), y,
                         b.add(b.add(i64(ya.base), b.mul(cb, i64(ya.cblk))),
                               b.add(b.mul(rr, i64(ya.row)), i64(ss * ya.col))))

    em.each(lo, hi, item, name="item")
