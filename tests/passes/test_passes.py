# ruff: noqa: E501  (the goldens are verbatim IR lines)
"""Every pass: a golden before/after test on the printed IR, the interpreter giving the same results before and
after on random inputs, and a case where the pass must not apply (the graph comes back unchanged).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

import cnncc.frontend as nn
from cnncc.ir import Graph, GraphBuilder
from cnncc.ops import get_op
from cnncc.passes.canonicalize import (
    CommonSubexpressions,
    ConstantFolding,
    DeadCodeElimination,
    FoldReshapes,
    RemoveIdentities,
)
from cnncc.passes.fusion import FoldBatchNorm, FuseEpilogue
from cnncc.passmanager import Pass, PassContext, run_passes
from cnncc.runtime import interpret
from cnncc.testing import TOL_F32_REDUCTION, randomize, rel_error

Case = tuple[Graph, dict[str, np.ndarray]]


def attrs(op: str, **kw: object) -> object:
    return get_op(op).attrs(**kw)


def conv_bn_add_relu(training: bool = False) -> Case:
    x = nn.Input((4, 5, 5), seed=1)
    y = nn.Conv2d(4, 3, padding=1, bias=False, name="conv")(x)
    y = nn.BatchNorm(name="bn")(y)
    y = nn.ReLU(name="relu")(nn.Add(name="add")([y, x]))
    m = nn.Model(x, y, name="block")
    randomize(m, 0)
    return m.graph(2, training=training), m.params


def conv_two_users() -> Case:
    """The conv output feeds the batch norm and the add: folding would change the add's operand."""
    x = nn.Input((4, 5, 5), seed=1)
    c = nn.Conv2d(4, 3, padding=1, name="conv")(x)
    y = nn.Add(name="add")([nn.BatchNorm(name="bn")(c), c])
    m = nn.Model(x, y, name="two_users")
    randomize(m, 0)
    return m.graph(2), m.params


def conv_relu_linear() -> Case:
    m = nn.Sequential([nn.Conv2d(3, 3, name="conv"), nn.ReLU(name="relu"), nn.Flatten(name="flat"),
                       nn.Linear(5, name="fc"), nn.Sigmoid(name="sig")], input_shape=(2, 5, 5), name="chain", seed=2)
    return m.graph(2), m.params


def depthwise_residual() -> Case:
    """A residual add after a depthwise conv: not fused (only dense convs take residuals)."""
    x = nn.Input((4, 5, 5), seed=1)
    y = nn.Conv2d(4, 3, padding=1, groups=4, name="dw")(x)
    m = nn.Model(x, nn.Add(name="add")([y, x]), name="dw_res")
    return m.graph(2), m.params


def identities(training: bool = False) -> Case:
    """Inference dropout and a same-shape reshape are identities; training dropout draws a mask (kept)."""
    layers = [nn.Dropout(0.5, name="drop")] + ([] if training else [nn.Reshape((3, 4), name="same")])
    m = nn.Sequential([*layers, nn.ReLU(name="relu")], input_shape=(3, 4), name="ids")
    return m.graph(2, training=training), m.params


def reshape_chain() -> Case:
    m = nn.Sequential([nn.Flatten(name="flat"), nn.Reshape((6, 4), name="r1"), nn.Reshape((24,), name="r2"),
                       nn.Tanh(name="t")], input_shape=(2, 3, 4), name="reshapes")
    return m.graph(2), m.params


def single_reshape() -> Case:
    m = nn.Sequential([nn.Reshape((6, 4), name="r1"), nn.Tanh(name="t")], input_shape=(2, 3, 4), name="one")
    return m.graph(2), m.params


def duplicates(training: bool = False) -> Case:
    b = GraphBuilder("dups")
    x = b.input("x", (2, 6))
    d = attrs("dropout", p=0.5, training=training, seed=3)
    first = b.apply("dropout" if training else "relu", [x], d if training else None, layer="a")
    second = b.apply("dropout" if training else "relu", [x], d if training else None, layer="b")
    b.output(b.apply("add", [first, second], layer="sum"))
    return b.build(), {}


def constants(computed: bool = False) -> Case:
    b = GraphBuilder("consts")
    x = b.input("x", (2, 3))
    s = b.param("scale", (3,))
    t = b.param("shift", (3,))
    st = b.apply("multiply", [s, x if computed else t], layer="st")
    b.output(b.apply("add", [t if computed else x, st], layer="out"))
    rng = np.random.default_rng(0)
    return b.build(), {"scale": rng.standard_normal(3).astype(np.float32),
                       "shift": rng.standard_normal(3).astype(np.float32)}


