"""Winograd and FFT convolution on channel-blocked layouts: input transform -> one GEMM per transform-domain point
-> output transform with the fused epilogue (the math is in :mod:`cnncc.codegen.transforms`).

Three kernel calls per layer, through two arena buffers:

* ``transform_input``: work items (image, channel block, tile row); each T x T tile of W-lane vectors (read from the
  zero-padded NCHW{W}c input, so no bounds checks) goes through the input stages as straight-line vector code and is
  scattered to ``V[image][point][pair*Cb blocks][tile][W]``;
* the GEMM is the direct kernel as a 1x1 convolution whose pixels are the tiles and whose images are the points
  (``img_mult`` = points; each point has its own packed matrix, ``w_img`` floats apart): the same register tile and
  packed weights that reach 91-104% of peak on ResNet's 1x1 layers;
* ``transform_output``: the output stages, then bias, activations, residual add, and the store of the tile's pixels
  into the blocked output (rows past the image's edge skipped at run time, columns at compile time).

The transformed filters are computed in float64 at compile time and packed per point like 1x1 weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from cnncc.codegen.emit import F32, I1, I32, I64, PTR, VOID, Emitter, i64
from cnncc.codegen.kernels.activation import Act, apply_act
from cnncc.codegen.kernels.conv import ConvParams, ConvSchedule, choose_schedule, pack_weights, packed_bias
from cnncc.codegen.layout import padded_channels
from cnncc.codegen.lower import Lowering, Unsupported
from cnncc.codegen.module import KernelEnv, kernel
from cnncc.codegen.transforms import Stage, TransformConv
from cnncc.convalgo import conv_attrs
from cnncc.ir import Node, Value, ValueKind
from cnncc.program import Buffer


@dataclass(frozen=True, eq=False)
class InputTransformParams:
    x: Buffer
    v: Buffer
    x_origin: int  # float offset of the padded plane's (0, 0)
    x_img: int
    x_cblk: int
    x_row: int
    x_col: int
    c_blocks: int
    tiles_h: int
    tiles_w: int
    step_h: int
    step_w: int
    tile: int
    pair: int
    stages: tuple[Stage, ...]
    v_img: int
    v_point: int
    v_cblk: int
    nontemporal: bool = False  # streaming stores of V (see :data:`STREAM_V_BYTES`)


@dataclass(frozen=True, eq=False)
class OutputTransformParams:
    m: Buffer
    y: Buffer
    bias: Buffer | None
    res: Buffer | None
    pre: tuple[Act, ...]
    post: tuple[Act, ...]
    k_blocks: int
    pair: int
    m_img: int
    m_point: int
    m_kblk: int
    tiles_h: int
    tiles_w: int
    tile_h: int  # outputs per tile
    tile_w: int
    oh: int
    ow: int
    y_addr: tuple[int, int, int, int, int]  # base, img, kblk, row, col
    res_addr: tuple[int, int, int, int, int]
    zero_tail: int
    stages: tuple[Stage, ...]


def apply_stages(em: Emitter, values: list[ir.Value], stages: tuple[Stage, ...]) -> list[ir.Value]:
    """Straight-line vector code for a product of sparse stages, constants folded (+-1 as add/sub, 0 dropped)."""
    b = em.b
    for st in stages:
        out = []
        for row in st.rows:
            acc = None
            for j, c in row:
                v = values[j]
                if acc is None:
                    acc = v if c == 1.0 else b.fneg(v) if c == -1.0 else b.fmul(v, em.vconst(c))
                elif c == 1.0:
                    acc = b.fadd(acc, v)
                elif c == -1.0:
                    acc = b.fsub(acc, v)
                else:
                    acc = em.fma(em.vconst(c), v, acc)
            out.append(em.vconst(0.0) if acc is None else acc)
        values = out
    return values


@dataclass(frozen=True)
class ConvOperands:
    """What a transform convolution reads of its node: a forward conv's, or the stride-1 convolution of dy with the
    flipped, transposed filters that a backward-data convolution is (whose weights no graph value holds in that
    layout: ``weight`` is then None and the lowering gets their buffer and strides)."""

    layer: str
    x: Value
    y: Value
    weight: Value | None
    weight_shape: tuple[int, int, int, int]  # (K, C, R, S) of the convolution computed
    bias: Value | None
    stride: tuple[int, int]
    padding: tuple[int, int, int, int]

    @staticmethod
    def of(node: Node) -> ConvOperands:
        a = conv_attrs(node)
        k, c, r, s = node.inputs[1].shape
        return ConvOperands(node.layer, node.inputs[0], node.outputs[0], node.inputs[1], (k, c, r, s),
                            node.inputs[2] if len(node.inputs) > 2 else None, a.stride, a.padding)


def lower_transform_conv(lw: Lowering, node: ConvOperands, tc: TransformConv, w: np.ndarray | None,
                         pre: tuple[Act, ...], residual: Value | None, post: tuple[Act, ...],
                         w_buffer: Buffer | None = None, w_strides: WeightStrides | None = None) -> None:
    """``tc``: the algorithm's transform for this kernel and stride (from its record). ``w``: the weights when known
    at compile time (transformed then, in float64); ``None`` for training state or computed weights, transformed by
    a run-time kernel (Winograd only: see :func:`runtime_filter_transform`), read from ``node.weight`` or from
    ``w_buffer`` (plain (K, C, R, S) floats, or any layout ``w_strides`` describes: a backward-data convolution
    reads the forward's filters flipped and transposed in place)."""
    x = node.x
    k, c, r, s = node.weight_shape
    n, _, oh, ow = node.y.shape
    _, _, h, wd = x.shape
    width = lw.width
    th, tw = tc.tiles(oh, ow)
    tiles = th * tw
    eh, ew = tc.input_extent(oh, ow)
    pt, pb, pl, pr = node.padding
    halo = (pt, max(pb, eh - pt - h), pl, max(pr, ew - pl - wd))
    src = lw.blocked(x, node.layer, halo)
    cb, kb = padded_channels(c, width) // width, padded_channels(k, width) // width
    pcb, pkb = tc.pair * cb, tc.pair * kb
    v = lw.arena(tc.points * pcb * tiles * width, f"{node.layer}.V")
    m = lw.arena(tc.points * pkb * tiles * width, f"{node.layer}.M")
    xa = src.addr
    lw.call("transform_input", InputTransformParams(
        src.buffer, v, x_origin=xa.base - pt * xa.row - pl * xa.col, x_img=xa.img, x_cblk=xa.cblk, x_row=xa.row,
        x_col=xa.col, c_blocks=cb, tiles_h=th, tiles_w=tw, step_h=tc.step_h, step_w=tc.step_w, tile=tc.tile,
        pair=tc.pair, stages=tc.input_stages, v_img=tc.points * pcb * tiles * width, v_point=pcb * tiles * width,
        v_cblk=tiles * width, nontemporal=4 * n * tc.points * pcb * tiles * width >= STREAM_V_BYTES),
        (src.buffer,), (v,), node.layer, parallel=True)
    sched = gemm_schedule(tc, k, tiles, width)
    if w is not None:
        packed = pack_transformed(tc, w, width, sched.ocb)
        wbuf = lw.weights(packed, f"{node.layer}.weight.{tc.name}")
        w_img = packed[0].size
    else:
        wbuf, w_img = runtime_filter_transform(lw, node, tc, sched.ocb, w_buffer, w_strides)
    gemm = ConvParams(
        x=v, w=wbuf, bias=None, y=m, x_origin=0, x_img=pcb * tiles * width, x_cblk=tiles * width, x_row=0,
        x_col=width, in_cb=width, in_blocks=pcb, grp_in_blocks=0, blocks_per_group=pkb, y_base=0,
        y_img=pkb * tiles * width, y_kblk=tiles * width, y_row=0, y_col=width, out_h=1, out_w=tiles, k_blocks=pkb,
        k_tail=0, r=1, s=1, sh=1, sw=1, dh=1, dw=1, sched=sched, img_mult=tc.points, w_img=w_img,
        nontemporal=4 * n * tc.points * pkb * tiles * width >= STREAM_M_BYTES)
    lw.call("conv_direct", gemm, (v, wbuf), (m,), node.layer, parallel=True,
            macs=n * tc.points * tiles * pcb * pkb * width * width)
    out = lw.new_blocked((n, k, oh, ow), node.layer)
    res = lw.blocked(residual, node.layer) if residual is not None else None
    ya = out.addr
    bias = packed_bias(lw, node.bias, node.layer, k) if node.bias is not None else None
    lw.call("transform_output", OutputTransformParams(
        m, out.buffer, bias, res.buffer if res else None, pre, post, k_blocks=kb, pair=tc.pair,
        m_img=tc.points * pkb * tiles * width, m_point=pkb * tiles * width, m_kblk=tiles * width, tiles_h=th,
        tiles_w=tw, tile_h=tc.out_h, tile_w=tc.out_w, oh=oh, ow=ow,
        y_addr=(ya.base, ya.img, ya.cblk, ya.row, ya.col),
        res_addr=(res.addr.base, res.addr.img, res.addr.cblk, res.addr.row, res.addr.col) if res else (0,) * 5,
        zero_tail=k % width, stages=tc.output_stages),
        (m,) + ((bias,) if bias else ()) + ((res.buffer,) if res else ()), (out.buffer,), node.layer, parallel=True)
    lw.placed[node.y] = out


# Transformed weights at least this big are written with non-temporal stores: they do not stay in L2 (1 MiB per core)
# for the GEMM that reads them next, so caching them only costs the read-for-ownership of every line.
STREAM_BYTES = 16 << 20
# Transformed inputs (V) at least this big are written with non-temporal stores. Measured on ResNet-18's layers at
# batch 8 (input transform + GEMM + output transform): 128 channels at 28x28 (V 7 MB) and 64 at 56x56 (14 MB) gain
# 0.3-1.5 ms a layer (the transform's writes are half its time, the GEMM is not slower); 256 at 14x14 (4.7 MB) is
# within the noise; filters (above) need more, as the GEMM reads them many times.
STREAM_V_BYTES = 6 << 20
STREAM_M_BYTES = 6 << 20  # the GEMM's output, likewise
PREFETCH_AHEAD = 8  # input channels (work items of one output block) between a prefetch and the gathers it feeds


@dataclass(frozen=True)
class WeightStrides:
    """Where filter element (k, c, tap) of a run-time filter transform is read: ``k * self.k + c * self.c +
    self.taps[tap]`` floats into the buffer. Plain (K, C, R, S) is ``(C*R*S, R*S, (0, 1, .., R*S-1))``; the flipped,
    transposed filters of a backward-data convolution, read from the forward's (C', K', R, S), are
    ``(R*S, K'*R*S, (R*S-1, .., 0))``."""

    k: int
    c: int
    taps: tuple[int, ...]


@dataclass(frozen=True, eq=False)
class FilterTransformParams:
    """``u[p] = pack(M[p] · w)``: the Winograd filter transform at run time, straight into the packed layout of
    :func:`pack_transformed` (per point: (K/(W·ocb), C/W, W, ocb, W)); one work item per (output block, input
    channel), its W output channels gathered from the plain (K, C, R, S) weights, items in the packed order."""

    w: Buffer
    u: Buffer
    k: int
    c: int
    rs: int
    k_blocks: int
    c_pad: int
    ocb: int
    w_img: int
    matrix: tuple[tuple[float, ...], ...]  # points x (R*S): the transform of each filter tap
    nontemporal: bool = False  # streaming stores (see :func:`emit_filter_transform`)
    strides: WeightStrides | None = None  # None: plain (K, C, R, S)


def runtime_filter_transform(lw: Lowering, node: ConvOperands, tc: TransformConv, ocb: int,
                             w_buffer: Buffer | None = None,
                             w_strides: WeightStrides | None = None) -> tuple[Buffer, int]:
    """Packed transformed weights of ``node`` computed at run time from its weights (training state or a computed
    value); returns the buffer and the floats per point. The transform is linear, so its matrix is read off the
    compile-time transform of the unit filters."""
    k, c, r, s = node.weight_shape
    if tc.pair != 1:
        raise Unsupported(f"layer '{node.layer}': the FFT filter transform is not compiled for run-time weights")
    width = lw.width
    basis = np.eye(r * s).reshape(r * s, 1, r, s)
    matrix = tc.filter_transform(basis).reshape(tc.points, r * s)
    kp, cp = padded_channels(k, width), padded_channels(c, width)
    w_img = kp * cp
    if w_buffer is None:
        wv = node.weight
        if wv is None:
            raise Unsupported(f"layer '{node.layer}': a run-time filter transform needs the weights or their buffer")
        w_buffer = (lw.tensor(wv, node.layer) if wv.kind is ValueKind.PARAM else lw.plain(wv, node.layer)).buffer
    u = lw.arena(tc.points * w_img, f"{node.layer}.weight.{tc.kind}", per_image=False)
    p = FilterTransformParams(w_buffer, u, k, c, r * s, kp // width, cp, ocb, w_img,
                              tuple(tuple(float(v) for v in row) for row in matrix),
                              nontemporal=tc.points * w_img * 4 >= STREAM_BYTES, strides=w_strides)
    lw.call("filter_transform", p, (w_buffer,), (u,), node.layer, parallel=True)
    return u, w_img


@kernel("filter_transform")
def emit_filter_transform(em: Emitter, env: KernelEnv, p: FilterTransformParams) -> None:
    """Work items in the order of the packed output, (output group, input channel, block in the group): item ``it``
    writes the vector at ``it * W`` of every point, so each thread streams ``points`` contiguous ranges (a full
    cache line per store; half-written lines evicted from L2 and read back cost as much as the writes). With
    ``p.nontemporal`` (transformed weights too big to stay in cache for the GEMM that reads them), the stores
    bypass the cache when the buffer is 64-byte aligned (checked at run time; plain stores otherwise)."""
    b, width = em.b, em.width
    w, u = env.ptr(p.w), env.ptr(p.u)
    lo, hi = em.thread_range(p.k_blocks * p.c_pad)
    lvec = ir.VectorType(I64, width)
    pvec = ir.VectorType(PTR, width)
    mvec = ir.VectorType(I1, width)
    gather = em.intrinsic(f"llvm.masked.gather.v{width}f32.v{width}p0", em.vec, [pvec, I32, mvec, em.vec])
    lanes = ir.Constant(lvec, [ir.Constant(I64, i) for i in range(width)])
    st = p.strides or WeightStrides(p.c * p.rs, p.rs, tuple(range(p.rs)))
    prefetch = em.intrinsic("llvm.prefetch.p0", VOID, [PTR, I32, I32, I32])

    def item(it: ir.Value, nontemporal: bool) -> None:
        kg, c, o = em.digits(it, (p.c_pad, p.ocb))
        kb = b.add(b.mul(kg, i64(p.ocb)), o)
        ks = b.add(b.mul(em.splat64(kb, lvec), ir.Constant(lvec, [ir.Constant(I64, width)] * width)), lanes)
        in_range = b.and_(b.icmp_signed("<", ks, ir.Constant(lvec, [ir.Constant(I64, p.k)] * width)),
                          em.splat_bool(b.icmp_signed("<", c, i64(p.c)), mvec))
        row = b.add(b.mul(ks, ir.Constant(lvec, [ir.Constant(I64, st.k)] * width)),
                    em.splat64(b.mul(c, i64(st.c)), lvec))
        if st.k == p.rs and sorted(st.taps) == list(range(p.rs)):
            # Lanes read one contiguous W*R*S run (the flipped filters of a backward-data convolution); consecutive
            # items jump a whole filter row (K*R*S floats), which the hardware prefetchers do not follow across
            # pages: fetch the run PREFETCH_AHEAD input channels ahead.
            ahead = b.add(b.mul(kb, i64(width * st.k)), b.mul(b.add(c, i64(PREFETCH_AHEAD)), i64(st.c)))
            for line in range(-(-width * p.rs // 16) + 1):
                at = b.gep(w, [b.add(ahead, i64(16 * line))], source_etype=F32)  # not inbounds: may pass the end
                b.call(prefetch, [at, ir.Constant(I32, 0), ir.Constant(I32, 3), ir.Constant(I32, 1)])
        taps = []
        for j in range(p.rs):
            ptrs = b.gep(w, [b.add(row, ir.Constant(lvec, [ir.Constant(I64, st.taps[j])] * width))], source_etype=F32)
            ptrs.type = pvec  # a vector of pointers (llvmlite types a GEP with a vector index as scalar)
            taps.append(b.call(gather, [ptrs, ir.Constant(I32, 4), in_range, em.vconst(0.0)]))
        base = b.mul(it, i64(width))  # ((kg * c_pad + c) * ocb + o) * W: the packed (kg, cb, ci, o, lane) order
        for point, coeffs in enumerate(p.matrix):
            acc = None
            for tap, cf in zip(taps, coeffs, strict=True):
                if cf == 0.0:
                    continue
                term = tap if cf == 1.0 else b.fmul(tap, em.vconst(cf))
                acc = term if acc is None else b.fadd(acc, term)
            value = acc if acc is not None else em.vconst(0.0)
            if nontemporal:
                em.store_vec_nt(value, u, b.add(base, i64(point * p.w_img)))
            else:
                em.store_vec(value, u, b.add(base, i64(point * p.w_img)))

    em.each_streaming(u, p.nontemporal, lo, hi, item)


def gemm_schedule(tc: TransformConv, k: int, tiles: int, width: int) -> ConvSchedule:
    """The register tile of the per-point GEMMs: ``tiles`` pixels per image, pair * K output channels."""
    return choose_schedule(width, tc.pair * padded_channels(k, width) // width, tiles, 1)


def pack_transformed(tc: TransformConv, w: np.ndarray, width: int, ocb: int) -> np.ndarray:
    """Per point, the (pair*K, pair*C) matrix with channels padded to the vector width, packed like 1x1 weights."""
    k, c = w.shape[:2]
    kp, cp = padded_channels(k, width), padded_channels(c, width)
    u = tc.filter_transform(w).reshape(tc.points, tc.pair, k, tc.pair, c)
    full = np.zeros((tc.points, tc.pair, kp, tc.pair, cp))
    full[:, :, :k, :, :c] = u
    full = full.reshape(tc.points, tc.pair * kp, tc.pair * cp, 1, 1)
    return np.stack([pack_weights(full[i], tc.pair * kp // width, ocb, width, tc.pair * cp // width, width)
                     for i in range(tc.points)])


@kernel("transform_input")
def emit_transform_input(em: Emitter, env: KernelEnv, p: InputTransformParams) -> None:
    b = em.b
    x, v = env.ptr(p.x), env.ptr(p.v)
    lo, hi = em.thread_range(b.mul(env.batch, i64(p.c_blocks * p.tiles_h)))

    def item(it: ir.Value, nontemporal: bool) -> None:
        n, cb, th = em.digits(it, (p.c_blocks, p.tiles_h))
        x_row0 = b.add(b.add(i64(p.x_origin), b.mul(n, i64(p.x_img))),
                       b.add(b.mul(cb, i64(p.x_cblk)), b.mul(th, i64(p.step_h * p.x_row))))
        v_item = b.add(b.mul(n, i64(p.v_img)), b.add(b.mul(cb, i64(p.v_cblk)), b.mul(th, i64(p.tiles_w * em.width))))

        def tile(t: ir.Value) -> None:
            x_t = b.add(x_row0, b.mul(t, i64(p.step_w * p.x_col)))
            vals = [em.load_vec(x, b.add(x_t, i64(i * p.x_row + j * p.x_col)))
                    for i in range(p.tile) for j in range(p.tile)]
            out = apply_stages(em, vals, p.stages)
            v_t = b.add(v_item, b.mul(t, i64(em.width)))
            for idx, val in enumerate(out):
                point, q = divmod(idx, p.pair)
                (em.store_vec_nt if nontemporal else em.store_vec)(
                    val, v, b.add(v_t, i64(point * p.v_point + q * p.c_blocks * p.v_cblk)))

        em.each(0, p.tiles_w, tile, name="tile")

    em.each_streaming(v, p.nontemporal, lo, hi, item)


@kernel("transform_output")
def emit_transform_output(em: Emitter, env: KernelEnv, p: OutputTransformParams) -> None:
    b = em.b
    m, y = env.ptr(p.m), env.ptr(p.y)
    lo, hi = em.thread_range(b.mul(env.batch, i64(p.k_blocks * p.tiles_h)))
    yb, yi, yk, yr, yc = p.y_addr
    rb, ri, rk, rr, rc = p.res_addr
    full_w, edge_w = divmod(p.ow, p.tile_w)
    ragged_rows = p.oh % p.tile_h

    def item(it: ir.Value) -> None:
        n, kb, th = em.digits(it, (p.k_blocks, p.tiles_h))
        m_item = b.add(b.mul(n, i64(p.m_img)), b.add(b.mul(kb, i64(p.m_kblk)), b.mul(th, i64(p.tiles_w * em.width))))
        oh0 = b.mul(th, i64(p.tile_h))
        y_item = b.add(b.add(i64(yb), b.mul(n, i64(yi))), b.add(b.mul(kb, i64(yk)), b.mul(oh0, i64(yr))))
        r_item = b.add(b.add(i64(rb), b.mul(n, i64(ri))), b.add(b.mul(kb, i64(rk)), b.mul(oh0, i64(rr))))
        bias = em.load_vec(env.ptr(p.bias), b.mul(kb, i64(em.width))) if p.bias is not None else None
        keep = None
        if p.zero_tail:  # padded lanes exactly 0 (see the direct kernel)
            mask_ty = ir.VectorType(ir.IntType(1), em.width)
            tail = ir.Constant(mask_ty, [ir.Constant(ir.IntType(1), int(i < p.zero_tail)) for i in range(em.width)])
            last = b.icmp_signed("==", kb, i64(p.k_blocks - 1))
            keep = b.select(last, tail, ir.Constant(mask_ty, [ir.Constant(ir.IntType(1), 1)] * em.width))

        def tile(t: ir.Value, cols: int) -> None:
            m_t = b.add(m_item, b.mul(t, i64(em.width)))
            vals = [em.load_vec(m, b.add(m_t, i64((idx // p.pair) * p.m_point + (idx % p.pair) * p.k_blocks *
                                                   p.m_kblk))) for idx in range(p.stages[0].n_in)]
            out = apply_stages(em, vals, p.stages)
            ow0 = b.mul(t, i64(p.tile_w))
            for i in range(p.tile_h):
                def row(i: int = i) -> None:
                    for j in range(cols):
                        val = out[i * p.tile_w + j]
                        if bias is not None:
                            val = b.fadd(val, bias)
                        for act in p.pre:
                            val = apply_act(em, val, act)
                        col = b.add(ow0, i64(j))
                        if p.res is not None:
                            val = b.fadd(val, em.load_vec(env.ptr(p.res), b.add(r_item, b.add(
                                i64(i * rr), b.mul(col, i64(rc))))))
                        for act in p.post:
                            val = apply_act(em, val, act)
                        if keep is not None:
                            val = b.select(keep, val, em.vconst(0.0))
                        em.store_vec(val, y, b.add(y_item, b.add(i64(i * yr), b.mul(col, i64(yc)))))

                if ragged_rows and i >= ragged_rows:
                    em.if_then(b.icmp_signed("<", b.add(oh0, i64(i)), i64(p.oh)), row)
                else:
                    row()

        em.each(0, full_w, lambda t: tile(t, p.tile_w), name="tile")
        if edge_w:
            tile(i64(full_w), edge_w)

    em.each(lo, hi, item, name="item")
