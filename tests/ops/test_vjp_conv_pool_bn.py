"""The backward ops of conv2d, pooling and batch norm against PyTorch, and whole-model gradients.

The VJPs themselves (conv2d, max/avg pooling, batch_norm, concat, prelu, slice, the fused ops) are checked op by op
in tests/ops/test_autodiff.py against PyTorch autograd and finite differences. Here:

* each backward op's numpy reference against PyTorch directly (``torch.nn.grad.conv2d_input`` /
  ``conv2d_weight``, autograd through the pooling and batch-norm functionals), in float32 and float64;
* ``batch_norm_stats`` against the running buffers ``F.batch_norm(training=True)`` updates;
* max pooling's first-maximum tie rule through ``grad()`` against PyTorch on inputs full of ties;
* full-model gradients: ``grad()`` of a zoo model's training graph plus cross-entropy, run by the reference
  interpreter, against PyTorch autograd on the model's twin in train mode (batch 2, train-mode batch norm), in
  float64 for LeNet-5, AlexNet, VGG-11 and ResNet-18 and in float32 for LeNet-5 (why not the others: see
  :func:`test_model_gradients_match_torch_twin_float32`). The dropout layers are kept and matched: each twin
  dropout module applies the same Philox mask (``keep_mask`` with the p and seed of the graph's dropout node).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnncc.autodiff import grad
from cnncc.errors import ShapeError
from cnncc.frontend.models import get_model
from cnncc.ir import DType, Graph, GraphBuilder
from cnncc.ops.avg_pool2d import AvgPool2dAttrs
from cnncc.ops.avg_pool2d_grad import AvgPool2dGradAttrs
from cnncc.ops.batch_norm_grad import BatchNormGradAttrs
from cnncc.ops.batch_norm_stats import BatchNormStatsAttrs
from cnncc.ops.conv2d_grad_input import Conv2dGradAttrs
from cnncc.ops.dropout import DropoutAttrs, keep_mask
from cnncc.ops.max_pool2d import MaxPool2dAttrs
from cnncc.ops.slice import SliceAttrs
from cnncc.ops.sum_to import SumToAttrs
from cnncc.runtime import interpret
from cnncc.testing import TOL_F32_MODEL, TOL_F32_REDUCTION, TOL_F64, randomize, rel_error, rng_for, run_op_outputs
from cnncc.testing.twins import TWINS

torch.set_num_threads(2)

DTYPES = ("float32", "float64")
TORCH_DTYPE = {"float32": torch.float32, "float64": torch.float64}
# float32 vs PyTorch float32: the same products summed in other orders (short reductions here).
TOL = {"float32": TOL_F32_REDUCTION, "float64": TOL_F64}


def tensor(a: np.ndarray, dtype: str, requires_grad: bool = False) -> torch.Tensor:
    return torch.tensor(a, dtype=TORCH_DTYPE[dtype], requires_grad=requires_grad)


def torch_pad(x: torch.Tensor, pad: tuple[int, int, int, int], value: float = 0.0) -> torch.Tensor:
    t, b, l, r = pad
    return F.pad(x, (l, r, t, b), value=value)


# --- conv2d_grad_input / conv2d_grad_weight ---------------------------------------------------------------------

# (x shape, weight shape, stride, padding (t, b, l, r), dilation, groups)
CONV_CONFIGS = [
    ((2, 3, 7, 6), (4, 3, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    ((2, 4, 9, 8), (6, 2, 3, 2), (2, 3), (1, 0, 2, 1), (2, 1), 2),
    ((1, 3, 7, 7), (3, 1, 5, 5), (1, 1), (2, 2, 2, 2), (1, 1), 3),
    ((2, 2, 10, 11), (4, 2, 1, 1), (3, 2), (0, 0, 0, 0), (1, 1), 1),
    ((1, 4, 12, 12), (8, 4, 3, 3), (2, 2), (0, 0, 0, 0), (2, 2), 1),  # rows/columns no window reaches
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cfg", CONV_CONFIGS, ids=[str(i) for i in range(len(CONV_CONFIGS))])
def test_conv2d_backward_ops_match_torch(cfg: tuple, dtype: str) -> None:
    xs, ws, stride, pad, dil, groups = cfg
    rng = rng_for(f"conv{cfg}")
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    if pad[0] == pad[1] and pad[2] == pad[3]:  # PyTorch's own backward functions (symmetric padding)
        y_shape = F.conv2d(tensor(x, dtype), tensor(w, dtype), None, stride, (pad[0], pad[2]), dil, groups).shape
        dy = rng.standard_normal(tuple(y_shape))
        args = dict(stride=stride, padding=(pad[0], pad[2]), dilation=dil, groups=groups)
        want_dx = torch.nn.grad.conv2d_input(xs, tensor(w, dtype), tensor(dy, dtype), **args).numpy()
        want_dw = torch.nn.grad.conv2d_weight(tensor(x, dtype), ws, tensor(dy, dtype), **args).numpy()
    else:  # autograd through an explicit pad
        xt, wt = tensor(x, dtype, True), tensor(w, dtype, True)
        y = F.conv2d(torch_pad(xt, pad), wt, None, stride, 0, dil, groups)
        dy = rng.standard_normal(tuple(y.shape))
        y.backward(tensor(dy, dtype))
        want_dx, want_dw = xt.grad.numpy(), wt.grad.numpy()
    (dx,) = run_op_outputs("conv2d_grad_input", [dy, w], Conv2dGradAttrs(stride, pad, dil, groups, xs[2:]), dtype)
    (dw,) = run_op_outputs("conv2d_grad_weight", [x, dy], Conv2dGradAttrs(stride, pad, dil, groups, ws[2:]), dtype)
    assert rel_error(dx, want_dx) <= TOL[dtype]
    assert rel_error(dw, want_dw) <= TOL[dtype]


def test_conv2d_grad_shape_rules_name_the_values() -> None:
    b = GraphBuilder("g")
    dy, w = b.input("dy", (1, 4, 3, 3)), b.input("w", (4, 2, 3, 3))
    with pytest.raises(ShapeError, match=r"dy spatial size.*3x3.*input 6x6.*gives 4x4"):
        b.apply("conv2d_grad_input", [dy, w], Conv2dGradAttrs(size=(6, 6)), layer="c")
    with pytest.raises(ShapeError, match=r"dy has 4 channels but weight \(5, 2, 3, 3\)"):
        b.apply("conv2d_grad_input", [dy, b.input("w5", (5, 2, 3, 3))], Conv2dGradAttrs(size=(5, 5)), layer="c")
    with pytest.raises(ShapeError, match="groups=3 does not divide"):
        b.apply("conv2d_grad_weight", [b.input("x", (1, 6, 5, 5)), dy], Conv2dGradAttrs(groups=3, size=(3, 3)))
    x = b.input("x2", (1, 4, 5, 5))
    assert b.apply("conv2d_grad_weight", [x, dy], Conv2dGradAttrs(groups=2, size=(3, 3))).shape == (4, 2, 3, 3)
    assert b.apply("conv2d_grad_input", [dy, w], Conv2dGradAttrs(groups=2, size=(5, 5))).shape == (1, 4, 5, 5)


# --- pooling ----------------------------------------------------------------------------------------------------

MAX_CONFIGS = [MaxPool2dAttrs((3, 3), (2, 2)), MaxPool2dAttrs((2, 2), (2, 2)),
               MaxPool2dAttrs((3, 3), (2, 2), (1, 1, 1, 1), ceil_mode=True),
               MaxPool2dAttrs((3, 3), (1, 1), (1, 1, 1, 1), (2, 2)), MaxPool2dAttrs((2, 3), (1, 2), (1, 1, 0, 0))]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("a", MAX_CONFIGS, ids=str)
def test_max_pool2d_grad_matches_torch_with_ties(a: MaxPool2dAttrs, dtype: str) -> None:
    """Small integers: most windows hold several maxima; the gradient goes to the first one, as PyTorch's."""
    rng = rng_for(f"max{a}")
    x = rng.integers(0, 3, (2, 3, 9, 8)).astype(np.float64)
    xt = tensor(x, dtype, True)
    y = F.max_pool2d(xt, a.kernel, a.stride, (a.padding[0], a.padding[2]), a.dilation, a.ceil_mode)
    dy = rng.standard_normal(tuple(y.shape))
    y.backward(tensor(dy, dtype))
    (dx,) = run_op_outputs("max_pool2d_grad", [x, dy], a, dtype)
    assert rel_error(dx, xt.grad.numpy()) <= TOL[dtype]


