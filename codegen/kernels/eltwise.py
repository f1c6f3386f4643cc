"""Elementwise kernels: activations, inference batch norm as a per-channel affine map, add and multiply with
broadcasting, PReLU; and the ops that only change how memory is seen (flatten, reshape, transpose; inference
dropout is a view too, in dropout.py).

Every kernel walks (image, channel block or row, pixel) with vectors of W lanes; a broadcast operand is the same walk
with zero strides on its broadcast axes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from cnncc.codegen.emit import Emitter, i64
from cnncc.codegen.kernels.activation import ACTIVATION_OPS, Act, act_derivative, act_from_node, apply_act
from cnncc.codegen.layout import Addr, Placed, dims4, padded_channels
from cnncc.codegen.lower import Lowering, Unsupported, lowering
from cnncc.codegen.module import KernelEnv, kernel
from cnncc.ir import Node, ValueKind
from cnncc.program import Buffer


@dataclass(frozen=True, eq=False)
class Operand:
    """A vector stream: element block (n, j, p) at base + n*img + j*blk + p*pix (floats); strides 0 broadcast.
    ``splat``: one float per image (a scalar, e.g. a loss), broadcast to every lane."""

    buf: Buffer
    base: int
    img: int
    blk: int
    pix: int
    splat: bool = False


@dataclass(frozen=True, eq=False)
class EltwiseParams:
    """y = f(a [, b]) over ``blocks`` x ``pixels`` vectors per image (plain tensors: one block of contiguous data,
    with a masked tail of ``tail`` lanes)."""

    kind: str  # "act", "act_grad" (b * act'(a)), "add", "mul", "affine" (a*b + c), "prelu"
    out: Operand
    a: Operand
    b: Operand | None
    c: Operand | None
    blocks: int
    pixels: int
    tail: int
    act: Act = Act()


def _stream(p: Placed) -> Operand:
    return Operand(p.buffer, p.addr.base, p.addr.img, p.addr.cblk, p.addr.col)



def _like(lw: Lowering, src: Placed, node: Node) -> Placed:
    dims = dims4(node.outputs[0].shape)
    return lw.new_blocked(dims, node.layer) if src.blocked else lw.new_plain(dims, node.layer)


def _geometry(lw: Lowering, src: Placed) -> tuple[int, int, int]:
    """(blocks, pixels, tail) of the walk over ``src``'s placement."""
    n, c, h, w = src.dims
    if src.blocked:
        return padded_channels(c, lw.width) // lw.width, h * w, 0
    floats = c * h * w
    return 1, floats // lw.width, floats % lw.width


def _src(lw: Lowering, node: Node, index: int = 0) -> Placed:
    p = lw.get(node.inputs[index], node.layer)
    if p.blocked and p.halo == (0, 0, 0, 0):
        return p
    return lw.plain(node.inputs[index], node.layer)


def _operand(p: Placed, blocked: bool, width: int) -> Operand:
    return _stream(p) if blocked else Operand(p.buffer, 0, p.addr.img, 0, width)


def _emit(lw: Lowering, node: Node, kind: str, src: Placed, b: Operand | None = None, c: Operand | None = None,
          act: Act | None = None) -> None:
    out = _like(lw, src, node)
    blocks, pixels, tail = _geometry(lw, src)
    p = EltwiseParams(kind, _operand(out, out.blocked, lw.width), _operand(src, src.blocked, lw.width), b, c, blocks,
                      pixels, tail, act or Act())
    reads = tuple(o.buf for o in (p.a, b, c) if o is not None)
    n, ch, h, w = src.dims
    lw.call("eltwise", p, reads, (out.buffer,), node.layer, parallel=n * ch * h * w > 100_000)
    lw.placed[node.outputs[0]] = out


@lowering(*ACTIVATION_OPS)
def lower_activation(lw: Lowering, node: Node) -> None:
    _emit(lw, node, "act", _src(lw, node), act=act_from_node(node.op, node.attrs))


def _channel_vector(lw: Lowering, values: np.ndarray, name: str) -> Buffer:
    c = values.shape[0]
    v = np.zeros(padded_channels(c, lw.width), np.float32)
    v[:c] = values
    return lw.weights(v, name)


@lowering("batch_norm")
def lower_batch_norm(lw: Lowering, node: Node) -> None:
    if node.attrs.training:
        from cnncc.codegen.kernels.batchnorm import lower_batch_norm_training

        return lower_batch_norm_training(lw, node)
    if not all(lw.is_constant(v) for v in node.inputs[1:]):  # training state or computed statistics
        from cnncc.codegen.kernels.batchnorm import lower_batch_norm_running

        return lower_batch_norm_running(lw, node)
    x, gamma, beta, mean, var = (node.inputs[0], *(lw.param(v, node.layer) for v in node.inputs[1:]))
    scale = gamma / np.sqrt(var + node.attrs.eps)
    shift = beta - mean * scale
    src = lw.get(x, node.layer)
    if not (src.blocked and src.halo == (0, 0, 0, 0)):
        if len(x.shape) == 4:
            src = lw.blocked(x, node.layer)
        else:
            raise Unsupported(f"layer '{node.layer}': batch_norm on rank-{len(x.shape)} input is not compiled for "
                              "the CPU yet")
    sb = _channel_vector(lw, scale, f"{node.layer}.scale")
    tb = _channel_vector(lw, shift, f"{node.layer}.shift")
    _emit(lw, node, "affine", src, Operand(sb, 0, 0, lw.width, 0), Operand(tb, 0, 0, lw.width, 0))


