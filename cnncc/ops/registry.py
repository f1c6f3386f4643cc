"""The op registry: every op is one :class:`OpDef`, defined and registered in its own module under cnncc/ops/.

An :class:`OpDef` holds everything about an op: its attribute type, its shape/dtype rule, a slow and obviously
correct numpy reference (float32 and float64), MAC/FLOP counts, its vector-Jacobian product and the algorithms
that can lower it (filled by the backends).

The VJP protocol (used by :func:`cnncc.autodiff.grad`)::

    vjp(ctx: VjpContext, node: Node, grads_out: Sequence[Value | None]) -> Sequence[Value | None]

``node`` is the forward node; ``ctx.value(v)`` maps any of its inputs or outputs to the value of the graph being
built (forward values are recomputed there, so a VJP may read them). ``grads_out`` holds one gradient per forward
output (same type as that output) or ``None`` where no gradient flows into it. The VJP returns one gradient per
forward input, of that input's shape and dtype, or ``None`` where there is none (integer labels, a value the
op's result does not depend on). It builds the gradients only with graph ops, through ``ctx.emit(op, inputs,
attrs)``, so the backward graph is run by the interpreter and lowered by the backends like the forward one. A
VJP lives in its op's module and is attached as ``OpDef(vjp=...)``; an op whose ``vjp`` is ``None`` makes
:func:`~cnncc.autodiff.grad` fail with "op 'X' has no VJP yet (layer 'L')" when a gradient must flow through it.

Every forward op has a VJP. The ops that exist only in backward or training graphs have none, on purpose: the
backward ops (``activation_grad``, ``conv2d_grad_input``, ``conv2d_grad_weight``, ``max_pool2d_grad``,
``avg_pool2d_grad``, ``batch_norm_grad``) would need second derivatives, which are out of scope, and the running
statistics (``batch_norm_stats``) and optimiser updates (``*_update``) are never on a gradient path.

Traits. What passes, training, autodiff and the viewer need to know about an op beyond its rules -- is it an
activation, may it be recomputed, when does it compute nothing, which fused op is it the base of -- is stated once,
as a typed :class:`OpTraits` on its ``OpDef`` (``OpDef(traits=...)``), in the op's own module; the consumers ask
:func:`traits` instead of comparing op names, so adding an op touches only its module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from cnncc.errors import CnnccError, GraphError, ShapeError
from cnncc.ir.types import TensorType


@dataclass(frozen=True)
class NoAttrs:
    """Attributes of an op that has none."""


@dataclass(frozen=True)
class Where:
    """The layer and op a shape rule is checking, so its errors can name them."""

    layer: str
    op: str

    def fail(self, rule: str, detail: str) -> ShapeError:
        """Build the error to ``raise``: ``raise where.fail("rule", "values")``."""
        return ShapeError(self.layer, self.op, rule, detail)


# ``vjp(ctx, node, grads_out) -> grads_in``; see the module docstring. ``ctx`` is a cnncc.autodiff.VjpContext,
# ``node`` a cnncc.ir.Node, the grads are cnncc.ir.Value or None (typed loosely: the IR imports this module).
VjpFn = Callable[[Any, Any, Sequence[Any]], Sequence[Any]]
InferFn = Callable[[Sequence[TensorType], Any, Where], Sequence[TensorType]]
ReferenceFn = Callable[[Sequence[np.ndarray], Any], "np.ndarray | tuple[np.ndarray, ...]"]
CountFn = Callable[[Sequence[TensorType], Sequence[TensorType], Any], int]


def _zero(ins: Sequence[TensorType], outs: Sequence[TensorType], attrs: Any) -> int:
    return 0


class Role(Enum):
    """Where an op appears, which decides whether it has a VJP (see the module docstring)."""

    FORWARD = "forward"  # a model's op: it has a VJP
    BACKWARD = "backward"  # a VJP's building block: none (it would need second derivatives, out of scope)
    STATISTICS = "statistics"  # running statistics of a training step: none (never on a gradient path)
    UPDATE = "update"  # an optimiser's parameter update: none (never on a gradient path)


class Elementwise(Enum):
    """How an op maps elements."""

    NONE = "none"
    UNARY = "unary"  # y[i] = f(x[i]; attrs): one float operand, the same type out (the activations)
    BINARY = "binary"  # y = f(a, b) with NumPy broadcasting (add, multiply)


class EpilogueRole(Enum):
    """What an op can become in a fused layer's epilogue (cnncc.ops.epilogue)."""

    NONE = "none"
    ACTIVATION = "activation"  # a step applying the op to the accumulators
    RESIDUAL = "residual"  # an ``add`` step reading one more operand of the output's shape