def test_max_pool2d_tie_goes_to_the_first_maximum_in_row_major_order() -> None:
    x = np.array([[[[1.0, 5.0, 5.0], [5.0, 0.0, 5.0], [2.0, 5.0, 1.0]]]])
    (dx,) = run_op_outputs("max_pool2d_grad", [x, np.array([[[[3.0]]]])], MaxPool2dAttrs((3, 3), (1, 1)), "float64")
    np.testing.assert_array_equal(dx[0, 0], [[0, 3, 0], [0, 0, 0], [0, 0, 0]])
    # overlapping windows sharing an argmax accumulate: 2x2 stride 1 on a plane whose centre is the maximum
    x = np.array([[[[0.0, 1.0, 0.0], [1.0, 9.0, 1.0], [0.0, 1.0, 0.0]]]])
    dy = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    (dx,) = run_op_outputs("max_pool2d_grad", [x, dy], MaxPool2dAttrs((2, 2), (1, 1)), "float64")
    np.testing.assert_array_equal(dx[0, 0], [[0, 0, 0], [0, 10, 0], [0, 0, 0]])


def test_max_pool2d_vjp_with_ties_matches_torch_autograd() -> None:
    """grad() of a conv -> relu -> max_pool net on an input with ties in the pooled activations."""
    b = GraphBuilder("ties")
    x = b.input("x", (2, 2, 8, 8))
    h = b.apply("relu", [b.apply("conv2d", [x, b.param("w", (3, 2, 1, 1))], None)])
    y = b.apply("max_pool2d", [h], MaxPool2dAttrs((3, 3), (2, 2), (1, 1, 1, 1)))
    r = b.input("R", y.shape)
    b.output(b.apply("sum_to", [b.apply("multiply", [y, r])], SumToAttrs(())), "loss")
    rng = rng_for("ties")
    xv = rng.integers(-2, 3, (2, 2, 8, 8)).astype(np.float64)  # relu and integer weights: many equal maxima
    wv = rng.integers(-1, 2, (3, 2, 1, 1)).astype(np.float64)
    rv = rng.standard_normal(y.shape)
    got = interpret(grad(b.build(), wrt=["x", "w"]), {"x": xv, "R": rv}, {"w": wv}, dtype="float64")
    xt, wt = torch.tensor(xv, requires_grad=True), torch.tensor(wv, requires_grad=True)
    yt = F.max_pool2d(F.relu(F.conv2d(xt, wt)), 3, 2, 1)
    (yt * torch.tensor(rv)).sum().backward()
    np.testing.assert_allclose(got["grad:x"], xt.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got["grad:w"], wt.grad.numpy(), rtol=1e-12, atol=1e-12)


