"""dropout: inference is a view (no kernel); training with a run-time seed operand is one elementwise kernel.

The mask is the Philox4x32-10 definition of :mod:`cnncc.ops.dropout`, evaluated per element from its logical
row-major index ``((n·C + c)·H + h)·W + w``, so it is bit-identical to the numpy reference whatever the layout and
the thread split. Philox runs on W-lane i32 vectors (the 32x32 -> 64-bit products as zero-extended i64 vector
multiplies), the keep test is the integer ``bits >> 8 >= ceil(p·2^24)`` and ``y = select(keep, x · scale, 0)`` with
``scale = float32(1 / (1 − p))``, the reference's single rounding.

* blocked NCHW{W}c input (no halo): work items (image, channel block), a vector of W channels per pixel; lane ``l``
  of block ``j`` is channel ``16j + l`` with index ``n·CHW + (16j + l)·HW + pixel``; padded channel lanes are 0;
* anything else is walked as a contiguous plain tensor, where the memory offset is the logical index: chunks of
  ``CHUNK`` floats, vectors and then a scalar tail.

The seed is read once per call from its buffer (a graph input, a computed scalar or a packed parameter).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from cnncc.codegen.emit import I32, I64, Emitter, f32, i64
from cnncc.codegen.layout import Placed, dims4, padded_channels
from cnncc.codegen.lower import Lowering, Unsupported, lowering
from cnncc.codegen.module import KernelEnv, kernel
from cnncc.ir import DType, Node, Value, ValueKind
from cnncc.ops.dropout import PHILOX_M, PHILOX_ROUNDS, PHILOX_W, UNIFORM_BITS, keep_threshold
from cnncc.program import Buffer

CHUNK = 4096  # plain walk: floats per work item (a multiple of every vector width)


@dataclass(frozen=True, eq=False)
class DropoutParams:
    """``y = x · keep / (1 − p)`` over ``elements`` logical elements per image (``batched``: times the run-time
    batch). ``blocked``: x and y are NCHW{W}c with ``channels`` real channels, ``blocks`` channel blocks and
    ``pixels`` = H·W; otherwise both are contiguous plain."""

    x: Buffer
    y: Buffer
    seed: Buffer
    blocked: bool
    elements: int
    channels: int
    blocks: int
    pixels: int
    threshold: int
    scale: float
    salt: int
    batched: bool = True


def _seed_buffer(lw: Lowering, v: Value, layer: str) -> Buffer:
    if v.kind is ValueKind.PARAM:
        if v.name in lw.state:
            return lw.tensor(v, layer).buffer
        return lw.weights(np.asarray(lw.params[v.name], np.int64).reshape(1), f"{layer}.{v.name}")
    return lw.plain(v, layer).buffer


@lowering("dropout")
def lower_dropout(lw: Lowering, node: Node) -> None:
    x = node.inputs[0]
    if not node.attrs.training:  # the identity: the consumer sees the same memory
        lw.placed[node.outputs[0]] = lw.get(x, node.layer)
        return
    if len(node.inputs) < 2:
        raise Unsupported(f"layer '{node.layer}': dropout in training mode without a run-time seed operand is not "
                          "compiled for the CPU (its mask is numpy's Philox4x64 stream); give it the int64 seed "
                          "operand (cnncc.training does) or compile the inference graph")
    if x.dtype is not DType.FLOAT32:
        raise Unsupported(f"layer '{node.layer}': dropout is compiled for float32 only, got {x.dtype.name}")
    seed = _seed_buffer(lw, node.inputs[1], node.layer)
    src = lw.get(x, node.layer)
    dims = dims4(node.outputs[0].shape)
    n, c, h, w = dims
    blocked = src.blocked and src.halo == (0, 0, 0, 0) and src.batched
    if blocked:
        out = lw.new_blocked(dims, node.layer)
    else:
        src = lw.plain(x, node.layer)
        if src.batched:
            out = lw.new_plain(dims, node.layer)
        else:  # not per image (computed from parameters): one image of all its floats
            out = Placed(lw.arena(src.addr.img, node.layer, per_image=False), src.dims, src.addr, False,
                         batched=False)
    a = node.attrs
    p = DropoutParams(src.buffer, out.buffer, seed, blocked, c * h * w if src.batched else src.addr.img, c,
                      padded_channels(c, lw.width) // lw.width, h * w, keep_threshold(a.p),
                      float(np.float32(1.0 / (1.0 - a.p))), a.seed, src.batched)
    lw.call("dropout", p, (src.buffer, seed), (out.buffer,), node.layer, parallel=n * c * h * w >= 1 << 14)
    lw.placed[node.outputs[0]] = out


def _philox_word0(b: ir.IRBuilder, counter: list[ir.Value], keys: list[tuple[ir.Value, ir.Value]],
                  const: Callable[[int, ir.Type], ir.Value]) -> ir.Value:
    """Word 0 of Philox4x32-10 on i32 scalars or vectors; ``keys`` are the round keys (already bumped)."""
    ty = counter[0].type
    if isinstance(ty, ir.VectorType):  # lanes in pairs: i64 lanes whose halves are multiplied apart (vpmuludq)
        n = ty.count
        wide = ir.VectorType(I64, n // 2)
        low, sh = const(0xFFFFFFFF, wide), const(32, wide)
        # lane 2k's product is i32 lanes (2k, 2k+1) = (lo, hi) of ``even``, lane 2k+1's those of ``odd`` (n + ...)
        pick_lo = ir.Constant(ir.VectorType(I32, n), [ir.Constant(I32, n + k - 1 if k % 2 else k) for k in range(n)])
        pick_hi = ir.Constant(ir.VectorType(I32, n), [ir.Constant(I32, n + k if k % 2 else k + 1) for k in range(n)])

        def mulhilo(c: ir.Value, m: int) -> tuple[ir.Value, ir.Value]:
            q = b.bitcast(c, wide)
            even = b.bitcast(b.mul(b.and_(q, low), const(m, wide)), ty)  # lanes 2k: full 64-bit products
            odd = b.bitcast(b.mul(b.lshr(q, sh), const(m, wide)), ty)  # lanes 2k + 1
            return b.shuffle_vector(even, odd, pick_hi), b.shuffle_vector(even, odd, pick_lo)
    else:
        def mulhilo(c: ir.Value, m: int) -> tuple[ir.Value, ir.Value]:
            prod = b.mul(b.zext(c, I64), i64(m))
            return b.trunc(b.lshr(prod, i64(32)), ty), b.trunc(prod, ty)

    c0, c1, c2, c3 = counter
    for k0, k1 in keys:
        hi0, lo0 = mulhilo(c0, PHILOX_M[0])
        hi1, lo1 = mulhilo(c2, PHILOX_M[1])
        c0, c1, c2, c3 = b.xor(b.xor(hi1, c1), k0), lo1, b.xor(b.xor(hi0, c3), k1), lo0
    return c0


@kernel("dropout")
def emit_dropout(em: Emitter, env: KernelEnv, p: DropoutParams) -> None:
    b, width = em.b, em.width
    vi32, vi64 = ir.VectorType(I32, width), ir.VectorType(I64, width)
    xp, yp = env.ptr(p.x), env.ptr(p.y)

    def const(v: int, ty: ir.Type) -> ir.Value:
        if isinstance(ty, ir.VectorType):
            return ir.Constant(ty, [ir.Constant(ty.element, v)] * ty.count)
        return ir.Constant(ty, v)

    def splat(s: ir.Value, ty: ir.VectorType) -> ir.Value:
        undef = ir.Constant(ty, ir.Undefined)
        v = b.insert_element(undef, s, ir.Constant(I32, 0))
        return b.shuffle_vector(v, undef, ir.Constant(vi32, [ir.Constant(I32, 0)] * width))

    seed = em.load(env.ptr(p.seed), 0, I64)
    keys = []  # the ten round keys, as i32 scalars (bumped mod 2^32 before every round but the first)
    k0, k1 = b.trunc(seed, I32), b.trunc(b.lshr(seed, i64(32)), I32)
    for r in range(PHILOX_ROUNDS):
        if r:
            k0, k1 = b.add(k0, ir.Constant(I32, PHILOX_W[0])), b.add(k1, ir.Constant(I32, PHILOX_W[1]))
        keys.append((k0, k1))
    vkeys = [(splat(a, vi32), splat(c, vi32)) for a, c in keys]
    salt = (p.salt & 0xFFFFFFFF, p.salt >> 32)
    shift = 32 - UNIFORM_BITS

    def keep_of(index: ir.Value) -> ir.Value:
        """The keep bit(s) of i64 logical index (scalar or vector)."""
        vector = isinstance(index.type, ir.VectorType)
        ty = vi32 if vector else I32
        counter = [b.trunc(index, ty), b.trunc(b.lshr(index, const(32, index.type)), ty), const(salt[0], ty),
                   const(salt[1], ty)]
        bits = _philox_word0(b, counter, vkeys if vector else keys, const)
        return b.icmp_unsigned(">=", b.lshr(bits, const(shift, ty)), const(p.threshold, ty))

    vscale, vzero = em.vconst(p.scale), em.vconst(0.0)
    lanes = ir.Constant(vi64, [ir.Constant(I64, k) for k in range(width)])
    images = env.batch if p.batched else i64(1)

    if p.blocked:
        hw = p.pixels
        lane_index = ir.Constant(vi64, [ir.Constant(I64, k * hw) for k in range(width)])
        lane_id = ir.Constant(vi32, [ir.Constant(I32, k) for k in range(width)])
        cblk = hw * width
        lo, hi = em.thread_range(b.mul(images, i64(p.blocks)))

        def item(it: ir.Value) -> None:
            n, j = b.udiv(it, i64(p.blocks)), b.urem(it, i64(p.blocks))
            base_index = b.add(b.mul(n, i64(p.elements)), b.mul(j, i64(width * hw)))
            base_off = b.add(b.mul(n, i64(p.blocks * cblk)), b.mul(j, i64(cblk)))
            real = b.trunc(b.sub(i64(p.channels), b.mul(j, i64(width))), I32)  # real channels left in this block
            valid = b.icmp_signed("<", lane_id, splat(real, vi32))

            def pixel(px: ir.Value) -> None:
                index = b.add(splat(b.add(base_index, px), vi64), lane_index)
                keep = b.and_(keep_of(index), valid)
                off = b.add(base_off, b.mul(px, i64(width)))
                x = em.load_vec(xp, off)
                em.store_vec(b.select(keep, b.fmul(x, vscale), vzero), yp, off)

            em.each(0, hw, pixel, name="px")

        em.each(lo, hi, item, name="item")
        return

    total = b.mul(images, i64(p.elements))
    def vec(off: ir.Value) -> None:
        keep = keep_of(b.add(splat(off, vi64), lanes))
        em.store_vec(b.select(keep, b.fmul(em.load_vec(xp, off), vscale), vzero), yp, off)

    def one(off: ir.Value) -> None:
        x = em.load(xp, off)
        em.store(b.select(keep_of(off), b.fmul(x, f32(p.scale)), f32(0.0)), yp, off)

    em.chunks(total, CHUNK, vec, one)