def dead_code() -> Case:
    b = GraphBuilder("dead")
    x = b.input("x", (2, 3))
    unused = b.param("unused", (3,))
    b.apply("add", [x, unused], layer="dead_add")
    b.output(b.apply("relu", [x], layer="relu"))
    return b.build(), {"unused": np.ones(3, np.float32)}


# name: (builder, passes, the builder of a graph the passes must leave alone)
CASES: dict[str, tuple[Callable[[], Case], Callable[[], list[Pass]], Callable[[], Case]]] = {
    "fold_batchnorm": (conv_bn_add_relu, lambda: [FoldBatchNorm()], lambda: conv_bn_add_relu(training=True)),
    "fold_batchnorm_two_users": (conv_two_users, lambda: [FoldBatchNorm()], conv_two_users),
    "fuse_epilogue": (lambda: run(conv_bn_add_relu(), [FoldBatchNorm()]), lambda: [FuseEpilogue()],
                      conv_two_users),
    "fuse_activations": (conv_relu_linear, lambda: [FuseEpilogue()], depthwise_residual),
    "remove_identities": (identities, lambda: [RemoveIdentities()], lambda: identities(training=True)),
    "fold_reshapes": (reshape_chain, lambda: [FoldReshapes()], single_reshape),
    "cse": (duplicates, lambda: [CommonSubexpressions()], lambda: duplicates(training=True)),
    "constant_folding": (constants, lambda: [ConstantFolding()], lambda: constants(computed=True)),
    "dce": (dead_code, lambda: [DeadCodeElimination()], conv_relu_linear),
}


def run(case: Case, passes: list[Pass]) -> Case:
    graph, params = case
    ctx = PassContext(dict(params), verify=True)
    return run_passes(graph, passes, ctx), ctx.params


GOLDEN: dict[str, str] = {
    "fold_batchnorm": """\
graph block(%input: 2x4x5x5:f32,NCHW) {
  param @conv.weight.bnfold: 4x4x3x3:f32 frozen
  param @conv.bias.bnfold: 4:f32 frozen
  %0 = conv2d[stride=(1,1), padding=(1,1,1,1), dilation=(1,1), groups=1](%input, @conv.weight.bnfold, @conv.bias.bnfold) : 2x4x5x5:f32,NCHW  # conv
  %1 = add(%0, %input) : 2x4x5x5:f32,NCHW  # add
  %2 = relu(%1) : 2x4x5x5:f32,NCHW  # relu
  return output=%2
}""",
    "fold_batchnorm_two_users": """\
graph two_users(%input: 2x4x5x5:f32,NCHW) {
  param @conv.weight: 4x4x3x3:f32
  param @conv.bias: 4:f32
  param @bn.weight: 4:f32
  param @bn.bias: 4:f32
  param @bn.running_mean: 4:f32 frozen
  param @bn.running_var: 4:f32 frozen
  %0 = conv2d[stride=(1,1), padding=(1,1,1,1), dilation=(1,1), groups=1](%input, @conv.weight, @conv.bias) : 2x4x5x5:f32,NCHW  # conv
  %1 = batch_norm[eps=1e-05, momentum=0.1, training=False](%0, @bn.weight, @bn.bias, @bn.running_mean, @bn.running_var) : 2x4x5x5:f32,NCHW  # bn
  %2 = add(%1, %0) : 2x4x5x5:f32,NCHW  # add
  return output=%2
}""",
    "fuse_epilogue": """\
graph block(%input: 2x4x5x5:f32,NCHW) {
  param @conv.weight.bnfold: 4x4x3x3:f32 frozen
  param @conv.bias.bnfold: 4:f32 frozen
  %0 = fused_conv2d[conv={stride=(1,1), padding=(1,1,1,1), dilation=(1,1), groups=1}, epilogue=(add,relu)](%input, @conv.weight.bnfold, @conv.bias.bnfold, %input) : 2x4x5x5:f32,NCHW  # conv
  return output=%0
}""",
    "fuse_activations": """\
graph chain(%input: 2x2x5x5:f32,NCHW) {
  param @conv.weight: 3x2x3x3:f32
  param @conv.bias: 3:f32
  param @fc.weight: 5x27:f32
  param @fc.bias: 5:f32
  %0 = fused_conv2d[conv={stride=(1,1), padding=(0,0,0,0), dilation=(1,1), groups=1}, epilogue=(relu)](%input, @conv.weight, @conv.bias) : 2x3x3x3:f32,NCHW  # conv
  %1 = flatten[start_dim=1](%0) : 2x27:f32  # flat
  %2 = fused_linear[epilogue=(sigmoid)](%1, @fc.weight, @fc.bias) : 2x5:f32  # fc
  return output=%2
}""",
    "remove_identities": """\
graph ids(%input: 2x3x4:f32) {
  %0 = relu(%input) : 2x3x4:f32  # relu
  return output=%0
}""",
    "fold_reshapes": """\
graph reshapes(%input: 2x2x3x4:f32,NCHW) {
  %0 = reshape[shape=(2,24)](%input) : 2x24:f32  # r2
  %1 = tanh(%0) : 2x24:f32  # t
  return output=%1
}""",
    "cse": """\
graph dups(%x: 2x6:f32) {
  %0 = relu(%x) : 2x6:f32  # a
  %1 = add(%0, %0) : 2x6:f32  # sum
  return output0=%1
}""",
    "constant_folding": """\
graph consts(%x: 2x3:f32) {
  param @st.const: 3:f32 frozen
  %0 = add(%x, @st.const) : 2x3:f32  # out
  return output0=%0
}""",
    "dce": """\
graph dead(%x: 2x3:f32) {
  %0 = relu(%x) : 2x3:f32  # relu
  return output0=%0
}""",
}


