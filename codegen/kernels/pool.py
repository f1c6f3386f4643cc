"""Pooling on blocked layouts: max and average with padding, ceil_mode and dilation handled by window bounds
computed per output pixel (no padded copy), and global average pooling. W channels per vector.

Average pooling multiplies by a reciprocal divisor per output pixel, computed at compile time with PyTorch's rule
(count_include_pad, windows clipped to the padded extent) and stored with the weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from cnncc.codegen.emit import Emitter, i64
from cnncc.codegen.layout import padded_channels
from cnncc.codegen.lower import Lowering, lowering
from cnncc.codegen.module import KernelEnv, kernel
from cnncc.ir import Node
from cnncc.program import Buffer


@dataclass(frozen=True, eq=False)
class PoolParams:
    kind: str  # "max" or "avg"
    x: Buffer
    y: Buffer
    recip: Buffer | None  # avg: 1/divisor per output pixel
    x_base: int
    x_img: int
    x_cblk: int
    x_row: int
    y_img: int
    y_cblk: int
    y_row: int
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


def _divisors(a: object, h: int, w: int, oh: int, ow: int) -> np.ndarray:
    """PyTorch's avg_pool2d divisor for every output pixel."""
    (kh, kw), (sh, sw), (t, bot, l, r) = a.kernel, a.stride, a.padding  # type: ignore[attr-defined]
    div = np.empty((oh, ow), np.float64)
    for i in range(oh):
        hs = i * sh - t
        he = min(hs + kh, h + bot)
        for j in range(ow):
            ws = j * sw - l
            we = min(ws + kw, w + r)
            if a.count_include_pad:  # type: ignore[attr-defined]
                div[i, j] = (he - hs) * (we - ws)
            else:
                div[i, j] = (min(he, h) - max(hs, 0)) * (min(we, w) - max(ws, 0))
    return div


@lowering("max_pool2d", "avg_pool2d")
def lower_pool(lw: Lowering, node: Node) -> None:
    a = node.attrs
    x = node.inputs[0]
    n, c, h, w = x.shape
    _, _, oh, ow = node.outputs[0].shape
    src = lw.blocked(x, node.layer)
    out = lw.new_blocked((n, c, oh, ow), node.layer)
    recip = None
    kind = "max" if node.op == "max_pool2d" else "avg"
    if kind == "avg":
        recip = lw.weights((1.0 / _divisors(a, h, w, oh, ow)).astype(np.float32), f"{node.layer}.recip")
    dil = getattr(a, "dilation", (1, 1))
    xa, ya = src.addr, out.addr
    p = PoolParams(kind, src.buffer, out.buffer, recip, xa.base, xa.img, xa.cblk, xa.row, ya.img, ya.cblk, ya.row,
                   padded_channels(c, lw.width) // lw.width, h, w, oh, ow, a.kernel[0], a.kernel[1], a.stride[0],
                   a.stride[1], dil[0], dil[1], a.padding[0], a.padding[2])
    reads = (src.buffer,) + ((recip,) if recip else ())
    lw.call("pool", p, reads, (out.buffer,), node.layer, parallel=n * c * oh * ow * a.kernel[0] * a.kernel[1] > 50_000)
    lw.placed[node.outputs[0]] = out


def _bounds(em: Emitter, start: ir.Value, k: int, d: int, size: int) -> tuple[ir.Value, ir.Value]:
    """The kernel taps [lo, hi) whose input index start + tap*d lies in [0, size)."""
    b = em.b
    neg = b.sub(i64(0), start)
    lo = b.select(b.icmp_signed("<", start, i64(0)), b.sdiv(b.add(neg, i64(d - 1)), i64(d)), i64(0))
    room = b.sub(i64(size), start)
    hi = b.sdiv(b.add(room, i64(d - 1)), i64(d))
    hi = b.select(b.icmp_signed("<", hi, i64(0)), i64(0), hi)
    hi = b.select(b.icmp_signed(">", hi, i64(k)), i64(k), hi)
    return lo, hi


