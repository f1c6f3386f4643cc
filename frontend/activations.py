"""Activation layers, and ``Activation(name)`` / ``activation=`` lookup by name (Keras style).

Formulas: seed 000 L485-499 (table of activations), seed 003 L706-740 (leaky/parametric ReLU, ELU), seed 004
L34-69 (hard-tanh). The ReLU derivative at 0 is 0, as in PyTorch (the seeds say 1).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cnncc.errors import OpAttributeError
from cnncc.frontend.init import InitFn, constant
from cnncc.frontend.layers import Layer, op_attrs
from cnncc.frontend.trace import LayerContext
from cnncc.ir import Value


class _Unary(Layer):
    """An activation that is exactly one op with fixed attributes."""

    op = ""

    def attrs(self) -> Any:
        return None

    def emit(self, ctx: LayerContext, inputs: list[Value]) -> Value:
        return ctx.apply(self.op, inputs, self.attrs())


class ReLU(_Unary):
    kind = op = "relu"


class ReLU6(_Unary):
    kind = op = "relu6"


class Sigmoid(_Unary):
    kind = op = "sigmoid"


class Tanh(_Unary):
    kind = op = "tanh"


class LeakyReLU(_Unary):
    kind = op = "leaky_relu"

    def __init__(self, negative_slope: float = 0.01, name: str | None = None) -> None:
        super().__init__(name)
        self.negative_slope = negative_slope

    def attrs(self) -> Any:
        return op_attrs("leaky_relu", negative_slope=float(self.negative_slope))


class ELU(_Unary):
    kind = op = "elu"

    def __init__(self, alpha: float = 1.0, name: str | None = None) -> None:
        super().__init__(name)
        self.alpha = alpha

    def attrs(self) -> Any:
        return op_attrs("elu", alpha=float(self.alpha))


class Softplus(_Unary):
    kind = op = "softplus"

    def __init__(self, beta: float = 1.0, threshold: float = 20.0, name: str | None = None) -> None:
        super().__init__(name)
        self.beta, self.threshold = beta, threshold

    def attrs(self) -> Any:
        return op_attrs("softplus", beta=float(self.beta), threshold=float(self.threshold))


class Hardtanh(_Unary):
    kind = op = "hardtanh"

    def __init__(self, min_val: float = -1.0, max_val: float = 1.0, name: str | None = None) -> None:
        super().__init__(name)
        self.min_val, self.max_val = min_val, max_val

    def attrs(self) -> Any:
        return op_attrs("hardtanh", min_val=float(self.min_val), max_val=float(self.max_val))


class Softmax(_Unary):
    kind = op = "softmax"

    def __init__(self, axis: int = 1, name: str | None = None) -> None:
        super().__init__(name)
        self.axis = axis

    def attrs(self) -> Any:
        return op_attrs(self.op, axis=self.axis)


class LogSoftmax(Softmax):
    kind = op = "log_softmax"


class PReLU(Layer):
    """Parametric ReLU with a learned slope: one shared (``num_parameters=1``) or one per channel."""

    kind = "prelu"

    def __init__(self, num_parameters: int | str = 1, init: float | str | InitFn = 0.25,
                 name: str | None = None) -> None:
        super().__init__(name)
        self.num_parameters = num_parameters
        self.init = constant(init) if isinstance(init, float | int) else init

    def emit(self, ctx: LayerContext, inputs: list[Value]) -> Value:
        x = inputs[0]
        n = x.shape[1] if self.num_parameters == "channel" else self.num_parameters
        alpha = ctx.param("weight", (int(n),), self.init)
        return ctx.apply("prelu", [x, alpha])


ACTIVATIONS: dict[str, Callable[[], Layer]] = {
    "relu": ReLU, "relu6": ReLU6, "sigmoid": Sigmoid, "logistic": Sigmoid, "tanh": Tanh,
    "leaky_relu": LeakyReLU, "elu": ELU, "softplus": Softplus, "hardtanh": Hardtanh,
    "softmax": Softmax, "log_softmax": LogSoftmax, "prelu": PReLU,
}


def activation_layer(name: str, layer: str = "") -> Layer:
    """A fresh activation layer for ``name``, named ``layer`` (its owner's name when fused by ``activation=``)."""
    if name not in ACTIVATIONS:
        import difflib

        near = difflib.get_close_matches(name, ACTIVATIONS, n=1)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        where = f"layer '{layer}': " if layer else ""
        raise OpAttributeError(f"{where}unknown activation '{name}'; known: {', '.join(sorted(ACTIVATIONS))}{hint}")
    act = ACTIVATIONS[name]()
    act.name = layer or None
    return act


class Activation(Layer):
    """Keras' ``Activation('relu')``: an activation chosen by name."""

    kind = "activation"

    def __init__(self, activation: str, name: str | None = None) -> None:
        super().__init__(name)
        activation_layer(activation)  # fail at construction on an unknown name
        self.activation = activation

    def emit(self, ctx: LayerContext, inputs: list[Value]) -> Value:
        inner = activation_layer(self.activation, self.name or "")
        return inner.emit(LayerContext(ctx.emission, inner), inputs)

    def describe(self) -> str:
        return self.activation
