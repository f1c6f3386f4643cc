"""The LLVM CPU backend on the backward ops of training: pooling gradients, training-mode batch norm (forward,
gradient, running statistics), the bias gradient (sum_to + reshape of a blocked value) and the convolution
gradients lowered onto the direct convolution kernel -- each compiled and compared with the reference interpreter
run in float64 (the oracle), over small attribute grids; plus smaller run-time batches than compiled, per-channel
and weight operands that are computed values, and bit-identical results for any thread count.

Errors are relative to the output scale (``rel_error``); the tolerances are cnncc.testing's float32 ones: the
reductions (convolutions, batch statistics, pooled sums) sum float32 products in another order than the reference.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from cnncc.convalgo import ConvShape, baseline_for
from cnncc.ir import Graph, GraphBuilder
from cnncc.ops.avg_pool2d import AvgPool2dAttrs
from cnncc.ops.avg_pool2d_grad import AvgPool2dGradAttrs
from cnncc.ops.batch_norm import BatchNormAttrs
from cnncc.ops.batch_norm_grad import BatchNormGradAttrs
from cnncc.ops.batch_norm_stats import BatchNormStatsAttrs
from cnncc.ops.conv2d_grad_input import Conv2dGradAttrs
from cnncc.ops.max_pool2d import MaxPool2dAttrs
from cnncc.ops.reshape import ReshapeAttrs
from cnncc.ops.sum_to import SumToAttrs
from cnncc.ops.window import output_size
from cnncc.runtime import interpret
from cnncc.testing import (
    TOL_F32_ELEMENTWISE,
    TOL_F32_REDUCTION,
    checks,
    compile_for_test,
    covers,
    record_compiled,
    rel_error,
    single_op_graph,
)

RNG = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _seed_per_test(request: pytest.FixtureRequest) -> None:
    global RNG
    RNG = np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def randn(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def compile_at_baseline(graph: Graph, params: dict[str, np.ndarray], **kw: Any) -> Any:
    """compile_for_test, without passes: every backward-data convolution runs its baseline (no selection ran), and
    the compiled model says so."""
    cm = compile_for_test(graph, params, **kw)
    for n in graph.nodes:
        if n.op == "conv2d_grad_input":
            assert cm.layer_algorithms[n.layer] == baseline_for(ConvShape.of_grad_input(n), "cpu").name
    return cm


# The backward ops against the float64 interpreter (the oracle), compiled at their baseline.
check_graph = functools.partial(checks.check_graph, reference_dtype="float64", compiler=compile_at_baseline)
check_op = functools.partial(checks.check_op, reference_dtype="float64", compiler=compile_at_baseline,
                             tol=TOL_F32_REDUCTION)


# --- pooling gradients -----------------------------------------------------------------------------------------

MAX_POOLS = [
    MaxPool2dAttrs((3, 3), (2, 2), (1, 1, 1, 1)),  # ResNet's stem: overlapping windows
    MaxPool2dAttrs((2, 2), (2, 2)),
    MaxPool2dAttrs((3, 3), (1, 1), (1, 1, 1, 1)),
    MaxPool2dAttrs((3, 3), (2, 2), (0, 1, 1, 0), ceil_mode=True),
    MaxPool2dAttrs((2, 3), (1, 2), (1, 0, 1, 1), dilation=(2, 1)),
]


@covers("max_pool2d_grad")
@pytest.mark.parametrize("attrs", MAX_POOLS, ids=str)
@pytest.mark.parametrize(("n", "c", "hw"), [(1, 5, (9, 9)), (3, 20, (8, 11))])
def test_max_pool2d_grad(attrs: MaxPool2dAttrs, n: int, c: int, hw: tuple[int, int]) -> None:
    x = randn(n, c, *hw)
    (y,) = single_op_graph("max_pool2d", [x], attrs)[0].outputs
    check_op("max_pool2d_grad", [x, randn(*y.shape)], attrs, tol=TOL_F32_ELEMENTWISE)


@covers("max_pool2d_grad")
def test_max_pool2d_grad_ties_go_to_the_first_maximum() -> None:
    x = np.round(randn(2, 17, 7, 7)).astype(np.float32)  # few distinct values: many ties per window
    x[0, 0] = 1.0
    attrs = MaxPool2dAttrs((3, 3), (2, 2), (1, 1, 1, 1))
    (y,) = single_op_graph("max_pool2d", [x], attrs)[0].outputs
    check_op("max_pool2d_grad", [x, randn(*y.shape)], attrs, tol=TOL_F32_ELEMENTWISE)


AVG_POOLS = [
    AvgPool2dAttrs((3, 3), (2, 2), (1, 1, 1, 1)),
    AvgPool2dAttrs((3, 3), (2, 2), (1, 1, 1, 1), count_include_pad=False),
    AvgPool2dAttrs((2, 2), (2, 2)),
    AvgPool2dAttrs((3, 3), (2, 2), (1, 0, 0, 1), ceil_mode=True),
    AvgPool2dAttrs((3, 2), (1, 2), (1, 1, 0, 1), ceil_mode=True, count_include_pad=False),
]


@covers("avg_pool2d_grad")
@pytest.mark.parametrize("attrs", AVG_POOLS, ids=str)
@pytest.mark.parametrize(("n", "c", "hw"), [(1, 5, (9, 9)), (3, 20, (8, 11))])
def test_avg_pool2d_grad(attrs: AvgPool2dAttrs, n: int, c: int, hw: tuple[int, int]) -> None:
    (y,) = single_op_graph("avg_pool2d", [randn(n, c, *hw)], attrs)[0].outputs
    check_op("avg_pool2d_grad", [randn(*y.shape)], AvgPool2dGradAttrs(attrs, hw), tol=TOL_F32_REDUCTION)


# --- batch norm in training mode -------------------------------------------------------------------------------

BN_SHAPES = [(1, 5, 7, 6), (3, 16, 5, 5), (3, 20, 4, 9), (6, 20), (5, 33)]  # m = 2 would make dx exactly 0


def _bn_x(shape: tuple[int, ...]) -> np.ndarray:
    c = shape[1]
    offsets = RNG.normal(0, 3, c).reshape((1, c) + (1,) * (len(shape) - 2))
    return (randn(*shape) * np.float32(2.0) + offsets).astype(np.float32)  # channel means far from 0


def _channel(c: int, positive: bool = False) -> np.ndarray:
    v = randn(c)
    return (np.abs(v) + np.float32(0.5)).astype(np.float32) if positive else v


@covers("batch_norm")
@pytest.mark.parametrize("shape", BN_SHAPES, ids=str)
def test_batch_norm_training(shape: tuple[int, ...]) -> None:
    c = shape[1]
    arrays = [_bn_x(shape), _channel(c, True), _channel(c), _channel(c), _channel(c, True)]
    check_op("batch_norm", arrays, BatchNormAttrs(eps=1e-3, training=True), params=(1, 2, 3, 4))


@covers("batch_norm_grad")
@pytest.mark.parametrize("shape", BN_SHAPES, ids=str)
def test_batch_norm_grad(shape: tuple[int, ...]) -> None:
    c = shape[1]
    check_op("batch_norm_grad", [_bn_x(shape), _channel(c, True), randn(*shape)], BatchNormGradAttrs(1e-5),
             params=(1,))


@covers("batch_norm_stats")
@pytest.mark.parametrize("shape", BN_SHAPES, ids=str)
@pytest.mark.parametrize("momentum", [0.1, 1.0])
def test_batch_norm_stats(shape: tuple[int, ...], momentum: float) -> None:
    c = shape[1]
    check_op("batch_norm_stats", [_bn_x(shape), _channel(c), _channel(c, True)], BatchNormStatsAttrs(momentum),
             params=(1, 2))


def _bn_training_step(shape: tuple[int, ...]) -> Callable[[int], Graph]:
    """stats -> forward with the *computed* new statistics as gamma and beta -> gradient with a computed gamma."""
    c = shape[1]

    def build(n: int) -> Graph:
        b = GraphBuilder("bn_step")
        x = b.input("x", (n, *shape[1:]))
        dy = b.input("dy", (n, *shape[1:]))
        rm, rv = b.param("rm", (c,)), b.param("rv", (c,))
        mean, var = b.apply_multi("batch_norm_stats", [x, rm, rv], BatchNormStatsAttrs(0.5))
        y = b.apply("batch_norm", [x, var, mean, rm, rv], BatchNormAttrs(training=True))
        dx, dgamma, dbeta = b.apply_multi("batch_norm_grad", [y, var, dy], BatchNormGradAttrs(1e-5))
        dx2, _, _ = b.apply_multi("batch_norm_grad", [x, dgamma, dx], BatchNormGradAttrs(1e-5))
        for v, name in ((mean, "mean"), (var, "var"), (y, "y"), (dx, "dx"), (dgamma, "dgamma"), (dbeta, "dbeta"),
                        (dx2, "dx2")):
            b.output(v, name)
        return b.build()

    return build


@covers("batch_norm", "batch_norm_grad", "batch_norm_stats")
@pytest.mark.parametrize("shape", [(4, 20, 5, 3), (6, 7)], ids=str)
def test_batch_norm_computed_operands_and_smaller_batch(shape: tuple[int, ...]) -> None:
    """Per-channel operands that are computed (unbatched) values; the batch statistics over the run-time batch."""
    c = shape[1]
    build = _bn_training_step(shape)
    g = build(shape[0])
    inputs = {"x": _bn_x(shape), "dy": randn(*shape)}
    smaller = (3, 2) if len(shape) == 4 else (4, 3)  # more than 2 values per channel (with 2, dx is exactly 0)
    check_graph(g, inputs, {"rm": _channel(c), "rv": _channel(c, True)}, TOL_F32_REDUCTION, smaller_batches=smaller,
                rebuild=build)


def _bn_inference_with_computed_statistics(shape: tuple[int, ...]) -> Callable[[int], Graph]:
    c = shape[1]

    def build(n: int) -> Graph:
        b = GraphBuilder("bn_running")
        x = b.input("x", (n, *shape[1:]))
        rm, rv = b.param("rm", (c,)), b.param("rv", (c,))
        mean, var = b.apply_multi("batch_norm_stats", [x, rm, rv], BatchNormStatsAttrs(0.3))
        y = b.apply("batch_norm", [x, b.param("gamma", (c,)), b.param("beta", (c,)), mean, var],
                    BatchNormAttrs(eps=1e-3))
        b.output(y, "y")
        return b.build()

    return build


@covers("batch_norm")
@pytest.mark.parametrize("shape", [(3, 20, 5, 3), (4, 7)], ids=str)
def test_batch_norm_inference_with_statistics_known_at_run_time(shape: tuple[int, ...]) -> None:
    c = shape[1]
    build = _bn_inference_with_computed_statistics(shape)
    g = build(shape[0])
    params = {"rm": _channel(c), "rv": _channel(c, True), "gamma": _channel(c, True), "beta": _channel(c)}
    check_graph(g, {"x": _bn_x(shape)}, params, TOL_F32_REDUCTION, smaller_batches=(2,), rebuild=build)


def _bias_grad(shape: tuple[int, ...], k: int) -> Callable[[int], Graph]:
    def build(n: int) -> Graph:
        b = GraphBuilder("bias_grad")
        dy = b.input("dy", (n, *shape[1:]))
        dyk = b.apply("multiply", [dy, b.param("scale", (1, k, 1, 1))])  # a blocked (N, K, H, W) value
        s = b.apply("sum_to", [dyk], SumToAttrs((1, k, 1, 1)))
        b.output(b.apply("reshape", [s], ReshapeAttrs((k,))), "db")
        return b.build()

    return build


@covers("sum_to", "reshape")
@pytest.mark.parametrize("k", [5, 32])
def test_bias_gradient_sum_to_and_reshape(k: int) -> None:
    shape = (3, k, 6, 7)
    build = _bias_grad(shape, k)
    g = build(3)
    inputs = {"dy": randn(*shape)}
    check_graph(g, inputs, {"scale": _channel(k).reshape(1, k, 1, 1)}, TOL_F32_REDUCTION, smaller_batches=(1,),
                rebuild=build)


# --- convolution gradients -------------------------------------------------------------------------------------

# (batch, C, K, (H, W), (R, S), stride, padding, dilation, groups)
CONVS = [
    (2, 5, 7, (9, 8), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    (2, 16, 32, (9, 9), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1),
    (3, 20, 18, (11, 10), (5, 5), (2, 1), (2, 1, 0, 3), (1, 1), 1),  # asymmetric padding, uneven stride
    (1, 8, 8, (10, 10), (3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 1),  # dilation
    (2, 3, 17, (12, 13), (3, 3), (2, 2), (0, 0, 0, 0), (1, 1), 1),  # rows/columns no window reaches
    (2, 8, 12, (7, 7), (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),
    (2, 8, 12, (7, 7), (1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 1),
    (2, 6, 10, (9, 9), (3, 3), (2, 2), (2, 2, 2, 2), (2, 2), 1),  # stride and dilation 2: odd rows get nothing
    (2, 5, 9, (10, 11), (2, 2), (3, 3), (0, 1, 1, 0), (1, 1), 1),  # stride 3 > kernel 2: rows no tap reaches
    (2, 4, 6, (8, 8), (2, 2), (1, 1), (3, 3, 0, 0), (1, 1), 1),  # padding wider than the kernel
    (3, 3, 5, (1, 1), (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),  # a linear layer's gradient (linear mode)
    (5, 40, 20, (1, 1), (1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 1),
    (2, 6, 7, (1, 1), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),  # 1x1 image, padded 3x3 kernel
    (2, 12, 12, (9, 9), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 12),  # depthwise
    (2, 20, 20, (9, 8), (3, 3), (2, 2), (1, 0, 1, 0), (1, 1), 20),  # depthwise, strided, asymmetric
    (1, 16, 16, (8, 8), (5, 5), (1, 1), (4, 4, 4, 4), (2, 2), 16),  # depthwise, dilated
    (2, 8, 12, (9, 9), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 4),  # groups (block-diagonal / per group)
    (2, 32, 32, (6, 6), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 2),  # groups of 16 channels
]
CONV_IDS = [f"n{n}-c{c}-k{k}-{hw[0]}x{hw[1]}-r{rs[0]}x{rs[1]}-s{st[0]}{st[1]}-p{''.join(map(str, p))}-d{d[0]}-g{g}"
            for n, c, k, hw, rs, st, p, d, g in CONVS]


def _conv_arrays(case: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray, Conv2dGradAttrs, Conv2dGradAttrs]:
    n, c, k, (h, w), (r, s), st, pad, dil, g = case
    oh = output_size(h, r, st[0], pad[0], pad[1], dil[0], False)
    ow = output_size(w, s, st[1], pad[2], pad[3], dil[1], False)
    x, dy, wt = randn(n, c, h, w), randn(n, k, oh, ow), randn(k, c // g, r, s)
    return x, dy, wt, Conv2dGradAttrs(st, pad, dil, g, (h, w)), Conv2dGradAttrs(st, pad, dil, g, (r, s))


@covers("conv2d_grad_input")
@pytest.mark.parametrize("case", CONVS, ids=CONV_IDS)
def test_conv2d_grad_input(case: tuple) -> None:
    _, dy, wt, a_in, _ = _conv_arrays(case)
    check_op("conv2d_grad_input", [dy, wt], a_in, params=(1,))


@covers("conv2d_grad_weight")
@pytest.mark.parametrize("case", CONVS, ids=CONV_IDS)
def test_conv2d_grad_weight(case: tuple) -> None:
    x, dy, _, _, a_w = _conv_arrays(case)
    check_op("conv2d_grad_weight", [x, dy], a_w)


def _scaled_grad_weight(x_shape: tuple[int, ...], dy_shape: tuple[int, ...], a: Conv2dGradAttrs
                        ) -> Callable[[int], Graph]:
    """grad_weight of x and dy that are blocked values (scaled per channel, as activations and gradients are)."""

    def build(n: int) -> Graph:
        b = GraphBuilder("grad_weight_blocked")
        x = b.apply("multiply", [b.input("x", (n, *x_shape[1:])), b.param("sx", (1, x_shape[1], 1, 1))])
        dy = b.apply("multiply", [b.input("dy", (n, *dy_shape[1:])), b.param("sdy", (1, dy_shape[1], 1, 1))])
        b.output(b.apply("conv2d_grad_weight", [x, dy], a), "dw")
        return b.build()

    return build


@covers("conv2d_grad_weight")
@pytest.mark.parametrize("case", CONVS, ids=CONV_IDS)
def test_conv2d_grad_weight_of_blocked_values(case: tuple) -> None:
    x, dy, _, _, a_w = _conv_arrays(case)
    build = _scaled_grad_weight(x.shape, dy.shape, a_w)
    g = build(x.shape[0])
    params = {"sx": _channel(x.shape[1], True).reshape(1, -1, 1, 1),
              "sdy": _channel(dy.shape[1], True).reshape(1, -1, 1, 1)}
    check_graph(g, {"x": x, "dy": dy}, params, TOL_F32_REDUCTION, smaller_batches=(1,) if x.shape[0] > 1 else (),
                rebuild=build)


CHAINED = (1, 2, 8, 11, 13, 16)  # strided, 5x5 asymmetric, stride > kernel, linear mode, depthwise, groups


def _conv_chain(case: tuple) -> Callable[[int], Graph]:
    """dW = grad_weight(x, dy1), then grad_input(dy2, dW): a weight operand that is a computed value."""
    _, c, k, (h, w), (r, s), *_ = case
    _, dy, _, a_in, a_w = _conv_arrays(case)

    def build(n: int) -> Graph:
        b = GraphBuilder("conv_chain")
        x = b.input("x", (n, c, h, w))
        dy1 = b.input("dy1", (n, *dy.shape[1:]))
        dy2 = b.input("dy2", (n, *dy.shape[1:]))
        dw = b.apply("conv2d_grad_weight", [x, dy1], a_w)
        b.output(dw, "dw")
        b.output(b.apply("conv2d_grad_input", [dy2, dw], a_in), "dx")
        return b.build()

    return build


@covers("conv2d_grad_input", "conv2d_grad_weight")
@pytest.mark.parametrize("case", [CONVS[i] for i in CHAINED], ids=[CONV_IDS[i] for i in CHAINED])
def test_conv_gradients_computed_weights_and_smaller_batch(case: tuple) -> None:
    x, dy, _, _, _ = _conv_arrays(case)
    n = x.shape[0] + 2
    x, dy1, dy2 = (np.concatenate([a, a[:2] * np.float32(-0.5)]) for a in (x, dy, dy))
    build = _conv_chain(case)
    g = build(n)
    check_graph(g, {"x": x, "dy1": dy1, "dy2": np.ascontiguousarray(dy2[::-1])}, {}, TOL_F32_REDUCTION,
                smaller_batches=(n - 2, 1), rebuild=build)


def test_results_do_not_depend_on_the_thread_count() -> None:
    x, dy, wt, a_in, a_w = _conv_arrays((4, 16, 32, (14, 14), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1))
    b = GraphBuilder("threads")
    xv, dyv = b.input("x", x.shape), b.input("dy", dy.shape)
    wv = b.param("w", wt.shape)
    b.output(b.apply("conv2d_grad_input", [dyv, wv], a_in), "dx")
    b.output(b.apply("conv2d_grad_weight", [xv, dyv], a_w), "dw")
    dxb, dg, _ = b.apply_multi("batch_norm_grad", [xv, b.param("gamma", (16,)), xv], BatchNormGradAttrs())
    b.output(dxb, "dxb")
    b.output(dg, "dg")
    b.output(b.apply("max_pool2d_grad", [xv, xv], MaxPool2dAttrs((3, 3), (1, 1), (1, 1, 1, 1))), "mp")
    cm = compile_at_baseline(b.build(), {"w": wt, "gamma": _channel(16, True)})
    runs = [cm.run({"x": x, "dy": dy}, threads=t) for t in (1, 2, 3)]
    for other in runs[1:]:
        for name, v in runs[0].items():
            assert np.array_equal(v, other[name]), name


@covers("batch_norm", "batch_norm_stats", "conv2d_grad_input")
def test_training_state_operands_read_at_run_time() -> None:
    """Per-channel operands and weights that are training state (updated in place in the weights blob): the
    running statistics written back by ``state:`` outputs are what the next call reads; a new weight set with
    set_state is what grad_input uses, without recompiling."""
    from cnncc.driver import compile_graph as compile_with_state

    n, c, h, w = 3, 20, 5, 4
    b = GraphBuilder("state")
    x, dy = b.input("x", (n, c, h, w)), b.input("dy", (n, c, h, w))
    gamma, beta, rm, rv = (b.param(name, (c,)) for name in ("gamma", "beta", "rm", "rv"))
    wv = b.param("w", (c, c, 3, 3))
    b.output(b.apply("batch_norm", [x, gamma, beta, rm, rv], BatchNormAttrs(training=True)), "y")
    b.output(b.apply("batch_norm", [x, gamma, beta, rm, rv], BatchNormAttrs()), "e")  # the running statistics
    b.output(b.apply("conv2d_grad_input", [dy, wv], Conv2dGradAttrs((1, 1), (1, 1, 1, 1), (1, 1), 1, (h, w))), "dx")
    mean, var = b.apply_multi("batch_norm_stats", [x, rm, rv], BatchNormStatsAttrs(0.25))
    b.output(mean, "state:rm")
    b.output(var, "state:rv")
    g = b.build()
    params = {"gamma": _channel(c, True), "beta": _channel(c), "rm": _channel(c), "rv": _channel(c, True),
              "w": randn(c, c, 3, 3)}
    record_compiled(node.op for node in g.nodes)
    cm = compile_with_state(g, params, state=("gamma", "beta", "rm", "rv", "w"))
    current = dict(params)
    for step in range(3):
        if step == 2:
            current["w"] = randn(c, c, 3, 3)
            cm.set_state("w", current["w"])
        feeds = {"x": _bn_x((n, c, h, w)), "dy": randn(n, c, h, w)}
        got = cm.run(feeds)
        want = interpret(g, feeds, current, dtype="float64")
        for name in ("y", "e", "dx"):
            err = rel_error(got[name], want[name])
            assert err <= TOL_F32_REDUCTION, f"step {step}, {name}: rel error {err:.3g}"
        for name in ("rm", "rv"):
            err = rel_error(cm.state_array(name), want[f"state:{name}"])
            assert err <= TOL_F32_REDUCTION, f"step {step}, state {name}: rel error {err:.3g}"
            current[name] = cm.state_array(name)


# --- slice (concat's VJP), the fused cross-entropy gradient, per-image outputs ------------------------------------


@covers("slice")
@pytest.mark.parametrize(("shape", "axis", "start", "stop"), [((2, 37, 5, 6), 1, 3, 21), ((2, 20, 5, 6), 2, 1, 4),
                                                            ((3, 9, 4, 7), -1, 2, 7), ((2, 33), 1, 16, 33)])
def test_slice_views(shape: tuple[int, ...], axis: int, start: int, stop: int) -> None:
    from cnncc.ops.slice import SliceAttrs

    x = randn(*shape)
    g = GraphBuilder("sliced")
    xv = g.input("x", shape)
    y = g.apply("slice", [g.apply("relu", [xv])], SliceAttrs(axis, start, stop))  # from a blocked producer
    g.output(g.apply("relu", [y]), "y")
    check_graph(g.build(), {"x": x}, {}, TOL_F32_ELEMENTWISE)


@covers("cross_entropy_grad")
def test_cross_entropy_grad_compiled_at_smaller_batches() -> None:
    from cnncc.ops.cross_entropy import CrossEntropyAttrs

    def build(n: int) -> Graph:
        b = GraphBuilder("ce_grad")
        logits, labels = b.input("logits", (n, 13)), b.input("labels", (n,), "int64")
        g = b.param("g", ())
        b.output(b.apply("cross_entropy_grad", [logits, labels, g], CrossEntropyAttrs()), "d_logits")
        return b.build()

    inputs = {"logits": 5 * randn(6, 13), "labels": RNG.integers(0, 13, 6)}
    check_graph(build(6), inputs, {"g": np.array(0.5, np.float32)}, TOL_F32_REDUCTION, smaller_batches=(1, 4),
                rebuild=build)


@covers("conv2d_grad_weight")
def test_gradient_output_whose_first_axis_equals_the_batch_is_not_per_image() -> None:
    """K == N: dW (K, C, R, S) must keep its shape at a smaller run-time batch (it once got a (batch, ...) array
    and the kernel wrote past its end)."""
    attrs = Conv2dGradAttrs(padding=(1, 1, 1, 1), size=(3, 3))

    def build(n: int) -> Graph:
        b = GraphBuilder("dw")
        x, dy = b.input("x", (n, 3, 5, 5)), b.input("dy", (n, 4, 5, 5))
        b.output(b.apply("conv2d_grad_weight", [x, dy], attrs), "dw")
        return b.build()

    check_graph(build(4), {"x": randn(4, 3, 5, 5), "dy": randn(4, 4, 5, 5)}, {}, TOL_F32_REDUCTION,
                smaller_batches=(2,), rebuild=build)
