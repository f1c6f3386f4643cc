"""batch_norm (inference and training) and dropout: numpy reference vs PyTorch, dropout statistics, errors."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnncc.errors import ShapeError
from cnncc.ops.batch_norm import BatchNormAttrs
from cnncc.ops.dropout import DropoutAttrs
from cnncc.testing import TOL_F32_REDUCTION, TOL_F64, rel_error, run_op, single_op_graph

DTYPES = [np.float32, np.float64]


def _bn_operands(shape: tuple[int, ...], dtype: type) -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    c = shape[1]
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    gamma, beta, mean = (rng.standard_normal(c).astype(dtype) for _ in range(3))
    var = rng.uniform(0.1, 2.0, c).astype(dtype)
    return [x, gamma, beta, mean, var]


def _torch_bn(arrays: list[np.ndarray], a: BatchNormAttrs) -> np.ndarray:
    x, gamma, beta, mean, var = (torch.from_numpy(v.copy()) for v in arrays)
    y = F.batch_norm(x, mean, var, gamma, beta, training=a.training, momentum=a.momentum, eps=a.eps)
    return y.numpy()


@pytest.mark.parametrize("shape", [(4, 3, 5, 6), (8, 5), (1, 2, 3, 3), (16, 1)])
@pytest.mark.parametrize("attrs", [BatchNormAttrs(), BatchNormAttrs(eps=1e-3), BatchNormAttrs(training=True),
                                   BatchNormAttrs(eps=0.1, momentum=0.5, training=True)], ids=str)
@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_matches_torch(shape: tuple[int, ...], attrs: BatchNormAttrs, dtype: type) -> None:
    arrays = _bn_operands(shape, dtype)
    got = run_op("batch_norm", arrays, attrs, dtype=np.dtype(dtype).name)
    assert got.dtype == dtype
    tol = TOL_F32_REDUCTION if dtype == np.float32 else TOL_F64
    assert rel_error(got, _torch_bn(arrays, attrs)) <= tol


def test_batch_norm_training_uses_biased_variance() -> None:
    """Seed 003 L380-395: σ_B² = (1/m) Σ (x_i − μ_B)², eps inside the sqrt; running stats are not read."""
    x = np.array([[1.0], [2.0], [3.0], [6.0]])
    ones, zeros = np.ones(1), np.zeros(1)
    attrs = BatchNormAttrs(eps=0.5, training=True)
    got = run_op("batch_norm", [x, ones, zeros, zeros + 100, ones * 100], attrs, dtype="float64")
    want = (x - 3.0) / math.sqrt(3.5 + 0.5)  # mean 3, biased variance (4 + 1 + 0 + 9) / 4 = 3.5
    assert rel_error(got, want) <= TOL_F64


def test_batch_norm_parameter_shape_error() -> None:
    x, gamma, beta, mean, var = _bn_operands((2, 3, 4, 4), np.float32)
    msg = ("layer 'layer' (batch_norm): parameter shape: gamma, beta, running_mean and running_var must have "
           "shape (3,) for x of shape (2, 3, 4, 4); got gamma (3,), beta (4,), running_mean (3,), "
           "running_var (3,)")
    with pytest.raises(ShapeError, match=re.escape(msg)):
        run_op("batch_norm", [x, gamma, np.zeros(4, np.float32), mean, var])


def test_batch_norm_other_errors() -> None:
    arrays = _bn_operands((1, 3, 1, 1), np.float32)
    msg = ("layer 'layer' (batch_norm): batch statistics: training mode needs more than one value per "
           "channel; x has shape (1, 3, 1, 1)")
    with pytest.raises(ShapeError, match=re.escape(msg)):
        run_op("batch_norm", arrays, BatchNormAttrs(training=True))
    assert run_op("batch_norm", arrays).shape == (1, 3, 1, 1)  # inference needs no batch statistics
    msg = "layer 'layer' (batch_norm): eps: eps must be a finite number > 0, got 0.0"
    with pytest.raises(ShapeError, match=re.escape(msg)):
        run_op("batch_norm", arrays, BatchNormAttrs(eps=0.0))
    msg = "layer 'layer' (batch_norm): momentum: momentum must be in [0, 1], got 1.5"
    with pytest.raises(ShapeError, match=re.escape(msg)):
        run_op("batch_norm", arrays, BatchNormAttrs(momentum=1.5))
    msg = "layer 'layer' (batch_norm): operand rank: x must be rank >= 2 (N, C, ...), got shape (3,)"
    with pytest.raises(ShapeError, match=re.escape(msg)):
        run_op("batch_norm", [np.zeros(3, np.float32)] + arrays[1:])


@pytest.mark.parametrize("p", [0.0, 0.3, 0.5, 0.9])
@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_inference_is_identity(p: float, dtype: type) -> None:
    x = np.random.default_rng(1).standard_normal((4, 3, 5, 5)).astype(dtype)
    got = run_op("dropout", [x], DropoutAttrs(p=p, seed=3), dtype=np.dtype(dtype).name)
    want = F.dropout(torch.from_numpy(x), p, training=False).numpy()
    assert got.dtype == dtype and np.array_equal(got, want) and np.array_equal(got, x)


def _dropout_train(x: np.ndarray, p: float, seed: int, dtype: str = "float32") -> np.ndarray:
    return run_op("dropout", [x], DropoutAttrs(p=p, training=True, seed=seed), dtype=dtype)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_training_statistics(p: float) -> None:
    """Inverted dropout: kept fraction ≈ 1 − p (within 5 binomial standard deviations), kept values scaled by
    exactly 1/(1 − p) rounded to the dtype, dropped values exactly 0."""
    rng = np.random.default_rng(2)
    shape = (64, 16, 10, 10)
    x = (rng.uniform(0.5, 2.0, shape) * rng.choice([-1.0, 1.0], shape)).astype(np.float32)
    y = _dropout_train(x, p, seed=42)
    kept = y != 0
    n = x.size
    assert abs(kept.mean() - (1 - p)) <= 5 * math.sqrt(p * (1 - p) / n)
    assert np.array_equal(y[kept], x[kept] * np.float32(1 / (1 - p)))
    assert y.dtype == np.float32


def test_dropout_mask_is_the_documented_philox_stream() -> None:
    x = np.ones((3, 4, 5), np.float64)
    for p, seed in ((0.5, 0), (0.25, 7), (0.9, 2**40)):
        mask = np.random.Generator(np.random.Philox(key=seed)).random(x.shape) >= p
        assert np.array_equal(_dropout_train(x, p, seed, "float64") != 0, mask)


def test_dropout_reproducible_and_seed_dependent() -> None:
    x = np.random.default_rng(0).standard_normal((8, 3, 16, 16)).astype(np.float32)
    a, b, c = _dropout_train(x, 0.5, 1), _dropout_train(x, 0.5, 1), _dropout_train(x, 0.5, 2)
    assert np.array_equal(a, b)
    assert not np.array_equal(a != 0, c != 0)
    same_mask_f64 = _dropout_train(x.astype(np.float64), 0.5, 1, "float64") != 0
    assert np.array_equal(a != 0, same_mask_f64)  # the mask does not depend on the run dtype
    assert np.array_equal(_dropout_train(x, 0.0, 5), x)  # p = 0 keeps everything, scale 1


@pytest.mark.parametrize("p", [1.0, -0.1, 1.5])
def test_dropout_p_out_of_range(p: float) -> None:
    msg = (f"layer 'layer' (dropout): drop probability: p = {p} is the probability of dropping a unit and "
           "must satisfy 0 <= p < 1")
    with pytest.raises(ShapeError, match=re.escape(msg)):
        single_op_graph("dropout", [np.zeros((2, 3), np.float32)], DropoutAttrs(p=p))


def test_dropout_seed_error() -> None:
    msg = "layer 'layer' (dropout): seed: seed must be an int >= 0, got -1"
    with pytest.raises(ShapeError, match=re.escape(msg)):
        single_op_graph("dropout", [np.zeros((2, 3), np.float32)], DropoutAttrs(seed=-1))
