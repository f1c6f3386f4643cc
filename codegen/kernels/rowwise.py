"""Row-wise kernels on plain tensors: softmax and log-softmax over one axis (numerically stable: the row maximum
is subtracted first), and the losses cross-entropy, NLL and MSE (serial, so their reductions have one fixed order).
"""

from __future__ import annotations

from dataclasses import dataclass

from llvmlite import ir

from cnncc.codegen.emit import F32, I64, Emitter, f32, i64
from cnncc.codegen.layout import Placed, dims4, plain_addr
from cnncc.codegen.lower import Lowering, Unsupported, lowering
from cnncc.codegen.module import KernelEnv, kernel
from cnncc.ir import DType, Node
from cnncc.program import Buffer


@dataclass(frozen=True, eq=False)
class SoftmaxParams:
    x: Buffer
    y: Buffer
    outer: int  # rows per image
    length: int  # the softmax axis
    inner: int  # stride between elements of a row
    img: int
    log: bool


@lowering("softmax", "log_softmax")
def lower_softmax(lw: Lowering, node: Node) -> None:
    x = node.inputs[0]
    shape = x.shape
    axis = node.attrs.axis % len(shape)
    if axis == 0:
        raise Unsupported(f"layer '{node.layer}': {node.op} over the batch axis is not compiled for the CPU")
    src = lw.plain(x, node.layer)
    out = lw.new_plain(dims4(shape), node.layer)
    inner = 1
    for d in shape[axis + 1:]:
        inner *= d
    outer = 1
    for d in shape[1:axis]:
        outer *= d
    img = src.addr.img
    p = SoftmaxParams(src.buffer, out.buffer, outer * inner, shape[axis], inner, img, node.op == "log_softmax")
    lw.call("softmax", p, (src.buffer,), (out.buffer,), node.layer, parallel=False)
    lw.placed[node.outputs[0]] = out


def _exp(em: Emitter, v: ir.Value) -> ir.Value:
    return em.vcall("exp", v)


@kernel("softmax")
def emit_softmax(em: Emitter, env: KernelEnv, p: SoftmaxParams) -> None:
    b = em.b
    x, y = env.ptr(p.x), env.ptr(p.y)

    def row(it: ir.Value) -> None:
        n, r = b.udiv(it, i64(p.outer)), b.urem(it, i64(p.outer))
        start = b.add(b.mul(n, i64(p.img)), b.add(b.mul(b.udiv(r, i64(p.inner)), i64(p.length * p.inner)),
                                                   b.urem(r, i64(p.inner))))

        def at(k: ir.Value) -> ir.Value:
            return b.add(start, b.mul(k, i64(p.inner)))

        m = em.loop(0, p.length, lambda k, a: [em.vmax(em.load(x, at(k)), a[0])], [f32(float("-inf"))], name="max")[0]
        s = em.loop(0, p.length, lambda k, a: [b.fadd(a[0], _exp(em, b.fsub(em.load(x, at(k)), m)))], [f32(0.0)],
                    name="sum")[0]
        if p.log:
            lse = b.fadd(m, em.vcall("log", s))
            em.each(0, p.length, lambda k: em.store(b.fsub(em.load(x, at(k)), lse), y, at(k)), name="out")
        else:
            inv = b.fdiv(f32(1.0), s)
            em.each(0, p.length, lambda k: em.store(b.fmul(_exp(em, b.fsub(em.load(x, at(k)), m)), inv), y, at(k)),
                    name="out")

    em.each(0, b.mul(env.batch, i64(p.outer)), row, name="row")


@dataclass(frozen=True, eq=False)
class LossParams:
    kind: str  # "ce_index", "ce_prob", "nll", "mse"
    x: Buffer
    t: Buffer
    y: Buffer
    classes: int  # row length (mse: floats per image)
    mean: bool


@lowering("cross_entropy", "nll", "mse")
def lower_loss(lw: Lowering, node: Node) -> None:
    x, t = node.inputs
    src = lw.plain(x, node.layer)
    if t.dtype is DType.INT64:
        tgt = lw.get(t, node.layer).buffer
        kind = "ce_index" if node.op == "cross_entropy" else "nll"
        if tgt.space.value != "input":
            raise Unsupported(f"layer '{node.layer}': integer targets must be a graph input")
        lw.label_ranges[t.name] = x.shape[1]
    else:
        tgt = lw.plain(t, node.layer).buffer
        kind = "ce_prob" if node.op == "cross_entropy" else "mse"
    out = Placed(lw.arena(1, node.layer, per_image=False), (1, 1, 1, 1), plain_addr(1, 1, 1), False, batched=False)
    classes = x.shape[1] if kind != "mse" else src.addr.img
    mean = node.attrs.reduction.value == "mean"
    p = LossParams(kind, src.buffer, tgt, out.buffer, classes, mean)
    lw.call("loss", p, (src.buffer, tgt), (out.buffer,), node.layer, parallel=False)
    lw.placed[node.outputs[0]] = out


