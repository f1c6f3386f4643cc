"""The backward-graph helper ops of reverse-mode autodiff: activation_grad (the elementwise kernel with an
activation's derivative), fill_like (a constant fill), sum_to (undoing broadcasting by a sum) and one_hot.

sum_to of a rank-4 value over (N, H, W) -- a bias gradient -- runs batchnorm.py's per-channel float64 sums on the
blocked value (parallel over channel blocks); every other sum_to the serial float64 loop below.

Values that are not per image (a loss, a sum over the batch axis) are placed as one plain image of all their floats,
``(1, size, 1, 1)`` with ``batched=False``, as the losses place theirs; their kernels run once whatever the batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llvmlite import ir

from cnncc.codegen.emit import F32, F64, I64, Emitter, f32, i64
from cnncc.codegen.kernels.activation import ACTIVATION_OPS, act_from_node
from cnncc.codegen.kernels.eltwise import _broadcast_operand, _emit, _src
from cnncc.codegen.layout import Placed, dims4, plain_addr
from cnncc.codegen.lower import Lowering, Unsupported, lowering
from cnncc.codegen.module import KernelEnv, kernel
from cnncc.ir import Node, ValueKind
from cnncc.ops.sum_to import summed_axes
from cnncc.program import Buffer

CHUNK = 4096  # floats per work item of a fill (a multiple of every vector width)


def _unbatched(lw: Lowering, floats: int, name: str) -> Placed:
    """A value that is not per image: one plain image of ``floats`` floats."""
    return Placed(lw.arena(floats, name, per_image=False), (1, floats, 1, 1), plain_addr(floats, 1, 1), False,
                  batched=False)


# -- activation_grad: dy * f'(x) through the elementwise kernel ---------------------------------------------------


@lowering("activation_grad")
def lower_activation_grad(lw: Lowering, node: Node) -> None:
    a = node.attrs
    if a.op not in ACTIVATION_OPS:
        raise Unsupported(f"layer '{node.layer}': activation_grad of '{a.op}' is not compiled for the CPU yet "
                          f"(compiled: {', '.join(ACTIVATION_OPS)})")
    if len(node.inputs[0].shape) > 4:
        raise Unsupported(f"layer '{node.layer}': activation_grad on rank-{len(node.inputs[0].shape)} values is not "
                          "compiled for the CPU (ranks 0-4 are)")
    for v in node.inputs:
        if not lw.get(v, node.layer).batched:
            raise Unsupported(f"layer '{node.layer}': activation_grad of a value that is not per image ('{v.name}') "
                              "is not compiled for the CPU yet")
    x = _src(lw, node, 0)
    dy = _broadcast_operand(lw, node, x, 1)
    _emit(lw, node, "act_grad", x, dy, act=act_from_node(a.op, a.attrs))


# -- fill_like --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FillParams:
    """``out[k] = value`` for k < floats (times the batch when ``batched``)."""

    out: Buffer
    floats: int
    batched: bool
    value: float


@lowering("fill_like")
def lower_fill_like(lw: Lowering, node: Node) -> None:
    v = node.outputs[0]
    if len(v.shape) > 4:
        raise Unsupported(f"layer '{node.layer}': fill_like of a rank-{len(v.shape)} value is not compiled for the "
                          "CPU (ranks 0-4 are)")
    src = lw.get(node.inputs[0], node.layer)  # only its batching matters: x's data is not read
    if src.batched:
        dims = dims4(v.shape)
        out = lw.new_plain(dims, node.layer)
        floats = out.addr.img
    else:
        floats = math.prod(v.shape)
        out = _unbatched(lw, floats, node.layer)
    p = FillParams(out.buffer, floats, src.batched, float(node.attrs.value))
    lw.call("fill_value", p, (), (out.buffer,), node.layer, parallel=v.type.size > 100_000)
    lw.placed[v] = out


@kernel("fill_value")
def emit_fill(em: Emitter, env: KernelEnv, p: FillParams) -> None:
    b, width = em.b, em.width
    out = env.ptr(p.out)
    total = b.mul(env.batch, i64(p.floats)) if p.batched else i64(p.floats)
    items = b.udiv(b.add(total, i64(CHUNK - 1)), i64(CHUNK))
    lo, hi = em.thread_range(items)
    vec, one = em.vconst(p.value), f32(p.value)

    def item(it: ir.Value) -> None:
        start = b.mul(it, i64(CHUNK))
        end = b.add(start, i64(CHUNK))
        end = b.select(b.icmp_signed("<", end, total), end, total)
        nvec = b.udiv(b.sub(end, start), i64(width))
        em.each(0, nvec, lambda k: em.store_vec(vec, out, b.add(start, b.mul(k, i64(width)))), name="vec")
        em.each(b.add(start, b.mul(nvec, i64(width))), end, lambda k: em.store(one, out, k), name="tail")

    em.each(lo, hi, item, name="chunk")


# -- sum_to -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SumToParams:
    """y = x summed over the axes ``summed`` (kept dims) of the contiguous (N, C, H, W) ``shape``; axis 0 runs over
    the run-time batch when ``batched``. Accumulated in float64 in index order, serially (one fixed order)."""

    x: Buffer
    y: Buffer
    shape: tuple[int, int, int, int]
    summed: tuple[bool, bool, bool, bool]
    batched: bool


@lowering("sum_to")
def lower_sum_to(lw: Lowering, node: Node) -> None:
    x = node.inputs[0]
    shape, target = tuple(x.shape), tuple(node.attrs.shape)
    if len(shape) > 4:
        raise Unsupported(f"layer '{node.layer}': sum_to of a rank-{len(shape)} value is not compiled for the CPU "
                          "(ranks 0-4 are)")
    axes, _ = summed_axes(shape, target)
    if len(shape) == 4 and set(axes) == {0, 2, 3} and x.kind is not ValueKind.PARAM and \
            lw.get(x, node.layer).batched:  # a bias gradient
        from cnncc.codegen.kernels.batchnorm import channel_sum

        lw.placed[node.outputs[0]] = channel_sum(lw, node)
        return
    src = lw.plain(x, node.layer)
    batched = src.batched
    if not batched and math.prod(shape) != src.addr.img:
        raise Unsupported(f"layer '{node.layer}': sum_to of this value that is not per image is not compiled yet")
    summed = tuple(i in axes for i in range(4))
    v = node.outputs[0]
    if batched and not summed[0]:
        out = lw.new_plain(dims4(v.shape), node.layer)
    else:  # summed over the batch (or never per image): one value whatever the batch
        out = _unbatched(lw, math.prod(target), node.layer)
    p = SumToParams(src.buffer, out.buffer, dims4(shape), summed, batched)  # type: ignore[arg-type]
    lw.call("sum_to", p, (src.buffer,), (out.buffer,), node.layer, parallel=False)
    lw.placed[v] = out


@kernel("sum_to")
def emit_sum_to(em: Emitter, env: KernelEnv, p: SumToParams) -> None:
    b = em.b
    x, y = env.ptr(p.x), env.ptr(p.y)
    s = p.shape
    extent: list[ir.Value | int] = [env.batch if p.batched else s[0], *s[1:]]
    kept = [1 if p.summed[i] else s[i] for i in range(4)]
    xs = [s[1] * s[2] * s[3], s[2] * s[3], s[3], 1]
    ys = [kept[1] * kept[2] * kept[3], kept[2] * kept[3], kept[3], 1]

    def step(off: ir.Value, i: ir.Value, stride: int) -> ir.Value:
        return b.add(off, b.mul(i, i64(stride)))

    def inner(axis: int, xoff: ir.Value, acc: ir.Value) -> ir.Value:
        if axis == 4:
            return b.fadd(acc, b.fpext(em.load(x, xoff), F64))
        if not p.summed[axis]:
            return inner(axis + 1, xoff, acc)
        return em.loop(0, extent[axis], lambda i, a: [inner(axis + 1, step(xoff, i, xs[axis]), a[0])], [acc],
                       name=f"r{axis}")[0]

    def outer(axis: int, xoff: ir.Value, yoff: ir.Value) -> None:
        if axis == 4:  # -0.0 + v is v exactly (a copy keeps negative zeros)
            total = inner(0, xoff, ir.Constant(F64, -0.0))
            em.store(b.fptrunc(total, F32), y, yoff)
        elif p.summed[axis]:
            outer(axis + 1, xoff, yoff)
        else:
            em.each(0, extent[axis], lambda i: outer(axis + 1, step(xoff, i, xs[axis]), step(yoff, i, ys[axis])),
                    name=f"o{axis}")

    outer(0, i64(0), i64(0))


# -- one_hot ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class OneHotParams:
    target: Buffer  # int64 (N,)
    y: Buffer  # float (N, C)
    classes: int


@lowering("one_hot")
def lower_one_hot(lw: Lowering, node: Node) -> None:
    t, like = node.inputs
    tgt = lw.get(t, node.layer)
    if tgt.buffer.space.value != "input":
        raise Unsupported(f"layer '{node.layer}': one_hot's integer target must be a graph input (its class range "
                          "is checked before each call)")
    classes = like.shape[1]
    lw.label_ranges[t.name] = classes
    out = lw.new_plain(dims4(node.outputs[0].shape), node.layer)
    p = OneHotParams(tgt.buffer, out.buffer, classes)
    lw.call("one_hot", p, (tgt.buffer,), (out.buffer,), node.layer, parallel=False)
    lw.placed[node.outputs[0]] = out


@kernel("one_hot")
def emit_one_hot(em: Emitter, env: KernelEnv, p: OneHotParams) -> None:
    b = em.b
    t, y = env.ptr(p.target), env.ptr(p.y)

    def row(n: ir.Value) -> None:
        start = b.mul(n, i64(p.classes))
        em.each(0, p.classes, lambda k: em.store(f32(0.0), y, b.add(start, k)), name="zero")
        em.store(f32(1.0), y, b.add(start, em.load(t, n, I64)))

    em.each(0, env.batch, row, name="n")
