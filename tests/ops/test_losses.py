"""cross_entropy, nll and mse: reference vs PyTorch (mean and sum), int64 targets through a graph, errors."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnncc.errors import InputError, ShapeError
from cnncc.ir import DType, Layout
from cnncc.ops.cross_entropy import CrossEntropyAttrs
from cnncc.ops.mse import MseAttrs
from cnncc.ops.nll import NllAttrs
from cnncc.ops.operands import Reduction
from cnncc.testing import TOL_F32_REDUCTION, TOL_F64, rel_error, run_op, single_op_graph

DTYPES = [np.float32, np.float64]
REDUCTIONS = [Reduction.MEAN, Reduction.SUM]


def _tol(dtype: type) -> float:
    return TOL_F32_REDUCTION if dtype == np.float32 else TOL_F64


def _logits_and_labels(n: int, c: int, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(n * 100 + c)
    return (rng.standard_normal((n, c)) * 3).astype(dtype), rng.integers(0, c, n)


def _check(got: np.ndarray, want: torch.Tensor, dtype: type) -> None:
    assert got.shape == () and got.dtype == dtype
    assert rel_error(got, want.numpy()) <= _tol(dtype)


@pytest.mark.parametrize("n,c", [(1, 2), (8, 10), (32, 1000)])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_indices_matches_torch(n: int, c: int, reduction: Reduction, dtype: type) -> None:
    logits, labels = _logits_and_labels(n, c, dtype)
    got = run_op("cross_entropy", [logits, labels], CrossEntropyAttrs(reduction), dtype=np.dtype(dtype).name)
    want = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels), reduction=reduction.value)
    _check(got, want, dtype)


@pytest.mark.parametrize("kind", ["one_hot", "soft", "smoothed"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_probabilities_matches_torch(kind: str, reduction: Reduction, dtype: type) -> None:
    """Keras ``categorical_crossentropy``: one-hot rows, soft targets, label smoothing (seed 003 L944-958)."""
    n, c = 6, 9
    logits, labels = _logits_and_labels(n, c, dtype)
    one_hot = np.eye(c)[labels]
    if kind == "one_hot":
        target = one_hot
    elif kind == "soft":
        target = F.softmax(torch.from_numpy(np.random.default_rng(1).standard_normal((n, c))), 1).numpy()
    else:
        eps = 0.1
        target = one_hot * (1 - eps) + (1 - one_hot) * eps / (c - 1)
    target = target.astype(dtype)
    got = run_op("cross_entropy", [logits, target], CrossEntropyAttrs(reduction), dtype=np.dtype(dtype).name)
    want = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(target), reduction=reduction.value)
    _check(got, want, dtype)
    if kind == "one_hot":
        attrs = CrossEntropyAttrs(reduction)
        by_index = run_op("cross_entropy", [logits, labels], attrs, dtype=np.dtype(dtype).name)
        assert rel_error(got, by_index) <= _tol(dtype)


def test_cross_entropy_extreme_logits() -> None:
    logits = np.array([[1000.0, -1000.0, 0.0], [-1000.0, 1000.0, 0.0]], np.float32)
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        right = run_op("cross_entropy", [logits, np.array([0, 1])])
        wrong = run_op("cross_entropy", [logits, np.array([1, 2])])
    assert right == 0.0 and wrong == 1500.0  # (2000 + 1000) / 2


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_nll_matches_torch(reduction: Reduction, dtype: type) -> None:
    logits, labels = _logits_and_labels(16, 10, dtype)
    log_probs = F.log_softmax(torch.from_numpy(logits), 1).numpy()
    got = run_op("nll", [log_probs, labels], NllAttrs(reduction), dtype=np.dtype(dtype).name)
    want = F.nll_loss(torch.from_numpy(log_probs), torch.from_numpy(labels), reduction=reduction.value)
    _check(got, want, dtype)


@pytest.mark.parametrize("shape", [(8,), (4, 10), (2, 3, 4, 5)])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_mse_matches_torch(shape: tuple[int, ...], reduction: Reduction, dtype: type) -> None:
    rng = np.random.default_rng(9)
    pred, target = rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)
    got = run_op("mse", [pred, target], MseAttrs(reduction), dtype=np.dtype(dtype).name)
    want = F.mse_loss(torch.from_numpy(pred), torch.from_numpy(target), reduction=reduction.value)
    _check(got, want, dtype)


def test_mse_is_twice_the_seed_half_sse() -> None:
    """Seed 000 L682-684: E_total = Σ ½ (target − output)²; SUM reduction is 2·E_total."""
    out, target = np.array([0.5, 0.25, 1.0]), np.array([0.0, 0.0, 1.0])
    e_total = 0.5 * ((target - out) ** 2).sum()
    assert run_op("mse", [out, target], MseAttrs(Reduction.SUM), dtype="float64") == 2 * e_total


def test_int64_targets_flow_through_the_graph() -> None:
    logits, labels = _logits_and_labels(4, 5, np.float32)
    g, inputs, _ = single_op_graph("cross_entropy", [logits, labels])
    assert g.inputs[1].dtype is DType.INT64
    assert g.outputs[0].type.shape == () and g.outputs[0].type.layout is Layout.PLAIN
    for dtype in ("float32", "float64"):
        assert run_op("cross_entropy", [logits, labels], dtype=dtype).dtype == np.dtype(dtype)


@pytest.mark.parametrize("op", ["cross_entropy", "nll"])
@pytest.mark.parametrize("bad", [5, -1])
def test_out_of_range_label_is_a_runtime_input_error(op: str, bad: int) -> None:
    logits = np.zeros((3, 5), np.float32)
    labels = np.array([0, bad, 4])
    single_op_graph(op, [logits, labels])  # the shape rule cannot see label values
    msg = f"{op}: target[1] = {bad} is not a class index in [0, 5) for 5 classes"
    with pytest.raises(InputError, match=re.escape(msg)):
        run_op(op, [logits, labels])


def test_loss_shape_errors() -> None:
    logits = np.zeros((4, 10), np.float32)
    msg = ("layer 'layer' (cross_entropy): target: target must be int64 class indices of shape (4,) or "
           "float32 probabilities of shape (4, 10) for logits of shape (4, 10); got int64 of shape (3,)")
    with pytest.raises(ShapeError, match=re.escape(msg)):
        run_op("cross_entropy", [logits, np.zeros(3, np.int64)])
    with pytest.raises(ShapeError, match=re.escape("got float32 of shape (4,)")):
        run_op("cross_entropy", [logits, np.zeros(4, np.float32)])
    msg = "layer 'layer' (cross_entropy): operand rank: logits must be rank 2 (N, C), got shape (4, 10, 1)"
    with pytest.raises(ShapeError, match=re.escape(msg)):
        run_op("cross_entropy", [logits[..., None], np.zeros(4, np.int64)])
    msg = ("layer 'layer' (nll): target shape: target must have shape (4,) for log_probs of shape (4, 10), "
           "got (5,)")
    with pytest.raises(ShapeError, match=re.escape(msg)):
        run_op("nll", [logits, np.zeros(5, np.int64)])
    msg = "layer 'layer' (nll): operand dtype: target must be int64 class indices, got float32"
    with pytest.raises(ShapeError, match=re.escape(msg)):
        run_op("nll", [logits, np.zeros(4, np.float32)])
    msg = ("layer 'layer' (mse): target shape: prediction has shape (4, 10) but target has shape (10, 4); "
           "they must match")
    with pytest.raises(ShapeError, match=re.escape(msg)):
        run_op("mse", [logits, np.zeros((10, 4), np.float32)])