class Category(Enum):
    """The family an op belongs to, as a reader groups them (the graph viewer colours nodes by it)."""

    CONV = "conv"
    LINEAR = "linear"
    POOL = "pool"
    ACTIVATION = "act"
    BINARY = "binary"  # add, multiply, concat
    NORM = "norm"  # batch norm, dropout
    SHAPE = "shape"  # reshape, flatten, transpose
    HEAD = "head"  # softmax, losses
    OTHER = "other"  # backward, optimiser and helper ops


# ``identity_when(attrs, x, y)``: the op computes nothing for these attributes and input/output types.
IdentityFn = Callable[[Any, TensorType, TensorType], bool]
# ``random_when(attrs)``: the op draws random numbers (a mask) with these attributes.
RandomFn = Callable[[Any], bool]
# ``derivative(x, attrs)``: an elementwise op's dy/dx at every element of ``x`` (numpy, in ``x``'s dtype).
DerivativeFn = Callable[[np.ndarray, Any], np.ndarray]


@dataclass(frozen=True)
class UpdateOperands:
    """What an optimiser update op reads besides the parameter and its gradient: ``scalars``, its run-time scalar
    operands (``("lr",)``, Adam's ``("lr", "step")``), then the state tensors ``state(attrs)`` names."""

    scalars: tuple[str, ...]
    state: Callable[[Any], tuple[str, ...]]


@dataclass(frozen=True)
class OpTraits:
    """What the compiler may assume about an op, declared where the op is registered.

    ``role``: forward, backward, statistics or optimiser update (only forward ops have a VJP).
    ``category``: the op's family (display). ``elementwise``: unary (activation), binary (broadcasting) or none.
    ``epilogue``: what the op becomes when fused into a conv/linear epilogue (an activation step, a residual add).
    ``recomputable``: a forward op cheap enough for a training step to run twice instead of saving its output.
    ``identity_when``: a predicate saying when the op computes nothing (inference dropout, a same-shape reshape).
    ``reshape``: the output is the input's elements in the same row-major order (only the shape changes), so a
    chain of such ops is one reshape. ``random_when``: a predicate saying when the op draws random numbers (never
    merged; a training step gives it a run-time seed); an op that has one is never constant-folded either.
    ``fused_form``: the op that is this op with an epilogue (conv2d -> fused_conv2d); ``base``: the reverse link
    (fused_conv2d -> conv2d), so code that treats a layer and its fused form alike asks the trait, not the name.
    ``update``: an optimiser update's scalar and state operands (set exactly when ``role`` is ``UPDATE``).
    """

    role: Role = Role.FORWARD
    category: Category = Category.OTHER
    elementwise: Elementwise = Elementwise.NONE
    epilogue: EpilogueRole = EpilogueRole.NONE
    recomputable: bool = False
    identity_when: IdentityFn | None = None
    reshape: bool = False
    random_when: RandomFn | None = None
    fused_form: str | None = None
    base: str | None = None
    update: UpdateOperands | None = None


BACKWARD = OpTraits(role=Role.BACKWARD)  # the traits of every backward op


