"""im2col + GEMM: copy every output pixel's receptive field into a column of a patch matrix, then multiply by the
weights with the blocked GEMM (the direct kernel as a 1x1 convolution over the patches, with the full epilogue).

The patch matrix is itself channel-blocked, ``P[image][block][oh][ow][W]``, so the GEMM reads it exactly like a
blocked activation. Its rows (the reduction index) are ordered for cheap copies:

* from a blocked input (C >= W): (r, s, channel) with channels padded to W, so each W-row block is one vector load
  of the input at pixel (oh*sh + r*dh, ow*sw + s*dw) -- a pure vector copy;
* from a plain input (C < W, e.g. an RGB stem): (channel, r, s), gathered lane by lane, so the C*R*S reduction is
  padded to a multiple of W only once (147 -> 160 for a 7x7 RGB stem) instead of per channel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from cnncc.codegen.emit import F32, I32, Emitter, i64
from cnncc.codegen.kernels.activation import Act
from cnncc.codegen.kernels.conv import ConvParams, ConvSchedule, bias_buffer, choose_schedule, pack_weights
from cnncc.codegen.layout import padded_channels
from cnncc.codegen.lower import Lowering
from cnncc.codegen.module import KernelEnv, kernel
from cnncc.convalgo import conv_attrs
from cnncc.ir import Node, Value
from cnncc.program import Buffer


@dataclass(frozen=True, eq=False)
class Im2colParams:
    x: Buffer
    col: Buffer
    vector: bool
    x_origin: int
    x_img: int
    x_chan: int  # blocked: floats per channel block; plain: per channel
    x_row: int
    x_col: int
    c: int
    c_blocks: int
    r: int
    s: int
    sh: int
    sw: int
    dh: int
    dw: int
    oh: int
    ow: int
    col_blocks: int


def patch_rows(c: int, r: int, s: int, width: int) -> int:
    """Rows of the patch matrix (the GEMM's reduction): (r, s, padded channels) from a blocked input, (c, r, s)
    padded once to the vector width from a plain one."""
    return r * s * padded_channels(c, width) if c >= width else padded_channels(c * r * s, width)


def lower_im2col(lw: Lowering, node: Node, pre: tuple[Act, ...], residual: Value | None,
                 post: tuple[Act, ...]) -> None:
    a = conv_attrs(node)
    x = node.inputs[0]
    k, c, r, s = node.inputs[1].shape
    n, _, oh, ow = node.outputs[0].shape
    width = lw.width
    vector = c >= width
    src = lw.blocked(x, node.layer, a.padding) if vector else lw.plain(x, node.layer, a.padding)
    cb = padded_channels(c, width) // width
    rows = patch_rows(c, r, s, width)
    col_blocks = rows // width
    col = lw.arena(col_blocks * oh * ow * width, f"{node.layer}.patches")
    xa = src.addr
    t, _, l, _ = a.padding
    lw.call("im2col", Im2colParams(
        src.buffer, col, vector, x_origin=xa.base - t * xa.row - l * xa.col, x_img=xa.img,
        x_chan=xa.cblk if vector else xa.ci, x_row=xa.row, x_col=xa.col, c=c, c_blocks=cb, r=r, s=s,
        sh=a.stride[0], sw=a.stride[1], dh=a.dilation[0], dw=a.dilation[1], oh=oh, ow=ow, col_blocks=col_blocks),
        (src.buffer,), (col,), node.layer, parallel=True)
    k_blocks = padded_channels(k, width) // width
    sched = choose_schedule(width, k_blocks, ow, 1)

    def pack(w: np.ndarray) -> np.ndarray:
        if vector:
            wcols = np.zeros((k, r, s, cb * width), w.dtype)
            wcols[..., :c] = w.transpose(0, 2, 3, 1)
        else:
            wcols = np.zeros((k, rows), w.dtype)
            wcols[:, :c * r * s] = w.reshape(k, -1)
        return pack_weights(wcols.reshape(k, rows, 1, 1), k_blocks, sched.ocb, width, col_blocks, width)
    out = lw.new_blocked((n, k, oh, ow), node.layer)
    res = lw.blocked(residual, node.layer) if residual is not None else None
    ya = out.addr
    wbuf = lw.packed(node.inputs[1], pack, f"{node.layer}.weight.im2col", node.layer)
    params = ConvParams(
        x=col, w=wbuf, bias=bias_buffer(lw, node, k), y=out.buffer, pre=pre, post=post,
        res=res.buffer if res else None,
        res_strides=(res.addr.base, res.addr.img, res.addr.cblk, res.addr.row, res.addr.col) if res else (0,) * 5,
        x_origin=0, x_img=col_blocks * oh * ow * width, x_cblk=oh * ow * width, x_row=ow * width, x_col=width,
        in_cb=width, in_blocks=col_blocks, grp_in_blocks=0, blocks_per_group=k_blocks, y_base=ya.base, y_img=ya.img,
        y_kblk=ya.cblk, y_row=ya.row, y_col=ya.col, out_h=oh, out_w=ow, k_blocks=k_blocks, k_tail=0, r=1, s=1, sh=1,
        sw=1, dh=1, dw=1, sched=ConvSchedule(sched.ur_w, sched.ocb, sched.unroll, sched.split_rows),
        zero_tail=k % width)
    reads = (col, wbuf) + ((params.bias,) if params.bias else ()) + ((res.buffer,) if res else ())
    lw.call("conv_direct", params, reads, (out.buffer,), node.layer, parallel=True,
            macs=n * k * oh * ow * c * r * s)
    lw.placed[node.outputs[0]] = out


@kernel("im2col")
def emit_im2col(em: Emitter, env: KernelEnv, p: Im2colParams) -> None:
    b = em.b
    x, col = env.ptr(p.x), env.ptr(p.col)
    blk = p.oh * p.ow * em.width
    if p.vector:  # items (image, patch block, output row)
        lo, hi = em.thread_range(b.mul(env.batch, i64(p.col_blocks * p.oh)))

        def item(it: ir.Value) -> None:
            n, r, s, cblk, oh = em.digits(it, (p.r, p.s, p.c_blocks, p.oh))  # block j = (r*S + s)*Cb + cblk
            j = b.add(b.mul(b.add(b.mul(r, i64(p.s)), s), i64(p.c_blocks)), cblk)
            src = b.add(b.add(i64(p.x_origin), b.mul(n, i64(p.x_img))), b.add(
                b.mul(cblk, i64(p.x_chan)), b.add(b.mul(b.add(b.mul(oh, i64(p.sh)), b.mul(r, i64(p.dh))),
                                                        i64(p.x_row)), b.mul(s, i64(p.dw * p.x_col)))))
            dst = b.add(b.mul(n, i64(p.col_blocks * blk)), b.add(b.mul(j, i64(blk)), b.mul(oh, i64(p.ow * em.width))))
            em.each(0, p.ow, lambda ow: em.store_vec(
                em.load_vec(x, b.add(src, b.mul(ow, i64(p.sw * p.x_col)))), col,
                b.add(dst, b.mul(ow, i64(em.width)))), name="ow")

        em.each(lo, hi, item, name="item")
        return
    # plain source: items (image, output row); every lane's (channel, r, s) is a compile-time constant
    lo, hi = em.thread_range(b.mul(env.batch, i64(p.oh)))

    def row(it: ir.Value) -> None:
        oh, n = b.urem(it, i64(p.oh)), b.udiv(it, i64(p.oh))
        src = b.add(b.add(i64(p.x_origin), b.mul(n, i64(p.x_img))), b.mul(oh, i64(p.sh * p.x_row)))
        dst = b.add(b.mul(n, i64(p.col_blocks * blk)), b.mul(oh, i64(p.ow * em.width)))

        def pixel(ow: ir.Value) -> None:
            px = b.add(src, b.mul(ow, i64(p.sw * p.x_col)))
            for j in range(p.col_blocks):
                vec = em.vconst(0.0)
                for lane in range(em.width):
                    idx = j * em.width + lane
                    if idx >= p.c * p.r * p.s:
                        break
                    ch, rs = divmod(idx, p.r * p.s)
                    r, s = divmod(rs, p.s)
                    off = ch * p.x_chan + r * p.dh * p.x_row + s * p.dw * p.x_col
                    vec = b.insert_element(vec, em.load(x, b.add(px, i64(off)), F32), ir.Constant(I32, lane))
                em.store_vec(vec, col, b.add(dst, b.add(i64(j * blk), b.mul(ow, i64(em.width)))))

        em.each(0, p.ow, pixel, name="ow")

    em.each(lo, hi, row, name="item")
