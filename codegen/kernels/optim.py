"""The optimiser update ops (sgd_update, adagrad_update, rmsprop_update, adam_update): one elementwise kernel.

Parameter, gradient and state tensors are walked as one contiguous plain float32 range of ``batch x floats``
elements, in chunks of ``CHUNK`` floats (the work items, split over the threads when the tensor is large): W-lane
vectors, then a scalar tail in the last chunk. ``lr`` (and Adam's ``step``) are read once from their buffers: a
graph input, a computed scalar or a parameter (packed into the weights). The arithmetic is the reference's, in its
order (no FMA contraction), so float32 results agree to a few ulps; Adam's bias corrections use ``powf``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from llvmlite import ir

from cnncc.codegen.emit import Emitter, f32, i64
from cnncc.codegen.layout import Placed, dims4
from cnncc.codegen.lower import Lowering, Unsupported, lowering
from cnncc.codegen.module import KernelEnv, kernel
from cnncc.ir import DType, Node, Value, ValueKind
from cnncc.ops import get_op
from cnncc.program import Buffer

UPDATE_OPS = ("sgd_update", "adagrad_update", "rmsprop_update", "adam_update")
CHUNK = 4096  # floats per work item (a multiple of every vector width)


@dataclass(frozen=True, eq=False)
class UpdateParams:
    """``outs[k] = update(ins)[k]`` over ``floats`` floats per image; ``ins`` = (param, grad, *state)."""

    op: str
    attrs: Any
    ins: tuple[Buffer, ...]
    outs: tuple[Buffer, ...]
    lr: Buffer
    step: Buffer | None
    floats: int
    batched: bool = True  # False: parameters and their gradients (one image of all their floats)


def _scalar(lw: Lowering, v: Value, layer: str) -> Buffer:
    if v.kind is ValueKind.PARAM:
        return lw.weights(lw.param(v, layer).reshape(1).astype(np.float32), f"{layer}.{v.name}")
    return lw.plain(v, layer).buffer


def _tensor(lw: Lowering, v: Value, layer: str, op: str) -> Placed:
    if v.kind is ValueKind.PARAM:
        if lw.is_constant(v):
            raise Unsupported(f"layer '{layer}': {op} on parameter '{v.name}', a compile-time constant; compile it "
                              "as training state (cnncc.compile_training) so the update has somewhere to go")
        return lw.tensor(v, layer)
    return lw.plain(v, layer)


def _scalars(op: str) -> tuple[str, ...]:
    update = get_op(op).traits.update
    assert update is not None, op  # an update op declares its operands
    return update.scalars


@lowering(*UPDATE_OPS)
def lower_update(lw: Lowering, node: Node) -> None:
    if any(v.dtype is not DType.FLOAT32 for v in node.inputs):
        raise Unsupported(f"layer '{node.layer}': {node.op} is compiled for float32 only")
    scalars = _scalars(node.op)
    k = 2 + len(scalars)
    tensors = [_tensor(lw, v, node.layer, node.op) for v in (*node.inputs[:2], *node.inputs[k:])]
    lr = _scalar(lw, node.inputs[2], node.layer)
    step = _scalar(lw, node.inputs[3], node.layer) if len(scalars) > 1 else None
    batched = tensors[0].batched
    if any(t.batched != batched or t.addr.img != tensors[0].addr.img for t in tensors):
        raise Unsupported(f"layer '{node.layer}': {node.op} operands mix per-image values and parameters")
    dims = dims4(node.outputs[0].shape)
    olds = (node.inputs[0], *node.inputs[k:])  # the values each output replaces: the parameter, its slots
    outs = []
    for out, old, t in zip(node.outputs, olds, tensors[:1] + tensors[2:], strict=True):
        here = lw.in_place_state(out, old, node)  # training state: write the new values over the old ones
        outs.append(here if here is not None else lw.new_plain(dims, node.layer) if batched else
                    Placed(lw.arena(t.addr.img, node.layer, per_image=False), t.dims, t.addr, False, batched=False))
    p = UpdateParams(node.op, node.attrs, tuple(t.buffer for t in tensors), tuple(o.buffer for o in outs), lr, step,
                     tensors[0].addr.img, batched)
    reads = (*p.ins, lr, *((step,) if step is not None else ()))
    lw.call("optim_update", p, reads, p.outs, node.layer, parallel=node.inputs[0].type.size > 100_000)
    for v, o in zip(node.outputs, outs, strict=True):
        lw.placed[v] = o


def _update(em: Emitter, p: UpdateParams, vals: list[ir.Value], lr: ir.Value, bc: tuple[ir.Value, ir.Value] | None,
            vector: bool) -> list[ir.Value]:
    """The update of one vector (``vector``) or one float: ``vals`` = (param, grad, *state) -> (param, *state)."""
    b, a = em.b, p.attrs

    def c(x: float) -> ir.Value:
        return em.vconst(x) if vector else f32(x)

    def s(x: ir.Value) -> ir.Value:
        return em.splat(x) if vector else x

    x, g, *state = vals
    if a.weight_decay:
        g = b.fadd(g, b.fmul(c(a.weight_decay), x))
    lr_v = s(lr)
    if p.op == "sgd_update":
        if not a.momentum:
            return [b.fsub(x, b.fmul(lr_v, g))]
        v = b.fadd(b.fmul(c(a.momentum), state[0]), g)
        d = b.fadd(g, b.fmul(c(a.momentum), v)) if a.nesterov else v
        return [b.fsub(x, b.fmul(lr_v, d)), v]
    if p.op == "adagrad_update":
        acc = b.fadd(state[0], b.fmul(g, g))
        den = b.fadd(em.vcall("sqrt", acc), c(a.eps))
        return [b.fsub(x, b.fdiv(b.fmul(lr_v, g), den)), acc]
    if p.op == "rmsprop_update":
        v = b.fadd(b.fmul(c(a.alpha), state[0]), b.fmul(c(1.0 - a.alpha), b.fmul(g, g)))
        den = b.fadd(em.vcall("sqrt", v), c(a.eps))
        return [b.fsub(x, b.fdiv(b.fmul(lr_v, g), den)), v]
    if p.op == "adam_update":
        assert bc is not None
        m = b.fadd(b.fmul(c(a.beta1), state[0]), b.fmul(c(1.0 - a.beta1), g))
        v = b.fadd(b.fmul(c(a.beta2), state[1]), b.fmul(c(1.0 - a.beta2), b.fmul(g, g)))
        den = b.fadd(em.vcall("sqrt", b.fdiv(v, s(bc[1]))), c(a.eps))
        return [b.fsub(x, b.fdiv(b.fmul(lr_v, b.fdiv(m, s(bc[0]))), den)), m, v]
    raise ValueError(p.op)


@kernel("optim_update")
def emit_update(em: Emitter, env: KernelEnv, p: UpdateParams) -> None:
    b = em.b
    ins = [env.ptr(buf) for buf in p.ins]
    outs = [env.ptr(buf) for buf in p.outs]
    lr = em.load(env.ptr(p.lr), 0)
    bc = None
    if p.step is not None:  # bias corrections 1 - beta**t, once per call
        t = em.load(env.ptr(p.step), 0)
        bc = (b.fsub(f32(1.0), em.vcall("pow", f32(p.attrs.beta1), t)),
              b.fsub(f32(1.0), em.vcall("pow", f32(p.attrs.beta2), t)))
    total = b.mul(env.batch, i64(p.floats)) if p.batched else i64(p.floats)
    def vec(off: ir.Value) -> None:
        new = _update(em, p, [em.load_vec(ptr, off) for ptr in ins], lr, bc, vector=True)
        for val, ptr in zip(new, outs, strict=True):
            em.store_vec(val, ptr, off)

    def one(off: ir.Value) -> None:
        new = _update(em, p, [em.load(ptr, off) for ptr in ins], lr, bc, vector=False)
        for val, ptr in zip(new, outs, strict=True):
            em.store(val, ptr, off)

    em.chunks(total, CHUNK, vec, one)
