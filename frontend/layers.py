"""DSL layers: each owns its parameters (created by seeded initialisers) and emits graph ops when called.

Names follow PyTorch (``Conv2d``, ``Linear``, ``BatchNorm``) with Keras conveniences (``Dense``, ``activation=``,
``padding="same"``); input channels and features are inferred from the input, as in Keras.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cnncc.errors import GraphError, ShapeError
from cnncc.frontend.init import InitFn
from cnncc.frontend.trace import LayerContext, SymbolicTensor
from cnncc.ir import Value
from cnncc.ops import Where, get_op


def op_attrs(op: str, **fields: Any) -> Any:
    """The attribute object of ``op`` built from keyword fields."""
    return get_op(op).attrs(**fields)


class Layer:
    """Base of every DSL layer. Subclasses set ``kind`` and implement :meth:`emit`."""

    kind = "layer"

    def __init__(self, name: str | None = None) -> None:
        self.name = name

    def __call__(self, x: SymbolicTensor | Sequence[SymbolicTensor]) -> SymbolicTensor:
        inputs = tuple(x) if isinstance(x, list | tuple) else (x,)
        if not inputs or not all(isinstance(t, SymbolicTensor) for t in inputs):
            raise GraphError(f"{type(self).__name__}: call a layer on symbolic tensors (from cnncc.frontend.Input "
                             f"or other layers), got {[type(t).__name__ for t in inputs]}")
        tracer = inputs[0].tracer
        if any(t.tracer is not tracer for t in inputs):
            raise GraphError(f"{type(self).__name__}: inputs come from different models")
        tracer.name_layer(self)
        return tracer.add(SymbolicTensor(tracer, self, inputs))

    def emit(self, ctx: LayerContext, inputs: list[Value]) -> Value:
        raise NotImplementedError

    def where(self) -> Where:
        return Where(self.name or "?", self.kind)

    def describe(self) -> str:
        """A short text of the layer's settings for ``summary()``."""
        return ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def as_pair(v: int | Sequence[int], field: str, where: Where) -> tuple[int, int]:
    pair = (v, v) if isinstance(v, int) else tuple(v)
    if len(pair) != 2 or not all(isinstance(e, int) for e in pair):
        raise where.fail(field, f"expected an int or a pair of ints, got {v!r}")
    return int(pair[0]), int(pair[1])


def positive(v: int, field: str, where: Where) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
        raise where.fail("positive size", f"{field} must be a positive integer, got {v!r}")
    return v


def require_rank(x: Value, rank: int, what: str, where: Where) -> None:
    if len(x.shape) != rank:
        raise where.fail("input rank", f"expected {what}, got shape {x.shape}")


def with_activation(ctx: LayerContext, y: Value, activation: str | None) -> Value:
    if activation is None:
        return y
    from cnncc.frontend.activations import activation_layer

    if activation == "prelu":
        raise ctx.layer.where().fail("fused activation", "PReLU has its own parameters; add a PReLU layer instead "
                                                         "of activation='prelu'")
    return activation_layer(activation, ctx.layer.name or "?").emit(ctx, [y])


