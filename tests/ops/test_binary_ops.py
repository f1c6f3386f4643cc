"""add and multiply with broadcasting, and variadic concat: numpy reference vs PyTorch, layouts, errors."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from cnncc.errors import ShapeError
from cnncc.ir import DType, GraphBuilder, Layout, TensorType
from cnncc.ops import get_op
from cnncc.ops.concat import ConcatAttrs
from cnncc.ops.registry import NoAttrs
from cnncc.testing import TOL_F32_ELEMENTWISE, TOL_F64, rel_error, run_op, single_op_graph

DTYPES = [np.float32, np.float64]
BROADCASTS = [((2, 3, 4, 5), (2, 3, 4, 5)), ((2, 3, 4, 5), (1, 3, 1, 1)), ((2, 3, 4, 5), (3, 1, 1)),
              ((2, 3, 4, 5), (5,)), ((3, 1, 1), (2, 3, 4, 5)), ((4, 1), (1, 3)), ((6,), ()),
              ((2, 1, 4, 1), (3, 1, 5))]


@pytest.mark.parametrize("a_shape,b_shape", BROADCASTS)
@pytest.mark.parametrize("op", ["add", "multiply"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_binary_matches_torch(op: str, a_shape: tuple[int, ...], b_shape: tuple[int, ...],
                              dtype: type) -> None:
    rng = np.random.default_rng(len(a_shape) * 10 + len(b_shape))
    a, b = rng.standard_normal(a_shape).astype(dtype), rng.standard_normal(b_shape).astype(dtype)
    got = run_op(op, [a, b], dtype=np.dtype(dtype).name)
    fn = torch.add if op == "add" else torch.mul
    want = fn(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    assert got.dtype == dtype and got.shape == want.shape
    assert rel_error(got, want) <= (TOL_F32_ELEMENTWISE if dtype == np.float32 else TOL_F64)


def test_channel_scaling_by_a_parameter_keeps_nchw() -> None:
    """Squeeze-and-excitation style scaling: NCHW activations times a PLAIN (1, C, 1, 1) parameter."""
    b = GraphBuilder("scale")
    x = b.input("x", (2, 3, 4, 5))
    for shape in ((1, 3, 1, 1), (3, 1, 1)):
        y = b.apply("multiply", [b.param(f"s{len(shape)}", shape), x])
        assert y.type == TensorType((2, 3, 4, 5), DType.FLOAT32, Layout.NCHW)
    nhwc = b.input("x_nhwc", (2, 4, 5, 3), layout=Layout.NHWC)
    assert b.apply("add", [nhwc, b.param("bias", (3,))]).type.layout is Layout.NHWC
    assert b.apply("add", [b.param("m", (4, 1)), b.param("n", (1, 3))]).type.layout is Layout.PLAIN


def test_binary_errors() -> None:
    a, b = np.zeros((2, 3, 4, 5), np.float32), np.zeros((2, 4, 1, 1), np.float32)
    msg = ("layer 'layer' (add): broadcast: operands do not broadcast: a has shape (2, 3, 4, 5) and b has "
           "shape (2, 4, 1, 1)")
    with pytest.raises(ShapeError, match=re.escape(msg)):
        run_op("add", [a, b])
    msg = "layer 'layer' (multiply): operand dtype: dtypes must match: a is float32, b is float64"
    with pytest.raises(ShapeError, match=re.escape(msg)):
        run_op("multiply", [a, np.zeros((2, 3, 4, 5))])
    g = GraphBuilder("mixed")
    msg = "layer 'add' (add): operand layout: operands have different layouts: a is NCHW, b is NHWC"
    with pytest.raises(ShapeError, match=re.escape(msg)):
        g.apply("add", [g.input("p", (2, 3, 3, 3)), g.input("q", (2, 3, 3, 3), layout=Layout.NHWC)])


@pytest.mark.parametrize("shapes,axis", [([(2, 3, 4, 5), (2, 6, 4, 5)], 1), ([(2, 3, 4, 5)] * 3, 1),
                                         ([(2, 3), (5, 3)], 0), ([(2, 3, 4, 5), (2, 3, 4, 1)], -1),
                                         ([(2, 3, 4, 5)], 1), ([(4, 2), (4, 1), (4, 7), (4, 3)], 1)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_concat_matches_torch(shapes: list[tuple[int, ...]], axis: int, dtype: type) -> None:
    rng = np.random.default_rng(len(shapes))
    arrays = [rng.standard_normal(s).astype(dtype) for s in shapes]
    got = run_op("concat", arrays, ConcatAttrs(axis), dtype=np.dtype(dtype).name)
    want = torch.cat([torch.from_numpy(a) for a in arrays], axis).numpy()
    assert got.dtype == dtype and np.array_equal(got, want)
    g, _, _ = single_op_graph("concat", arrays, ConcatAttrs(axis))
    assert g.outputs[0].type.layout is (Layout.NCHW if len(shapes[0]) == 4 else Layout.PLAIN)


def test_concat_errors() -> None:
    a, b = np.zeros((2, 3, 4, 5), np.float32), np.zeros((2, 6, 4, 4), np.float32)
    msg = ("layer 'layer' (concat): concat shapes: all dimensions except axis 1 must match; "
           "got shapes [(2, 3, 4, 5), (2, 6, 4, 4)]")
    with pytest.raises(ShapeError, match=re.escape(msg)):
        run_op("concat", [a, b])
    msg = ("layer 'layer' (concat): operand rank: operands must all have the same rank; "
           "got shapes [(2, 3, 4, 5), (2, 3)]")
    with pytest.raises(ShapeError, match=re.escape(msg)):
        run_op("concat", [a, np.zeros((2, 3), np.float32)])
    msg = "layer 'cat' (concat): operand count: expected at least 1 operand (x0, x1, ...), got 0"
    with pytest.raises(ShapeError, match=re.escape(msg)):
        get_op("concat").infer_types([], ConcatAttrs(), "cat")


def test_fixed_arity_ops_still_checked() -> None:
    """The ``variadic`` flag is off by default: a binary op still rejects a third operand."""
    t = TensorType((2, 3))
    msg = "layer 'sum' (add): operand count: expected 2 operands (a, b), got 3"
    with pytest.raises(ShapeError, match=re.escape(msg)):
        get_op("add").infer_types([t, t, t], NoAttrs(), "sum")
    assert get_op("concat").variadic and not get_op("add").variadic
