"""Element-wise kernels (family ``map``): one output element per thread, 256 threads per block. The geometry names
the operation and its shapes:

* ``("unary", out_shape, steps)``: activations (and a copy when ``steps`` is empty);
* ``("binary", op, out_shape, a_shape, b_shape)``: ``add``/``multiply`` with numpy broadcasting (shapes aligned right);
* ``("channel", op, out_shape)``: ``affine`` ``x * a[c] + b[c]`` (inference batch norm, folded at compile time) or
  ``prelu`` with per-channel (or one) slope ``a``: the channel is axis 1;
* ``("concat", axis, out_shape, in_shapes)``, ``("slice", axis, start, in_shape, out_shape)``,
  ``("transpose", perm, in_shape)``: data movement.
"""

from __future__ import annotations

import math
from typing import Any

from cnncc.codegen.cuda.families import (
    Dims,
    EpilogueStep,
    Family,
    KernelSpec,
    apply_epilogue,
    f32,
    family,
    flat_threads,
    placeholders,
)
from cnncc.errors import CnnccError


def _broadcast(t: Any, shape: tuple[int, ...], out_rank: int) -> Any:
    """An indexer reading ``t`` (of ``shape``) at output indices, numpy broadcasting rules."""
    lead = out_rank - len(shape)

    def read(*idx: Any) -> Any:
        return t[tuple(0 if d == 1 else idx[lead + k] for k, d in enumerate(shape))]

    return read


def _unary(spec: KernelSpec) -> list[Any]:
    from tvm import te

    _, shape, steps = spec.geometry
    (x,) = placeholders([shape])
    return [x, te.compute(shape, lambda *i: apply_epilogue(x(*i), steps, []), name="y")]


def _binary(spec: KernelSpec) -> list[Any]:
    from tvm import te

    _, op, shape, sa, sb = spec.geometry
    a, b = placeholders([sa, sb])
    ra, rb = _broadcast(a, sa, len(shape)), _broadcast(b, sb, len(shape))
    if op == "add":
        y = te.compute(shape, lambda *i: ra(*i) + rb(*i), name="y")
    elif op == "multiply":
        y = te.compute(shape, lambda *i: ra(*i) * rb(*i), name="y")
    else:
        raise CnnccError(f"internal: binary op '{op}' has no CUDA kernel")
    return [a, b, y]


def _channel(spec: KernelSpec) -> list[Any]:
    from tvm import te, tirx

    _, op, shape, nslope = spec.geometry
    c = shape[1] if len(shape) > 1 else 1
    if op == "affine":
        x, a, b = placeholders([shape, (c,), (c,)])
        return [x, a, b, te.compute(shape, lambda *i: x(*i) * a[i[1]] + b[i[1]], name="y")]
    x, a = placeholders([shape, (nslope,)])

    def prelu(*i: Any) -> Any:
        slope = a[i[1]] if nslope > 1 else a[0]
        return tirx.if_then_else(x(*i) >= f32(0), x(*i), slope * x(*i))

    return [x, a, te.compute(shape, prelu, name="y")]


def _concat(spec: KernelSpec) -> list[Any]:
    from tvm import te, tirx

    _, axis, shape, in_shapes = spec.geometry
    ins = placeholders(in_shapes)
    starts = [sum(s[axis] for s in in_shapes[:k]) for k in range(len(in_shapes))]

    def pick(*i: Any) -> Any:
        value = None
        for t, start in zip(ins, starts, strict=True):  # the last input whose start is <= the index
            idx = tuple(i[d] - start if d == axis else i[d] for d in range(len(shape)))
            value = t[idx] if value is None else tirx.if_then_else(i[axis] >= start, t[idx], value)
        return value

    return [*ins, te.compute(shape, pick, name="y")]


def _slice(spec: KernelSpec) -> list[Any]:
    from tvm import te

    _, axis, start, in_shape, out_shape = spec.geometry
    (x,) = placeholders([in_shape])
    return [x, te.compute(out_shape, lambda *i: x[tuple(v + start if d == axis else v for d, v in enumerate(i))],
                          name="y")]


def _transpose(spec: KernelSpec) -> list[Any]:
    from tvm import te

    _, perm, in_shape = spec.geometry
    (x,) = placeholders([in_shape])
    out_shape = tuple(in_shape[p] for p in perm)

    def read(*i: Any) -> Any:
        src = [0] * len(perm)
        for d, p in enumerate(perm):
            src[p] = i[d]
        return x[tuple(src)]

    return [x, te.compute(out_shape, read, name="y")]


_COMPUTES = {"unary": _unary, "binary": _binary, "channel": _channel, "concat": _concat, "slice": _slice,
             "transpose": _transpose}


def _compute(spec: KernelSpec) -> list[Any]:
    return _COMPUTES[spec.geometry[0]](spec)


def _schedule(sch: Any, spec: KernelSpec, dims: Dims) -> None:
    flat_threads(sch, sch.get_sblock("y"), dims)


def _flops(spec: KernelSpec) -> int:
    kind = spec.geometry[0]
    shape = spec.geometry[1] if kind == "unary" else spec.geometry[2]
    return math.prod(shape) if kind in ("unary", "binary", "channel") else 0


MAP = family(Family("map", _compute, _schedule, _flops, "one element per thread"))


def unary(shape: tuple[int, ...], steps: tuple[EpilogueStep, ...] = ()) -> KernelSpec:
    return KernelSpec("map", ("unary", tuple(shape), tuple(steps)))