@pytest.mark.parametrize("name", list(CASES))
def test_golden(name: str) -> None:
    build, passes, _ = CASES[name]
    after, _ = run(build(), passes())
    assert after.text() == GOLDEN[name]


@pytest.mark.parametrize("name", list(CASES))
def test_same_results_before_and_after(name: str) -> None:
    build, passes, _ = CASES[name]
    graph, params = build()
    after, new_params = run((graph, params), passes())
    rng = np.random.default_rng(7)
    feeds = {v.name: rng.standard_normal(v.shape).astype(np.float32) for v in graph.inputs}
    want = interpret(graph, feeds, params)
    got = interpret(after, feeds, new_params)
    for key in want:
        assert rel_error(got[key], want[key]) <= TOL_F32_REDUCTION


@pytest.mark.parametrize("name", list(CASES))
def test_must_not_apply(name: str) -> None:
    _, passes, untouched = CASES[name]
    graph, params = untouched()
    after, _ = run((graph, params), passes())
    assert after.text() == graph.text()


def test_pipeline_on_every_zoo_model_keeps_results() -> None:
    """The CPU inference pipeline on the small zoo models: verified after every pass, same outputs."""
    from cnncc.api import optimize
    from cnncc.frontend.models import get_model

    for name in ("lenet5", "lenet", "keras_mnist", "keras_sequential"):
        model = get_model(name)
        randomize(model, 0)
        graph = model.graph(2)
        after, params, ctx = optimize(graph, model.params, verify=True)
        x = np.random.default_rng(0).standard_normal(graph.inputs[0].shape).astype(np.float32)
        want = interpret(graph, {"input": x}, model.params)["output"]
        assert rel_error(interpret(after, {"input": x}, params)["output"], want) <= TOL_F32_REDUCTION
        assert len(after.nodes) < len(graph.nodes), ctx.log
        assert set(ctx.timings) >= {"fold-batchnorm", "fuse-epilogue", "dce"}


def test_resnet_block_is_one_kernel_after_fusion() -> None:
    """conv -> BN -> add -> ReLU compiles to one fused convolution kernel (+ layout edges), with correct results."""
    import cnncc

    graph, params = conv_bn_add_relu()
    compiled = cnncc.compile(graph, params=params, batch=2)
    kernels = [c.kernel for c in compiled.program.calls]
    assert kernels.count("conv_direct") == 1 and "eltwise" not in kernels, kernels
    x = np.random.default_rng(1).standard_normal((2, 4, 5, 5)).astype(np.float32)
    want = interpret(graph, {"input": x}, params)["output"]
    assert rel_error(compiled(x), want) <= TOL_F32_REDUCTION
    unfused = cnncc.compile(graph, params=params, batch=2, optimize_graph=False)
    assert [c.kernel for c in unfused.program.calls].count("eltwise") == 3  # bn, add, relu
