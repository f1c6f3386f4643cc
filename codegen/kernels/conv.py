"""Direct convolution on channel-blocked layouts, with its register-tile schedule; also ``linear`` (a 1x1
convolution whose pixels are the batch rows) and depthwise convolution.

Register tile (PERFORMANCE.md, measured on this CPU): ``ur_w`` output pixels x ``ocb`` blocks of W output channels
held as vector accumulators (phi values). Loops, outermost first: work item (image, output-channel group, output row)
split over threads -> pixel tile -> input-channel block -> kh -> kw -> input channels; only the innermost channels
are straight-line: load the ``ocb`` weight vectors, then for each pixel one broadcast and ``ocb`` FMAs. kw is never
unrolled (LLVM then merges broadcasts across kw and spills). The epilogue (bias, activation) works on the
accumulators before the store.

Weights are packed at compile time as (K/(W*ocb), input blocks, R, S, input channels per block, ocb, W), so a tile
reads one contiguous stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from cnncc.codegen.emit import Emitter, i64
from cnncc.codegen.kernels.activation import Act, act_from_node, apply_act
from cnncc.codegen.layout import padded_channels
from cnncc.codegen.lower import Lowering, Unsupported, lowering
from cnncc.codegen.module import KernelEnv, kernel
from cnncc.convalgo import ConvImpl, conv_attrs, impl_of
from cnncc.ir import Node, Value
from cnncc.program import Buffer


@dataclass(frozen=True)
class ConvSchedule:
    """The parameters tuning searches: register tile, inner unroll, and how work items are split over threads
    (``split_rows``: bands of output rows, so each thread reads the rows its producer wrote; otherwise ranges of
    output-channel groups, so each thread reads only its share of the weights)."""

    ur_w: int
    ocb: int
    unroll: int
    split_rows: bool = True


@dataclass(frozen=True, eq=False)
class ConvParams:
    x: Buffer
    w: Buffer
    bias: Buffer | None
    y: Buffer
    x_origin: int  # float offset of the padded plane's (0, 0)
    x_img: int
    x_cblk: int
    x_row: int
    x_col: int
    in_cb: int
    in_blocks: int  # input channel blocks read per output group
    grp_in_blocks: int  # input block offset from one group to the next (0 without groups)
    blocks_per_group: int
    y_base: int
    y_img: int
    y_kblk: int
    y_row: int
    y_col: int
    out_h: int
    out_w: int  # 0: the pixels are the batch rows (linear)
    k_blocks: int
    k_tail: int  # valid lanes of the last output block when the output is plain and K % W != 0
    r: int
    s: int
    sh: int
    sw: int
    dh: int
    dw: int
    sched: ConvSchedule
    pre: tuple[Act, ...] = ()  # epilogue activations before the residual add
    res: Buffer | None = None  # residual operand, same geometry as the output
    res_strides: tuple[int, int, int, int, int] = (0, 0, 0, 0, 0)  # base, img, kblk, row, col
    post: tuple[Act, ...] = ()  # epilogue activations after the residual add
    zero_tail: int = 0  # blocked output with K % W != 0: real lanes of the last block (the rest are forced to 0)
    img_mult: int = 1  # images per batch element (a transform-domain GEMM runs one image per point)
    w_img: int = 0  # weight floats from one of those images to the next (each point has its own matrix)
    nontemporal: bool = False  # streaming stores of whole output vectors (when y is 64-byte aligned at run time)


def choose_schedule(width: int, k_blocks: int, out_w: int, taps: int, weights_dominate: bool = False) -> ConvSchedule:
    """Register tile for ``width``-lane vectors: up to ~28 accumulators of 32 registers (AVX-512), ~12 of 16.

    Two output blocks per tile: with one every FMA carries its own broadcast, with four the tile spills.
    Straight-line input channels: 16 when the kernel has several taps (kh x kw); for 1x1 kernels only 2, because
    LLVM hoists every load of a longer block to its top and spills (measured on znver4 for ResNet's 1x1 layers:
    unroll 16 gave 33-48% of peak with 254 zmm spills, unroll 2-4 gave 93-104%).
    Threads split rows unless the weights outweigh the activations (ResNet-18's layer4: 1.81x on two threads with
    rows, 1.9-1.96x with channel groups; layers 1-3: 1.84-1.95x with channel groups, 1.93-2.05x with rows).
    """
    ocb = 2 if k_blocks % 2 == 0 else 1
    if width >= 16:
        ur = 14 if ocb == 1 else 7
    else:
        ur = 6 if ocb == 1 else 4
    if out_w:
        # Prefer a tile that divides the row, so no tail tiles run; a 1x1 kernel (the GEMM of im2col, Winograd and
        # FFT) may take one more pixel (8 x 2 blocks: 16 accumulators, no spills with its 2-channel inner block),
        # which turns a 16-tile row from 4 x 2 (~65% of peak) into 8 x 2.
        widest = ur + 1 if taps == 1 and ocb == 2 and width >= 16 else ur
        ur = min(ur, out_w)
        for cand in range(min(widest, out_w), max(ur // 2, 1) - 1, -1):
            if out_w % cand == 0:
                ur = cand
                break
    return ConvSchedule(ur_w=max(ur, 1), ocb=ocb, unroll=min(16, width) if taps > 1 else 2,
                        split_rows=not weights_dominate)


def direct_schedule(width: int, k_blocks: int, out_w: int, taps: int, impl: ConvImpl,
                    weights_dominate: bool = False) -> ConvSchedule:
    """:func:`choose_schedule`, with the register tile a hand-set or tuned ``impl`` names (if its blocks divide)."""
    sched = choose_schedule(width, k_blocks, out_w, taps, weights_dominate)
    if impl.ur_w and impl.ocb and k_blocks % impl.ocb == 0:
        sched = ConvSchedule(min(impl.ur_w, out_w), impl.ocb, sched.unroll, sched.split_rows)
    return sched


def pack_weights(w: np.ndarray, k_blocks: int, ocb: int, width: int, in_blocks: int, in_cb: int) -> np.ndarray:
    """(K, Cg, R, S) -> (K/(W*ocb), in_blocks, R, S, in_cb, ocb, W), zero-padded (float64 stays float64, so
    :meth:`Lowering.packed` can run it on indices)."""
    k, cg, r, s = w.shape
    full = np.zeros((k_blocks * width, in_blocks * in_cb, r, s), np.result_type(w.dtype, np.float32))
    full[:k, :cg] = w
    t = full.reshape(k_blocks // ocb, ocb, width, in_blocks, in_cb, r, s)
    return np.ascontiguousarray(t.transpose(0, 3, 5, 6, 4, 1, 2))


def bias_buffer(lw: Lowering, node: Node, k: int) -> Buffer | None:
    if len(node.inputs) < 3:
        return None
    return packed_bias(lw, node.inputs[2], node.layer, k)


def packed_bias(lw: Lowering, bias: Value, layer: str, k: int) -> Buffer:
    """The bias padded to whole vector blocks (any conv-like kernel's epilogue reads it per block)."""

    def pad(v: np.ndarray) -> np.ndarray:
        return np.concatenate([v, np.zeros(padded_channels(k, lw.width) - k, v.dtype)])

    return lw.packed(bias, pad, f"{layer}.bias", layer)


def split_epilogue(node: Node) -> tuple[tuple[Act, ...], Value | None, tuple[Act, ...]]:
    """(activations before the residual add, the residual, activations after it) of a fused node."""
    if node.op not in ("fused_conv2d", "fused_linear"):
        return (), None, ()
    pre: list[Act] = []
    post: list[Act] = []
    residual = None
    extras = iter(node.inputs[3:])
    for step in node.attrs.epilogue:
        if step.op == "add":
            if residual is not None:
                raise Unsupported(f"layer '{node.layer}': more than one residual add in an epilogue")
            residual = next(extras)
        else:
            (post if residual is not None else pre).append(act_from_node(step.op, step.attrs))
    return tuple(pre), residual, tuple(post)


def lower_direct(lw: Lowering, node: Node, pre: tuple[Act, ...], residual: Value | None,
                 post: tuple[Act, ...]) -> None:
    """The direct kernel (the baseline: every layer but depthwise ones), with the register tile a hand-set or
    tuned ``impl`` names; a grouped layer whose groups are not whole vector blocks runs block-diagonal."""
    a = conv_attrs(node)
    x, wv = node.inputs[0], node.inputs[1]
    k, cg, r, s = wv.shape
    c = x.shape[1]
    impl = impl_of(node) or ConvImpl()
    width = lw.width
    dense = a.groups > 1 and bool(cg % width or (k // a.groups) % width)
    if dense:  # block-diagonal: correct for any grouping, g times the work
        groups, cg = 1, c
    else:
        groups = a.groups
    n, _, oh, ow = node.outputs[0].shape
    plain_in = groups == 1 and c < width
    src = lw.plain(x, node.layer, a.padding) if plain_in else lw.blocked(x, node.layer, a.padding)
    in_cb = 1 if plain_in else width
    in_blocks = cg if plain_in else padded_channels(cg, width) // width
    k_blocks = padded_channels(k, width) // width
    weights_dominate = k * cg * r * s > x.type.size + node.outputs[0].type.size
    sched = direct_schedule(width, k_blocks if groups == 1 else k // groups // width, ow, r * s, impl, weights_dominate)
    out = lw.new_blocked((n, k, oh, ow), node.layer)

    def pack(w: np.ndarray) -> np.ndarray:
        w = _dense_from_groups(w, a.groups, c) if dense else w
        return pack_weights(w, k_blocks, sched.ocb, width, in_blocks, in_cb)

    t, _, l, _ = a.padding
    xa, ya = src.addr, out.addr
    res = lw.blocked(residual, node.layer) if residual is not None else None
    params = ConvParams(
        x=src.buffer, w=lw.packed(wv, pack, f"{node.layer}.weight", node.layer), bias=bias_buffer(lw, node, k),
        y=out.buffer, pre=pre, post=post, res=res.buffer if res else None,
        res_strides=(res.addr.base, res.addr.img, res.addr.cblk, res.addr.row, res.addr.col) if res else (0,) * 5,
        x_origin=xa.base - t * xa.row - l * xa.col, x_img=xa.img, x_cblk=xa.ci if plain_in else xa.cblk,
        x_row=xa.row, x_col=xa.col, in_cb=in_cb, in_blocks=in_blocks,
        grp_in_blocks=in_blocks if groups > 1 else 0, blocks_per_group=k_blocks // groups,
        y_base=ya.base, y_img=ya.img, y_kblk=ya.cblk, y_row=ya.row, y_col=ya.col, out_h=oh, out_w=ow,
        k_blocks=k_blocks, k_tail=0, r=r, s=s, sh=a.stride[0], sw=a.stride[1], dh=a.dilation[0], dw=a.dilation[1],
        sched=sched, zero_tail=k % width)
    macs = n * k * oh * ow * (c // a.groups) * r * s  # the model's work, not the block-diagonal fallback's
    reads = (src.buffer, params.w) + ((params.bias,) if params.bias else ()) + ((res.buffer,) if res else ())
    lw.call("conv_direct", params, reads, (out.buffer,), node.layer, parallel=macs > 200_000, macs=macs)
    lw.placed[node.outputs[0]] = out


def _dense_from_groups(w: np.ndarray, groups: int, c: int) -> np.ndarray:
    k, cg, r, s = w.shape
    kg = k // groups
    dense = np.zeros((k, c, r, s), w.dtype)
    for g in range(groups):
        dense[g * kg:(g + 1) * kg, g * cg:(g + 1) * cg] = w[g * kg:(g + 1) * kg]
    return dense


@lowering("linear", "fused_linear")
def lower_linear(lw: Lowering, node: Node) -> None:
    pre, residual, post = split_epilogue(node)
    if residual is not None or post:
        raise Unsupported(f"layer '{node.layer}': residual adds are not fused into linear layers")
    x = node.inputs[0]
    k, f = node.inputs[1].shape
    width = lw.width
    src = lw.plain(x, node.layer)
    out = lw.new_plain((x.shape[0], k, 1, 1), node.layer)
    k_blocks = padded_channels(k, width) // width
    ocb = next(o for o in (4, 3, 2, 1) if k_blocks % o == 0)
    ur = 4 if width >= 16 else 2
    sched = ConvSchedule(ur_w=ur, ocb=ocb, unroll=16)
    wbuf = lw.packed(node.inputs[1], lambda w: pack_weights(w.reshape(k, f, 1, 1), k_blocks, ocb, width, 1, f),
                     f"{node.layer}.weight", node.layer)
    params = ConvParams(
        x=src.buffer, w=wbuf, bias=bias_buffer(lw, node, k), y=out.buffer,
        x_origin=0, x_img=0, x_cblk=0, x_row=0, x_col=f, in_cb=f, in_blocks=1, grp_in_blocks=0,
        blocks_per_group=k_blocks, y_base=0, y_img=0, y_kblk=width, y_row=0, y_col=k, out_h=1, out_w=0,
        k_blocks=k_blocks, k_tail=k % width, r=1, s=1, sh=1, sw=1, dh=1, dw=1, sched=sched, pre=pre)
    macs = x.shape[0] * k * f
    lw.call("conv_direct", params, (src.buffer, params.w) + ((params.bias,) if params.bias else ()), (out.buffer,),
            node.layer, parallel=macs > 200_000, macs=macs)
    lw.placed[node.outputs[0]] = out


# -- direct kernel ------------------------------------------------------------------------------------------------


class _Tile:
    """Emits one register tile of ``ur`` pixels for a conv work item."""

    def __init__(self, em: Emitter, p: ConvParams, x: ir.Value, w: ir.Value, x_item: ir.Value, w_item: ir.Value):
        self.em, self.p, self.x, self.w, self.x_item, self.w_item = em, p, x, w, x_item, w_item

    def accumulate(self, ur: int, ow0: ir.Value) -> list[ir.Value]:
        em, p = self.em, self.p
        b = em.b
        zero = em.vconst(0.0)
        x_tile = b.add(self.x_item, b.mul(ow0, i64(p.sw * p.x_col)))
        vec_w = p.sched.ocb * em.width

        def over_blocks(cblk: ir.Value, accs: list[ir.Value]) -> list[ir.Value]:
            x_blk = b.add(x_tile, b.mul(cblk, i64(p.x_cblk)))
            w_blk = b.add(self.w_item, b.mul(cblk, i64(p.r * p.s * p.in_cb * vec_w)))

            def over_kh(kh: ir.Value, accs: list[ir.Value]) -> list[ir.Value]:
                x_kh = b.add(x_blk, b.mul(kh, i64(p.dh * p.x_row)))
                w_kh = b.add(w_blk, b.mul(kh, i64(p.s * p.in_cb * vec_w)))

                def over_kw(kw: ir.Value, accs: list[ir.Value]) -> list[ir.Value]:
                    x_kw = b.add(x_kh, b.mul(kw, i64(p.dw * p.x_col)))
                    w_kw = b.add(w_kh, b.mul(kw, i64(p.in_cb * vec_w)))
                    return self.channels(ur, x_kw, w_kw, accs)

                return em.loop(0, p.s, over_kw, accs, name="kw")

            return em.loop(0, p.r, over_kh, accs, name="kh")

        return em.loop(0, p.in_blocks, over_blocks, [zero] * (ur * p.sched.ocb), name="cblk")

    def channels(self, ur: int, x_off: ir.Value, w_off: ir.Value, accs: list[ir.Value]) -> list[ir.Value]:
        em, p = self.em, self.p
        b = em.b
        u = min(p.sched.unroll, p.in_cb)
        chunks, tail = divmod(p.in_cb, u)

        def chunk(ic0: ir.Value, accs: list[ir.Value], count: int) -> list[ir.Value]:
            accs = list(accs)
            for d in range(count):
                ic = b.add(ic0, i64(d))
                w_ic = b.add(w_off, b.mul(ic, i64(p.sched.ocb * em.width)))
                wvs = [em.load_vec(self.w, b.add(w_ic, i64(j * em.width))) for j in range(p.sched.ocb)]
                for px in range(ur):
                    xs = em.load(self.x, b.add(b.add(x_off, ic), i64(px * p.sw * p.x_col)))
                    xb = em.splat(xs)
                    for j in range(p.sched.ocb):
                        accs[px * p.sched.ocb + j] = em.fma(xb, wvs[j], accs[px * p.sched.ocb + j])
            return accs

        if chunks == 1:
            accs = chunk(i64(0), accs, u)
        elif chunks > 1:
            accs = em.loop(0, chunks, lambda c, a: chunk(b.mul(c, i64(u)), a, u), accs, name="ic")
        if tail:
            accs = chunk(i64(chunks * u), accs, tail)
        return accs


def _epilogue(em: Emitter, env: KernelEnv, p: ConvParams, accs: list[ir.Value], ur: int, y_item: ir.Value,
              ow0: ir.Value, kg: ir.Value, r_item: ir.Value, nontemporal: bool = False) -> None:
    b = em.b
    y = env.ptr(p.y)
    last_group = b.icmp_signed("==", kg, i64(p.k_blocks // p.sched.ocb - 1))
    keep = None
    if p.zero_tail:  # padded lanes must be exactly 0: with an inf input they would hold 0*inf = NaN
        mask_ty = ir.VectorType(ir.IntType(1), em.width)
        tail = ir.Constant(mask_ty, [ir.Constant(ir.IntType(1), int(i < p.zero_tail)) for i in range(em.width)])
        keep = b.select(last_group, tail, ir.Constant(mask_ty, [ir.Constant(ir.IntType(1), 1)] * em.width))
    for j in range(p.sched.ocb):
        bias = None
        if p.bias is not None:
            kblk = b.add(b.mul(kg, i64(p.sched.ocb)), i64(j))
            bias = em.load_vec(env.ptr(p.bias), b.mul(kblk, i64(em.width)))
        for px in range(ur):
            v = accs[px * p.sched.ocb + j]
            if bias is not None:
                v = b.fadd(v, bias)
            for act in p.pre:
                v = apply_act(em, v, act)
            if p.res is not None:
                v = b.fadd(v, em.load_vec(env.ptr(p.res), b.add(r_item, b.add(i64(j * p.res_strides[2]),
                                                                              b.mul(b.add(ow0, i64(px)),
                                                                                    i64(p.res_strides[4]))))))
            for act in p.post:
                v = apply_act(em, v, act)
            if keep is not None and j == p.sched.ocb - 1:
                v = b.select(keep, v, em.vconst(0.0))
            off = b.add(b.add(y_item, i64(j * p.y_kblk)), b.mul(b.add(ow0, i64(px)), i64(p.y_col)))
            if p.k_tail and j == p.sched.ocb - 1:
                with b.if_else(last_group) as (then, otherwise):
                    with then:
                        em.masked_store(v, y, off, p.k_tail)
                    with otherwise:
                        em.store_vec(v, y, off)
            elif nontemporal:
                em.store_vec_nt(v, y, off)
            else:
                em.store_vec(v, y, off)


@kernel("conv_direct")
def emit_conv_direct(em: Emitter, env: KernelEnv, p: ConvParams) -> None:
    b = em.b
    kgroups = p.k_blocks // p.sched.ocb
    images = i64(1) if p.out_w == 0 else b.mul(env.batch, i64(p.img_mult))
    out_w = env.batch if p.out_w == 0 else i64(p.out_w)
    lo, hi = em.thread_range(b.mul(images, i64(kgroups * p.out_h)))
    x, w = env.ptr(p.x), env.ptr(p.w)

    def item(it: ir.Value, nt: bool) -> None:
        if p.img_mult > 1 and p.out_w:
            # Transform-domain GEMMs: items run (point, group, row, batch element), so the images that share a
            # point's weights run one after the other and read its panel from cache; in (image, group) order each
            # image streamed its point's whole matrix (ResNet-18 layer4 at batch 8: 1 MiB per point for 4 tiles,
            # the 36 points' 38 MB read 8 times from memory).
            bi = b.urem(it, env.batch)
            rest = b.udiv(it, env.batch)
            oh = b.urem(rest, i64(p.out_h))
            rest = b.udiv(rest, i64(p.out_h))
            kg, pt = b.urem(rest, i64(kgroups)), b.udiv(rest, i64(kgroups))
            n = b.add(b.mul(bi, i64(p.img_mult)), pt)
        elif p.sched.split_rows:  # items run (image, row, group): a thread's share is a band of rows
            kg = b.urem(it, i64(kgroups))
            rest = b.udiv(it, i64(kgroups))
            oh, n = b.urem(rest, i64(p.out_h)), b.udiv(rest, i64(p.out_h))
        else:  # items run (image, group, row): a thread's share is a range of output channels
            oh = b.urem(it, i64(p.out_h))
            rest = b.udiv(it, i64(p.out_h))
            kg, n = b.urem(rest, i64(kgroups)), b.udiv(rest, i64(kgroups))
        group = b.udiv(b.mul(kg, i64(p.sched.ocb)), i64(p.blocks_per_group))
        x_item = b.add(b.add(i64(p.x_origin), b.mul(n, i64(p.x_img))),
                       b.add(b.mul(group, i64(p.grp_in_blocks * p.x_cblk)), b.mul(oh, i64(p.sh * p.x_row))))
        w_item = b.mul(kg, i64(p.in_blocks * p.r * p.s * p.in_cb * p.sched.ocb * em.width))
        if p.img_mult > 1:
            w_item = b.add(w_item, b.mul(b.urem(n, i64(p.img_mult)), i64(p.w_img)))
        y_item = b.add(b.add(i64(p.y_base), b.mul(n, i64(p.y_img))),
                       b.add(b.mul(kg, i64(p.sched.ocb * p.y_kblk)), b.mul(oh, i64(p.y_row))))
        rb, ri, rk, rr, _ = p.res_strides
        r_item = b.add(b.add(i64(rb), b.mul(n, i64(ri))), b.add(b.mul(kg, i64(p.sched.ocb * rk)), b.mul(oh, i64(rr))))
        tile = _Tile(em, p, x, w, x_item, w_item)
        ur = p.sched.ur_w
        full = b.udiv(out_w, i64(ur))

        def main(t: ir.Value) -> None:
            ow0 = b.mul(t, i64(ur))
            _epilogue(em, env, p, tile.accumulate(ur, ow0), ur, y_item, ow0, kg, r_item, nt)

        em.each(0, full, main, name="tile")
        if p.out_w and p.out_w % ur:  # one narrower tile for the rest of the row (13 = 7 + 6, not 7 + 6 x 1)
            rest, ow0 = p.out_w % ur, i64(p.out_w - p.out_w % ur)
            _epilogue(em, env, p, tile.accumulate(rest, ow0), rest, y_item, ow0, kg, r_item, nt)
        elif ur > 1 and p.out_w == 0:  # batch rows (linear): the count is known at run time only
            em.each(b.mul(full, i64(ur)), out_w,
                    lambda ow0: _epilogue(em, env, p, tile.accumulate(1, ow0), 1, y_item, ow0, kg, r_item),
                    name="tail")

    em.each_streaming(env.ptr(p.y), p.nontemporal, lo, hi, item)