AVG_CONFIGS = [AvgPool2dAttrs((2, 2), (2, 2)), AvgPool2dAttrs((3, 3), (2, 2), (1, 1, 1, 1), False, True),
               AvgPool2dAttrs((3, 3), (2, 2), (1, 1, 1, 1), False, False),
               AvgPool2dAttrs((3, 3), (2, 2), (1, 1, 1, 1), True, True),
               AvgPool2dAttrs((3, 3), (2, 2), (1, 1, 1, 1), True, False),
               AvgPool2dAttrs((2, 2), (3, 3), ceil_mode=True),
               AvgPool2dAttrs((3, 2), (1, 2), (1, 1, 1, 1), True, False)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("a", AVG_CONFIGS, ids=str)
def test_avg_pool2d_grad_matches_torch(a: AvgPool2dAttrs, dtype: str) -> None:
    rng = rng_for(f"avg{a}")
    x = rng.standard_normal((2, 3, 9, 8))
    xt = tensor(x, dtype, True)
    y = F.avg_pool2d(xt, a.kernel, a.stride, (a.padding[0], a.padding[2]), a.ceil_mode, a.count_include_pad)
    dy = rng.standard_normal(tuple(y.shape))
    y.backward(tensor(dy, dtype))
    (dx,) = run_op_outputs("avg_pool2d_grad", [dy], AvgPool2dGradAttrs(a, (9, 8)), dtype)
    assert rel_error(dx, xt.grad.numpy()) <= TOL[dtype]


def test_avg_pool2d_grad_checks_dy_against_the_forward() -> None:
    b = GraphBuilder("g")
    with pytest.raises(ShapeError, match=r"dy has shape \(1, 2, 3, 3\) but avg_pool2d of an input.*gives"):
        b.apply("avg_pool2d_grad", [b.input("dy", (1, 2, 3, 3))],
                AvgPool2dGradAttrs(AvgPool2dAttrs((2, 2), (2, 2)), (8, 8)), layer="p")


# --- batch norm -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(5, 3), (2, 3, 4, 5), (3, 2, 7)], ids=str)
def test_batch_norm_grad_matches_torch(shape: tuple[int, ...], dtype: str) -> None:
    rng = rng_for(f"bn{shape}")
    x = rng.standard_normal(shape) * 3 + 1
    gamma, beta, dy = rng.standard_normal(shape[1]), rng.standard_normal(shape[1]), rng.standard_normal(shape)
    xt, gt, bt = tensor(x, dtype, True), tensor(gamma, dtype, True), tensor(beta, dtype, True)
    F.batch_norm(xt, None, None, gt, bt, training=True, eps=1e-3).backward(tensor(dy, dtype))
    dx, dgamma, dbeta = run_op_outputs("batch_norm_grad", [x, gamma, dy], BatchNormGradAttrs(1e-3), dtype)
    for got, want in ((dx, xt.grad), (dgamma, gt.grad), (dbeta, bt.grad)):
        assert rel_error(got, want.numpy()) <= TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("shape", "momentum"), [((5, 3), 0.1), ((2, 3, 4, 5), 0.3), ((4, 2, 3), 1.0),
                                                 ((2, 3, 2, 2), 0.0)], ids=str)
