"""The reference interpreter: input checks, float64 mode, and agreement of float32 with float64."""

from __future__ import annotations

import re

import numpy as np
import pytest

from cnncc.errors import InputError, WeightsError
from cnncc.frontend.models import lenet5
from cnncc.ir import DType, GraphBuilder
from cnncc.runtime import interpret
from cnncc.testing import rel_error


def test_float64_mode_computes_in_float64_and_agrees_with_float32() -> None:
    m = lenet5()
    x = np.random.default_rng(0).standard_normal((2, 1, 32, 32))
    y64 = interpret(m.graph(2), {"input": x}, m.params, dtype="float64")["output"]
    y32 = interpret(m.graph(2), {"input": x}, m.params)["output"]
    assert y64.dtype == np.float64 and y32.dtype == np.float32
    assert rel_error(y32, y64) < 1e-5


def test_input_checks() -> None:
    g = lenet5().graph(1)
    params = lenet5().params
    with pytest.raises(InputError, match=re.escape("graph 'lenet5': input 'input' has shape (1, 1, 28, 28), "
                                                   "expected (1, 1, 32, 32)")):
        interpret(g, {"input": np.zeros((1, 1, 28, 28))}, params)
    with pytest.raises(InputError, match=re.escape("graph 'lenet5': input 'input' (1x1x32x32:f32,NCHW) is missing")):
        interpret(g, {}, params)
    with pytest.raises(InputError, match=re.escape("unknown input(s) ['x']")):
        interpret(g, {"input": np.zeros((1, 1, 32, 32)), "x": np.zeros(1)}, params)
    with pytest.raises(InputError, match="expected a float array"):
        interpret(g, {"input": np.full((1, 1, 32, 32), "a")}, params)
    with pytest.raises(WeightsError, match=re.escape("no weights bound for parameter(s) ['conv1.weight']")):
        interpret(g, {"input": np.zeros((1, 1, 32, 32))}, {k: v for k, v in params.items() if k != "conv1.weight"})
    with pytest.raises(InputError, match="interpret: dtype must be float32 or float64"):
        interpret(g, {"input": np.zeros((1, 1, 32, 32))}, params, dtype="float16")


def test_integer_labels_are_checked() -> None:
    b = GraphBuilder("loss")
    logits = b.input("logits", (3, 4))
    labels = b.input("labels", (3,), DType.INT64)
    b.output(b.apply("cross_entropy", [logits, labels], layer="loss"))
    g = b.build()
    x = np.zeros((3, 4), np.float32)
    with pytest.raises(InputError, match="expected integer class labels"):
        interpret(g, {"logits": x, "labels": np.array([0.0, 1.0, 2.0])})
    loss = interpret(g, {"logits": x, "labels": np.array([0, 1, 3])})["output0"]
    assert loss.shape == () and abs(float(loss) - np.log(4)) < 1e-6


def test_nan_propagates_documented() -> None:
    """NaN inputs are not rejected by the interpreter (it is an oracle); they propagate through arithmetic."""
    m = lenet5()
    x = np.zeros((1, 1, 32, 32), np.float32)
    x[0, 0, 0, 0] = np.nan
    assert np.isnan(m(x)).any()