@kernel("loss")
def emit_loss(em: Emitter, env: KernelEnv, p: LossParams) -> None:
    b = em.b
    x, t, y = env.ptr(p.x), env.ptr(p.t), env.ptr(p.y)
    c = p.classes

    def per_row(n: ir.Value, acc: list[ir.Value]) -> list[ir.Value]:
        row = b.mul(n, i64(c))
        at = lambda k: b.add(row, k)  # noqa: E731
        if p.kind == "mse":
            def sq(k: ir.Value, a: list[ir.Value]) -> list[ir.Value]:
                d = b.fsub(em.load(x, at(k)), em.load(t, at(k)))
                return [em.fma(d, d, a[0])]

            return em.loop(0, c, sq, acc, name="k")
        if p.kind == "nll":
            label = em.load(t, n, I64)
            return [b.fsub(acc[0], em.load(x, at(label)))]
        m = em.loop(0, c, lambda k, a: [em.vmax(em.load(x, at(k)), a[0])], [f32(float("-inf"))], name="max")[0]
        s = em.loop(0, c, lambda k, a: [b.fadd(a[0], em.vcall("exp", b.fsub(em.load(x, at(k)), m)))], [f32(0.0)],
                    name="sum")[0]
        lse = b.fadd(m, em.vcall("log", s))
        if p.kind == "ce_index":
            label = em.load(t, n, I64)
            return [b.fadd(acc[0], b.fsub(lse, em.load(x, at(label))))]
        # probabilities: -sum_k t_k (x_k - lse)
        return em.loop(0, c, lambda k, a: [b.fsub(a[0], b.fmul(em.load(t, at(k)), b.fsub(em.load(x, at(k)), lse)))],
                       acc, name="k")

    total = em.loop(0, env.batch, per_row, [f32(0.0)], name="n")[0]
    if p.mean:
        count = b.sitofp(env.batch, F32)
        if p.kind == "mse":
            count = b.fmul(count, f32(float(c)))
        total = b.fdiv(total, count)
    em.store(total, y, 0)


@dataclass(frozen=True, eq=False)
class CrossEntropyGradParams:
    """``dx[n, k] = c (softmax(x[n])_k Σ_j t[n, j] − t[n, k])``, ``c = g / batch`` (mean) or ``g``."""

    x: Buffer
    t: Buffer
    g: Buffer
    y: Buffer
    classes: int
    index: bool  # int64 class indices (one-hot rows) or float probability rows
    mean: bool


@lowering("cross_entropy_grad")
def lower_cross_entropy_grad(lw: Lowering, node: Node) -> None:
    x, t, g = node.inputs
    src = lw.plain(x, node.layer)
    index = t.dtype is DType.INT64
    if index:
        tgt = lw.get(t, node.layer).buffer
        if tgt.space.value != "input":
            raise Unsupported(f"layer '{node.layer}': integer targets must be a graph input")
        lw.label_ranges[t.name] = x.shape[1]
    else:
        tgt = lw.plain(t, node.layer).buffer
    gb = (lw.tensor(g, node.layer) if lw.is_constant(g) else lw.plain(g, node.layer)).buffer
    out = lw.new_plain(dims4(x.shape), node.layer)
    p = CrossEntropyGradParams(src.buffer, tgt, gb, out.buffer, x.shape[1], index,
                               node.attrs.reduction.value == "mean")
    lw.call("cross_entropy_grad", p, (src.buffer, tgt, gb), (out.buffer,), node.layer, parallel=False)
    lw.placed[node.outputs[0]] = out


@kernel("cross_entropy_grad")
def emit_cross_entropy_grad(em: Emitter, env: KernelEnv, p: CrossEntropyGradParams) -> None:
    b = em.b
    x, t, g, y = env.ptr(p.x), env.ptr(p.t), env.ptr(p.g), env.ptr(p.y)
    c = p.classes
    scale = em.load(g, 0)
    if p.mean:
        scale = b.fdiv(scale, b.sitofp(env.batch, F32))

    def row(n: ir.Value) -> None:
        base = b.mul(n, i64(c))

        def at(k: ir.Value) -> ir.Value:
            return b.add(base, k)

        m = em.loop(0, c, lambda k, a: [em.vmax(em.load(x, at(k)), a[0])], [f32(float("-inf"))], name="max")[0]
        s = em.loop(0, c, lambda k, a: [b.fadd(a[0], em.vcall("exp", b.fsub(em.load(x, at(k)), m)))], [f32(0.0)],
                    name="sum")[0]
        inv = b.fdiv(f32(1.0), s)
        if p.index:
            label = em.load(t, n, I64)
            tsum = f32(1.0)
        else:
            label = None
            tsum = em.loop(0, c, lambda k, a: [b.fadd(a[0], em.load(t, at(k)))], [f32(0.0)], name="tsum")[0]

        def out(k: ir.Value) -> None:
            prob = b.fmul(em.vcall("exp", b.fsub(em.load(x, at(k)), m)), inv)
            if label is not None:
                tk = b.select(b.icmp_signed("==", k, label), f32(1.0), f32(0.0))
            else:
                tk = em.load(t, at(k))
            em.store(b.fmul(scale, b.fsub(b.fmul(prob, tsum), tk)), y, at(k))

        em.each(0, c, out, name="out")

    em.each(0, env.batch, row, name="row")