def _broadcast_operand(lw: Lowering, node: Node, x: Placed, index: int) -> Operand:
    """The other operand of a binary op, as a stream over ``x``'s walk (same shape, per channel, or scalar)."""
    v = node.inputs[index]
    full = dims4(node.outputs[0].shape)
    if tuple(v.shape) == tuple(node.outputs[0].shape):
        other = lw.get(v, node.layer)
        if x.blocked:
            other = lw.blocked(v, node.layer) if not (other.blocked and other.halo == (0, 0, 0, 0)) else other
            return _stream(other)
        return _operand(lw.plain(v, node.layer), False, lw.width)
    shape = (1,) * (len(full) - len(v.shape)) + tuple(v.shape) if len(v.shape) <= 4 else v.shape
    if x.blocked and len(shape) == 4 and shape[2:] == (1, 1) and shape[1] in (1, full[1]):
        per_image = shape[0] != 1
        if v.kind is ValueKind.PARAM and not per_image:
            vals = np.broadcast_to(lw.param(v, node.layer).reshape(-1), (full[1],))
            return Operand(_channel_vector(lw, vals, f"{node.layer}.operand"), 0, 0, lw.width, 0)
        if shape[1] == full[1]:
            other = lw.blocked(v, node.layer)
            return Operand(other.buffer, other.addr.base, other.addr.img if per_image else 0, other.addr.cblk, 0)
    if v.type.size == 1:  # one value for the whole tensor (a loss, a constant): splat it
        if v.kind is ValueKind.PARAM:
            return Operand(lw.weights(lw.param(v, node.layer).reshape(1), f"{node.layer}.operand"), 0, 0, 0, 0, True)
        src = lw.plain(v, node.layer)
        return Operand(src.buffer, src.addr.base, 0, 0, 0, True)
    if v.kind is not ValueKind.PARAM and v.shape and v.shape[0] == full[0] and v.type.size == full[0]:
        src = lw.plain(v, node.layer)  # one value per image (N, 1, ...): splat it over the image
        return Operand(src.buffer, src.addr.base, src.addr.img, 0, 0, True)
    raise Unsupported(f"layer '{node.layer}': {node.op} broadcasting {tuple(v.shape)} to {full} is not compiled "
                      "for the CPU yet (supported: equal shapes, per-channel, per-image-channel, per-image and scalar "
                      "operands)")


@lowering("add", "multiply")
def lower_binary(lw: Lowering, node: Node) -> None:
    a_v, b_v = node.inputs
    big = 0 if a_v.type.size >= b_v.type.size else 1
    if tuple(node.inputs[big].shape) != tuple(node.outputs[0].shape):
        raise Unsupported(f"layer '{node.layer}': {node.op} where neither operand has the output shape is not "
                          "compiled for the CPU yet")
    x = _src(lw, node, big)
    other_v = node.inputs[1 - big]
    if len(node.outputs[0].shape) == 4 and not x.blocked and tuple(other_v.shape) != tuple(node.outputs[0].shape):
        x = lw.blocked(node.inputs[big], node.layer)  # broadcasting walks channel blocks
    other = _broadcast_operand(lw, node, x, 1 - big)
    _emit(lw, node, "add" if node.op == "add" else "mul", x, other)


@lowering("prelu")
def lower_prelu(lw: Lowering, node: Node) -> None:
    x = node.inputs[0]
    src = lw.blocked(x, node.layer) if len(x.shape) == 4 else lw.plain(x, node.layer)
    if not src.blocked:
        raise Unsupported(f"layer '{node.layer}': prelu on rank-{len(x.shape)} input is not compiled yet")
    alpha = np.broadcast_to(lw.param(node.inputs[1], node.layer).reshape(-1), (x.shape[1],))
    _emit(lw, node, "prelu", src, Operand(_channel_vector(lw, alpha, f"{node.layer}.alpha"), 0, 0, lw.width, 0))


