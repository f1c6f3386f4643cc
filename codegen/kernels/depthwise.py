"""Depthwise convolution (groups == channels, one filter per channel: MobileNet) on blocked layouts: every lane of a
vector is its own channel, so a tile of ``ur_w`` pixels needs no broadcasts, one FMA per tap and pixel, with the
epilogue activations applied before the store.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from cnncc.codegen.emit import Emitter, i64
from cnncc.codegen.kernels.activation import Act, apply_act
from cnncc.codegen.kernels.conv import bias_buffer
from cnncc.codegen.layout import Placed, padded_channels
from cnncc.codegen.lower import Lowering
from cnncc.codegen.module import KernelEnv, kernel
from cnncc.convalgo import conv_attrs
from cnncc.ir import Node
from cnncc.program import Buffer


@dataclass(frozen=True, eq=False)
class DepthwiseParams:
    x: Buffer
    w: Buffer
    bias: Buffer | None
    y: Buffer
    x_origin: int
    x_img: int
    x_cblk: int
    x_row: int
    x_col: int
    y_img: int
    y_cblk: int
    y_row: int
    y_col: int
    c_blocks: int
    out_h: int
    out_w: int
    r: int
    s: int
    sh: int
    sw: int
    dh: int
    dw: int
    ur_w: int
    pre: tuple[Act, ...] = ()


def lower_depthwise(lw: Lowering, node: Node, pre: tuple[Act, ...]) -> None:
    """Depthwise convolution (the baseline of depthwise layers), with the activations before the store."""
    a = conv_attrs(node)
    x = node.inputs[0]
    k, _, r, s = node.inputs[1].shape
    n, _, oh, ow = node.outputs[0].shape
    width = lw.width
    src: Placed = lw.blocked(x, node.layer, a.padding)
    out = lw.new_blocked((n, k, oh, ow), node.layer)
    cb = padded_channels(k, width) // width

    def pack(w: np.ndarray) -> np.ndarray:
        packed = np.zeros((cb * width, r, s), np.result_type(w.dtype, np.float32))
        packed[:k] = w[:, 0]
        return np.ascontiguousarray(packed.reshape(cb, width, r, s).transpose(0, 2, 3, 1))
    t, _, l, _ = a.padding
    xa, ya = src.addr, out.addr
    params = DepthwiseParams(
        x=src.buffer, w=lw.packed(node.inputs[1], pack, f"{node.layer}.weight", node.layer),
        bias=bias_buffer(lw, node, k), y=out.buffer,
        x_origin=xa.base - t * xa.row - l * xa.col, x_img=xa.img, x_cblk=xa.cblk, x_row=xa.row, x_col=xa.col,
        y_img=ya.img, y_cblk=ya.cblk, y_row=ya.row, y_col=ya.col, c_blocks=cb, out_h=oh, out_w=ow, r=r, s=s,
        sh=a.stride[0], sw=a.stride[1], dh=a.dilation[0], dw=a.dilation[1], ur_w=min(8, ow), pre=pre)
    macs = n * k * oh * ow * r * s
    lw.call("conv_depthwise", params, (src.buffer, params.w) + ((params.bias,) if params.bias else ()),
            (out.buffer,), node.layer, parallel=macs > 100_000, macs=macs)
    lw.placed[node.outputs[0]] = out


@kernel("conv_depthwise")
def emit_depthwise(em: Emitter, env: KernelEnv, p: DepthwiseParams) -> None:
    b = em.b
    lo, hi = em.thread_range(b.mul(env.batch, i64(p.c_blocks * p.out_h)))
    x, w, y = env.ptr(p.x), env.ptr(p.w), env.ptr(p.y)

    def tile(ur: int, x_row: ir.Value, w_blk: ir.Value, y_row: ir.Value, bias: ir.Value | None,
             ow0: ir.Value) -> None:
        x_t = b.add(x_row, b.mul(ow0, i64(p.sw * p.x_col)))

        def over_kh(kh: ir.Value, accs: list[ir.Value]) -> list[ir.Value]:
            def over_kw(kw: ir.Value, accs: list[ir.Value]) -> list[ir.Value]:
                wv = em.load_vec(w, b.add(w_blk, b.mul(b.add(b.mul(kh, i64(p.s)), kw), i64(em.width))))
                base = b.add(b.add(x_t, b.mul(kh, i64(p.dh * p.x_row))), b.mul(kw, i64(p.dw * p.x_col)))
                return [em.fma(em.load_vec(x, b.add(base, i64(px * p.sw * p.x_col))), wv, accs[px])
                        for px in range(ur)]

            return em.loop(0, p.s, over_kw, accs, name="kw")

        accs = em.loop(0, p.r, over_kh, [em.vconst(0.0)] * ur, name="kh")
        for px in range(ur):
            v = accs[px] if bias is None else b.fadd(accs[px], bias)
            for act in p.pre:
                v = apply_act(em, v, act)
            em.store_vec(v, y, b.add(y_row, b.mul(b.add(ow0, i64(px)), i64(p.y_col))))

    def item(it: ir.Value) -> None:
        n, cblk, oh = em.digits(it, (p.c_blocks, p.out_h))
        x_row = b.add(b.add(i64(p.x_origin), b.mul(n, i64(p.x_img))),
                      b.add(b.mul(cblk, i64(p.x_cblk)), b.mul(oh, i64(p.sh * p.x_row))))
        y_row = b.add(b.add(b.mul(n, i64(p.y_img)), b.mul(cblk, i64(p.y_cblk))), b.mul(oh, i64(p.y_row)))
        w_blk = b.mul(cblk, i64(p.r * p.s * em.width))
        bias = em.load_vec(env.ptr(p.bias), b.mul(cblk, i64(em.width))) if p.bias is not None else None
        full = p.out_w // p.ur_w
        em.each(0, full, lambda t: tile(p.ur_w, x_row, w_blk, y_row, bias, b.mul(t, i64(p.ur_w))), name="tile")
        for ow in range(full * p.ur_w, p.out_w):
            tile(1, x_row, w_blk, y_row, bias, i64(ow))

    em.each(lo, hi, item, name="item")