class Conv2d(Layer):
    """2-D cross-correlation (seed 000 L289: no kernel flip) over NCHW input, with optional fused activation.

    ``padding``: int, (ph, pw), (top, bottom, left, right), ``"valid"`` or ``"same"`` (Keras: out = ceil(in/stride),
    extra padding at the bottom/right). ``groups``: 1, C (depthwise) or any divisor of C and ``out_channels``.
    """

    kind = "conv2d"

    def __init__(self, out_channels: int, kernel_size: int | Sequence[int], stride: int | Sequence[int] = 1,
                 padding: int | Sequence[int] | str = 0, dilation: int | Sequence[int] = 1, groups: int = 1,
                 bias: bool = True, activation: str | None = None, in_channels: int | None = None,
                 weight_init: str | InitFn = "he_normal", bias_init: str | InitFn = "zeros",
                 name: str | None = None) -> None:
        super().__init__(name)
        self.out_channels, self.kernel_size, self.stride = out_channels, kernel_size, stride
        self.padding, self.dilation, self.groups, self.bias = padding, dilation, groups, bias
        self.activation, self.in_channels = activation, in_channels
        self.weight_init, self.bias_init = weight_init, bias_init

    def emit(self, ctx: LayerContext, inputs: list[Value]) -> Value:
        from cnncc.ops.window import resolve_padding

        w = self.where()
        x = inputs[0]
        require_rank(x, 4, "a 4-D (N, C, H, W) input", w)
        k_out = positive(self.out_channels, "out_channels", w)
        groups = positive(self.groups, "groups", w)
        k, s, d = (as_pair(v, f, w) for v, f in ((self.kernel_size, "kernel_size"), (self.stride, "stride"),
                                                   (self.dilation, "dilation")))
        for e in (*k, *s, *d):
            positive(e, "kernel_size, stride and dilation", w)
        c_in = self.in_channels if self.in_channels is not None else x.shape[1]
        if c_in % groups or k_out % groups:
            raise w.fail("groups", f"in_channels={c_in} and out_channels={k_out} must both be divisible by "
                                   f"groups={groups}")
        pad = resolve_padding(self.padding, k, s, d, (x.shape[2], x.shape[3]), w)
        operands = [x, ctx.param("weight", (k_out, c_in // groups, *k), self.weight_init, groups=groups)]
        if self.bias:
            operands.append(ctx.param("bias", (k_out,), self.bias_init))
        y = ctx.apply("conv2d", operands, op_attrs("conv2d", stride=s, padding=pad, dilation=d, groups=groups))
        return with_activation(ctx, y, self.activation)

    def describe(self) -> str:
        g = f" g{self.groups}" if self.groups != 1 else ""
        return f"{self.kernel_size}/{self.stride} p{self.padding}{g}"


class _Pool(Layer):
    op = ""

    def __init__(self, kernel_size: int | Sequence[int], stride: int | Sequence[int] | None = None,
                 padding: int | Sequence[int] | str = 0, ceil_mode: bool = False, name: str | None = None) -> None:
        super().__init__(name)
        self.kernel_size, self.stride, self.padding, self.ceil_mode = kernel_size, stride, padding, ceil_mode

    def geometry(self, x: Value) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int, int, int]]:
        from cnncc.ops.window import resolve_padding

        w = self.where()
        require_rank(x, 4, "a 4-D (N, C, H, W) input", w)
        k = as_pair(self.kernel_size, "kernel_size", w)
        s = as_pair(self.stride if self.stride is not None else self.kernel_size, "stride", w)
        for e in (*k, *s):
            positive(e, "kernel_size and stride", w)
        return k, s, resolve_padding(self.padding, k, s, (1, 1), (x.shape[2], x.shape[3]), w)

    def describe(self) -> str:
        return f"{self.kernel_size}/{self.stride or self.kernel_size}"


class MaxPool2d(_Pool):
    """Max pooling; padding is -inf, ties go to the first maximum in row-major window order."""

    kind = "max_pool2d"

    def emit(self, ctx: LayerContext, inputs: list[Value]) -> Value:
        k, s, pad = self.geometry(inputs[0])
        return ctx.apply("max_pool2d", inputs, op_attrs("max_pool2d", kernel=k, stride=s, padding=pad,
                                                        ceil_mode=self.ceil_mode))


class AvgPool2d(_Pool):
    """Average pooling; ``padding="same"`` excludes the padding from the divisor, as Keras does."""

    kind = "avg_pool2d"

    def __init__(self, kernel_size: int | Sequence[int], stride: int | Sequence[int] | None = None,
                 padding: int | Sequence[int] | str = 0, ceil_mode: bool = False,
                 count_include_pad: bool | None = None, name: str | None = None) -> None:
        super().__init__(kernel_size, stride, padding, ceil_mode, name)
        self.count_include_pad = (padding != "same") if count_include_pad is None else count_include_pad

    def emit(self, ctx: LayerContext, inputs: list[Value]) -> Value:
        k, s, pad = self.geometry(inputs[0])
        return ctx.apply("avg_pool2d", inputs, op_attrs("avg_pool2d", kernel=k, stride=s, padding=pad,
                                                        ceil_mode=self.ceil_mode,
                                                        count_include_pad=self.count_include_pad))


class GlobalAvgPool2d(Layer):
    """Mean over H and W: (N, C, H, W) -> (N, C, 1, 1), as PyTorch's AdaptiveAvgPool2d(1)."""

    kind = "global_avg_pool"

    def emit(self, ctx: LayerContext, inputs: list[Value]) -> Value:
        return ctx.apply("global_avg_pool", inputs)


class Linear(Layer):
    """Fully connected: y = x Wᵀ + b with W of shape (out, in) (PyTorch's convention; seed 002 L12-22)."""

    kind = "linear"

    def __init__(self, out_features: int, bias: bool = True, activation: str | None = None,
                 in_features: int | None = None, weight_init: str | InitFn = "he_normal",
                 bias_init: str | InitFn = "zeros", name: str | None = None) -> None:
        super().__init__(name)
        self.out_features, self.bias, self.activation, self.in_features = out_features, bias, activation, in_features
        self.weight_init, self.bias_init = weight_init, bias_init

    def emit(self, ctx: LayerContext, inputs: list[Value]) -> Value:
        w = self.where()
        x = inputs[0]
        if len(x.shape) != 2:
            raise w.fail("input rank", f"expected a 2-D (N, features) input, got shape {x.shape}; "
                                       "add a Flatten layer before it")
        n_out = positive(self.out_features, "out_features", w)
        n_in = self.in_features if self.in_features is not None else x.shape[1]
        operands = [x, ctx.param("weight", (n_out, n_in), self.weight_init)]
        if self.bias:
            operands.append(ctx.param("bias", (n_out,), self.bias_init))
        return with_activation(ctx, ctx.apply("linear", operands), self.activation)


Dense = Linear


class Flatten(Layer):
    """(N, C, H, W) -> (N, C·H·W) in NCHW row-major order, as ``torch.flatten(x, 1)``."""

    kind = "flatten"

    def emit(self, ctx: LayerContext, inputs: list[Value]) -> Value:
        return ctx.apply("flatten", inputs, op_attrs("flatten", start_dim=1))


class Reshape(Layer):
    """Reshape each sample to ``shape`` (the batch axis is kept; one entry may be -1)."""

    kind = "reshape"

    def __init__(self, shape: Sequence[int], name: str | None = None) -> None:
        super().__init__(name)
        self.shape = tuple(shape)

    def emit(self, ctx: LayerContext, inputs: list[Value]) -> Value:
        return ctx.apply("reshape", inputs, op_attrs("reshape", shape=(inputs[0].shape[0], *self.shape)))


class BatchNorm(Layer):
    """Batch normalisation over axis 1 of (N, C, H, W) or (N, C) input (seed 003 L380-409).

    Parameters are named as PyTorch's: ``weight`` (γ), ``bias`` (β), ``running_mean``, ``running_var`` (frozen).
    Inference graphs use the running statistics; training graphs use batch statistics (biased variance).
    """

    kind = "batch_norm"

    def __init__(self, eps: float = 1e-5, momentum: float = 0.1, name: str | None = None) -> None:
        super().__init__(name)
        self.eps, self.momentum = eps, momentum

    def emit(self, ctx: LayerContext, inputs: list[Value]) -> Value:
        x = inputs[0]
        if len(x.shape) not in (2, 4):
            raise self.where().fail("input rank", f"expected (N, C) or (N, C, H, W) input, got shape {x.shape}")
        c = (x.shape[1],)
        operands = [x, ctx.param("weight", c, "ones"), ctx.param("bias", c, "zeros"),
                    ctx.param("running_mean", c, "zeros", trainable=False),
                    ctx.param("running_var", c, "ones", trainable=False)]
        return ctx.apply("batch_norm", operands, op_attrs("batch_norm", eps=float(self.eps),
                                                          momentum=float(self.momentum), training=ctx.training))


BatchNorm2d = BatchNorm1d = BatchNorm


class Dropout(Layer):
    """Inverted dropout with p = drop probability: identity in inference graphs (seed 003 L500-543)."""

    kind = "dropout"

    def __init__(self, p: float = 0.5, seed: int = 0, name: str | None = None) -> None:
        super().__init__(name)
        self.p, self.seed = p, seed

    def emit(self, ctx: LayerContext, inputs: list[Value]) -> Value:
        return ctx.apply("dropout", inputs, op_attrs("dropout", p=float(self.p), training=ctx.training,
                                                     seed=int(self.seed)))

    def describe(self) -> str:
        return f"p={self.p}"


class _Binary(Layer):
    """An elementwise op of two tensors with NumPy broadcasting."""

    op = ""

    def emit(self, ctx: LayerContext, inputs: list[Value]) -> Value:
        if len(inputs) != 2:
            raise self.where().fail("operand count", f"{type(self).__name__} takes 2 tensors, got {len(inputs)}")
        return ctx.apply(self.op, inputs)


class Add(_Binary):
    """Elementwise sum of two tensors with broadcasting (residual connections)."""

    kind = op = "add"


class Multiply(_Binary):
    """Elementwise product with broadcasting (channel scaling such as squeeze-and-excitation)."""

    kind = op = "multiply"


class Concat(Layer):
    """Concatenation along ``axis`` (channels by default: Inception branches)."""

    kind = "concat"

    def __init__(self, axis: int = 1, name: str | None = None) -> None:
        super().__init__(name)
        self.axis = axis

    def emit(self, ctx: LayerContext, inputs: list[Value]) -> Value:
        return ctx.apply("concat", inputs, op_attrs("concat", axis=self.axis))


__all__ = ["Add", "AvgPool2d", "BatchNorm", "BatchNorm1d", "BatchNorm2d", "Concat", "Conv2d", "Dense", "Dropout",
           "Flatten", "GlobalAvgPool2d", "Layer", "Linear", "MaxPool2d", "Multiply", "Reshape", "ShapeError"]
