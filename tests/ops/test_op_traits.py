"""Typed op traits (cnncc.ops.registry.OpTraits): every registered op's traits are consistent with the rest of its
definition, and the sets the compiler derives from them are exactly what the op-name lists they replaced said."""

from __future__ import annotations

import pytest

from cnncc.ir import TensorType
from cnncc.ops import all_ops, get_op
from cnncc.ops.registry import (
    Category,
    Elementwise,
    EpilogueRole,
    OpTraits,
    Role,
    draws_random,
    is_identity,
    ops_where,
    traits,
)

OPS = sorted(all_ops())


def _set(pred: object) -> set[str]:
    return set(ops_where(pred))  # type: ignore[arg-type]


# -- the sets, written out as the lists they replaced said them ------------------------------------------------


def test_recomputable_is_the_old_training_list() -> None:
    # cnncc/training.py RECOMPUTABLE
    assert _set(lambda t: t.recomputable) == {"relu", "relu6", "leaky_relu", "elu", "hardtanh", "sigmoid", "tanh",
                                              "softplus", "max_pool2d", "avg_pool2d", "batch_norm", "flatten",
                                              "reshape", "dropout"}


def test_epilogue_roles_are_the_old_fusion_lists() -> None:
    # cnncc/ops/epilogue.py ACTIVATIONS; passes/fusion.py's `node.op == "add"`
    assert _set(lambda t: t.epilogue is EpilogueRole.ACTIVATION) == {"relu", "relu6", "leaky_relu", "elu", "sigmoid",
                                                                       "tanh", "softplus", "hardtanh"}
    assert _set(lambda t: t.epilogue is EpilogueRole.RESIDUAL) == {"add"}


def test_fused_links_are_the_old_layer_list() -> None:
    # passes/fusion.py LAYERS and its conv2d -> fused_conv2d / linear -> fused_linear choice
    assert {op: t.fused_form for op in OPS if (t := traits(op)).fused_form} == {"conv2d": "fused_conv2d",
                                                                                "linear": "fused_linear"}
    assert {op: t.base for op in OPS if (t := traits(op)).base} == {"fused_conv2d": "conv2d",
                                                                    "fused_linear": "linear"}


def test_identity_reshape_and_random_are_the_old_canonicalize_tests() -> None:
    # passes/canonicalize.py _is_identity, FoldReshapes' ("reshape", "flatten"), the dropout tests of CSE and folding
    assert _set(lambda t: t.identity_when is not None) == {"dropout", "reshape", "flatten", "transpose"}
    assert _set(lambda t: t.reshape) == {"reshape", "flatten"}
    assert _set(lambda t: t.random_when is not None) == {"dropout"}


def test_roles() -> None:
    # codegen/kernels/optim.py UPDATE_OPS; the registry docstring's ops without a VJP
    assert _set(lambda t: t.role is Role.UPDATE) == {"sgd_update", "adagrad_update", "rmsprop_update", "adam_update"}
    assert _set(lambda t: t.role is Role.BACKWARD) == {"activation_grad", "conv2d_grad_input", "conv2d_grad_weight",
                                                        "max_pool2d_grad", "avg_pool2d_grad", "batch_norm_grad",
                                                        "cross_entropy_grad"}
    assert _set(lambda t: t.role is Role.STATISTICS) == {"batch_norm_stats"}


def test_categories_are_the_old_viewer_kinds() -> None:
    # cnncc/viz.py _KIND_OPS (its "sub" and "div" were never registered ops); everything else drawn as "shape"
    old = {"conv": ("conv2d", "fused_conv2d"), "linear": ("linear", "fused_linear"),
           "pool": ("max_pool2d", "avg_pool2d", "global_avg_pool"),
           "act": ("relu", "relu6", "leaky_relu", "elu", "sigmoid", "tanh", "softplus", "hardtanh", "prelu"),
           "binary": ("add", "multiply", "concat"), "norm": ("batch_norm", "dropout"),
           "shape": ("flatten", "reshape", "transpose"),
           "head": ("softmax", "log_softmax", "cross_entropy", "nll", "mse")}
    from cnncc.viz import op_kind

    want = {op: next((k for k, ops in old.items() if op in ops), "shape") for op in OPS}
    assert {op: op_kind(op) for op in OPS} == want
    assert {op: traits(op).category.value for op in OPS if traits(op).category is not Category.OTHER} == \
        {op: k for k, ops in old.items() for op in ops}


def test_the_cpu_backend_compiles_every_epilogue_activation() -> None:
    """The backend's activation table (a lowering table, kept in codegen) covers exactly the epilogue activations."""
    from cnncc.codegen.kernels.activation import ACTIVATION_OPS

    assert set(ACTIVATION_OPS) == _set(lambda t: t.epilogue is EpilogueRole.ACTIVATION)


# -- consistency of every registered op ---------------------------------------------------------------------------


@pytest.mark.parametrize("op", OPS)
def test_traits_agree_with_the_definition(op: str) -> None:
    d = get_op(op)
    t = d.traits
    assert isinstance(t, OpTraits)
    # only forward ops have a VJP; backward, statistics and update ops have none, by design
    assert (d.vjp is not None) == (t.role is Role.FORWARD), op
    if t.elementwise is Elementwise.UNARY:  # an activation: one operand, a VJP through activation_grad's derivative
        assert d.inputs == ("x",) and d.derivative is not None, op
    else:
        assert d.derivative is None, op  # activation_grad differentiates exactly the unary elementwise ops
    assert (t.update is not None) == (t.role is Role.UPDATE), op
    if t.elementwise is Elementwise.BINARY:
        assert d.inputs == ("a", "b"), op
    if t.epilogue is EpilogueRole.ACTIVATION:
        assert t.elementwise is Elementwise.UNARY, op
    if t.epilogue is EpilogueRole.RESIDUAL:
        assert t.elementwise is Elementwise.BINARY, op
    for flag in (t.recomputable, t.identity_when is not None, t.reshape, t.random_when is not None):
        assert not flag or t.role is Role.FORWARD, op  # only forward ops are recomputed, removed or seeded
    if t.reshape:
        assert t.identity_when is not None, op
    if t.fused_form is not None:  # a layer and its fused form link both ways and share a family
        fused = traits(t.fused_form)
        assert fused.base == op and fused.category is t.category and d.inputs == get_op(t.fused_form).inputs, op
    if t.base is not None:
        assert traits(t.base).fused_form == op, op


def test_identity_and_random_predicates() -> None:
    from cnncc.ops.dropout import DropoutAttrs
    from cnncc.ops.flatten import FlattenAttrs
    from cnncc.ops.transpose import TransposeAttrs

    x, flat = TensorType((2, 3, 4, 4)), TensorType((2, 48))
    assert is_identity("dropout", DropoutAttrs(0.5, training=False), x, x)
    assert not is_identity("dropout", DropoutAttrs(0.5, training=True), x, x)
    assert draws_random("dropout", DropoutAttrs(0.5, training=True))
    assert not draws_random("dropout", DropoutAttrs(0.5, training=False))
    assert is_identity("flatten", FlattenAttrs(), x, x) and not is_identity("flatten", FlattenAttrs(), x, flat)
    assert is_identity("transpose", TransposeAttrs((0, 1, 2, 3)), x, x)
    assert not is_identity("transpose", TransposeAttrs((0, 2, 1, 3)), x, x)
    assert not is_identity("relu", get_op("relu").default_attrs(), x, x) and not draws_random("relu", None)
