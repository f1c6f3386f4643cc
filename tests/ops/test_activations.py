"""Activations (relu6, leaky_relu, elu, sigmoid, tanh, softplus, hardtanh) and softmax / log_softmax:
numpy reference vs PyTorch in float32 and float64, seed test vectors, extreme inputs, attribute errors."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnncc.errors import ShapeError
from cnncc.ops import get_op
from cnncc.ops.elu import EluAttrs
from cnncc.ops.hardtanh import HardtanhAttrs
from cnncc.ops.leaky_relu import LeakyReluAttrs
from cnncc.ops.log_softmax import LogSoftmaxAttrs
from cnncc.ops.softmax import SoftmaxAttrs
from cnncc.ops.softplus import SoftplusAttrs
from cnncc.testing import TOL_F32_ELEMENTWISE, TOL_F32_REDUCTION, TOL_F64, rel_error, run_op

Case = tuple[str, Any, Callable[[torch.Tensor], torch.Tensor]]

CASES: list[Case] = [
    ("relu", None, F.relu),
    ("relu6", None, F.relu6),
    ("sigmoid", None, torch.sigmoid),
    ("tanh", None, torch.tanh),
    *[("leaky_relu", LeakyReluAttrs(s), lambda t, s=s: F.leaky_relu(t, s)) for s in (0.01, 0.2, -0.5, 1.5)],
    ("leaky_relu", None, F.leaky_relu),
    *[("elu", EluAttrs(a), lambda t, a=a: F.elu(t, a)) for a in (1.0, 0.5, 2.0)],
    *[("softplus", SoftplusAttrs(b, th), lambda t, b=b, th=th: F.softplus(t, b, th))
      for b, th in ((1.0, 20.0), (2.0, 5.0), (0.5, 1.0), (1.0, 0.5), (3.0, 60.0))],
    *[("hardtanh", HardtanhAttrs(lo, hi), lambda t, lo=lo, hi=hi: F.hardtanh(t, lo, hi))
      for lo, hi in ((-1.0, 1.0), (0.0, 1.0), (-2.5, 0.5), (0.0, 6.0))],
]


def _ids(case: Case) -> str:
    return f"{case[0]}-{case[1]}"


def _input(dtype: type) -> np.ndarray:
    """Random values over [-12, 12] plus the interesting points: 0, ±1, ±6, the softplus thresholds."""
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((2, 3, 5, 7)) * 4).astype(dtype)
    x.flat[:12] = [0.0, -0.0, 1.0, -1.0, 6.0, -6.0, 20.0, 2.5, 0.5, 10.0, -20.0, 12.0]
    return x


@pytest.mark.parametrize("case", CASES, ids=_ids)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activation_matches_torch(case: Case, dtype: type) -> None:
    op, attrs, fn = case
    x = _input(dtype)
    got = run_op(op, [x], attrs, dtype=np.dtype(dtype).name)
    want = fn(torch.from_numpy(x)).numpy()
    assert got.dtype == dtype
    tol = TOL_F32_ELEMENTWISE if dtype == np.float32 else TOL_F64
    assert rel_error(got, want) <= tol


def test_relu_table_tv38() -> None:
    """TV-38 (seed 000 L544-551): x = -6..6 step 2 -> 0, 0, 0, 0, 2, 4, 6, exactly."""
    x = np.array([-6, -4, -2, 0, 2, 4, 6], dtype=np.float32)
    want = np.array([0, 0, 0, 0, 2, 4, 6], dtype=np.float32)
    for op in ("relu", "relu6"):
        assert np.array_equal(run_op(op, [x]), want)
    assert np.array_equal(run_op("relu6", [np.array([5.5, 6.0, 8.0, 1e30], np.float32)]), [5.5, 6, 6, 6])


def test_defaults_match_pytorch() -> None:
    assert LeakyReluAttrs().negative_slope == 0.01
    assert EluAttrs().alpha == 1.0
    assert SoftplusAttrs() == SoftplusAttrs(beta=1.0, threshold=20.0)
    assert HardtanhAttrs() == HardtanhAttrs(min_val=-1.0, max_val=1.0)
    assert SoftmaxAttrs().axis == 1 and LogSoftmaxAttrs().axis == 1


def _strict(fn: Callable[[], np.ndarray]) -> np.ndarray:
    """Run ``fn`` with every warning an error and numpy overflow / invalid / divide raising."""
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        return fn()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_extreme_inputs_are_finite_and_exact(dtype: str) -> None:
    x = np.array([-1000.0, -100.0, 0.0, 100.0, 1000.0], dtype=dtype)
    sig = _strict(lambda: run_op("sigmoid", [x], dtype=dtype))
    assert np.array_equal(sig, [0.0, np.exp(np.float64(-100)).astype(dtype), 0.5, 1.0, 1.0])
    sp = _strict(lambda: run_op("softplus", [x], SoftplusAttrs(threshold=1e6), dtype=dtype))
    assert np.array_equal(sp[[0, 2, 3, 4]], np.array([0.0, np.log(2.0), 100.0, 1000.0], dtype=dtype))
    assert np.isclose(sp[1], np.exp(-100.0), rtol=1e-6)
    default = _strict(lambda: run_op("softplus", [x], dtype=dtype))
    assert np.array_equal(default, [0.0, sp[1], sp[2], 100, 1000])
    assert np.array_equal(_strict(lambda: run_op("elu", [x], dtype=dtype)), [-1.0, -1.0, 0.0, 100, 1000])
    assert np.array_equal(_strict(lambda: run_op("tanh", [x], dtype=dtype)), [-1.0, -1.0, 0.0, 1.0, 1.0])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softmax_extreme_inputs(dtype: str) -> None:
    x = np.array([[1000.0, -1000.0, 0.0], [-1000.0, -1000.0, -1000.0], [1000.0, 1000.0, 999.0]], dtype=dtype)
    sm = _strict(lambda: run_op("softmax", [x], dtype=dtype))
    assert np.all(np.isfinite(sm))
    assert np.array_equal(sm[0], [1.0, 0.0, 0.0])
    assert rel_error(sm[1], np.full(3, 1 / 3)) <= 1e-6
    e = np.exp(-1.0)
    assert rel_error(sm[2], np.array([1, 1, e]) / (2 + e)) <= 1e-6
    ls = _strict(lambda: run_op("log_softmax", [x], dtype=dtype))
    assert np.array_equal(ls[0], [0.0, -2000.0, -1000.0])
    assert rel_error(ls, torch.log_softmax(torch.from_numpy(x), 1).numpy()) <= 1e-6


SOFTMAX_GRID = [((4, 10), 1), ((4, 10), -1), ((4, 10), 0), ((2, 3, 4, 5), 1), ((2, 3, 4, 5), -1), ((7,), 0)]


@pytest.mark.parametrize("shape,axis", SOFTMAX_GRID)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_softmax_matches_torch(op: str, shape: tuple[int, ...], axis: int, dtype: type) -> None:
    x = (np.random.default_rng(3).standard_normal(shape) * 5).astype(dtype)
    attrs = SoftmaxAttrs(axis) if op == "softmax" else LogSoftmaxAttrs(axis)
    got = run_op(op, [x], attrs, dtype=np.dtype(dtype).name)
    fn = torch.softmax if op == "softmax" else torch.log_softmax
    want = fn(torch.from_numpy(x), axis).numpy()
    assert got.dtype == dtype
    assert rel_error(got, want) <= (TOL_F32_REDUCTION if dtype == np.float32 else TOL_F64)


def test_softmax_rows_sum_to_one() -> None:
    x = np.random.default_rng(4).standard_normal((5, 9))
    assert np.allclose(run_op("softmax", [x], dtype="float64").sum(axis=1), 1.0, rtol=0, atol=1e-15)


def test_hardtanh_bounds_error() -> None:
    x = np.zeros((2, 3), np.float32)
    msg = "layer 'layer' (hardtanh): hardtanh bounds: min_val = 1.0 must be less than max_val = 1.0"
    with pytest.raises(ShapeError, match=re.escape(msg)):
        run_op("hardtanh", [x], HardtanhAttrs(1.0, 1.0))
    msg = "layer 'layer' (hardtanh): hardtanh bounds: min_val = 2.0 must be less than max_val = -2.0"
    with pytest.raises(ShapeError, match=re.escape(msg)):
        run_op("hardtanh", [x], HardtanhAttrs(2.0, -2.0))


def test_attribute_errors() -> None:
    x = np.zeros((2, 3), np.float32)
    msg = "layer 'layer' (softplus): beta: beta must be a finite number > 0, got 0.0"
    with pytest.raises(ShapeError, match=re.escape(msg)):
        run_op("softplus", [x], SoftplusAttrs(beta=0.0))
    msg = "layer 'layer' (elu): alpha: alpha must be finite, got nan"
    with pytest.raises(ShapeError, match=re.escape(msg)):
        run_op("elu", [x], EluAttrs(alpha=float("nan")))
    msg = "layer 'layer' (softmax): axis: axis = 2 is out of range for rank 2 (valid: -2 to 1)"
    with pytest.raises(ShapeError, match=re.escape(msg)):
        run_op("softmax", [x], SoftmaxAttrs(axis=2))
    msg = "layer 'layer' (sigmoid): operand dtype: input must be float32 or float64, got int64"
    with pytest.raises(ShapeError, match=re.escape(msg)):
        run_op("sigmoid", [np.zeros(3, np.int64)])


def test_flops_per_element() -> None:
    from cnncc.ir import TensorType

    t = TensorType((2, 3, 4, 5))
    assert get_op("relu6").flops([t], [t], get_op("relu6").default_attrs()) == 2 * 120
    assert get_op("softmax").flops([t], [t], SoftmaxAttrs()) == 4 * 120