@dataclass(frozen=True)
class OpDef:
    """Everything cnncc knows about one op.

    ``inputs`` names the operands in order; the last ``optional`` of them may be left out (a conv without bias).
    A ``variadic`` op (concat) takes one or more operands; its ``inputs`` then only name the first ones.
    ``infer`` raises :class:`ShapeError` through ``where.fail``; ``reference`` computes in the dtype of its inputs.
    ``macs`` counts multiply-accumulates (the seeds' "FLOPs" for ResNet-50 are MACs); ``flops`` counts every
    arithmetic operation (2 per MAC, 1 per elementwise op, ...). ``vjp`` is the vector-Jacobian product (module
    docstring), ``None`` for an op that cannot be differentiated through yet. ``traits``: see :class:`OpTraits`.
    ``derivative``: an activation's elementwise dy/dx, the reference of its VJP (``activation_grad``).
    """

    name: str
    inputs: tuple[str, ...]
    infer: InferFn
    reference: ReferenceFn
    attrs: type = NoAttrs
    optional: int = 0
    variadic: bool = False
    macs: CountFn = _zero
    flops: CountFn = _zero
    vjp: VjpFn | None = None
    traits: OpTraits = OpTraits()
    derivative: DerivativeFn | None = None
    algorithms: tuple[str, ...] = ("reference",)
    doc: str = ""

    def default_attrs(self) -> Any:
        try:
            return self.attrs()
        except TypeError as e:
            raise CnnccError(f"op '{self.name}' needs attributes ({self.attrs.__name__})") from e

    def check_arity(self, n: int, where: Where) -> None:
        if self.variadic:
            if n < 1:
                names = ", ".join(self.inputs)
                raise where.fail("operand count", f"expected at least 1 operand ({names}, ...), got {n}")
            return
        lo, hi = len(self.inputs) - self.optional, len(self.inputs)
        if not lo <= n <= hi:
            want = f"{lo}" if lo == hi else f"{lo} to {hi}"
            raise where.fail("operand count", f"expected {want} operands ({', '.join(self.inputs)}), got {n}")

    def infer_types(self, types: Sequence[TensorType], attrs: Any, layer: str) -> tuple[TensorType, ...]:
        where = Where(layer, self.name)
        if not isinstance(attrs, self.attrs):
            raise GraphError(f"layer '{layer}' ({self.name}): attributes must be {self.attrs.__name__}, "
                             f"got {type(attrs).__name__}")
        self.check_arity(len(types), where)
        return tuple(self.infer(types, attrs, where))

    def run_reference(self, arrays: Sequence[np.ndarray], attrs: Any) -> tuple[np.ndarray, ...]:
        out = self.reference(arrays, attrs)
        return out if isinstance(out, tuple) else (out,)


_REGISTRY: dict[str, OpDef] = {}


def register(op: OpDef) -> OpDef:
    """Register ``op`` under its name; an op module calls this once at import."""
    if op.name in _REGISTRY:
        raise CnnccError(f"op '{op.name}' is registered twice")
    if not dataclasses.is_dataclass(op.attrs) or not op.attrs.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        raise CnnccError(f"op '{op.name}': attributes must be a frozen dataclass")
    _REGISTRY[op.name] = op
    return op


def get_op(name: str) -> OpDef:
    if name not in _REGISTRY:
        import difflib

        near = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        raise CnnccError(f"unknown op '{name}'{hint}")
    return _REGISTRY[name]


def all_ops() -> dict[str, OpDef]:
    return dict(_REGISTRY)


def traits(op: str) -> OpTraits:
    """The traits of the registered op ``op`` (passes ask this for every node: one dict lookup)."""
    opdef = _REGISTRY.get(op)
    return (opdef if opdef is not None else get_op(op)).traits


def ops_where(pred: Callable[[OpTraits], bool]) -> tuple[str, ...]:
    """The names of the registered ops whose traits satisfy ``pred``, in registration order."""
    return tuple(name for name, op in _REGISTRY.items() if pred(op.traits))


def is_identity(op: str, attrs: Any, x: TensorType, y: TensorType) -> bool:
    """``op`` with ``attrs`` computes nothing from input type ``x`` to output type ``y`` (``identity_when``)."""
    when = traits(op).identity_when
    return when is not None and when(attrs, x, y)


def draws_random(op: str, attrs: Any) -> bool:
    """``op`` with ``attrs`` draws random numbers (``random_when``)."""
    when = traits(op).random_when
    return when is not None and when(attrs)