def test_batch_norm_stats_matches_torch_running_update(shape: tuple[int, ...], momentum: float, dtype: str) -> None:
    rng = rng_for(f"stats{shape}")
    x = rng.standard_normal(shape) * 2 + 0.5
    mean, var = rng.standard_normal(shape[1]), rng.uniform(0.5, 1.5, shape[1])
    rm, rv = tensor(mean, dtype), tensor(var, dtype)
    F.batch_norm(tensor(x, dtype), rm, rv, training=True, momentum=momentum)
    new_mean, new_var = run_op_outputs("batch_norm_stats", [x, mean, var], BatchNormStatsAttrs(momentum), dtype)
    assert rel_error(new_mean, rm.numpy()) <= TOL[dtype]
    assert rel_error(new_var, rv.numpy()) <= TOL[dtype]


def test_batch_norm_backward_ops_reject_bad_operands() -> None:
    b = GraphBuilder("g")
    x = b.input("x", (4, 3))
    with pytest.raises(ShapeError, match=r"gamma must have shape \(3,\)"):
        b.apply_multi("batch_norm_grad", [x, b.input("g", (4,)), x], BatchNormGradAttrs(), layer="bn")
    with pytest.raises(ShapeError, match="momentum must be in"):
        b.apply_multi("batch_norm_stats", [x, b.input("m", (3,)), b.input("v", (3,))], BatchNormStatsAttrs(1.5))
    with pytest.raises(ShapeError, match="more than one value per channel"):
        one = b.input("one", (1, 3))
        b.apply_multi("batch_norm_stats", [one, b.input("m1", (3,)), b.input("v1", (3,))], BatchNormStatsAttrs())


# --- slice --------------------------------------------------------------------------------------------------------


def test_slice_reference_and_range_check() -> None:
    x = np.arange(24.0).reshape(2, 3, 4)
    (y,) = run_op_outputs("slice", [x], SliceAttrs(-1, 1, 3), "float64")
    np.testing.assert_array_equal(y, x[:, :, 1:3])
    b = GraphBuilder("g")
    with pytest.raises(ShapeError, match=r"need 0 <= start < stop <= 3.*start=2, stop=2"):
        b.apply("slice", [b.input("x", (2, 3, 4))], SliceAttrs(1, 2, 2), layer="s")


# --- whole models -------------------------------------------------------------------------------------------------


def with_loss(graph: Graph) -> Graph:
    """The model's training graph with ``cross_entropy(logits, target)`` appended as the output ``loss``."""
    b = GraphBuilder(f"{graph.name}_loss")
    mapping = b.copy_nodes(graph, b.copy_inputs(graph))
    (logits,) = graph.outputs
    target = b.input("target", (logits.shape[0],), DType.INT64)
    b.output(b.apply("cross_entropy", [mapping[logits], target], layer="loss"), "loss")
    return b.build()


