"""The LLVM CPU backend, op by op: every registered op compiled and compared with the reference interpreter in
float32, hypothesis searches over convolution and pooling configurations, the ops the backend rejects on purpose,
and the compiled runtime's input checks, thread determinism, x86-64-v3 code and module cache.

Tolerances are relative to the output scale (``rel_error``: max abs error / max |reference|); see the constants.
Tests headed "Regression" are the minimal repros of backend bugs these tests found (the comment names the code at
fault and what went wrong).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st

import cnncc
import cnncc.frontend as nn
from cnncc.codegen.lower import Unsupported
from cnncc.errors import CnnccError, InputError, ShapeError, WeightsError
from cnncc.ir import DType, GraphBuilder
from cnncc.ops import all_ops
from cnncc.ops.activation_grad import ActivationGradAttrs
from cnncc.ops.adagrad_update import AdagradAttrs
from cnncc.ops.adam_update import AdamAttrs
from cnncc.ops.avg_pool2d import AvgPool2dAttrs
from cnncc.ops.batch_norm import BatchNormAttrs
from cnncc.ops.concat import ConcatAttrs
from cnncc.ops.conv2d import Conv2dAttrs
from cnncc.ops.cross_entropy import CrossEntropyAttrs
from cnncc.ops.dropout import DropoutAttrs
from cnncc.ops.elu import EluAttrs
from cnncc.ops.fill_like import FillLikeAttrs
from cnncc.ops.flatten import FlattenAttrs
from cnncc.ops.hardtanh import HardtanhAttrs
from cnncc.ops.leaky_relu import LeakyReluAttrs
from cnncc.ops.log_softmax import LogSoftmaxAttrs
from cnncc.ops.max_pool2d import MaxPool2dAttrs
from cnncc.ops.mse import MseAttrs
from cnncc.ops.nll import NllAttrs
from cnncc.ops.operands import Reduction
from cnncc.ops.reshape import ReshapeAttrs
from cnncc.ops.rmsprop_update import RmspropAttrs
from cnncc.ops.sgd_update import SgdAttrs
from cnncc.ops.softmax import SoftmaxAttrs
from cnncc.ops.softplus import SoftplusAttrs
from cnncc.ops.sum_to import SumToAttrs
from cnncc.ops.transpose import TransposeAttrs
from cnncc.runtime import interpret
from cnncc.testing import (
    COVERED_OPS,
    assert_matches,
    check_graph,
    check_op,
    compile_for_test,
    compile_model_for_test,
    covers,
    ops_named_by_covers,
    randomize,
    record_compiled,
    rel_error,
    repo_root,
    single_op_graph,
)

# --- tolerances (max abs error / max |reference output|, float32 on both sides) --------------------------------

# Elementwise arithmetic (relu, add, multiply, copies, BN's affine map): one or two roundings per element on both
# sides; the backend folds BN into one FMA (scale, shift precomputed in float64) where the reference rounds 4 times,
# so the two differ by a few ulps of the value: 1e-6 of the output scale (2^-24 ~ 6e-8 per rounding).
TOL_ELEMENTWISE = 1e-6
# Reductions (conv, linear, pooling averages, global average pool, MSE): the same float32 products summed in another
# order (blocked FMA accumulation vs BLAS / numpy pairwise sums); the error grows like sqrt(n) ulps for length n.
TOL_REDUCTION = 1e-5
# exp/log-based activations (sigmoid, tanh, elu, softplus): LLVM calls libm's expf/logf while numpy uses its own
# SIMD float32 exp/log/tanh/expm1/log1p (each within a few ulps), and the backend's closed forms (tanh as
# 1 - 2/(e^2x + 1), elu as e^x - 1) cancel near 0, costing ~1 ulp of 1: a few 1e-7 of the output scale.
TOL_EXP = 2e-6
# exp-based reductions (softmax, log-softmax, cross-entropy, NLL): exp/log differences plus a sum over a row.
TOL_EXP_REDUCTION = 1e-5
# Whole networks (ResNet-18, MobileNet-V2, small stacks): per-layer reduction differences compound over the layers
# (cnncc.testing.TOL_F32_MODEL, the bound tests/frontend/test_zoo.py uses against PyTorch).
TOL_MODEL = 1e-4

RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _seed_per_test(request: pytest.FixtureRequest) -> None:
    """Each test draws the same numbers whatever else runs (``-k`` selections, reordering)."""
    global RNG
    RNG = np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def _host_has(*features: str) -> bool:
    from cnncc.codegen.target import Target

    return set(features) <= Target.host().enabled()


def randn(*shape: int, scale: float = 1.0) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def same(attrs: Any) -> Callable[[Sequence[np.ndarray]], Any]:
    return lambda _: attrs


def check_model(model: nn.Model, batch: int, tol: float, batches: Sequence[int] | None = None, **kw: Any) -> Any:
    """A DSL model compiled at ``batch`` vs its interpreter, at ``batch`` and the smaller ``batches``."""
    cm = compile_model_for_test(model, batch, **kw)
    shape = model.inputs[0].spec.shape
    for n in (batch, *(batches or ())):
        x = randn(n, *shape)
        got, want = cm(x), model(x)
        assert got.shape == want.shape and got.dtype == np.float32
        err = rel_error(got, want)
        assert err <= tol, f"{model.name} at batch {n}: rel error {err:.3g} > {tol:.1g}"
    return cm


def randomize_bn(model: nn.Model, seed: int = 0) -> nn.Model:
    """Non-trivial BN statistics, BN affine parameters and biases (the DSL initialises them to 0/1)."""
    randomize(model, seed)
    return model


# ================================================================================================================
# 1. every op of the registry
# ================================================================================================================

# Ops with no CPU lowering yet, exempt from the check below (none now: the backward-graph helpers of reverse-mode
# autodiff have theirs in codegen/kernels/grad.py). An op added without a lowering goes here until its lowering and
# @covers test land (the check fails if an exempt op is also covered).
NOT_COMPILED_YET: set[str] = set()


def test_every_op_has_a_compiled_test() -> None:
    """Every registered op is named by a ``@covers`` of some test under tests/ (read from every file, so the
    backward ops' tests in their own file count; ``@covers(*OPS)`` lists count from the imported modules)."""
    tests = repo_root(__file__) / "tests"
    tested = COVERED_OPS | ops_named_by_covers(tests)
    missing = sorted(set(all_ops()) - tested - NOT_COMPILED_YET)
    assert not missing, f"ops without a compiled-backend test under {tests}: {missing}"
    assert NOT_COMPILED_YET <= set(all_ops()), f"unknown ops exempted: {sorted(NOT_COMPILED_YET - set(all_ops()))}"
    assert not NOT_COMPILED_YET & tested, f"covered ops still exempted: {sorted(NOT_COMPILED_YET & tested)}"
    assert not tested - set(all_ops()), f"tests name unknown ops: {sorted(tested - set(all_ops()))}"


# --- activations: plain layouts (rank 2, rank-4 graph input) and blocked layouts (after a conv) ------------------

ACTIVATIONS: list[tuple[str, Any, float]] = [
    ("relu", None, TOL_ELEMENTWISE),
    ("relu6", None, TOL_ELEMENTWISE),
    ("leaky_relu", LeakyReluAttrs(0.1), TOL_ELEMENTWISE),
    ("hardtanh", HardtanhAttrs(-0.5, 2.0), TOL_ELEMENTWISE),
    ("elu", EluAttrs(0.7), TOL_EXP),
    ("sigmoid", None, TOL_EXP),
    ("tanh", None, TOL_EXP),
    ("softplus", SoftplusAttrs(1.0, 20.0), TOL_EXP),
    ("softplus", SoftplusAttrs(2.5, 4.0), TOL_EXP),  # the threshold branch (beta*x > threshold) is taken
]
ACT_IDS = [f"{op}-{i}" for i, (op, _, _) in enumerate(ACTIVATIONS)]
ACT_OPS = sorted({op for op, _, _ in ACTIVATIONS})

# Values that hit every branch: clamps at 0/6/-0.5/2, exp overflow/underflow, exact zeros and negative zero, and
# NaN/inf (which must come out exactly as the interpreter's: same NaN positions, same infinities and limits).
SPECIAL = np.array([0.0, -0.0, 6.0, -6.0, 2.0, -0.5, 1e-7, -1e-7, 30.0, -30.0, 89.0, -89.0, 100.0, -100.0, 8.0,
                    -8.0, np.nan, np.inf, -np.inf], np.float32)


@covers(*ACT_OPS)
@pytest.mark.parametrize(("op", "attrs", "tol"), ACTIVATIONS, ids=ACT_IDS)
@pytest.mark.parametrize("shape", [(3, 37), (2, 5, 7, 3), (1, 16)], ids=["rank2-tail", "rank4-plain", "one-vector"])
def test_activation_plain(op: str, attrs: Any, tol: float, shape: tuple[int, ...]) -> None:
    x = randn(*shape, scale=4.0)
    flat = x.reshape(-1)
    flat[: min(SPECIAL.size, flat.size)] = SPECIAL[: flat.size]
    check_op(op, [x], attrs, tol=tol, sub_batch=same(attrs))


# Regression (a bug of the backend as first committed, 486ca8d): codegen/kernels/activation.py apply_act: tanh as 1 -
# 2/(e^2x + 1) and elu as e^x - 1 cancel near 0 (absolute error ~1 ulp of 1): tanh(1e-8) = 0, tanh(1e-5) is 0.14% off;
# an expm1-style form keeps the relative accuracy
@pytest.mark.parametrize(("op", "attrs"), [("tanh", None), ("elu", EluAttrs(1.0))])
def test_activation_of_small_inputs(op: str, attrs: Any) -> None:
    """Inputs of magnitude ~1e-4 (activations after small weights): still within TOL_EXP of the output scale."""
    x = randn(8, 1000, scale=1e-4)
    x[0, :3] = [1e-8, -1e-8, 1e-5]
    check_op(op, [x], attrs, tol=TOL_EXP)


def _act_layer(op: str, attrs: Any) -> nn.Layer:
    make = {"relu": lambda: nn.ReLU(), "relu6": lambda: nn.ReLU6(), "sigmoid": lambda: nn.Sigmoid(),
            "tanh": lambda: nn.Tanh(), "leaky_relu": lambda: nn.LeakyReLU(attrs.negative_slope),
            "hardtanh": lambda: nn.Hardtanh(attrs.min_val, attrs.max_val), "elu": lambda: nn.ELU(attrs.alpha),
            "softplus": lambda: nn.Softplus(beta=attrs.beta, threshold=attrs.threshold)}
    return make[op]()


@covers(*ACT_OPS)
@pytest.mark.parametrize(("op", "attrs", "tol"), ACTIVATIONS, ids=ACT_IDS)
def test_activation_blocked_after_conv(op: str, attrs: Any, tol: float) -> None:
    """An activation on a conv's blocked output (20 channels: one full and one padded channel block)."""
    model = nn.Sequential([nn.Conv2d(20, 3, padding=1, name="conv"), _act_layer(op, attrs)], input_shape=(3, 9, 7),
                          name=f"conv_{op}", seed=3)
    params = dict(model.params)
    params["conv.weight"] = params["conv.weight"] * 4.0  # reach the clamps and the exp tails
    model.set_weights(params)
    check_model(model, 3, max(tol, TOL_REDUCTION), batches=(1,))


@covers("prelu")
@pytest.mark.parametrize("alpha_shape", [(1,), (13,)], ids=["shared", "per-channel"])
def test_prelu(alpha_shape: tuple[int, ...]) -> None:
    x = randn(2, 13, 5, 6)
    alpha = randn(*alpha_shape)
    check_op("prelu", [x, alpha], params=(1,), sub_batch=same(None))


@covers("prelu")
def test_prelu_blocked_after_conv() -> None:
    model = nn.Sequential([nn.Conv2d(18, 3, name="conv"), nn.PReLU("channel", name="prelu")], input_shape=(4, 6, 6),
                          seed=1)
    params = dict(model.params)
    params["prelu.weight"] = randn(*params["prelu.weight"].shape)
    model.set_weights(params)
    check_model(model, 2, TOL_REDUCTION, batches=(1,))


# --- batch norm and dropout (inference) --------------------------------------------------------------------------

@covers("batch_norm")
@pytest.mark.parametrize("channels", [16, 21])
def test_batch_norm_inference(channels: int) -> None:
    x = randn(3, channels, 5, 4, scale=2.0)
    gamma = RNG.uniform(0.5, 1.5, channels).astype(np.float32)
    beta = randn(channels)
    mean = randn(channels, scale=0.3)
    var = RNG.uniform(0.2, 2.0, channels).astype(np.float32)
    attrs = BatchNormAttrs(eps=1e-3)
    check_op("batch_norm", [x, gamma, beta, mean, var], attrs, params=(1, 2, 3, 4), sub_batch=same(attrs))


@covers("batch_norm")
def test_batch_norm_after_conv() -> None:
    model = randomize_bn(nn.Sequential([nn.Conv2d(24, 3, bias=False, name="conv"), nn.BatchNorm(name="bn"),
                                        nn.ReLU(name="relu")], input_shape=(5, 8, 8), seed=2))
    check_model(model, 2, TOL_REDUCTION, batches=(1,))


@covers("dropout")
@pytest.mark.parametrize("shape", [(2, 7, 5, 5), (3, 10)])
def test_dropout_inference_is_identity(shape: tuple[int, ...]) -> None:
    x = randn(*shape)
    got = check_op("dropout", [x], DropoutAttrs(0.5, False, 0)).run({"x0": x})["y0"]
    np.testing.assert_array_equal(got, x)


def test_dropout_between_layers() -> None:
    model = nn.Sequential([nn.Conv2d(6, 3, name="conv"), nn.Dropout(0.3, name="drop"), nn.Flatten(name="flat"),
                           nn.Dropout(0.5, name="drop2"), nn.Linear(5, name="fc")], input_shape=(2, 6, 6), seed=4)
    check_model(model, 3, TOL_REDUCTION, batches=(2,))


# --- add and multiply: equal shapes, per-channel parameters, per-image (SE) operands ----------------------------

@covers("add", "multiply")
@pytest.mark.parametrize("op", ["add", "multiply"])
@pytest.mark.parametrize("shape", [(2, 5, 4, 3), (3, 21), (2, 35, 3, 3)])
def test_binary_equal_shapes(op: str, shape: tuple[int, ...]) -> None:
    check_op(op, [randn(*shape), randn(*shape)], sub_batch=same(None))


def _param_broadcast_graph(op: str, param_shape: tuple[int, ...], after_conv: bool, param_first: bool) -> tuple:
    b = GraphBuilder(f"{op}_param")
    x = b.input("x", (3, 20, 5, 3), DType.FLOAT32)
    inputs, params = {"x": randn(3, 20, 5, 3)}, {"p": randn(*param_shape)}
    if after_conv:
        w = b.param("w", (20, 20, 1, 1), DType.FLOAT32)
        x = b.apply("conv2d", [x, w], Conv2dAttrs(), layer="conv")
        params["w"] = randn(20, 20, 1, 1)
    p = b.param("p", param_shape, DType.FLOAT32)
    b.output(b.apply(op, [p, x] if param_first else [x, p], None, layer="layer"), "y")
    return b.build(), inputs, params


@covers("add", "multiply")
@pytest.mark.parametrize("op", ["add", "multiply"])
@pytest.mark.parametrize("param_shape", [(1, 20, 1, 1), (20, 1, 1), (1,)], ids=["1C11", "C11", "scalar"])
@pytest.mark.parametrize("param_first", [False, True])
def test_binary_per_channel_parameter(op: str, param_shape: tuple[int, ...], param_first: bool) -> None:
    """A conv output op a parameter broadcast over the batch and the pixels (a channel scale or shift)."""
    check_graph(*_param_broadcast_graph(op, param_shape, True, param_first), TOL_REDUCTION)


# Regression (a bug of the backend as first committed, 486ca8d): codegen/kernels/eltwise.py _broadcast_operand: a per-
# channel operand on a rank-4 value that is not blocked (a graph input) raises Unsupported (its message says per-
# channel operands are supported)
@pytest.mark.parametrize("op", ["add", "multiply"])
def test_binary_per_channel_parameter_on_graph_input(op: str) -> None:
    """Input normalisation, x * scale + shift per channel, straight on the graph input."""
    check_graph(*_param_broadcast_graph(op, (1, 20, 1, 1), False, False), TOL_ELEMENTWISE)


@covers("add", "multiply")
@pytest.mark.parametrize("op", ["add", "multiply"])
@pytest.mark.parametrize("channels", [16, 19])
def test_binary_blocked_per_channel_and_per_image(op: str, channels: int) -> None:
    """On blocked conv outputs: a per-channel (1, C, 1, 1) parameter and a per-image (N, C, 1, 1) SE-style gate."""
    b = GraphBuilder(f"se_{op}")
    n = 3
    x = b.input("x", (n, 4, 6, 5), DType.FLOAT32)
    w = b.param("w", (channels, 4, 3, 3), DType.FLOAT32)
    s = b.param("s", (1, channels, 1, 1), DType.FLOAT32)
    conv = b.apply("conv2d", [x, w], Conv2dAttrs(padding=(1, 1, 1, 1)), layer="conv")
    scaled = b.apply(op, [conv, s], None, layer="channel")
    gate = b.apply("sigmoid", [b.apply("global_avg_pool", [scaled], None, layer="squeeze")], None, layer="gate")
    assert gate.shape == (n, channels, 1, 1)
    b.output(b.apply(op, [scaled, gate], None, layer="excite"), "y")
    b.output(b.apply(op, [gate, scaled], None, layer="excite_swapped"), "y2")
    params = {"w": randn(channels, 4, 3, 3), "s": randn(1, channels, 1, 1)}
    check_graph(b.build(), {"x": randn(n, 4, 6, 5)}, params, TOL_REDUCTION)


@covers("add", "multiply")
@pytest.mark.parametrize("op", ["add", "multiply"])
@pytest.mark.parametrize("shape", [(4, 9), (3, 21), (2, 5, 4, 3), (3, 20, 5, 3)])
@pytest.mark.parametrize("kind", ["loss", "per_image"])
def test_binary_computed_scalar_and_per_image_operands(op: str, shape: tuple[int, ...], kind: str) -> None:
    """What backward graphs need: a tensor op a computed loss (shape ()), or op one value per image (N, 1)."""
    b = GraphBuilder(f"{op}_{kind}")
    x = b.input("x", shape, DType.FLOAT32)
    t = b.input("t", shape, DType.FLOAT32)
    if kind == "loss":
        s = b.apply("mse", [x, t], None, layer="loss")
    else:
        flat = b.apply("flatten", [t], None, layer="flat") if len(shape) > 2 else t
        w = b.param("w", (1, flat.shape[1]), DType.FLOAT32)
        s = b.apply("linear", [flat, w], None, layer="rowsum")  # (N, 1)
        if len(shape) == 4:
            s = b.apply("reshape", [s], ReshapeAttrs((shape[0], 1, 1, 1)), layer="as4d")
    b.output(b.apply(op, [x, s], None, layer="bcast"), "y")
    b.output(b.apply(op, [s, x], None, layer="bcast_swapped"), "y2")
    params = {"w": randn(1, int(np.prod(shape[1:])))} if kind == "per_image" else {}
    check_graph(b.build(), {"x": randn(*shape), "t": randn(*shape)}, params, TOL_REDUCTION)


@covers("multiply", "add")
@pytest.mark.parametrize("op", ["add", "multiply"])
def test_per_image_operand_as_graph_input(op: str) -> None:
    b = GraphBuilder("gate_input")
    x = b.input("x", (3, 20, 4, 4), DType.FLOAT32)
    gate = b.input("gate", (3, 20, 1, 1), DType.FLOAT32)
    w = b.param("w", (20, 20, 1, 1), DType.FLOAT32)
    conv = b.apply("conv2d", [x, w], Conv2dAttrs(), layer="conv")
    b.output(b.apply(op, [conv, gate], None, layer="gated"), "y")
    g = b.build()
    inputs = {"x": randn(3, 20, 4, 4), "gate": randn(3, 20, 1, 1)}
    _, cm = check_graph(g, inputs, {"w": randn(20, 20, 1, 1)}, TOL_REDUCTION)
    got = cm.run({k: np.ascontiguousarray(v[1:2]) for k, v in inputs.items()})["y"]
    assert rel_error(got, cm.run(inputs)["y"][1:2]) <= TOL_REDUCTION


@covers("multiply")
def test_squeeze_excitation_model_dynamic_batch() -> None:
    x = nn.Input((12, 7, 7), seed=5)
    y = nn.Conv2d(20, 3, padding=1, activation="relu", name="conv")(x)
    s = nn.GlobalAvgPool2d(name="squeeze")(y)
    s = nn.Conv2d(5, 1, activation="relu", name="fc1")(s)
    s = nn.Conv2d(20, 1, activation="sigmoid", name="fc2")(s)
    model = nn.Model(x, nn.Multiply(name="excite")([y, s]), name="se")
    check_model(model, 4, TOL_REDUCTION, batches=(3, 1))


# --- concat -------------------------------------------------------------------------------------------------------

def _concat_graph(channels: Sequence[int], n: int, hw: tuple[int, int], through_conv: Sequence[bool]) -> tuple:
    """concat of inputs (plain) and conv outputs (blocked) with the given channel counts."""
    b = GraphBuilder("concat_" + "_".join(map(str, channels)))
    parts, inputs, params = [], {}, {}
    for i, (c, conv) in enumerate(zip(channels, through_conv, strict=True)):
        if conv:
            xi = b.input(f"x{i}", (n, 3, *hw), DType.FLOAT32)
            w = b.param(f"w{i}", (c, 3, 1, 1), DType.FLOAT32)
            parts.append(b.apply("conv2d", [xi, w], Conv2dAttrs(), layer=f"conv{i}"))
            inputs[f"x{i}"], params[f"w{i}"] = randn(n, 3, *hw), randn(c, 3, 1, 1)
        else:
            parts.append(b.input(f"x{i}", (n, c, *hw), DType.FLOAT32))
            inputs[f"x{i}"] = randn(n, c, *hw)
    cat = b.apply("concat", parts, ConcatAttrs(1), layer="cat")
    b.output(cat, "y")
    b.output(b.apply("relu", [cat], None, layer="relu"), "y_relu")  # a consumer of the blocked concat
    return b.build(), inputs, params


@covers("concat")
@pytest.mark.parametrize("channels", [(16, 32), (16, 5), (5, 16), (20, 12, 16), (3, 7, 9), (20, 4, 8, 1)],
                         ids=str)
@pytest.mark.parametrize("source", ["inputs", "convs", "mixed"])
def test_concat_channels(channels: tuple[int, ...], source: str) -> None:
    through = {"inputs": [False] * len(channels), "convs": [True] * len(channels),
               "mixed": [i % 2 == 0 for i in range(len(channels))]}[source]
    g, inputs, params = _concat_graph(channels, 2, (5, 3), through)
    check_graph(g, inputs, params, TOL_REDUCTION)


@covers("concat")
def test_concat_of_one_value_twice() -> None:
    b = GraphBuilder("concat_twice")
    x = b.input("x", (2, 5, 3, 3), DType.FLOAT32)
    w = b.param("w", (20, 5, 1, 1), DType.FLOAT32)
    c = b.apply("conv2d", [x, w], Conv2dAttrs(), layer="conv")
    b.output(b.apply("concat", [c, c, x, c], ConcatAttrs(1), layer="cat"), "y")
    check_graph(b.build(), {"x": randn(2, 5, 3, 3)}, {"w": randn(20, 5, 1, 1)}, TOL_REDUCTION)


@covers("concat")
def test_concat_rank2_and_negative_axis() -> None:
    check_op("concat", [randn(3, 5), randn(3, 17), randn(3, 1)], ConcatAttrs(1), sub_batch=same(ConcatAttrs(1)))
    check_op("concat", [randn(2, 5, 3, 3), randn(2, 17, 3, 3)], ConcatAttrs(-3))


@covers("concat")
def test_inception_style_concat_then_conv() -> None:
    x = nn.Input((6, 9, 9), seed=6)
    a = nn.Conv2d(5, 1, activation="relu", name="b1")(x)
    b = nn.Conv2d(19, 3, padding=1, activation="relu", name="b2")(x)
    c = nn.MaxPool2d(3, 1, padding=1, name="b3pool")(x)
    y = nn.Concat(name="cat")([a, b, c])
    y = nn.Conv2d(7, 3, padding=1, name="after")(y)
    check_model(nn.Model(x, y, name="inception"), 3, TOL_REDUCTION, batches=(1,))


# --- shape ops -------------------------------------------------------------------------------------------------

@covers("flatten")
def test_flatten() -> None:
    check_op("flatten", [randn(3, 5, 4, 3)], FlattenAttrs(1), sub_batch=same(FlattenAttrs(1)))


@covers("flatten")
def test_flatten_after_blocked_conv_then_linear() -> None:
    model = nn.Sequential([nn.Conv2d(19, 3, name="conv"), nn.Flatten(name="flat"), nn.Linear(11, name="fc")],
                          input_shape=(3, 7, 6), seed=7)
    check_model(model, 4, TOL_REDUCTION, batches=(3, 1))


@covers("reshape")
def test_reshape_keeps_batch() -> None:
    x = randn(3, 4, 6, 5)
    check_op("reshape", [x], ReshapeAttrs((3, 24, 5)), sub_batch=lambda a: ReshapeAttrs((1, 24, 5)))
    check_op("reshape", [x], ReshapeAttrs((3, -1)), sub_batch=lambda a: ReshapeAttrs((1, -1)))
    check_op("reshape", [randn(2, 60)], ReshapeAttrs((2, 3, 4, 5)), sub_batch=lambda a: ReshapeAttrs((1, 3, 4, 5)))


@covers("reshape")
def test_reshape_to_image_then_conv() -> None:
    model = nn.Sequential([nn.Linear(48, name="fc"), nn.Reshape((3, 4, 4), name="rs"),
                           nn.Conv2d(5, 3, padding=1, name="conv")], input_shape=(10,), seed=8)
    check_model(model, 2, TOL_REDUCTION)


GUARD = np.float32(12345.0)


def run_guarded(cm: Any, inputs: Sequence[np.ndarray], batch: int) -> list[np.ndarray]:
    """Call the compiled entry point with every input and output followed by 256 guard floats, so that reads and
    writes past an array's end are harmless (and writes visible); returns each output with its guard zone."""
    import ctypes

    ins = [np.concatenate([np.ascontiguousarray(a, np.float32).reshape(-1), np.full(256, 7.0, np.float32)])
           for a in inputs]
    sizes = [int(np.prod(v.shape)) // cm.max_batch * batch if v.shape and v.shape[0] == cm.max_batch
             else int(np.prod(v.shape)) for v in cm.graph.outputs]  # CompiledModel.run's output shapes
    outs = [np.full(size + 256, GUARD, np.float32) for size in sizes]
    in_ptrs = (ctypes.c_void_p * len(ins))(*[a.ctypes.data for a in ins])
    out_ptrs = (ctypes.c_void_p * len(outs))(*[a.ctypes.data for a in outs])
    assert cm._entry(in_ptrs, out_ptrs, cm._arena.ctypes.data, cm._weights.ctypes.data, batch, 1) == 0
    return outs


def _unsupported_or_correct(graph: cnncc.Graph, x: np.ndarray, layer: str) -> None:
    """The backend must reject ``graph`` (naming ``layer``) or compute it without touching memory past the output."""
    try:
        cm = compile_for_test(graph, {})
    except Unsupported as e:
        assert f"layer '{layer}'" in str(e)
        return
    want = interpret(graph, {"x": x}, {})["y"].reshape(-1)
    out = run_guarded(cm, [x], graph.inputs[0].shape[0])[0]
    assert (out[want.size:] == GUARD).all(), f"wrote {int((out[want.size:] != GUARD).sum())} floats past the output"
    assert rel_error(out[:want.size], want) <= TOL_ELEMENTWISE


def _reshape_relu(in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> cnncc.Graph:
    b = GraphBuilder("reshape_batch")
    xi = b.input("x", in_shape, DType.FLOAT32)
    r = b.apply("reshape", [xi], ReshapeAttrs(out_shape), layer="rs")
    b.output(b.apply("relu", [r], None, layer="relu"), "y")
    return b.build()


# Regression (a bug of the backend as first committed, 486ca8d): codegen/kernels/eltwise.py lower_reshape: a reshape
# that merges the batch axis (2, 3, 4, 5) -> (6, 20) is a view still walked as 2 images of 20 floats: 4 of the 6
# output rows are never written
def test_reshape_that_merges_the_batch_axis() -> None:
    _unsupported_or_correct(_reshape_relu((2, 3, 4, 5), (6, 20)), randn(2, 3, 4, 5), "rs")


# Regression (a bug of the backend as first committed, 486ca8d): codegen/kernels/eltwise.py lower_reshape: (4, 10) ->
# (2, 20) is walked as the compiled batch (4) of 20-float rows: 80 floats read from and written to 40-float arrays,
# the caller's output array included
def test_reshape_that_folds_into_the_batch_axis() -> None:
    _unsupported_or_correct(_reshape_relu((4, 10), (2, 20)), randn(4, 10), "rs")


# Regression (a bug of the backend as first committed, 486ca8d): codegen/layout.py dims4: a per-sample rank-1 value
# (N,) becomes ONE image of N channels, (1, N, 1, 1), then walked as N images: N*N floats read from the (N,) input and
# written into the (N,) output array
def test_rank1_batched_value() -> None:
    b = GraphBuilder("rank1")
    x = b.input("x", (4,), DType.FLOAT32)
    b.output(b.apply("relu", [x], None, layer="relu"), "y")
    _unsupported_or_correct(b.build(), randn(4), "relu")


@covers("transpose")
@pytest.mark.parametrize("perm", [(0, 2, 3, 1), (0, 3, 1, 2), (0, 1, 3, 2), (0, 3, 2, 1), (0, 1, 2, 3)], ids=str)
def test_transpose_keeping_batch(perm: tuple[int, ...]) -> None:
    x = randn(2, 5, 4, 3)
    check_op("transpose", [x], TransposeAttrs(perm), sub_batch=same(TransposeAttrs(perm)))


@covers("transpose")
def test_transpose_of_blocked_value_and_into_conv() -> None:
    b = GraphBuilder("transposes")
    x = b.input("x", (2, 7, 6, 17), DType.FLOAT32)
    w = b.param("w", (18, 17, 3, 3), DType.FLOAT32)
    nchw = b.apply("transpose", [x], TransposeAttrs((0, 3, 1, 2)), layer="to_nchw")
    conv = b.apply("conv2d", [nchw, w], Conv2dAttrs(padding=(1, 1, 1, 1)), layer="conv")
    back = b.apply("transpose", [conv], TransposeAttrs((0, 2, 3, 1)), layer="to_nhwc")
    b.output(b.apply("relu", [back], None, layer="relu"), "y")
    b.output(back, "y_raw")
    check_graph(b.build(), {"x": randn(2, 7, 6, 17)}, {"w": randn(18, 17, 3, 3)}, TOL_REDUCTION)


def test_nhwc_model_dynamic_batch() -> None:
    model = nn.Sequential([nn.Conv2d(9, 3, name="conv"), nn.Flatten(name="flat"), nn.Linear(4, name="fc")],
                          input_shape=(8, 8, 3), layout="NHWC", seed=9)
    check_model(model, 3, TOL_REDUCTION, batches=(2, 1))


# --- linear, pooling ---------------------------------------------------------------------------------------------

@covers("linear")
@pytest.mark.parametrize(("n", "f", "k"), [(1, 1, 1), (3, 37, 5), (4, 64, 48), (5, 100, 33), (2, 9, 1000),
                                           (7, 16, 17)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear(n: int, f: int, k: int, bias: bool) -> None:
    arrays = [randn(n, f), randn(k, f)] + ([randn(k)] if bias else [])
    check_op("linear", arrays, params=(1, 2), tol=TOL_REDUCTION, sub_batch=same(None))


@covers("global_avg_pool")
@pytest.mark.parametrize("shape", [(2, 16, 7, 7), (3, 21, 5, 3), (1, 1, 1, 1)])
def test_global_avg_pool(shape: tuple[int, ...]) -> None:
    check_op("global_avg_pool", [randn(*shape)], tol=TOL_REDUCTION, sub_batch=same(None))


@covers("max_pool2d")
@pytest.mark.parametrize("attrs", [MaxPool2dAttrs((2, 2), (2, 2)), MaxPool2dAttrs((3, 3), (2, 2), (1, 1, 1, 1)),
                                   MaxPool2dAttrs((3, 3), (2, 2), ceil_mode=True),
                                   MaxPool2dAttrs((3, 2), (1, 2), (1, 0, 0, 1), (2, 1), True)], ids=str)
def test_max_pool(attrs: MaxPool2dAttrs) -> None:
    x = randn(2, 19, 9, 8)
    x[0, 0, :3, :3] = np.float32(-np.inf)  # -inf inputs survive
    check_op("max_pool2d", [x], attrs, sub_batch=same(attrs))


@covers("avg_pool2d")
@pytest.mark.parametrize("attrs", [AvgPool2dAttrs((2, 2), (2, 2)), AvgPool2dAttrs((3, 3), (2, 2), (1, 1, 1, 1)),
                                   AvgPool2dAttrs((3, 3), (2, 2), (1, 1, 1, 1), False, False),
                                   AvgPool2dAttrs((3, 3), (2, 2), (1, 0, 1, 0), True, True),
                                   AvgPool2dAttrs((3, 2), (2, 1), (0, 1, 1, 0), True, False)], ids=str)
def test_avg_pool(attrs: AvgPool2dAttrs) -> None:
    check_op("avg_pool2d", [randn(2, 17, 9, 8)], attrs, tol=TOL_REDUCTION, sub_batch=same(attrs))


@covers("conv2d")
@pytest.mark.parametrize("config", [
    dict(c=3, k=16, r=3, stride=1, pad=(1, 1, 1, 1), groups=1),  # plain (C < vector width) input
    dict(c=32, k=32, r=3, stride=1, pad=(1, 1, 1, 1), groups=1),  # blocked, two output blocks per tile
    dict(c=20, k=40, r=1, stride=2, pad=(0, 0, 0, 0), groups=1),
    dict(c=32, k=32, r=3, stride=1, pad=(1, 1, 1, 1), groups=2),  # grouped, 16 channels per group
    dict(c=24, k=24, r=3, stride=2, pad=(1, 1, 1, 1), groups=24),  # depthwise
    dict(c=12, k=24, r=3, stride=1, pad=(1, 2, 0, 1), groups=12),  # depthwise with multiplier 2 (dense fallback)
    dict(c=18, k=12, r=5, stride=1, pad=(2, 2, 2, 2), groups=3),  # grouped, 6 channels per group
], ids=lambda c: "c{c}-k{k}-r{r}-s{stride}-g{groups}".format(**c))
def test_conv2d(config: dict[str, Any]) -> None:
    c, k, r, g = config["c"], config["k"], config["r"], config["groups"]
    attrs = Conv2dAttrs((config["stride"],) * 2, config["pad"], (1, 1), g)
    arrays = [randn(3, c, 11, 10), randn(k, c // g, r, r), randn(k)]
    check_op("conv2d", arrays, attrs, params=(1, 2), tol=TOL_REDUCTION, sub_batch=same(attrs))


# --- softmax and the losses ---------------------------------------------------------------------------------------

@covers("softmax", "log_softmax")
@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
@pytest.mark.parametrize(("shape", "axis"), [((3, 10), 1), ((2, 1000), -1), ((2, 5, 4, 3), 1), ((2, 5, 4, 3), 2),
                                             ((2, 5, 4, 3), 3), ((4, 6, 7), -1), ((1, 1), 1)], ids=str)
def test_softmax(op: str, shape: tuple[int, ...], axis: int) -> None:
    attrs = SoftmaxAttrs(axis) if op == "softmax" else LogSoftmaxAttrs(axis)
    x = randn(*shape, scale=5.0)
    x.reshape(-1)[0] = 80.0  # a large logit: the row maximum must be subtracted
    check_op(op, [x], attrs, tol=TOL_EXP_REDUCTION, sub_batch=same(attrs))


@covers("softmax", "log_softmax")
@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_softmax_over_channels_of_a_conv_output(op: str) -> None:
    """Softmax over axis 1 of a blocked conv output (19 channels: a padded second block)."""
    b = GraphBuilder(f"conv_{op}")
    x = b.input("x", (2, 5, 3, 4), DType.FLOAT32)
    w = b.param("w", (19, 5, 1, 1), DType.FLOAT32)
    c = b.apply("conv2d", [x, w], Conv2dAttrs(), layer="conv")
    attrs = SoftmaxAttrs(1) if op == "softmax" else LogSoftmaxAttrs(1)
    b.output(b.apply(op, [c], attrs, layer="sm"), "y")
    check_graph(b.build(), {"x": randn(2, 5, 3, 4)}, {"w": randn(19, 5, 1, 1)}, TOL_EXP_REDUCTION)


@covers("cross_entropy")
@pytest.mark.parametrize("reduction", [Reduction.MEAN, Reduction.SUM])
@pytest.mark.parametrize("classes", [1, 10, 37])
def test_cross_entropy_int64_labels(reduction: Reduction, classes: int) -> None:
    logits = randn(5, classes, scale=3.0)
    labels = RNG.integers(0, classes, 5).astype(np.int64)
    attrs = CrossEntropyAttrs(reduction)
    check_op("cross_entropy", [logits, labels], attrs, tol=TOL_EXP_REDUCTION, sub_batch=same(attrs))


@covers("cross_entropy")
@pytest.mark.parametrize("reduction", [Reduction.MEAN, Reduction.SUM])
def test_cross_entropy_probabilities(reduction: Reduction) -> None:
    logits = randn(4, 13, scale=3.0)
    probs = RNG.dirichlet(np.ones(13), 4).astype(np.float32)
    attrs = CrossEntropyAttrs(reduction)
    check_op("cross_entropy", [logits, probs], attrs, tol=TOL_EXP_REDUCTION, sub_batch=same(attrs))


@covers("nll")
@pytest.mark.parametrize("reduction", [Reduction.MEAN, Reduction.SUM])
def test_nll(reduction: Reduction) -> None:
    logp = -np.abs(randn(6, 11, scale=3.0))
    labels = RNG.integers(0, 11, 6).astype(np.int64)
    attrs = NllAttrs(reduction)
    check_op("nll", [logp, labels], attrs, tol=TOL_EXP_REDUCTION, sub_batch=same(attrs))


@covers("mse")
@pytest.mark.parametrize("reduction", [Reduction.MEAN, Reduction.SUM])
@pytest.mark.parametrize("shape", [(4, 7), (3, 5, 4, 3)])
def test_mse(reduction: Reduction, shape: tuple[int, ...]) -> None:
    attrs = MseAttrs(reduction)
    check_op("mse", [randn(*shape), randn(*shape)], attrs, tol=TOL_REDUCTION, sub_batch=same(attrs))


@covers("cross_entropy", "log_softmax", "nll")
def test_classifier_with_loss_outputs() -> None:
    """A network with logits, log-probabilities and two losses as outputs, run at the full and a smaller batch."""
    def build(n: int) -> cnncc.Graph:
        b = GraphBuilder("classifier_loss")
        x = b.input("x", (n, 3, 6, 6), DType.FLOAT32)
        t = b.input("labels", (n,), DType.INT64)
        w = b.param("w", (5, 3, 3, 3), DType.FLOAT32)
        fw = b.param("fw", (7, 80), DType.FLOAT32)
        y = b.apply("relu", [b.apply("conv2d", [x, w], Conv2dAttrs(), layer="conv")], None, layer="relu")
        logits = b.apply("linear", [b.apply("flatten", [y], FlattenAttrs(1), layer="flat"), fw], None, layer="fc")
        logp = b.apply("log_softmax", [logits], LogSoftmaxAttrs(1), layer="logp")
        b.output(logits, "logits")
        b.output(b.apply("cross_entropy", [logits, t], CrossEntropyAttrs(), layer="ce"), "ce")
        b.output(b.apply("nll", [logp, t], NllAttrs(), layer="nll"), "nll")
        return b.build()

    params = {"w": randn(5, 3, 3, 3), "fw": randn(7, 80, scale=0.3)}
    x, t = randn(4, 3, 6, 6), RNG.integers(0, 7, 4).astype(np.int64)
    _, cm = check_graph(build(4), {"x": x, "labels": t}, params, TOL_EXP_REDUCTION)
    got = cm.run({"x": x[:2], "labels": t[:2]})
    want = interpret(build(2), {"x": x[:2], "labels": t[:2]}, params)
    assert got["ce"].shape == () and got["logits"].shape == (2, 7)
    for name in want:
        assert rel_error(got[name], want[name]) <= TOL_EXP_REDUCTION, name


# --- optimiser updates: param, grad and state as graph inputs; lr (and Adam's step) a scalar input or a parameter --

def _update_case(op: str, attrs: Any, shape: tuple[int, ...], scalar_params: bool) -> tuple:
    from cnncc.ops import get_op

    update = get_op(op).traits.update
    scalars, state = update.scalars, update.state(attrs)
    x, g = randn(*shape), randn(*shape)
    st_arrays = [np.abs(randn(*shape)) if name in ("sum", "square_avg", "v") else randn(*shape) for name in state]
    sc = [np.asarray(0.05, np.float32), np.asarray(3.0, np.float32)][:len(scalars)]
    arrays = [x, g, *sc, *st_arrays]
    return arrays, (tuple(range(2, 2 + len(sc))) if scalar_params else ())


UPDATES = [("sgd_update", SgdAttrs()), ("sgd_update", SgdAttrs(0.9, False, 1e-3)), ("sgd_update", SgdAttrs(0.9, True)),
           ("adagrad_update", AdagradAttrs(weight_decay=0.1)), ("rmsprop_update", RmspropAttrs()),
           ("adam_update", AdamAttrs()), ("adam_update", AdamAttrs(0.8, 0.99, 1e-6, 0.1))]


@covers("sgd_update", "adagrad_update", "rmsprop_update", "adam_update")
@pytest.mark.parametrize("shape", [(1,), (17,), (1000,), (2, 3, 5, 7), (70_001,)], ids=str)
@pytest.mark.parametrize("op,attrs", UPDATES, ids=[f"{o}-{i}" for i, (o, _) in enumerate(UPDATES)])
def test_optimizer_update(op: str, attrs: Any, shape: tuple[int, ...]) -> None:
    arrays, _ = _update_case(op, attrs, shape, scalar_params=False)
    check_op(op, arrays, attrs, tol=TOL_ELEMENTWISE)


@covers("sgd_update", "adam_update")
@pytest.mark.parametrize("op,attrs", [("sgd_update", SgdAttrs(0.9, True)), ("adam_update", AdamAttrs())])
def test_optimizer_update_scalars_as_parameters(op: str, attrs: Any) -> None:
    arrays, params = _update_case(op, attrs, (33,), scalar_params=True)
    check_op(op, arrays, attrs, params=params, tol=TOL_ELEMENTWISE)


@covers("adam_update")
def test_optimizer_update_parallel_and_new_lr_without_recompiling() -> None:
    """A tensor large enough to split over threads; one compiled module run with two learning rates and steps."""
    arrays, _ = _update_case("adam_update", AdamAttrs(), (300_007,), scalar_params=False)
    g, inputs, prm = single_op_graph("adam_update", arrays, AdamAttrs())
    cm = compile_for_test(g, prm, threads=2)
    for lr, t in ((0.05, 3.0), (0.001, 10.0)):
        feeds = {**inputs, "x2": np.asarray(lr, np.float32), "x3": np.asarray(t, np.float32)}
        got, want = cm.run(feeds), interpret(g, feeds, prm)
        for name in want:
            assert_matches(got[name], want[name], TOL_ELEMENTWISE, f"adam lr={lr} {name}")
        np.testing.assert_array_equal(cm.run(feeds, threads=1)["y0"], got["y0"])


# --- autodiff helpers: activation_grad, fill_like, sum_to, one_hot -----------------------------------------------

def _grad_operands(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """x with every special value (kinks, clip points, NaN, +-inf) up front; dy random with, where there is room,
    an inf, a NaN and a zero at the end (inf times a zero derivative is NaN on both sides)."""
    x, dy = randn(*shape, scale=4.0), randn(*shape)
    fx, fdy = x.reshape(-1), dy.reshape(-1)
    fx[: min(SPECIAL.size, fx.size)] = SPECIAL[: fx.size]
    if fx.size >= SPECIAL.size + 4:
        fx[-4:] = [0.0, -3.0, 1.5, 0.0]
        fdy[-4:] = [np.inf, np.nan, 0.0, -np.inf]
    return x, dy


@covers("activation_grad")
@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # the reference's inf * 0
@pytest.mark.parametrize(("op", "attrs", "tol"), ACTIVATIONS, ids=ACT_IDS)
@pytest.mark.parametrize("shape", [(3, 37), (2, 5, 7, 3), (1, 16)], ids=["rank2-tail", "rank4-plain", "one-vector"])
def test_activation_grad(op: str, attrs: Any, tol: float, shape: tuple[int, ...]) -> None:
    x, dy = _grad_operands(shape)
    grad_attrs = ActivationGradAttrs(op, attrs) if attrs is not None else ActivationGradAttrs(op)
    check_op("activation_grad", [x, dy], grad_attrs, tol=tol, sub_batch=same(grad_attrs))


@covers("activation_grad")
@pytest.mark.parametrize(("op", "attrs", "tol"), ACTIVATIONS, ids=ACT_IDS)
def test_activation_grad_blocked_after_conv(op: str, attrs: Any, tol: float) -> None:
    """x and dy both conv outputs (blocked, 20 channels: one full and one padded channel block)."""
    b = GraphBuilder(f"grad_{op}")
    img, w1, w2 = b.input("x", (3, 3, 9, 7)), b.param("w1", (20, 3, 3, 3)), b.param("w2", (20, 3, 3, 3))
    conv = Conv2dAttrs(padding=(1, 1, 1, 1))
    x, dy = b.apply("conv2d", [img, w1], conv, layer="c1"), b.apply("conv2d", [img, w2], conv, layer="c2")
    grad_attrs = ActivationGradAttrs(op, attrs) if attrs is not None else ActivationGradAttrs(op)
    b.output(b.apply("activation_grad", [x, dy], grad_attrs, layer="grad"), "y")
    params = {"w1": randn(20, 3, 3, 3, scale=1.5), "w2": randn(20, 3, 3, 3, scale=0.3)}
    check_graph(b.build(), {"x": randn(3, 3, 9, 7)}, params, max(tol, TOL_REDUCTION))


def test_activation_grad_of_small_inputs() -> None:
    """tanh' and elu' near 0 (1 - t^2 and alpha e^x: no cancellation to lose)."""
    x, dy = randn(8, 1000, scale=1e-4), randn(8, 1000)
    for op, attrs in (("tanh", None), ("elu", EluAttrs(1.0))):
        check_op("activation_grad", [x, dy], ActivationGradAttrs(op, attrs) if attrs else ActivationGradAttrs(op),
                 tol=TOL_EXP)


@covers("fill_like")
@pytest.mark.parametrize("shape", [(3, 37), (2, 5, 7, 3), (1, 16), (5,)], ids=str)
@pytest.mark.parametrize("value", [0.0, 1.0, -0.125])
def test_fill_like(shape: tuple[int, ...], value: float) -> None:
    x = randn(*shape)
    x.reshape(-1)[0] = np.nan  # not read
    check_op("fill_like", [x], FillLikeAttrs(value), sub_batch=same(FillLikeAttrs(value)))


@covers("fill_like")
def test_fill_like_of_a_loss_and_large() -> None:
    """The seed gradient: fill_like of a loss (not per image), and a fill large enough to split over threads."""
    b = GraphBuilder("seed")
    x, t = b.input("x", (4, 9)), b.input("t", (4, 9))
    loss = b.apply("mse", [x, t], MseAttrs(Reduction.MEAN), layer="loss")
    b.output(b.apply("fill_like", [loss], FillLikeAttrs(1.0), layer="seed"), "seed")
    big = b.input("big", (4, 30_001))
    b.output(b.apply("fill_like", [big], FillLikeAttrs(-2.0), layer="fill_big"), "big")
    g = b.build()
    _, cm = check_graph(g, {"x": randn(4, 9), "t": randn(4, 9), "big": randn(4, 30_001)}, {}, TOL_ELEMENTWISE,
                    threads=2)
    got = cm.run({"x": randn(1, 9), "t": randn(1, 9), "big": randn(1, 30_001)})
    assert got["seed"].shape == () and got["seed"] == 1.0 and got["big"].shape == (1, 30_001)
    assert np.all(got["big"] == -2.0)


SUM_TO_CASES = [((2, 5, 7, 3), (5, 1, 1)), ((2, 5, 7, 3), (1, 5, 1, 1)), ((2, 5, 7, 3), (2, 1, 7, 1)),
                ((2, 5, 7, 3), (2, 5, 7, 3)), ((2, 5, 7, 3), ()), ((2, 5, 7, 3), (3,)), ((2, 5, 7, 3), (2, 5, 1, 1)),
                ((3, 37), (37,)), ((3, 37), (3, 1)), ((3, 37), (1, 1)), ((3, 37), (1, 37)), ((5,), ()),
                ((1, 16), (16,))]


@covers("sum_to")
@pytest.mark.parametrize(("shape", "target"), SUM_TO_CASES, ids=[f"{s}->{t}" for s, t in SUM_TO_CASES])
def test_sum_to(shape: tuple[int, ...], target: tuple[int, ...]) -> None:
    x = randn(*shape)
    keeps_batch = len(target) == len(shape) and target[0] == shape[0] != 1

    def at_batch_1(arrays: Sequence[np.ndarray]) -> SumToAttrs:
        return SumToAttrs((1, *target[1:]) if keeps_batch else target)

    check_op("sum_to", [x], SumToAttrs(target), tol=TOL_REDUCTION, sub_batch=at_batch_1)


@covers("sum_to")
@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # the reference's inf + -inf
def test_sum_to_of_blocked_conv_output_special_values() -> None:
    """A bias gradient: the per-channel sum of a blocked conv output (20 channels), plus inf/NaN propagation."""
    b = GraphBuilder("bias_grad")
    img, w = b.input("x", (3, 3, 9, 7)), b.param("w", (20, 3, 3, 3))
    y = b.apply("conv2d", [img, w], Conv2dAttrs(padding=(1, 1, 1, 1)), layer="conv")
    b.output(b.apply("sum_to", [y], SumToAttrs((20, 1, 1)), layer="bias"), "db")
    check_graph(b.build(), {"x": randn(3, 3, 9, 7)}, {"w": randn(20, 3, 3, 3)}, TOL_REDUCTION)
    x = randn(4, 6)
    x[0, 0], x[1, 1], x[2, 1], x[3, 2] = np.nan, np.inf, -np.inf, np.inf
    check_op("sum_to", [x], SumToAttrs((6,)), tol=TOL_REDUCTION)


def test_rejects_activation_grad_of_a_loss() -> None:
    """activation_grad of a value that is not per image (a loss) is not compiled yet."""
    b = GraphBuilder("loss_grad")
    x, t = b.input("x", (4, 9)), b.input("t", (4, 9))
    loss = b.apply("mse", [x, t], MseAttrs(Reduction.MEAN), layer="loss")
    seed = b.apply("fill_like", [loss], FillLikeAttrs(1.0), layer="seed")
    b.output(b.apply("activation_grad", [loss, seed], ActivationGradAttrs("relu"), layer="grad"), "y")
    _rejects(b.build(), {}, "layer 'grad'", "not per image")


@covers("one_hot")
@pytest.mark.parametrize("classes", [1, 10, 37])
def test_one_hot(classes: int) -> None:
    labels = RNG.integers(0, classes, 5).astype(np.int64)
    labels[0] = classes - 1
    cm = check_op("one_hot", [labels, randn(5, classes)], sub_batch=same(None))
    with pytest.raises(InputError):
        cm.run({"x0": np.array([0, 1, classes, 0, 0], np.int64), "x1": randn(5, classes)})


# --- what the backend rejects on purpose ---------------------------------------------------------------------

def _rejects(graph: cnncc.Graph, params: dict[str, np.ndarray], *fragments: str) -> None:
    with pytest.raises(Unsupported) as info:
        compile_for_test(graph, params)
    assert isinstance(info.value, CnnccError)
    for f in fragments:
        assert f in str(info.value), str(info.value)


def test_rejects_training_dropout() -> None:
    g, _, params = single_op_graph("dropout", [randn(2, 4, 3, 3)], DropoutAttrs(0.5, True, 1), layer="drop_train")
    _rejects(g, params, "layer 'drop_train'", "training mode")


def test_rejects_training_graph_of_a_model() -> None:
    model = nn.Sequential([nn.Conv2d(4, 3, name="conv"), nn.BatchNorm(name="bn"), nn.Dropout(name="drop")],
                          input_shape=(2, 6, 6))
    _rejects(model.graph(2, training=True), model.params, "layer 'drop'", "training mode")  # batch_norm compiles


@pytest.mark.parametrize("axis", [0, -4])
def test_rejects_concat_on_batch_axis(axis: int) -> None:
    g, _, params = single_op_graph("concat", [randn(2, 4, 3, 3), randn(1, 4, 3, 3)], ConcatAttrs(axis),
                                   layer="cat_batch")
    _rejects(g, params, "layer 'cat_batch'", "axis 0")


@pytest.mark.parametrize("perm", [(1, 0, 2, 3), (3, 1, 2, 0), (1, 0)], ids=str)
def test_rejects_transpose_moving_the_batch_axis(perm: tuple[int, ...]) -> None:
    x = randn(2, 3, 4, 5) if len(perm) == 4 else randn(2, 3)
    g, _, params = single_op_graph("transpose", [x], TransposeAttrs(perm), layer="swap_batch")
    _rejects(g, params, "layer 'swap_batch'", f"transpose {perm}")


def _single(op: str, shapes: Sequence[tuple[int, ...]], attrs: Any = None, params: Sequence[int] = ()) -> tuple:
    arrays = [np.abs(randn(*s)) + 0.5 for s in shapes]  # positive: a valid BN variance
    g, _, prm = single_op_graph(op, arrays, attrs, layer="limited", param_operands=params)
    return g, prm


@pytest.mark.parametrize(("op", "shapes", "attrs", "params", "fragment"), [
    ("batch_norm", [(3, 5)] + [(5,)] * 4, BatchNormAttrs(), (1, 2, 3, 4), "batch_norm on rank-2 input"),
    ("prelu", [(3, 5), (5,)], None, (1,), "prelu on rank-2 input"),
    ("add", [(3, 5), (5,)], None, (1,), "add broadcasting (5,)"),
    ("multiply", [(2, 4, 3, 3), (2, 1, 3, 3)], None, (), "multiply broadcasting (2, 1, 3, 3)"),
    ("transpose", [(2, 5, 3)], TransposeAttrs((0, 2, 1)), (), "transpose (0, 2, 1)"),
    ("concat", [(2, 5, 3, 3), (2, 5, 3, 2)], ConcatAttrs(3), (), "concat along axis 3"),
    ("concat", [(2, 5, 3, 3), (2, 5, 2, 3)], ConcatAttrs(2), (), "concat along axis 2"),
    ("softmax", [(2, 5)], SoftmaxAttrs(0), (), "softmax over the batch axis"),
    ("log_softmax", [(2, 5)], LogSoftmaxAttrs(0), (), "log_softmax over the batch axis"),
], ids=lambda v: v.replace(" ", "_") if isinstance(v, str) and " " in v else "")
def test_limitations_raise_unsupported(op: str, shapes: list, attrs: Any, params: tuple, fragment: str) -> None:
    """Graphs the interpreter runs but this backend does not compile yet: a clear Unsupported naming the layer."""
    g, prm = _single(op, shapes, attrs, params)
    _rejects(g, prm, "layer 'limited'", fragment)


# Regression (a bug of the backend as first committed, 486ca8d): codegen/lower.py Lowering.get: a parameter where a
# lowering expects a computed value (full-shape add/multiply operand, MSE target) raises the internal CnnccError
# 'value ... has no placement', not Unsupported
@pytest.mark.parametrize(("op", "shapes", "attrs"), [("add", [(1, 5, 3, 3), (1, 5, 3, 3)], None),
                                                     ("multiply", [(2, 7), (2, 7)], None),
                                                     ("mse", [(2, 5), (2, 5)], MseAttrs())], ids=str)
def test_parameter_as_full_operand(op: str, shapes: list, attrs: Any) -> None:
    g, inputs, prm = single_op_graph(op, [randn(*s) for s in shapes], attrs, layer="with_param",
                                     param_operands=(1,))
    try:
        check_graph(g, inputs, prm, TOL_REDUCTION)
    except Unsupported as e:
        assert "layer 'with_param'" in str(e)


# ================================================================================================================
# 2. hypothesis: convolution and pooling configurations, compiled vs interpreter
# ================================================================================================================

@st.composite
def conv_configs(draw: st.DrawFn) -> tuple[list[np.ndarray], Conv2dAttrs, str, str]:
    kind = draw(st.sampled_from(["dense", "depthwise", "depthwise_multiplier", "grouped_16", "grouped_8",
                                 "grouped_odd"]))
    if kind == "dense":
        groups, cg, kg = 1, draw(st.integers(1, 40)), draw(st.integers(1, 40))
    elif kind == "depthwise":
        groups, cg, kg = draw(st.integers(2, 40)), 1, 1
    elif kind == "depthwise_multiplier":
        groups, cg, kg = draw(st.integers(2, 20)), 1, draw(st.integers(2, 3))
    elif kind == "grouped_16":  # channels per group a multiple of the vector width: the grouped kernel
        groups, cg, kg = draw(st.integers(2, 3)), draw(st.sampled_from([16, 32])), draw(st.sampled_from([16, 32]))
    elif kind == "grouped_8":  # the grouped kernel for 8-lane (x86-64-v3) code, block-diagonal for 16 lanes
        groups, cg, kg = draw(st.integers(2, 3)), draw(st.sampled_from([8, 24])), draw(st.sampled_from([8, 16]))
    else:
        groups, cg, kg = draw(st.integers(2, 5)), draw(st.integers(1, 12)), draw(st.integers(1, 12))
    c, k = groups * cg, groups * kg
    r, s = draw(st.integers(1, 11)), draw(st.integers(1, 11))
    stride = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = tuple(draw(st.integers(0, 3)) for _ in range(4))
    # Mostly sizes the dilated kernel fits (odd ones included); the rest the shape rule rejects (assume below).
    fit_h = min(max((r - 1) * dilation[0] + 1 - padding[0] - padding[1], 1), 20)
    fit_w = min(max((s - 1) * dilation[1] + 1 - padding[2] - padding[3], 1), 20)
    h = draw(st.integers(fit_h, 20) | st.integers(1, 20))
    w = draw(st.integers(fit_w, 20) | st.integers(1, 20))
    n = draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    arrays = [rng.standard_normal((n, c, h, w)).astype(np.float32),
              rng.standard_normal((k, cg, r, s)).astype(np.float32)]
    if draw(st.booleans()):
        arrays.append(rng.standard_normal(k).astype(np.float32))
    cpu = draw(st.sampled_from(CPUS))
    return arrays, Conv2dAttrs(stride, padding, dilation, groups), kind, cpu  # type: ignore[arg-type]


# The host's own code (16-lane AVX-512 vectors on the development machine) and 8-lane x86-64-v3 (AVX2) code.
CPUS = ["host", "host", "x86-64-v3"] if _host_has("avx2", "fma") else ["host"]


@settings(max_examples=50, deadline=None)
@given(conv_configs())
def test_hypothesis_conv2d(config: tuple[list[np.ndarray], Conv2dAttrs, str, str]) -> None:
    arrays, attrs, kind, cpu = config
    try:
        g, inputs, params = single_op_graph("conv2d", arrays, attrs, param_operands=(1, 2))
    except ShapeError:
        assume(False)
        return
    event(kind)
    event(cpu)
    _, cm = check_graph(g, inputs, params, TOL_REDUCTION, cpu=cpu)
    if arrays[0].shape[0] > 1:  # dynamic batch: the last image alone
        got = cm.run({"x0": np.ascontiguousarray(arrays[0][-1:])})["y0"]
        assert_matches(got, interpret(g, inputs, params)["y0"][-1:], TOL_REDUCTION, "conv at batch 1")


@st.composite
def pool_configs(draw: st.DrawFn) -> tuple[str, np.ndarray, Any, str]:
    op = draw(st.sampled_from(["max_pool2d", "avg_pool2d"]))
    k = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    s = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    pad = (draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[0] // 2)),
           draw(st.integers(0, k[1] // 2)), draw(st.integers(0, k[1] // 2)))
    ceil = draw(st.booleans())
    h, w = draw(st.integers(1, 20)), draw(st.integers(1, 20))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    x = rng.standard_normal((draw(st.integers(1, 3)), draw(st.integers(1, 40)), h, w)).astype(np.float32)
    if op == "max_pool2d":
        d = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
        return op, x, MaxPool2dAttrs(k, s, pad, d, ceil), draw(st.sampled_from(CPUS))  # type: ignore[arg-type]
    return op, x, AvgPool2dAttrs(k, s, pad, ceil, draw(st.booleans())), draw(st.sampled_from(CPUS))  # type: ignore


@settings(max_examples=40, deadline=None)
@given(pool_configs())
def test_hypothesis_pooling(config: tuple[str, np.ndarray, Any, str]) -> None:
    op, x, attrs, cpu = config
    try:
        g, inputs, params = single_op_graph(op, [x], attrs)
    except ShapeError:
        assume(False)
        return
    event(op)
    _, cm = check_graph(g, inputs, params, TOL_REDUCTION, cpu=cpu)
    if x.shape[0] > 1:  # dynamic batch: the first image alone
        got = cm.run({"x0": np.ascontiguousarray(x[:1])})["y0"]
        assert_matches(got, interpret(g, inputs, params)["y0"][:1], TOL_REDUCTION, "pool at batch 1")


# ================================================================================================================
# 4. one thread and two threads: bit-identical
# ================================================================================================================

def _thread_models() -> dict[str, Callable[[], nn.Model]]:
    def grouped() -> nn.Model:
        return nn.Sequential([nn.Conv2d(32, 3, padding=1, name="c1"), nn.Conv2d(32, 3, padding=1, groups=2,
                                                                                    name="grouped"),
                              nn.Conv2d(32, 3, stride=2, padding=1, groups=32, name="dw"),
                              nn.Conv2d(18, 3, groups=2, name="grouped_odd")], input_shape=(6, 17, 15), seed=10)

    def pooling() -> nn.Model:
        return nn.Sequential([nn.Conv2d(20, 3, name="c"), nn.MaxPool2d(3, 2, padding=1, name="mp"),
                              nn.AvgPool2d(3, 2, padding=1, ceil_mode=True, name="ap"),
                              nn.GlobalAvgPool2d(name="gap")], input_shape=(3, 30, 29), seed=11)

    def linear() -> nn.Model:
        return nn.Sequential([nn.Flatten(name="flat"), nn.Linear(300, activation="relu", name="fc1"),
                              nn.Linear(77, name="fc2"), nn.Softmax(name="sm")], input_shape=(4, 9, 9), seed=12)

    from cnncc.frontend.models import get_model

    return {"resnet18": lambda: get_model("resnet18"), "mobilenet_v2": lambda: get_model("mobilenet_v2"),
            "grouped_depthwise": grouped, "pooling": pooling, "linear": linear}


THREAD_MODELS = _thread_models()


@pytest.mark.parametrize("name", list(THREAD_MODELS))
def test_one_and_two_threads_bit_identical(name: str) -> None:
    model = THREAD_MODELS[name]()
    if name in ("resnet18", "mobilenet_v2"):
        randomize_bn(model, seed=len(name))
    cm = compile_model_for_test(model, 2, threads=2)
    x = randn(2, *model.inputs[0].spec.shape)
    one, two, default = cm(x, threads=1), cm(x, threads=2), cm(x)
    assert np.array_equal(one, two) and np.array_equal(one, default)
    assert np.array_equal(cm(x, threads=3), one)  # more threads than cores
    assert np.array_equal(cm(x[:1], threads=2), cm(x[:1], threads=1))
    assert rel_error(one, model(x)) <= TOL_MODEL


# ================================================================================================================
# 5. code for x86-64-v3 (AVX2, 8-lane vectors) runs here
# ================================================================================================================

def _v3_models() -> dict[str, Callable[[], nn.Model]]:
    from cnncc.frontend.models import get_model

    def odd_channels() -> nn.Model:
        return nn.Sequential([nn.Conv2d(13, 3, padding=1, name="c1"), nn.Conv2d(21, 3, stride=2, name="c2"),
                              nn.Conv2d(21, 3, groups=21, padding=1, name="dw"),
                              nn.Conv2d(16, 1, name="pw"), nn.Conv2d(16, 3, groups=2, padding=(0, 1, 2, 1),
                                                                     name="grouped8"),
                              nn.Conv2d(10, 1, name="out")], input_shape=(5, 15, 13), seed=13)

    return {"lenet5": lambda: get_model("lenet5"), "resnet18": lambda: get_model("resnet18"),
            "odd_channels": odd_channels}


V3_MODELS = _v3_models()


NEEDS_AVX2 = pytest.mark.skipif(not _host_has("avx2", "fma"), reason="x86-64-v3 code needs an AVX2+FMA host")


@NEEDS_AVX2
@pytest.mark.parametrize("name", list(V3_MODELS))
def test_x86_64_v3_code(name: str) -> None:
    model = V3_MODELS[name]()
    randomize_bn(model, seed=3)
    v3 = compile_model_for_test(model, 2, cpu="x86-64-v3")
    host = compile_model_for_test(model, 2)
    assert v3.target.vector_width == 8 and v3.target.cpu == "x86-64-v3"
    assert "avx2" in v3.target.enabled() and "avx512f" not in v3.target.enabled()
    x = randn(2, *model.inputs[0].spec.shape)
    got = v3(x)
    assert rel_error(got, model(x)) <= TOL_MODEL
    assert rel_error(got, host(x)) <= TOL_MODEL
    assert rel_error(v3(x[1:]), model(x[1:])) <= TOL_MODEL


def test_unknown_cpu_name() -> None:
    with pytest.raises(CnnccError, match=re.escape("unknown target CPU 'pentium-9000'")):
        cnncc.compile(nn.Sequential([nn.ReLU()], input_shape=(3,)), cpu="pentium-9000")


# ================================================================================================================
# 6. bad input to a compiled model: exact messages, never a crash
# ================================================================================================================

@pytest.fixture(scope="module")
def small() -> tuple[nn.Model, Any]:
    model = nn.Sequential([nn.Conv2d(5, 3, padding=1, name="conv"), nn.ReLU(name="relu"), nn.Flatten(name="flat"),
                           nn.Linear(4, name="fc")], input_shape=(2, 6, 6), name="small", seed=14)
    return model, cnncc.compile(model, batch=3)


def _bad(cm: Any, x: Any, message: str, **kw: Any) -> None:
    with pytest.raises(InputError, match=f"^{re.escape(message)}$"):
        cm(x, **kw)


def test_wrong_shape(small: tuple[nn.Model, Any]) -> None:
    _, cm = small
    want = "the compiled model takes (batch, 2, 6, 6) with 1 <= batch <= 3"
    _bad(cm, np.zeros((2, 3, 6, 6), np.float32), f"input 'input' has shape (2, 3, 6, 6); {want}")
    _bad(cm, np.zeros((2, 2, 6), np.float32), f"input 'input' has shape (2, 2, 6); {want}")
    _bad(cm, np.zeros((4, 2, 6, 6), np.float32), f"input 'input' has shape (4, 2, 6, 6); {want}")
    _bad(cm, np.zeros((0, 2, 6, 6), np.float32), f"input 'input' has shape (0, 2, 6, 6); {want}")
    _bad(cm, np.zeros((2, 6, 6, 2), np.float32), f"input 'input' has shape (2, 6, 6, 2); {want}")


def test_wrong_dtype(small: tuple[nn.Model, Any]) -> None:
    _, cm = small
    for dt in ("float64", "int32", "float16", ">f4"):  # >f4: big-endian float32, as read from some files
        _bad(cm, np.zeros((1, 2, 6, 6), dt),
             f"input 'input' has dtype {dt}; the compiled model takes float32 (convert with x.astype(np.float32))")


def test_unaligned_and_read_only_inputs_work(small: tuple[nn.Model, Any]) -> None:
    """C-contiguous float32 that is not 4-byte aligned (a view at an odd byte offset) or not writeable is fine."""
    model, cm = small
    x = randn(3, 2, 6, 6)
    raw = np.zeros(x.nbytes + 1, np.uint8)
    unaligned = np.frombuffer(raw.data, np.float32, x.size, offset=1).reshape(x.shape)
    unaligned[...] = x
    assert not unaligned.flags.aligned and unaligned.flags.c_contiguous
    want = model(x)
    assert rel_error(cm(unaligned), want) <= TOL_REDUCTION
    read_only = x.copy()
    read_only.flags.writeable = False
    assert np.array_equal(cm(read_only), cm(x))


def test_concurrent_calls_from_python_threads(small: tuple[nn.Model, Any]) -> None:
    """Calls on one compiled model from several Python threads (ctypes drops the GIL) give each caller its own
    correct result."""
    from concurrent.futures import ThreadPoolExecutor

    _, cm = small
    xs = [randn(1 + i % 3, 2, 6, 6) for i in range(12)]
    want = [cm(x, threads=1) for x in xs]
    cm(xs[0], threads=2)  # worker pinning for 2-thread teams is set up before the race (see the next test)
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda i: cm(xs[i], threads=1 + i % 2), range(len(xs))))
    for g, w in zip(got, want, strict=True):
        assert np.array_equal(g, w)


CONCURRENT_FIRST_CALLS = """
import threading
import numpy as np
import cnncc
import cnncc.frontend as nn

cm = cnncc.compile(nn.Sequential([nn.Conv2d(4, 3, name="conv")], input_shape=(2, 6, 6)), batch=1, threads=1)
x = np.ones((1, 2, 6, 6), np.float32)
barrier = threading.Barrier(4)

def call(n):
    barrier.wait()
    cm(x, threads=n)

threads = [threading.Thread(target=call, args=(n,)) for n in (2, 3, 4, 5)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("ok")
"""


# Regression (a bug of the backend as first committed, 486ca8d): codegen/threads.py: _pinner() is an unlocked
# functools.lru_cache; threads racing on the first pin_workers() each JIT a module, only one is cached, and
# `_pinner()[1](...)` frees the others' engine before calling into it: SIGSEGV
def test_concurrent_first_calls_with_new_thread_counts_do_not_crash(tmp_path: Path) -> None:
    """Run in a fresh process: the first multi-threaded calls of a process, from four Python threads at once.

    The child runs in an empty directory: from the repository root, ``python -c`` would import the source folder
    ``cnncc/`` (which has no ``frontend``) instead of the installed package.
    """
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", CONCURRENT_FIRST_CALLS], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == "ok", (done.returncode, done.stderr[-2000:])


def test_not_an_array(small: tuple[nn.Model, Any]) -> None:
    _, cm = small
    _bad(cm, np.zeros((1, 2, 6, 6), np.float32).tolist(), "input 'input': expected a numpy array, got list")


def test_non_contiguous_and_fortran_order(small: tuple[nn.Model, Any]) -> None:
    model, cm = small
    big = randn(2, 2, 12, 6)
    strided = big[:, :, ::2]
    assert strided.shape == (2, 2, 6, 6)
    _bad(cm, strided, "input 'input' is not C-contiguous; pass np.ascontiguousarray(x)")
    fortran = np.asfortranarray(randn(2, 2, 6, 6))
    _bad(cm, fortran, "input 'input' is not C-contiguous; pass np.ascontiguousarray(x)")
    assert rel_error(cm(np.ascontiguousarray(strided)), model(np.ascontiguousarray(strided))) <= TOL_REDUCTION


def test_missing_and_unknown_inputs(small: tuple[nn.Model, Any]) -> None:
    _, cm = small
    x = np.zeros((1, 2, 6, 6), np.float32)
    with pytest.raises(InputError, match=re.escape("model 'small': input 'input' is missing")):
        cm.run({})
    with pytest.raises(InputError, match=re.escape("model 'small': unknown input(s) ['inptu']; inputs are "
                                                   "['input']")):
        cm.run({"input": x, "inptu": x})
    with pytest.raises(InputError, match=re.escape("model 'small': unknown input(s) ['x']; inputs are ['input']")):
        cm({"x": x})


def test_threads_must_be_positive(small: tuple[nn.Model, Any]) -> None:
    model, cm = small
    x = randn(1, 2, 6, 6)
    for bad in (0, -1, 1.5, True):
        _bad(cm, x, f"threads must be a positive integer, got {bad!r}", threads=bad)
    for bad in (0, 1.5):
        with pytest.raises(CnnccError, match=re.escape(f"compile: threads must be a positive integer, got {bad!r}")):
            cnncc.compile(model, batch=3, threads=bad)
    assert rel_error(cm(x, threads=1), model(x)) <= TOL_REDUCTION  # the model still works afterwards


def test_compile_errors(small: tuple[nn.Model, Any]) -> None:
    model, _ = small
    g = model.graph(2)
    with pytest.raises(CnnccError, match=re.escape("unknown target 'tpu': cnncc compiles for 'cpu', 'cuda'")):
        cnncc.compile(model, target="tpu")
    with pytest.raises(CnnccError, match=re.escape("compile(graph) needs params= (the weights by parameter name)")):
        cnncc.compile(g)
    params = dict(model.params)
    del params["conv.weight"]
    with pytest.raises(WeightsError, match=re.escape("graph 'small': no weights bound for parameter(s) "
                                                     "['conv.weight']")):
        cnncc.compile(g, params=params)
    params["conv.weight"] = model.params["conv.weight"][:2]
    with pytest.raises(WeightsError, match=re.escape("graph 'small': parameter 'conv.weight' has shape "
                                                     "(2, 2, 3, 3), expected (5, 2, 3, 3)")):
        cnncc.compile(g, params=params)
    for bad in (0, True):
        with pytest.raises(CnnccError, match=re.escape(f"compile: batch must be a positive integer, got {bad!r}")):
            cnncc.compile(model, batch=bad)


def _two_input_graph(n: int) -> cnncc.Graph:
    b = GraphBuilder("two_inputs")
    x = b.input("logits", (n, 6), DType.FLOAT32)
    t = b.input("labels", (n,), DType.INT64)
    b.output(b.apply("cross_entropy", [x, t], CrossEntropyAttrs(), layer="ce"), "loss")
    return b.build()


def test_class_labels_out_of_range() -> None:
    cm = cnncc.compile(_two_input_graph(4), params={})
    x = randn(4, 6)
    for labels, lo, hi in (([0, 6, 1, 2], 0, 6), ([-1, 0, 1, 2], -1, 2), ([9, 9, 9, 9], 9, 9)):
        with pytest.raises(InputError, match=re.escape(f"input 'labels': class labels must lie in [0, 6), got "
                                                       f"values from {lo} to {hi}")):
            cm.run({"logits": x, "labels": np.array(labels, np.int64)})
    with pytest.raises(InputError, match=re.escape("inputs disagree on the batch size: 4 and 2 ('labels')")):
        cm.run({"logits": x, "labels": np.zeros(2, np.int64)})
    with pytest.raises(InputError, match=re.escape("input 'labels' has dtype int32; the compiled model takes int64")):
        cm.run({"logits": x, "labels": np.zeros(4, np.int32)})
    ok = np.array([0, 5, 3, 1], np.int64)
    got = cm.run({"logits": x, "labels": ok})["loss"]
    want = interpret(_two_input_graph(4), {"logits": x, "labels": ok}, {})["loss"]
    assert rel_error(got, want) <= TOL_EXP_REDUCTION


def test_nan_propagates_by_default_and_check_finite_rejects(small: tuple[nn.Model, Any]) -> None:
    """NaN in image 1 reaches only image 1's outputs (documented: IEEE propagation, as in the interpreter)."""
    model, cm = small
    x = randn(3, 2, 6, 6)
    x[1, 0, 2, 3] = np.nan
    got = cm(x)
    want = model(x)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(got[1]).all() and np.isfinite(got[[0, 2]]).all()
    assert rel_error(got[[0, 2]], want[[0, 2]]) <= TOL_REDUCTION
    with pytest.raises(InputError, match=re.escape("input 'input' holds 1 NaN/Inf values")):
        cm(x, check_finite=True)
    x[2, 1, 0, 0] = np.inf
    with pytest.raises(InputError, match=re.escape("input 'input' holds 2 NaN/Inf values")):
        cm(x, check_finite=True)
    clean = randn(3, 2, 6, 6)
    assert np.array_equal(cm(clean, check_finite=True), cm(clean))


def test_nan_through_every_op_kind() -> None:
    """NaN positions after conv, pools, BN, concat, softmax: the same as the interpreter's."""
    x = nn.Input((3, 8, 8), seed=15)
    a = nn.Conv2d(5, 3, padding=1, activation="relu6", name="a")(x)
    b = nn.MaxPool2d(3, 1, padding=1, name="mp")(x)
    y = nn.Concat(name="cat")([a, b])
    y = nn.BatchNorm(name="bn")(y)
    y = nn.AvgPool2d(2, name="ap")(y)
    y = nn.Softmax(axis=1, name="sm")(nn.Linear(6, name="fc")(nn.Flatten(name="flat")(y)))
    model = randomize_bn(nn.Model(x, y, name="nan_paths"))
    cm = cnncc.compile(model, batch=2)
    xs = randn(2, 3, 8, 8)
    xs[0, 2, 0, 0] = np.nan
    got, want = cm(xs), model(xs)
    assert np.array_equal(np.isnan(got), np.isnan(want)) and np.isnan(got[0]).all()
    assert rel_error(got[1], want[1]) <= TOL_EXP_REDUCTION


# Regression (a bug of the backend as first committed, 486ca8d): codegen/kernels/conv.py: padded output-channel lanes
# compute 0 (packed weight) * inf = NaN; the next conv reads all 16 lanes of a block and its 0 * NaN turns a real +inf
# output into NaN
def test_inf_propagates_like_the_interpreter() -> None:
    b = GraphBuilder("inf_chain")
    x = b.input("x", (1, 1, 3, 3), DType.FLOAT32)
    w1 = b.param("w1", (17, 1, 1, 1), DType.FLOAT32)  # 17 channels: two blocks, 15 padded lanes
    w2 = b.param("w2", (2, 17, 1, 1), DType.FLOAT32)  # >= 16 input channels: c2 reads c1's blocked output
    y = b.apply("conv2d", [b.apply("conv2d", [x, w1], Conv2dAttrs(), layer="c1"), w2], Conv2dAttrs(), layer="c2")
    b.output(y, "y")
    xs = np.ones((1, 1, 3, 3), np.float32)
    xs[0, 0, 1, 1] = np.inf
    params = {"w1": np.ones((17, 1, 1, 1), np.float32), "w2": np.ones((2, 17, 1, 1), np.float32)}
    want = interpret(b.build(), {"x": xs}, params)["y"]
    assert np.isposinf(want[0, :, 1, 1]).all()
    got = cnncc.compile(b.build(), params=params).run({"x": xs})["y"]
    np.testing.assert_array_equal(got, want)


# ================================================================================================================
# 7. the module cache: same graph -> same module; the weights are bound, not baked
# ================================================================================================================

def test_module_cache_reuses_code_and_binds_new_weights() -> None:
    def build(seed: int) -> nn.Model:
        return randomize_bn(nn.Sequential([nn.Conv2d(11, 3, padding=1, name="conv"), nn.BatchNorm(name="bn"),
                                           nn.ReLU(name="relu"), nn.AvgPool2d(2, name="pool"),
                                           nn.Flatten(name="flat"), nn.Linear(3, name="fc")],
                                          input_shape=(2, 8, 8), name="cached", seed=seed), seed=seed)

    m1, m2 = build(100), build(200)
    assert m1.graph(2).hash() == m2.graph(2).hash()
    assert not np.array_equal(m1.params["conv.weight"], m2.params["conv.weight"])
    c1 = cnncc.compile(m1, batch=2)
    c2 = cnncc.compile(m2, batch=2)
    assert c2.stats.cached and c2.module is c1.module
    x = randn(2, 2, 8, 8)
    y1, y2 = c1(x), c2(x)
    assert rel_error(y1, m1(x)) <= TOL_REDUCTION and rel_error(y2, m2(x)) <= TOL_REDUCTION
    assert not np.allclose(y1, y2)
    assert np.array_equal(c1(x), y1)  # the first model kept its own weights
    assert cnncc.compile(m1, batch=3).module is not c1.module  # another batch is another graph: another module


def test_module_cache_distinguishes_baked_constants() -> None:
    """Activation constants are compiled into the code: graphs that differ only in them get their own modules."""
    outs = []
    for slope in (0.1, 0.3):
        g, inputs, params = single_op_graph("leaky_relu", [np.full((2, 5), -1.0, np.float32)],
                                            LeakyReluAttrs(slope))
        got, cm = check_graph(g, inputs, params, TOL_ELEMENTWISE)
        outs.append(got["y0"])
    np.testing.assert_allclose(outs[0], -0.1, rtol=1e-6)
    np.testing.assert_allclose(outs[1], -0.3, rtol=1e-6)


def test_compiled_weights_are_a_copy() -> None:
    """Changing the model's weights after compiling changes nothing in the compiled model."""
    model = nn.Sequential([nn.Conv2d(4, 3, name="conv")], input_shape=(2, 5, 5), seed=16)
    cm = cnncc.compile(model, batch=1)
    x = randn(1, 2, 5, 5)
    before = cm(x)
    model.params["conv.weight"][...] = 0.0
    assert np.array_equal(cm(x), before)


def test_profile_times_every_kernel_call() -> None:
    model = nn.Sequential([nn.Conv2d(20, 3, padding=1, activation="relu", name="conv"), nn.MaxPool2d(2, name="pool"),
                           nn.Flatten(name="flat"), nn.Linear(10, name="fc")], input_shape=(3, 12, 12), seed=17)
    cm = compile_model_for_test(model, 2)
    x = randn(2, 3, 12, 12)
    before = cm(x)
    timings = cm.profile(x, repeats=3)
    assert [t.layer for t in timings] == [c.layer for c in cm.program.calls]
    assert {"conv", "pool", "fc"} <= {t.layer for t in timings}
    assert all(t.seconds >= 0 for t in timings) and sum(t.seconds for t in timings) > 0
    assert sum(t.macs for t in timings) == model.macs(2)
    assert np.array_equal(cm(x), before)  # profiling left the model as it was


# --- fused ops: every epilogue shape the fusion passes produce, built directly and through the pipeline --------

EPILOGUES: list[tuple[str, ...]] = [("relu",), ("add",), ("add", "relu"), ("relu", "add"), ("leaky_relu",),
                                     ("sigmoid", "add", "tanh"), ("relu6",)]


def _step(op: str) -> Any:
    from cnncc.ops.epilogue import EpilogueStep
    from cnncc.ops.leaky_relu import LeakyReluAttrs

    return EpilogueStep(op, LeakyReluAttrs(0.2)) if op == "leaky_relu" else EpilogueStep(op)


@covers("fused_conv2d")
@pytest.mark.parametrize("steps", EPILOGUES, ids=["-".join(s) for s in EPILOGUES])
@pytest.mark.parametrize("channels", [(16, 32), (5, 19)], ids=["c16-k32", "c5-k19"])
def test_fused_conv2d_epilogues(steps: tuple[str, ...], channels: tuple[int, int]) -> None:
    from cnncc.ops.conv2d import Conv2dAttrs
    from cnncc.ops.fused_conv2d import FusedConv2dAttrs

    c, k = channels
    b = GraphBuilder("fused")
    x = b.input("x", (3, c, 9, 7))
    w, bias = b.param("w", (k, c, 3, 3)), b.param("b", (k,))
    operands = [x, w, bias]
    if "add" in steps:
        operands.append(b.input("res", (3, k, 9, 7)))
    attrs = FusedConv2dAttrs(Conv2dAttrs(stride=(1, 1), padding=(1, 1, 1, 1)), tuple(_step(s) for s in steps))
    b.output(b.apply("fused_conv2d", operands, attrs, layer="conv"))
    g = b.build()
    rng = np.random.default_rng(4)
    params = {"w": rng.standard_normal((k, c, 3, 3)).astype(np.float32) * 0.3,
              "b": rng.standard_normal(k).astype(np.float32)}
    feeds = {v.name: rng.standard_normal(v.shape).astype(np.float32) for v in g.inputs}
    cm = compile_for_test(g, params, batch=3)
    want = interpret(g, feeds, params)["output0"]
    assert_matches(cm.run(feeds)["output0"], want, TOL_EXP if "sigmoid" in steps else TOL_REDUCTION, str(steps))
    small = {n: a[:1] for n, a in feeds.items()}
    assert_matches(cm.run(small)["output0"], want[:1], TOL_EXP if "sigmoid" in steps else TOL_REDUCTION, "batch 1")


@covers("fused_conv2d", "fused_linear")
def test_fusion_pipeline_compiles_like_the_interpreter() -> None:
    """conv -> BN -> add -> ReLU, depthwise -> BN -> ReLU6 and linear -> sigmoid through cnncc.compile's pipeline."""
    x = nn.Input((8, 6, 6), seed=3)
    y = nn.BatchNorm(name="bn1")(nn.Conv2d(8, 3, padding=1, bias=False, name="conv1")(x))
    y = nn.ReLU(name="relu1")(nn.Add(name="add")([y, x]))
    y = nn.ReLU6(name="r6")(nn.BatchNorm(name="bn2")(nn.Conv2d(8, 3, padding=1, groups=8, name="dw")(y)))
    y = nn.Sigmoid(name="sig")(nn.Linear(7, name="fc")(nn.Flatten(name="flat")(y)))
    model = randomize_bn(nn.Model(x, y, name="pipeline"))
    cm = cnncc.compile(model, batch=2)
    fused = [n.op for n in cm.graph.nodes]
    record_compiled(fused)
    assert fused.count("fused_conv2d") == 2 and "fused_linear" in fused and "batch_norm" not in fused, fused
    for n in (2, 1):
        xin = randn(n, 8, 6, 6)
        assert_matches(cm(xin), model(xin), TOL_EXP, f"batch {n}")


@covers("fused_linear")
def test_fused_linear_rejects_a_residual() -> None:
    from cnncc.codegen.lower import Unsupported
    from cnncc.ops.fused_linear import FusedLinearAttrs

    b = GraphBuilder("fl")
    x = b.input("x", (2, 6))
    r = b.input("r", (2, 4))
    b.output(b.apply("fused_linear", [x, b.param("w", (4, 6)), b.param("b", (4,)), r],
                     FusedLinearAttrs((_step("add"),)), layer="fc"))
    with pytest.raises(Unsupported, match=re.escape("layer 'fc': residual adds are not fused into linear layers")):
        compile_for_test(b.build(), {"w": np.ones((4, 6), np.float32), "b": np.zeros(4, np.float32)})
