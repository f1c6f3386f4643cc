"""Moving tensors between placements: blocked <-> plain, adding a zero halo for padded convolutions, channel offsets
for concatenation, and the copy into the caller's output arrays.

Blocked -> blocked with the same width copies whole vectors per pixel and writes each destination row once (halo
and interior); every other pair goes element by element through the general addressing rule (graph edges only).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from llvmlite import ir

from cnncc.codegen.emit import Emitter, f32, i64
from cnncc.codegen.layout import Addr, Placed, dims4, padded_channels
from cnncc.codegen.lower import Lowering, Unsupported, lowering
from cnncc.codegen.module import KernelEnv, kernel
from cnncc.ir import Node
from cnncc.program import Buffer


@dataclass(frozen=True, eq=False)
class RelayoutParams:
    src: Buffer
    dst: Buffer
    dims: tuple[int, int, int, int]  # logical (N, C, H, W) of the source
    src_addr: Addr
    dst_addr: Addr
    c_off: int
    fill: bool  # write the destination's halo and padded channels first
    fill_floats: int  # floats per image of the destination (for the fill)
    pad_value: float
    batched: bool = True


@dataclass(frozen=True, eq=False)
class PadParams:
    src: Buffer
    dst: Buffer
    c_blocks: int
    h: int
    w: int
    halo: tuple[int, int, int, int]
    src_addr: Addr
    dst_addr: Addr
    pad_value: float


def relayout_call(lw: Lowering, src: Placed, dst: Placed, layer: str, pad_value: float, c_off: int) -> None:
    n, c, h, w = src.dims
    if src.blocked and dst.blocked and c_off == 0 and src.dims == dst.dims:
        cb = padded_channels(c, lw.width) // lw.width
        p = PadParams(src.buffer, dst.buffer, cb, h, w, dst.halo, src.addr, dst.addr, pad_value)
        lw.call("pad_blocked", p, (src.buffer,), (dst.buffer,), layer, parallel=n * c * h * w > 50_000)
        return
    # Padded channel lanes must hold finite values (they meet zero weights): fill them, and any halo, first.
    fill = c_off == 0 and (dst.halo != (0, 0, 0, 0) or (dst.blocked and dst.dims[1] % lw.width != 0))
    p2 = RelayoutParams(src.buffer, dst.buffer, src.dims, src.addr, dst.addr, c_off, fill, dst.addr.img, pad_value,
                        src.batched)
    lw.call("relayout", p2, (src.buffer,), (dst.buffer,), layer, parallel=n * c * h * w > 50_000)


def _offset(em: Emitter, a: Addr, n: ir.Value, c: ir.Value, h: ir.Value, w: ir.Value) -> ir.Value:
    b = em.b
    cq, cr = (i64(0), c) if a.cblk == 0 else em.divmod(c, a.cb)
    parts = [b.mul(n, i64(a.img)), b.mul(cq, i64(a.cblk)), b.mul(cr, i64(a.ci)), b.mul(h, i64(a.row)),
             b.mul(w, i64(a.col))]
    out = i64(a.base)
    for part in parts:
        out = b.add(out, part)
    return out


@kernel("relayout")
def emit_relayout(em: Emitter, env: KernelEnv, p: RelayoutParams) -> None:
    b = em.b
    _, c, h, w = p.dims
    src, dst = env.ptr(p.src), env.ptr(p.dst)
    images = env.batch if p.batched else i64(1)
    if p.fill:  # whole images per thread: each thread fills, then copies into, only its own images
        n_lo, n_hi = em.thread_range(images)
        lo, hi = b.mul(n_lo, i64(c)), b.mul(n_hi, i64(c))
        value = f32(p.pad_value)
        em.each(b.mul(n_lo, i64(p.fill_floats)), b.mul(n_hi, i64(p.fill_floats)),
                lambda i: em.store(value, dst, i), name="fill")
    else:
        lo, hi = em.thread_range(b.mul(images, i64(c)))

    def item(it: ir.Value) -> None:
        n, ch = b.udiv(it, i64(c)), b.urem(it, i64(c))
        dch = b.add(ch, i64(p.c_off))

        def row(y: ir.Value) -> None:
            def col(x: ir.Value) -> None:
                v = em.load(src, _offset(em, p.src_addr, n, ch, y, x))
                em.store(v, dst, _offset(em, p.dst_addr, n, dch, y, x))

            em.each(0, w, col, name="x")

        em.each(0, h, row, name="y")

    em.each(lo, hi, item, name="item")


@kernel("pad_blocked")
def emit_pad_blocked(em: Emitter, env: KernelEnv, p: PadParams) -> None:
    b = em.b
    t, bot, l, r = p.halo
    hp, wp = p.h + t + bot, p.w + l + r
    src, dst = env.ptr(p.src), env.ptr(p.dst)
    pad = em.vconst(p.pad_value)
    lo, hi = em.thread_range(b.mul(env.batch, i64(p.c_blocks * hp)))
    sa, da = p.src_addr, p.dst_addr
    d_origin = da.base - t * da.row - l * da.col

    def item(it: ir.Value) -> None:
        n, cb, yy = em.digits(it, (p.c_blocks, hp))
        d_row = b.add(b.add(i64(d_origin), b.mul(n, i64(da.img))), b.add(b.mul(cb, i64(da.cblk)),
                                                                          b.mul(yy, i64(da.row))))
        y = b.sub(yy, i64(t))
        inside = b.and_(b.icmp_signed(">=", y, i64(0)), b.icmp_signed("<", y, i64(p.h)))
        with b.if_else(inside) as (then, otherwise):
            with then:
                s_row = b.add(b.add(i64(sa.base), b.mul(n, i64(sa.img))),
                              b.add(b.mul(cb, i64(sa.cblk)), b.mul(y, i64(sa.row))))
                for x in range(l):
                    em.store_vec(pad, dst, b.add(d_row, i64(x * da.col)))
                em.each(0, p.w, lambda x: em.store_vec(em.load_vec(src, b.add(s_row, b.mul(x, i64(sa.col)))), dst,
                                                       b.add(d_row, b.mul(b.add(x, i64(l)), i64(da.col)))),
                        name="x")
                for x in range(l + p.w, wp):
                    em.store_vec(pad, dst, b.add(d_row, i64(x * da.col)))
            with otherwise:
                em.each(0, wp, lambda x: em.store_vec(pad, dst, b.add(d_row, b.mul(x, i64(da.col)))), name="hx")

    em.each(lo, hi, item, name="item")


@dataclass(frozen=True, eq=False)
class FillParams:
    dst: Buffer
    floats_per_image: int
    value: float


@kernel("fill")
def emit_fill(em: Emitter, env: KernelEnv, p: FillParams) -> None:
    b = em.b
    lo, hi = em.thread_range(env.batch)
    v = f32(p.value)
    dst = env.ptr(p.dst)
    em.each(b.mul(lo, i64(p.floats_per_image)), b.mul(hi, i64(p.floats_per_image)), lambda i: em.store(v, dst, i),
            name="i")


@lowering("concat")
def lower_concat(lw: Lowering, node: Node) -> None:
    axis = node.attrs.axis % len(node.outputs[0].shape)
    dims = dims4(node.outputs[0].shape)
    if axis != 1:
        raise Unsupported(f"layer '{node.layer}': concat along axis {axis} is not compiled for the CPU yet "
                          "(channels, axis 1, is)")
    rank4 = len(node.outputs[0].shape) == 4
    out = lw.new_blocked(dims, node.layer) if rank4 else lw.new_plain(dims, node.layer)
    if out.blocked and dims[1] % lw.width:
        lw.call("fill", FillParams(out.buffer, out.addr.img, 0.0), (), (out.buffer,), node.layer, parallel=False)
    c_off = 0
    for v in node.inputs:
        src = lw.get(v, node.layer)
        if out.blocked and src.blocked and src.halo == (0, 0, 0, 0) and c_off % lw.width == 0:
            shifted = replace(out.addr, base=out.addr.base + c_off // lw.width * out.addr.cblk)
            cb = padded_channels(v.shape[1], lw.width) // lw.width
            p = PadParams(src.buffer, out.buffer, cb, dims[2], dims[3], (0, 0, 0, 0), src.addr, shifted, 0.0)
            lw.call("pad_blocked", p, (src.buffer,), (out.buffer,), node.layer, parallel=True)
        else:
            sub = Placed(out.buffer, dims4(v.shape), out.addr, out.blocked)
            lw.relayout(src, sub, node.layer, 0.0, c_off)
        c_off += v.shape[1]
    lw.placed[node.outputs[0]] = out
