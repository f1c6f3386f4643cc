"""Reverse-mode autodiff (cnncc.autodiff.grad) and every op's VJP, run by the reference interpreter.

Two independent oracles per VJP: PyTorch autograd in float32 and central finite differences of the forward graph
in float64 (cnncc.testing.check_vjp). A non-scalar op output is reduced to a scalar loss as ``Σ y * R`` (``R`` a
random cotangent input), so the gradient checked is the VJP with cotangent ``R``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnncc.autodiff import NoVjpError, grad
from cnncc.errors import GraphError
from cnncc.ir import DType, Graph, GraphBuilder, Value
from cnncc.ops import all_ops
from cnncc.ops.activation_grad import ActivationGradAttrs
from cnncc.ops.avg_pool2d import AvgPool2dAttrs
from cnncc.ops.batch_norm import BatchNormAttrs
from cnncc.ops.batch_norm_grad import BatchNormGradAttrs
from cnncc.ops.concat import ConcatAttrs
from cnncc.ops.conv2d import Conv2dAttrs
from cnncc.ops.conv2d_grad_input import Conv2dGradAttrs
from cnncc.ops.cross_entropy import CrossEntropyAttrs
from cnncc.ops.dropout import DropoutAttrs, keep_mask
from cnncc.ops.elu import EluAttrs
from cnncc.ops.epilogue import EpilogueStep
from cnncc.ops.flatten import FlattenAttrs
from cnncc.ops.fused_conv2d import FusedConv2dAttrs
from cnncc.ops.fused_linear import FusedLinearAttrs
from cnncc.ops.hardtanh import HardtanhAttrs
from cnncc.ops.leaky_relu import LeakyReluAttrs
from cnncc.ops.log_softmax import LogSoftmaxAttrs
from cnncc.ops.max_pool2d import MaxPool2dAttrs
from cnncc.ops.mse import MseAttrs
from cnncc.ops.nll import NllAttrs
from cnncc.ops.operands import Reduction
from cnncc.ops.reshape import ReshapeAttrs
from cnncc.ops.slice import SliceAttrs
from cnncc.ops.softmax import SoftmaxAttrs
from cnncc.ops.softplus import SoftplusAttrs
from cnncc.ops.sum_to import SumToAttrs
from cnncc.ops.transpose import TransposeAttrs
from cnncc.runtime import interpret
from cnncc.testing import check_vjp, rel_error, rng_for

# float32 gradients vs PyTorch's: both round every product to float32 and sum (sum_to, linear) in other orders;
# relative to the gradient scale, 1e-5 covers the short reductions here (see cnncc.testing.TOL_F32_REDUCTION).
TOL_TORCH_F32 = 1e-5
# float64 gradients vs central differences with step EPS: truncation ~EPS^2 |f'''| ~ 1e-10 and rounding
# ~1e-16 / EPS ~ 1e-11 of the loss, well inside 1e-6 of the gradient scale.
TOL_FD_F64 = 1e-6
EPS = 1e-5
# Inputs are kept this far from every kink (relu at 0, clip points, softplus threshold) so that the finite
# differences never straddle one.
KINK_MARGIN = 1e-2

M = Reduction.MEAN
S = Reduction.SUM


def avoid(x: np.ndarray, kinks: Sequence[float]) -> np.ndarray:
    for k in kinks:
        near = np.abs(x - k) < KINK_MARGIN
        x = np.where(near, k + np.where(x >= k, 2, -2) * KINK_MARGIN, x)
    return x


# One case: an op applied to operands; each operand is (shape, kind) with kind "x" (differentiated), "int"
# (class labels), "prob" (float, differentiated, positive) or "distinct" (differentiated, all values at least 0.05
# apart: max pooling without ties, so that finite differences never swap a window's argmax).
# ``torch_fn`` computes the same op in PyTorch.
Case = tuple[str, str, Any, Sequence[tuple[tuple[int, ...], str]], Callable[..., torch.Tensor], Sequence[float]]


def act(op: str, attrs: Any, fn: Callable[..., torch.Tensor], kinks: Sequence[float] = (0.0,)) -> Case:
    return (f"{op}-{attrs}", op, attrs, [((4, 9), "x")], fn, kinks)


CASES: list[Case] = [
    act("relu", None, F.relu),
    act("relu6", None, F.relu6, (0.0, 6.0)),
    act("leaky_relu", LeakyReluAttrs(0.1), lambda x: F.leaky_relu(x, 0.1)),
    act("leaky_relu", LeakyReluAttrs(-0.3), lambda x: F.leaky_relu(x, -0.3)),
    act("elu", EluAttrs(1.0), lambda x: F.elu(x, 1.0)),
    act("elu", EluAttrs(0.7), lambda x: F.elu(x, 0.7)),
    act("sigmoid", None, torch.sigmoid, ()),
    act("tanh", None, torch.tanh, ()),
    act("softplus", SoftplusAttrs(1.0, 20.0), lambda x: F.softplus(x, 1.0, 20.0), ()),
    act("softplus", SoftplusAttrs(2.5, 4.0), lambda x: F.softplus(x, 2.5, 4.0), (1.6,)),
    act("hardtanh", HardtanhAttrs(), F.hardtanh, (-1.0, 1.0)),
    act("hardtanh", HardtanhAttrs(-0.5, 2.0), lambda x: F.hardtanh(x, -0.5, 2.0), (-0.5, 2.0)),
]
for _op, _fn in (("add", torch.add), ("multiply", torch.mul)):
    for _sa, _sb in [((2, 3, 4, 5), (2, 3, 4, 5)), ((2, 3, 4, 5), (3, 1, 1)), ((1, 3, 1, 1), (2, 3, 4, 5)),
                     ((4, 5), (5,)), ((3, 1), (1, 4)), ((2, 3), ())]:
        CASES.append((f"{_op}-{_sa}-{_sb}", _op, None, [(_sa, "x"), (_sb, "x")], _fn, ()))
CASES += [
    ("linear-bias", "linear", None, [((5, 7), "x"), ((3, 7), "x"), ((3,), "x")], F.linear, ()),
    ("linear-nobias", "linear", None, [((5, 7), "x"), ((3, 7), "x")], F.linear, ()),
    ("flatten-1", "flatten", FlattenAttrs(1), [((2, 3, 4, 5), "x")], lambda x: torch.flatten(x, 1), ()),
    ("flatten-2", "flatten", FlattenAttrs(2), [((2, 3, 4, 5), "x")], lambda x: torch.flatten(x, 2), ()),
    ("reshape", "reshape", ReshapeAttrs((6, -1)), [((2, 3, 4, 5), "x")], lambda x: x.reshape(6, -1), ()),
    ("transpose-nhwc", "transpose", TransposeAttrs((0, 2, 3, 1)), [((2, 3, 4, 5), "x")],
     lambda x: x.permute(0, 2, 3, 1), ()),
    ("transpose-3d", "transpose", TransposeAttrs((2, 0, 1)), [((2, 3, 4), "x")], lambda x: x.permute(2, 0, 1), ()),
    ("gap", "global_avg_pool", None, [((2, 3, 4, 5), "x")], lambda x: x.mean(dim=(2, 3), keepdim=True), ()),
    ("dropout-inference", "dropout", DropoutAttrs(0.3, False, 1), [((4, 9), "x")], lambda x: x, ()),
    ("dropout-training", "dropout", DropoutAttrs(0.3, True, 7), [((4, 9), "x")],
     lambda x: x * torch.from_numpy(keep_mask((4, 9), 0.3, 7)).to(x.dtype) / 0.7, ()),
]
for _axis in (1, -1, 0):
    CASES.append((f"softmax-{_axis}", "softmax", SoftmaxAttrs(_axis), [((3, 4, 5), "x")],
                  lambda x, a=_axis: torch.softmax(x, a), ()))
    CASES.append((f"log_softmax-{_axis}", "log_softmax", LogSoftmaxAttrs(_axis), [((3, 4, 5), "x")],
                  lambda x, a=_axis: torch.log_softmax(x, a), ()))
for _red in (M, S):
    CASES += [
        (f"cross_entropy-indices-{_red.value}", "cross_entropy", CrossEntropyAttrs(_red),
         [((6, 4), "x"), ((6,), "int")],
         lambda s, t, r=_red: F.cross_entropy(s, t, reduction=r.value), ()),
        (f"cross_entropy-probs-{_red.value}", "cross_entropy", CrossEntropyAttrs(_red),
         [((6, 4), "x"), ((6, 4), "prob")],
         lambda s, t, r=_red: F.cross_entropy(s, t, reduction=r.value), ()),
        (f"nll-{_red.value}", "nll", NllAttrs(_red), [((6, 4), "x"), ((6,), "int")],
         lambda lp, t, r=_red: F.nll_loss(lp, t, reduction=r.value), ()),
        (f"mse-{_red.value}", "mse", MseAttrs(_red), [((3, 5), "x"), ((3, 5), "x")],
         lambda p, t, r=_red: F.mse_loss(p, t, reduction=r.value), ()),
    ]



# --- conv2d, pooling, batch norm, concat, prelu, slice and the fused ops -------------------------------------------


def _torch_pad(x: torch.Tensor, pad: tuple[int, int, int, int], value: float = 0.0) -> torch.Tensor:
    t, b, l, r = pad
    return F.pad(x, (l, r, t, b), value=value)


def _conv_case(name: str, x: tuple[int, ...], w: tuple[int, ...], bias: bool, a: Conv2dAttrs) -> Case:
    def fn(xt: torch.Tensor, wt: torch.Tensor, bt: torch.Tensor | None = None) -> torch.Tensor:
        return F.conv2d(_torch_pad(xt, a.padding), wt, bt, a.stride, 0, a.dilation, a.groups)

    ops = [(x, "x"), (w, "x")] + ([((w[0],), "x")] if bias else [])
    return (f"conv2d-{name}", "conv2d", a, ops, fn, ())


CASES += [
    _conv_case("k3-s1-p1-bias", (2, 3, 7, 6), (4, 3, 3, 3), True, Conv2dAttrs((1, 1), (1, 1, 1, 1))),
    _conv_case("k3-s2-asym-nobias", (2, 3, 8, 7), (5, 3, 3, 3), False, Conv2dAttrs((2, 2), (0, 1, 2, 1))),
    _conv_case("k5-s3-p2-bias", (1, 2, 11, 10), (3, 2, 5, 5), True, Conv2dAttrs((3, 3), (2, 2, 2, 2))),
    _conv_case("k1-bias", (2, 4, 5, 5), (6, 4, 1, 1), True, Conv2dAttrs()),
    _conv_case("k1-s2-nobias", (1, 3, 6, 7), (2, 3, 1, 1), False, Conv2dAttrs((2, 2))),
    _conv_case("k3-d2-p2", (1, 3, 9, 9), (4, 3, 3, 3), True, Conv2dAttrs((1, 1), (2, 2, 2, 2), (2, 2))),
    _conv_case("g2-p1", (2, 4, 6, 6), (6, 2, 3, 3), True, Conv2dAttrs((1, 1), (1, 1, 1, 1), groups=2)),
    _conv_case("depthwise-s2", (2, 4, 7, 7), (4, 1, 3, 3), True, Conv2dAttrs((2, 2), (1, 1, 1, 1), groups=4)),
    _conv_case("depthwise-x2", (1, 3, 6, 6), (6, 1, 3, 3), False, Conv2dAttrs((1, 1), (1, 1, 1, 1), groups=3)),
    _conv_case("k3x2-s2x1-d1x2-asym", (1, 3, 8, 9), (4, 3, 3, 2), True,
               Conv2dAttrs((2, 1), (1, 0, 0, 1), (1, 2))),
    _conv_case("k2x5-s1x3-g2-nosquare", (2, 2, 5, 12), (4, 1, 2, 5), True,
               Conv2dAttrs((1, 3), (0, 1, 2, 2), (1, 1), 2)),
]


def _max_case(name: str, a: MaxPool2dAttrs, x: tuple[int, ...] = (2, 3, 9, 8)) -> Case:
    t, b, l, r = a.padding
    if (t, l) == (b, r):
        def fn(xt: torch.Tensor) -> torch.Tensor:
            return F.max_pool2d(xt, a.kernel, a.stride, (t, l), a.dilation, a.ceil_mode)
    else:  # PyTorch pads symmetrically: pad with -inf by hand (no ceil_mode then: the padding is all explicit)
        assert not a.ceil_mode

        def fn(xt: torch.Tensor) -> torch.Tensor:
            return F.max_pool2d(_torch_pad(xt, a.padding, -float("inf")), a.kernel, a.stride, 0, a.dilation)

    return (f"max_pool2d-{name}", "max_pool2d", a, [(x, "distinct")], fn, ())


CASES += [
    _max_case("3x3s2", MaxPool2dAttrs((3, 3), (2, 2))),
    _max_case("2x2s2", MaxPool2dAttrs((2, 2), (2, 2))),
    _max_case("3x3s2-p1", MaxPool2dAttrs((3, 3), (2, 2), (1, 1, 1, 1))),
    _max_case("3x3s2-p1-ceil", MaxPool2dAttrs((3, 3), (2, 2), (1, 1, 1, 1), ceil_mode=True)),
    _max_case("2x2s2-ceil", MaxPool2dAttrs((2, 2), (2, 2), ceil_mode=True)),
    _max_case("3x3s1-d2-p1", MaxPool2dAttrs((3, 3), (1, 1), (1, 1, 1, 1), (2, 2))),
    _max_case("3x2s2x1-asym", MaxPool2dAttrs((3, 2), (2, 1), (1, 0, 0, 1))),
]


def _avg_case(name: str, a: AvgPool2dAttrs, x: tuple[int, ...] = (2, 3, 9, 8)) -> Case:
    t, b, l, r = a.padding
    if (t, l) == (b, r):
        def fn(xt: torch.Tensor) -> torch.Tensor:
            return F.avg_pool2d(xt, a.kernel, a.stride, (t, l), a.ceil_mode, a.count_include_pad)
    else:  # explicit zero padding that counts: PyTorch's count_include_pad=True on a padded input
        assert a.count_include_pad and not a.ceil_mode

        def fn(xt: torch.Tensor) -> torch.Tensor:
            return F.avg_pool2d(_torch_pad(xt, a.padding), a.kernel, a.stride)

    return (f"avg_pool2d-{name}", "avg_pool2d", a, [(x, "x")], fn, ())


CASES += [
    _avg_case("2x2s2", AvgPool2dAttrs((2, 2), (2, 2))),
    _avg_case("3x3s2", AvgPool2dAttrs((3, 3), (2, 2))),
    _avg_case("3x3s2-p1-incl", AvgPool2dAttrs((3, 3), (2, 2), (1, 1, 1, 1), False, True)),
    _avg_case("3x3s2-p1-excl", AvgPool2dAttrs((3, 3), (2, 2), (1, 1, 1, 1), False, False)),
    _avg_case("3x3s2-p1-ceil-incl", AvgPool2dAttrs((3, 3), (2, 2), (1, 1, 1, 1), True, True)),
    _avg_case("3x3s2-p1-ceil-excl", AvgPool2dAttrs((3, 3), (2, 2), (1, 1, 1, 1), True, False)),
    _avg_case("2x2s2-ceil", AvgPool2dAttrs((2, 2), (2, 2), ceil_mode=True)),
    _avg_case("3x2s1x2-p1-excl", AvgPool2dAttrs((3, 2), (1, 2), (1, 1, 1, 1), False, False)),
    _avg_case("3x3s2-asym-incl", AvgPool2dAttrs((3, 3), (2, 2), (1, 0, 0, 1))),
]


def _bn_case(shape: tuple[int, ...], training: bool, eps: float = 1e-3) -> Case:
    c = (shape[1],)

    def fn(x: torch.Tensor, g: torch.Tensor, b: torch.Tensor, m: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if training:  # torch updates the running buffers in place: hand it copies (they get no gradient)
            return F.batch_norm(x, m.detach().clone(), v.detach().clone(), g, b, training=True, eps=eps)
        # F.batch_norm is not differentiable in the running statistics: the inference formula, written out
        at = (1, -1) + (1,) * (x.dim() - 2)
        return (x - m.reshape(at)) / torch.sqrt(v.reshape(at) + eps) * g.reshape(at) + b.reshape(at)

    mode = "training" if training else "inference"
    return (f"batch_norm-{mode}-rank{len(shape)}", "batch_norm", BatchNormAttrs(eps, 0.1, training),
            [(shape, "x"), (c, "x"), (c, "x"), (c, "x"), (c, "prob")], fn, ())


CASES += [_bn_case(s, t) for s in ((6, 3), (2, 3, 4, 5), (3, 2, 5)) for t in (True, False)]
CASES += [
    ("concat-axis1", "concat", ConcatAttrs(1), [((2, 3, 4), "x"), ((2, 5, 4), "x")],
     lambda *xs: torch.cat(xs, 1), ()),
    ("concat-3-axis-1", "concat", ConcatAttrs(-1), [((2, 3, 2), "x"), ((2, 3, 1), "x"), ((2, 3, 4), "x")],
     lambda *xs: torch.cat(xs, -1), ()),
    ("concat-nchw", "concat", ConcatAttrs(1), [((2, 2, 3, 3), "x"), ((2, 1, 3, 3), "x")],
     lambda *xs: torch.cat(xs, 1), ()),
    ("concat-single", "concat", ConcatAttrs(0), [((3, 4), "x")], lambda x: torch.cat([x], 0), ()),
    ("slice-mid", "slice", SliceAttrs(1, 2, 5), [((3, 7), "x")], lambda x: x[:, 2:5], ()),
    ("slice-head-nchw", "slice", SliceAttrs(1, 0, 2), [((2, 3, 2, 2), "x")], lambda x: x[:, 0:2], ()),
    ("slice-tail", "slice", SliceAttrs(-1, 1, 4), [((2, 4), "x")], lambda x: x[:, 1:4], ()),
    ("prelu-channel", "prelu", None, [((2, 3, 4, 5), "x"), ((3,), "x")], F.prelu, (0.0,)),
    ("prelu-shared", "prelu", None, [((2, 3, 4, 5), "x"), ((1,), "x")], F.prelu, (0.0,)),
    ("prelu-rank2", "prelu", None, [((4, 6), "x"), ((6,), "x")], F.prelu, (0.0,)),
    ("prelu-rank1", "prelu", None, [((7,), "x"), ((1,), "x")], F.prelu, (0.0,)),
]

_FUSED_CONV = Conv2dAttrs((2, 1), (1, 1, 0, 2), (1, 1), 2)
CASES += [
    ("fused_conv2d-add-relu", "fused_conv2d",
     FusedConv2dAttrs(_FUSED_CONV, (EpilogueStep("add"), EpilogueStep("relu"))),
     [((2, 4, 6, 5), "x"), ((6, 2, 3, 3), "x"), ((6,), "x"), ((2, 6, 3, 5), "x")],
     lambda x, w, b, r: F.relu(F.conv2d(_torch_pad(x, _FUSED_CONV.padding), w, b, (2, 1), groups=2) + r), ()),
    ("fused_conv2d-tanh", "fused_conv2d", FusedConv2dAttrs(Conv2dAttrs(), (EpilogueStep("tanh"),)),
     [((1, 2, 5, 5), "x"), ((3, 2, 3, 3), "x"), ((3,), "x")], lambda x, w, b: torch.tanh(F.conv2d(x, w, b)), ()),
    ("fused_linear-elu-add-lrelu", "fused_linear",
     FusedLinearAttrs((EpilogueStep("elu", EluAttrs(1.0)), EpilogueStep("add"),
                       EpilogueStep("leaky_relu", LeakyReluAttrs(0.1)))),
     [((4, 6), "x"), ((5, 6), "x"), ((5,), "x"), ((4, 5), "x")],
     lambda x, w, b, r: F.leaky_relu(F.elu(F.linear(x, w, b)) + r, 0.1), ()),
    ("fused_linear-none", "fused_linear", FusedLinearAttrs(), [((3, 4), "x"), ((2, 4), "x"), ((2,), "x")],
     F.linear, ()),
]

def build_case(case: Case) -> tuple[Graph, dict[str, np.ndarray], list[str]]:
    """The op on inputs ``a0, a1, ...``; a scalar loss ``Σ y * R``; the arrays; the names to differentiate."""
    name, op, attrs, operands, _, kinks = case
    rng = rng_for(name)
    b = GraphBuilder(f"vjp_{name}")
    values, arrays, wrt = [], {}, []
    for i, (shape, kind) in enumerate(operands):
        if kind == "int":
            arr = rng.integers(0, operands[0][0][1], size=shape).astype(np.int64)
            values.append(b.input(f"a{i}", shape, DType.INT64))
        else:
            if kind == "prob":
                arr = rng.uniform(0.1, 1.0, size=shape)
            elif kind == "distinct":
                arr = (rng.permutation(int(np.prod(shape))).reshape(shape) - np.prod(shape) / 2) * 0.05
            else:
                arr = avoid(rng.standard_normal(shape) * 2, kinks)
            values.append(b.input(f"a{i}", shape, DType.FLOAT64))
            wrt.append(f"a{i}")
        arrays[f"a{i}"] = np.asarray(arr)
    y = b.apply(op, values, attrs, layer="op")
    if y.shape != ():
        r = b.input("R", y.shape, DType.FLOAT64, y.type.layout)
        arrays["R"] = rng.standard_normal(y.shape)
        y = b.apply("sum_to", [b.apply("multiply", [y, r], layer="project")], SumToAttrs(()), layer="loss")
    b.output(y, "loss")
    return b.build(), arrays, wrt


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_vjp_matches_torch_and_finite_differences(case: Case) -> None:
    graph, arrays, wrt = build_case(case)
    check_vjp(graph, arrays, wrt, case[4], tol_torch=TOL_TORCH_F32, tol_fd=TOL_FD_F64, eps=EPS, what=case[0])


def test_relu_derivative_at_zero_is_zero_as_pytorch() -> None:
    b = GraphBuilder("relu0")
    x = b.input("x", (4,))
    b.output(b.apply("sum_to", [b.apply("relu", [x])], SumToAttrs(())), "loss")
    got = interpret(grad(b.build(), wrt=["x"]), {"x": np.array([-1.0, 0.0, -0.0, 2.0])})["grad:x"]
    np.testing.assert_array_equal(got, [0.0, 0.0, 0.0, 1.0])
    xt = torch.tensor([-1.0, 0.0, -0.0, 2.0], requires_grad=True)
    F.relu(xt).sum().backward()
    np.testing.assert_array_equal(got, xt.grad.numpy())


def test_value_used_twice_accumulates() -> None:
    """y = x*x + x: dx = R (2x + 1), summed from three uses of x."""
    b = GraphBuilder("twice")
    x, r = b.input("x", (3, 4)), b.input("R", (3, 4))
    y = b.apply("add", [b.apply("multiply", [x, x]), x])
    b.output(b.apply("sum_to", [b.apply("multiply", [y, r])], SumToAttrs(())), "loss")
    g = grad(b.build(), wrt=["x"])
    assert sum(n.op == "add" for n in g.nodes) >= 3  # the forward add and two accumulations
    rng = rng_for("twice")
    xv, rv = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    got = interpret(g, {"x": xv, "R": rv}, dtype="float64")["grad:x"]
    np.testing.assert_allclose(got, rv * (2 * xv + 1), rtol=1e-12, atol=1e-14)


def _mlp(n: int, d: int, classes: int) -> Graph:
    """linear -> relu -> linear -> relu -> linear -> cross_entropy, the first two linears sharing ``W``."""
    b = GraphBuilder("mlp")
    x, t = b.input("x", (n, d)), b.input("t", (n,), DType.INT64)
    w, b1, b2 = b.param("W", (d, d)), b.param("b1", (d,)), b.param("b2", (d,))
    v, c = b.param("V", (classes, d)), b.param("c", (classes,))
    b.param("frozen", (d,), trainable=False)
    h = b.apply("relu", [b.apply("linear", [x, w, b1], layer="fc1")], layer="act1")
    h = b.apply("relu", [b.apply("linear", [h, w, b2], layer="fc2")], layer="act2")
    logits = b.apply("linear", [h, v, c], layer="head")
    b.output(b.apply("cross_entropy", [logits, t], layer="loss"), "loss")
    return b.build()


def test_mlp_with_shared_weights_matches_torch() -> None:
    n, d, classes = 8, 6, 4
    graph = _mlp(n, d, classes)
    g = grad(graph)
    assert g.output_names == ("loss", "grad:W", "grad:b1", "grad:b2", "grad:V", "grad:c")
    rng = rng_for("mlp")
    params = {"W": rng.standard_normal((d, d)) * 0.5, "b1": rng.standard_normal(d) * 0.1,
              "b2": rng.standard_normal(d) * 0.1, "V": rng.standard_normal((classes, d)) * 0.5,
              "c": rng.standard_normal(classes) * 0.1, "frozen": np.zeros(d)}
    inputs = {"x": rng.standard_normal((n, d)), "t": rng.integers(0, classes, n)}
    got = interpret(g, inputs, params, dtype="float32")
    tp = {k: torch.tensor(v, dtype=torch.float32, requires_grad=True) for k, v in params.items() if k != "frozen"}
    h = F.relu(F.linear(torch.tensor(inputs["x"], dtype=torch.float32), tp["W"], tp["b1"]))
    h = F.relu(F.linear(h, tp["W"], tp["b2"]))
    loss = F.cross_entropy(F.linear(h, tp["V"], tp["c"]), torch.tensor(inputs["t"]))
    loss.backward()
    assert rel_error(got["loss"], loss.detach().numpy()) <= TOL_TORCH_F32
    for k, t in tp.items():
        err = rel_error(got[f"grad:{k}"], t.grad.numpy())
        assert err <= TOL_TORCH_F32, f"grad:{k}: rel error {err:.3g}"


def test_no_gradient_for_the_data_input_of_the_first_layer() -> None:
    """needs_grad: the first linear layer emits no dx (x is an input, not differentiated)."""
    g = grad(_mlp(4, 3, 2))
    x = g.input("x")
    users = [n for n in g.nodes if x in n.inputs]
    assert [n.op for n in users] == ["linear", "reshape"]  # forward fc1, and its (N, in, 1, 1) view for dW only
    assert [n.layer for n in g.nodes if n.op == "conv2d_grad_input"] == ["head.grad", "fc2.grad"]  # no fc1 dx


def test_unused_parameter_gets_a_zero_gradient() -> None:
    b = GraphBuilder("unused")
    x = b.input("x", (2, 3))
    b.param("u", (5,))
    w = b.param("w", (3,))
    b.output(b.apply("sum_to", [b.apply("multiply", [x, w])], SumToAttrs(())), "loss")
    out = interpret(grad(b.build()), {"x": np.ones((2, 3))}, {"u": np.ones(5), "w": np.ones(3)})
    np.testing.assert_array_equal(out["grad:u"], np.zeros(5, np.float32))
    np.testing.assert_array_equal(out["grad:w"], np.full(3, 2, np.float32))


# --- errors ------------------------------------------------------------------------------------------------------


def test_non_scalar_loss_is_an_error_naming_the_layer() -> None:
    b = GraphBuilder("g")
    x = b.input("x", (2, 3))
    b.output(b.apply("relu", [b.apply("linear", [x, b.param("w", (4, 3))], layer="fc")], layer="act"), "y")
    with pytest.raises(GraphError, match=r"loss must be a scalar.*'y' of layer 'act' \(relu\) has shape \(2, 4\)"):
        grad(b.build())


def _second_derivative_net(op: str) -> Graph:
    """conv1 -> a backward op (layer 'back') -> loss: differentiating it would need a second derivative."""
    b = GraphBuilder("convnet")
    x = b.input("x", (1, 2, 6, 6))
    y = b.apply("conv2d", [x, b.param("k", (3, 2, 3, 3))], Conv2dAttrs(), layer="conv1")
    if op == "conv2d_grad_input":
        y = b.apply(op, [y, b.param("k2", (3, 2, 3, 3))], Conv2dGradAttrs(size=(6, 6)), layer="back")
    elif op == "max_pool2d_grad":
        y = b.apply(op, [y, b.input("dy", (1, 3, 2, 2))], MaxPool2dAttrs((2, 2), (2, 2)), layer="back")
    elif op == "batch_norm_grad":
        y = b.apply_multi(op, [y, b.param("gamma", (3,)), b.input("dy", y.shape)], BatchNormGradAttrs(),
                          layer="back")[0]
    y = b.apply("flatten", [y])
    b.output(b.apply("mse", [y, b.input("t", y.shape)], layer="loss"), "loss")
    return b.build()


@pytest.mark.parametrize("op", ["conv2d_grad_input", "max_pool2d_grad", "batch_norm_grad"])
def test_op_without_vjp_names_op_and_layer(op: str) -> None:
    """The backward ops have no VJP (second derivatives are out of scope): the error names op and layer."""
    with pytest.raises(NoVjpError, match=rf"op '{op}' has no VJP yet \(layer 'back'\)"):
        grad(_second_derivative_net(op))


def test_every_forward_op_has_a_vjp() -> None:
    """Only the backward ops, the running-statistics update and the optimiser updates lack one (on purpose)."""
    without = {name for name, op in all_ops().items() if op.vjp is None}
    assert without == {"activation_grad", "conv2d_grad_input", "conv2d_grad_weight", "max_pool2d_grad",
                       "avg_pool2d_grad", "batch_norm_grad", "cross_entropy_grad", "batch_norm_stats", "sgd_update",
                       "adagrad_update", "rmsprop_update", "adam_update"}


def test_op_without_vjp_off_the_gradient_path_is_fine() -> None:
    """A backward op on a frozen branch: no gradient crosses it, so no VJP is needed."""
    b = GraphBuilder("frozen")
    x = b.input("x", (1, 3, 2, 2))
    k = b.param("k", (3, 2, 3, 3), trainable=False)
    y = b.apply("flatten", [b.apply("conv2d_grad_input", [x, k], Conv2dGradAttrs(size=(4, 4)))])
    y = b.apply("linear", [y, b.param("w", (2, 32))])
    b.output(b.apply("mse", [y, b.input("t", (1, 2))]), "loss")
    g = grad(b.build())
    assert g.output_names == ("loss", "grad:w")


def test_bad_requests() -> None:
    g = _mlp(2, 3, 2)
    with pytest.raises(GraphError, match="no input or parameter 'nope'"):
        grad(g, wrt=["nope"])
    with pytest.raises(GraphError, match="'t': it is int64, not float"):
        grad(g, wrt=["t"])
    with pytest.raises(GraphError, match="has no output 'y'"):
        grad(g, loss_output="y")
    b = GraphBuilder("two")
    x = b.input("x", (2,))
    b.output(x, "a")
    b.output(b.apply("relu", [x]), "b")
    with pytest.raises(GraphError, match="has 2 outputs"):
        grad(b.build())


def test_activation_grad_rejects_a_non_activation() -> None:
    b = GraphBuilder("g")
    x: Value = b.input("x", (2, 3))
    with pytest.raises(Exception, match="not an elementwise activation with a derivative"):
        b.apply("activation_grad", [x, x], ActivationGradAttrs("softmax", SoftmaxAttrs()))


# --- the backward-graph helper ops ------------------------------------------------------------------------------


@pytest.mark.parametrize(("src", "dst", "want_axes"), [((2, 3, 4), (3, 1), (0, 2)), ((5,), (), (0,)),
                                                        ((2, 3), (2, 3), ()), ((4, 1, 6), (1, 1, 6), (0,))])
def test_sum_to_reference(src: tuple[int, ...], dst: tuple[int, ...], want_axes: tuple[int, ...]) -> None:
    x = rng_for(f"sum_to{src}{dst}").standard_normal(src)
    b = GraphBuilder("s")
    b.output(b.apply("sum_to", [b.input("x", src)], SumToAttrs(dst)), "y")
    got = interpret(b.build(), {"x": x}, dtype="float64")["y"]
    np.testing.assert_allclose(got, np.sum(x, axis=want_axes).reshape(dst) if want_axes else x, rtol=1e-13)


def test_sum_to_rejects_a_shape_that_does_not_broadcast() -> None:
    b = GraphBuilder("s")
    with pytest.raises(Exception, match=r"shape \(3,\) must broadcast to the input shape \(2, 4\)"):
        b.apply("sum_to", [b.input("x", (2, 4))], SumToAttrs((3,)), layer="s")


def test_one_hot_rejects_a_label_out_of_range() -> None:
    from cnncc.errors import InputError

    b = GraphBuilder("oh")
    b.output(b.apply("one_hot", [b.input("t", (2,), DType.INT64), b.input("like", (2, 3))]), "y")
    g = b.build()
    np.testing.assert_array_equal(interpret(g, {"t": np.array([2, 0]), "like": np.zeros((2, 3))})["y"],
                                  [[0, 0, 1], [1, 0, 0]])
    with pytest.raises(InputError, match=r"target\[1\] = 3 is not a class index in \[0, 3\)"):
        interpret(g, {"t": np.array([0, 3]), "like": np.zeros((2, 3))})