def match_dropout(twin: nn.Module, graph: Graph) -> None:
    """Make each twin dropout module apply the cnncc graph's mask (same layer name, p and Philox seed)."""
    attrs = {n.layer: n.attrs for n in graph.nodes if n.op == "dropout"}
    modules = {name: m for name, m in twin.named_modules() if isinstance(m, nn.Dropout)}
    assert set(modules) == set(attrs), (sorted(modules), sorted(attrs))

    def hook_for(a: DropoutAttrs) -> Callable[..., torch.Tensor]:
        def hook(m: nn.Module, inputs: tuple[torch.Tensor], out: torch.Tensor) -> torch.Tensor:
            (x,) = inputs
            assert a.training and m.p == a.p
            return x * torch.from_numpy(keep_mask(tuple(x.shape), a.p, a.seed)).to(x.dtype) / (1 - a.p)

        return hook

    for name, m in modules.items():
        m.register_forward_hook(hook_for(attrs[name]))


def model_gradients(name: str, dtype: str) -> dict[str, float]:
    """Relative error of every trainable parameter's gradient (and of the loss) against the twin's, both computed
    in ``dtype``."""
    model = get_model(name, seed=0)
    weights = randomize(model, zlib.crc32(name.encode()))
    graph = with_loss(model.graph(batch=2, training=True))
    rng = rng_for(f"model-{name}")
    (x_in,) = [v for v in graph.inputs if v.name != "target"]
    x = rng.standard_normal(x_in.shape).astype(np.float32)
    target = rng.integers(0, graph.outputs[0].node.inputs[0].shape[1], 2)
    got = interpret(grad(graph), {x_in.name: x, "target": target}, weights, dtype=dtype)

    tdt = TORCH_DTYPE[dtype]
    twin = TWINS[name]().to(tdt)
    twin.load_state_dict({k: torch.from_numpy(v).to(tdt) for k, v in weights.items()}, strict=True)
    twin.train()
    match_dropout(twin, graph)
    loss = F.cross_entropy(twin(torch.from_numpy(x).to(tdt)), torch.from_numpy(target))
    loss.backward()
    errors = {"loss": rel_error(got["loss"], loss.detach().numpy())}
    params = dict(twin.named_parameters())
    trainable = [p.name for p in graph.params if p.trainable]
    assert set(trainable) == set(params)
    for k in trainable:
        assert got[f"grad:{k}"].dtype == np.dtype(dtype)
        errors[k] = rel_error(got[f"grad:{k}"], params[k].grad.numpy())
    return errors


# Float64 gradients of whole models: the same products summed in other orders, ~1e-14 measured; 1e-10 leaves room
# for deeper nets and other BLAS builds while any wrong term (a misrouted max-pool gradient, a wrong divisor, a
# missing BN correction) shows at 1e-3 or more.
TOL_MODEL_F64 = 1e-10


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lenet5", "alexnet", "vgg11", "resnet18"])
def test_model_gradients_match_torch_twin_float64(name: str) -> None:
    errors = model_gradients(name, "float64")
    worst = max(errors, key=errors.__getitem__)
    assert errors[worst] <= TOL_MODEL_F64, f"{name}: worst rel error {errors[worst]:.3g} for {worst}"


def test_model_gradients_match_torch_twin_float32() -> None:
    """Float32 against PyTorch float32, on LeNet-5. The bigger models are checked in float64 only: in float32 a
    ReLU input or a max-pool candidate within rounding (~1e-7 relative) of its rival differs between any two
    float32 implementations a few times per million activations, and each such flip moves a whole gradient term
    (measured on AlexNet: PyTorch float32 vs PyTorch float64 is off by 2% on conv1.weight while cnncc float32 is
    within 2e-6 of float64; on ResNet-18 a single ReLU flip in cnncc float32 gives 6%), so no float32 tolerance
    separates a bug from a flip there."""
    errors = model_gradients("lenet5", "float32")
    worst = max(errors, key=errors.__getitem__)
    assert errors[worst] <= TOL_F32_MODEL, f"lenet5: worst rel error {errors[worst]:.3g} for {worst}"