@kernel("eltwise")
def emit_eltwise(em: Emitter, env: KernelEnv, p: EltwiseParams) -> None:
    b = em.b
    ptrs = {id(o): env.ptr(o.buf) for o in (p.out, p.a, p.b, p.c) if o is not None}
    lo, hi = em.thread_range(b.mul(env.batch, i64(p.blocks)))

    def off(o: Operand, n: ir.Value, j: ir.Value, px: ir.Value) -> ir.Value:
        return b.add(b.add(i64(o.base), b.mul(n, i64(o.img))), b.add(b.mul(j, i64(o.blk)), b.mul(px, i64(o.pix))))

    def compute(vals: list[ir.Value]) -> ir.Value:
        a = vals[0]
        if p.kind == "act":
            return apply_act(em, a, p.act)
        if p.kind == "act_grad":
            return b.fmul(vals[1], act_derivative(em, a, p.act))
        if p.kind == "add":
            return b.fadd(a, vals[1])
        if p.kind == "mul":
            return b.fmul(a, vals[1])
        if p.kind == "affine":
            return em.fma(a, vals[1], vals[2])
        if p.kind == "prelu":
            return b.select(b.fcmp_ordered("<", a, em.vconst(0.0)), b.fmul(a, vals[1]), a)
        raise ValueError(p.kind)

    operands = [o for o in (p.a, p.b, p.c) if o is not None]

    def item(it: ir.Value) -> None:
        n, j = b.udiv(it, i64(p.blocks)), b.urem(it, i64(p.blocks))

        def pixel(px: ir.Value) -> None:
            vals = [em.splat(em.load(ptrs[id(o)], off(o, n, j, px))) if o.splat else
                    em.load_vec(ptrs[id(o)], off(o, n, j, px)) for o in operands]
            em.store_vec(compute(vals), ptrs[id(p.out)], off(p.out, n, j, px))

        em.each(0, p.pixels, pixel, name="px")
        if p.tail:  # scalar tail of a plain tensor, lane by lane
            for lane in range(p.tail):
                idx = p.pixels * em.width + lane
                vals = [em.splat(em.load(ptrs[id(o)], b.add(off(o, n, j, i64(0)), i64(idx if o.pix else 0))))
                        for o in operands]
                v = b.extract_element(compute(vals), ir.Constant(ir.IntType(32), 0))
                em.store(v, ptrs[id(p.out)], b.add(off(p.out, n, j, i64(0)), i64(idx)))

    em.each(lo, hi, item, name="item")


# -- views: no kernel, the consumer sees the same memory --------------------------------------------------------


@lowering("flatten", "reshape")
def lower_reshape(lw: Lowering, node: Node) -> None:
    before, after = node.inputs[0].shape, node.outputs[0].shape
    x = node.inputs[0]
    src = lw.tensor(x, node.layer) if x.kind is ValueKind.PARAM else lw.get(x, node.layer)
    if not src.batched:  # not per image (a loss, a parameter or its gradient): one image of all its floats, any shape
        lw.placed[node.outputs[0]] = lw.plain(x, node.layer) if x.kind is not ValueKind.PARAM else src
        return
    if not before or not after or before[0] != after[0]:
        raise Unsupported(f"layer '{node.layer}': {node.op} from {before} to {after} changes the batch axis; the CPU "
                          "backend runs any batch up to the compiled one, so the batch axis must stay first and whole")
    lw.placed[node.outputs[0]] = lw.plain(x, node.layer).with_dims(dims4(after))


@lowering("slice")
def lower_slice(lw: Lowering, node: Node) -> None:
    """A view: the plain tensor's addressing with its base moved to ``start`` along the axis (the consumer copies
    it into the layout it needs, as for transpose)."""
    x = node.inputs[0]
    a = node.attrs
    rank = len(x.shape)
    axis = a.axis % rank
    if axis == 0 or rank > 4:
        raise Unsupported(f"layer '{node.layer}': slice along axis {a.axis} of a rank-{rank} value is not compiled "
                          "for the CPU (axes 1-3 of ranks 2-4 are: the batch axis stays whole)")
    src = lw.plain(x, node.layer)
    if not src.batched:
        raise Unsupported(f"layer '{node.layer}': slice of a value that is not per image is not compiled for the CPU")
    ad = src.addr
    stride = (ad.img, ad.ci, ad.row, ad.col)[axis]
    dims = dims4(node.outputs[0].shape)
    addr = Addr(img=ad.img, cb=max(dims[1], 1), cblk=0, ci=ad.ci, row=ad.row, col=ad.col,
                base=ad.base + a.start * stride)
    lw.placed[node.outputs[0]] = Placed(src.buffer, dims, addr, False)


@lowering("transpose")
def lower_transpose(lw: Lowering, node: Node) -> None:
    perm = node.attrs.perm
    x = node.inputs[0]
    if len(perm) != 4 or perm[0] != 0:
        raise Unsupported(f"layer '{node.layer}': transpose {perm} is not compiled for the CPU yet (rank-4 "
                          "permutations that keep the batch axis first are)")
    src = lw.get(x, node.layer)
    if src.blocked or src.addr.cblk != 0:
        src = lw.plain(x, node.layer)
    a = src.addr
    strides = (a.img, a.ci, a.row, a.col)
    dims = dims4(node.outputs[0].shape)
    addr = Addr(img=strides[perm[0]], cb=max(dims[1], 1), cblk=0, ci=strides[perm[1]], row=strides[perm[2]],
                col=strides[perm[3]], base=a.base)
    lw.placed[node.outputs[0]] = Placed(src.buffer, dims, addr, False)