@kernel("pool")
def emit_pool(em: Emitter, env: KernelEnv, p: PoolParams) -> None:
    b = em.b
    x, y = env.ptr(p.x), env.ptr(p.y)
    lo, hi = em.thread_range(b.mul(env.batch, i64(p.c_blocks * p.out_h)))
    init = em.vconst(float("-inf") if p.kind == "max" else 0.0)

    def item(it: ir.Value) -> None:
        n, cb, oh = em.digits(it, (p.c_blocks, p.out_h))
        x_plane = b.add(b.add(i64(p.x_base), b.mul(n, i64(p.x_img))), b.mul(cb, i64(p.x_cblk)))
        y_row = b.add(b.add(b.mul(n, i64(p.y_img)), b.mul(cb, i64(p.y_cblk))), b.mul(oh, i64(p.y_row)))
        h0 = b.sub(b.mul(oh, i64(p.sh)), i64(p.top))
        kh_lo, kh_hi = _bounds(em, h0, p.kh, p.dh, p.h)

        def pixel(ow: ir.Value) -> None:
            w0 = b.sub(b.mul(ow, i64(p.sw)), i64(p.left))
            kw_lo, kw_hi = _bounds(em, w0, p.kw, p.dw, p.w)

            def over_kh(kh: ir.Value, acc: list[ir.Value]) -> list[ir.Value]:
                row = b.add(x_plane, b.mul(b.add(h0, b.mul(kh, i64(p.dh))), i64(p.x_row)))

                def over_kw(kw: ir.Value, acc: list[ir.Value]) -> list[ir.Value]:
                    col = b.add(w0, b.mul(kw, i64(p.dw)))
                    v = em.load_vec(x, b.add(row, b.mul(col, i64(em.width))))
                    return [em.vmax(v, acc[0]) if p.kind == "max" else b.fadd(acc[0], v)]

                return em.loop(kw_lo, kw_hi, over_kw, acc, name="kw")

            acc = em.loop(kh_lo, kh_hi, over_kh, [init], name="kh")[0]
            if p.kind == "avg":
                assert p.recip is not None, "average pooling carries its divisors"
                r = em.load(env.ptr(p.recip), b.add(b.mul(oh, i64(p.out_w)), ow))
                acc = b.fmul(acc, em.splat(r))
            em.store_vec(acc, y, b.add(y_row, b.mul(ow, i64(em.width))))

        em.each(0, p.out_w, pixel, name="ow")

    em.each(lo, hi, item, name="item")


@dataclass(frozen=True, eq=False)
class GlobalPoolParams:
    x: Buffer
    y: Buffer
    x_base: int
    x_img: int
    x_cblk: int
    y_img: int
    y_cblk: int
    c_blocks: int
    pixels: int


@lowering("global_avg_pool")
def lower_global_avg_pool(lw: Lowering, node: Node) -> None:
    x = node.inputs[0]
    n, c, h, w = x.shape
    src = lw.blocked(x, node.layer)
    out = lw.new_blocked((n, c, 1, 1), node.layer)
    p = GlobalPoolParams(src.buffer, out.buffer, src.addr.base, src.addr.img, src.addr.cblk, out.addr.img,
                         out.addr.cblk, padded_channels(c, lw.width) // lw.width, h * w)
    lw.call("global_avg_pool", p, (src.buffer,), (out.buffer,), node.layer, parallel=n * c * h * w > 100_000)
    lw.placed[node.outputs[0]] = out


@kernel("global_avg_pool")
def emit_global_avg_pool(em: Emitter, env: KernelEnv, p: GlobalPoolParams) -> None:
    b = em.b
    x, y = env.ptr(p.x), env.ptr(p.y)
    lo, hi = em.thread_range(b.mul(env.batch, i64(p.c_blocks)))

    def item(it: ir.Value) -> None:
        n, cb = b.udiv(it, i64(p.c_blocks)), b.urem(it, i64(p.c_blocks))
        plane = b.add(b.add(i64(p.x_base), b.mul(n, i64(p.x_img))), b.mul(cb, i64(p.x_cblk)))
        acc = em.loop(0, p.pixels, lambda px, a: [b.fadd(a[0], em.load_vec(x, b.add(plane, b.mul(px, i64(em.width)))))],
                      [em.vconst(0.0)], name="px")[0]
        out = b.add(b.mul(n, i64(p.y_img)), b.mul(cb, i64(p.y_cblk)))
        em.store_vec(b.fmul(acc, em.vconst(1.0 / p.pixels)), y, out)

    em.each(lo, hi, item, name="item")
