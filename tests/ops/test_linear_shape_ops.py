"""prelu, linear, flatten, reshape, transpose: numpy reference vs PyTorch, layouts, counts and errors."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnncc.errors import ShapeError
from cnncc.ir import DType, Graph, GraphBuilder, Layout, TensorType
from cnncc.ops import get_op
from cnncc.ops.flatten import FlattenAttrs
from cnncc.ops.reshape import ReshapeAttrs
from cnncc.ops.transpose import TransposeAttrs
from cnncc.runtime import interpret
from cnncc.testing import TOL_F32_ELEMENTWISE, TOL_F32_REDUCTION, TOL_F64, rel_error, run_op, single_op_graph

RNG = np.random.default_rng(11)
DTYPES = [np.float32, np.float64]


def _randn(shape: tuple[int, ...], dtype: type) -> np.ndarray:
    return RNG.standard_normal(shape).astype(dtype)


def _tol(dtype: type, reduction: bool = False) -> float:
    if dtype == np.float64:
        return TOL_F64
    return TOL_F32_REDUCTION if reduction else TOL_F32_ELEMENTWISE


@pytest.mark.parametrize("x_shape,alpha_shape", [((2, 3, 4, 5), (3,)), ((2, 3, 4, 5), (1,)), ((6, 8), (8,)),
                                                 ((6, 8), (1,)), ((5,), (1,))])
@pytest.mark.parametrize("dtype", DTYPES)
def test_prelu_matches_torch(x_shape: tuple[int, ...], alpha_shape: tuple[int, ...], dtype: type) -> None:
    x, alpha = _randn(x_shape, dtype), _randn(alpha_shape, dtype)
    got = run_op("prelu", [x, alpha], dtype=np.dtype(dtype).name)
    want = F.prelu(torch.from_numpy(x), torch.from_numpy(alpha)).numpy()
    assert got.dtype == dtype and rel_error(got, want) <= _tol(dtype)


def test_prelu_alpha_shape_error() -> None:
    msg = ("layer 'layer' (prelu): alpha shape: alpha must have shape (1,) or (3,) for x of shape "
           "(2, 3, 4, 5), got (4,)")
    with pytest.raises(ShapeError, match=re.escape(msg)):
        run_op("prelu", [np.zeros((2, 3, 4, 5), np.float32), np.zeros(4, np.float32)])


@pytest.mark.parametrize("n,k,m", [(1, 1, 1), (4, 10, 3), (8, 400, 120), (3, 84, 10)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_matches_torch(n: int, k: int, m: int, bias: bool, dtype: type) -> None:
    x, w = _randn((n, k), dtype), _randn((m, k), dtype)
    arrays = [x, w] + ([_randn((m,), dtype)] if bias else [])
    got = run_op("linear", arrays, dtype=np.dtype(dtype).name)
    want = F.linear(*(torch.from_numpy(a) for a in arrays)).numpy()
    assert got.dtype == dtype and rel_error(got, want) <= _tol(dtype, reduction=True)


def test_linear_counts() -> None:
    op = get_op("linear")
    x, w, b, y = TensorType((8, 400)), TensorType((120, 400)), TensorType((120,)), TensorType((8, 120))
    assert op.macs([x, w, b], [y], op.default_attrs()) == 8 * 400 * 120
    assert op.flops([x, w, b], [y], op.default_attrs()) == 2 * 8 * 400 * 120 + 8 * 120
    assert op.flops([x, w], [y], op.default_attrs()) == 2 * 8 * 400 * 120


def test_linear_errors() -> None:
    x, w = np.zeros((4, 10), np.float32), np.zeros((3, 12), np.float32)
    msg = ("layer 'layer' (linear): in_features: x has shape (4, 10) but weight has shape (3, 12): "
           "x.shape[1] = 10 must equal weight.shape[1] = 12 (weight is (out_features, in_features))")
    with pytest.raises(ShapeError, match=re.escape(msg)):
        run_op("linear", [x, w])
    msg = "layer 'layer' (linear): operand rank: x must be rank 2 (N, in_features), got shape (2, 3, 4, 5)"
    with pytest.raises(ShapeError, match=re.escape(msg)):
        run_op("linear", [np.zeros((2, 3, 4, 5), np.float32), w])
    msg = ("layer 'layer' (linear): bias shape: bias must have shape (3,) for weight of shape (3, 10), "
           "got (4,)")
    with pytest.raises(ShapeError, match=re.escape(msg)):
        run_op("linear", [x, np.zeros((3, 10), np.float32), np.zeros(4, np.float32)])
    msg = "layer 'layer' (linear): operand dtype: dtypes must match: x is float32, weight is float64"
    with pytest.raises(ShapeError, match=re.escape(msg)):
        run_op("linear", [x, np.zeros((3, 10))])


@pytest.mark.parametrize("shape,start", [((2, 3, 4, 5), 1), ((2, 3, 4, 5), 0), ((2, 3, 4, 5), 2),
                                         ((2, 3, 4, 5), -1), ((2, 3, 4, 5), 3), ((6, 7), 1)])
def test_flatten_matches_torch(shape: tuple[int, ...], start: int) -> None:
    x = _randn(shape, np.float32)
    got = run_op("flatten", [x], FlattenAttrs(start))
    assert np.array_equal(got, torch.flatten(torch.from_numpy(x), start).numpy())
    g, _, _ = _single("flatten", shape, FlattenAttrs(start))
    assert g.outputs[0].type.layout is Layout.PLAIN


def test_flatten_of_nhwc_input_needs_kernel_permutation() -> None:
    """Keras ``Flatten`` + ``Dense`` on NHWC equals cnncc's transpose + flatten (NCHW order) + linear once
    the kernel's rows are permuted from HWC to CHW order."""
    n, h, w, c, out = 2, 3, 4, 5, 6
    x_nhwc, kernel = _randn((n, h, w, c), np.float64), _randn((h * w * c, out), np.float64)
    keras = x_nhwc.reshape(n, -1) @ kernel
    weight = kernel.reshape(h, w, c, out).transpose(2, 0, 1, 3).reshape(c * h * w, out).T
    b = GraphBuilder("keras_head")
    xin = b.input("x", (n, h, w, c), layout=Layout.NHWC)
    wp = b.param("w", weight.shape)
    t = b.apply("transpose", [xin], TransposeAttrs((0, 3, 1, 2)))
    assert t.type.layout is Layout.NCHW
    y = b.apply("linear", [b.apply("flatten", [t]), wp])
    b.output(y)
    got = interpret(b.build(), {"x": x_nhwc}, {"w": weight}, dtype="float64")["output0"]
    assert rel_error(got, keras) <= TOL_F64


@pytest.mark.parametrize("shape,target", [((2, 3, 4, 5), (2, -1)), ((2, 3, 4, 5), (-1,)),
                                          ((6, 20), (6, 4, 5, 1)), ((2, 3, 4, 5), (5, 4, 3, 2)),
                                          ((24,), (2, 3, -1))])
def test_reshape_matches_torch(shape: tuple[int, ...], target: tuple[int, ...]) -> None:
    x = _randn(shape, np.float32)
    got = run_op("reshape", [x], ReshapeAttrs(target))
    assert np.array_equal(got, torch.reshape(torch.from_numpy(x), target).numpy())


def test_reshape_layout_and_errors() -> None:
    g, _, _ = _single("reshape", (6, 20), ReshapeAttrs((6, 5, 2, 2)))
    assert g.outputs[0].type.layout is Layout.NCHW
    msg = ("layer 'layer' (reshape): element count: cannot reshape (2, 3, 4, 5) (120 elements) to (7, 17) "
           "(119 elements)")
    with pytest.raises(ShapeError, match=re.escape(msg)):
        _single("reshape", (2, 3, 4, 5), ReshapeAttrs((7, 17)))
    msg = "layer 'layer' (reshape): element count: cannot reshape (2, 3, 4, 5) (120 elements) to (7, -1)"
    with pytest.raises(ShapeError, match=re.escape(msg)):
        _single("reshape", (2, 3, 4, 5), ReshapeAttrs((7, -1)))
    msg = "layer 'layer' (reshape): target shape: at most one dim may be -1, got (-1, -1)"
    with pytest.raises(ShapeError, match=re.escape(msg)):
        _single("reshape", (2, 3), ReshapeAttrs((-1, -1)))


@pytest.mark.parametrize("shape,perm", [((2, 3, 4, 5), (0, 2, 3, 1)), ((2, 3, 4, 5), (0, 3, 1, 2)),
                                        ((2, 3, 4, 5), (3, 2, 1, 0)), ((4, 6), (1, 0)),
                                        ((2, 3, 4), (1, 2, 0))])
@pytest.mark.parametrize("dtype", DTYPES)
def test_transpose_matches_torch(shape: tuple[int, ...], perm: tuple[int, ...], dtype: type) -> None:
    x = _randn(shape, dtype)
    got = run_op("transpose", [x], TransposeAttrs(perm), dtype=np.dtype(dtype).name)
    want = torch.from_numpy(x).permute(perm).contiguous().numpy()
    assert got.dtype == dtype and got.flags.c_contiguous and np.array_equal(got, want)


@pytest.mark.parametrize("layout,perm,want", [
    (Layout.NHWC, (0, 3, 1, 2), Layout.NCHW), (Layout.NCHW, (0, 2, 3, 1), Layout.NHWC),
    (Layout.NCHW, (0, 1, 2, 3), Layout.NCHW), (Layout.NHWC, (0, 1, 2, 3), Layout.NHWC),
    (Layout.NCHW, (0, 3, 1, 2), Layout.PLAIN), (Layout.NCHW, (1, 0, 2, 3), Layout.PLAIN),
    (Layout.NHWC, (0, 2, 3, 1), Layout.PLAIN), (Layout.PLAIN, (0, 3, 1, 2), Layout.PLAIN)])
def test_transpose_layouts(layout: Layout, perm: tuple[int, ...], want: Layout) -> None:
    b = GraphBuilder("t")
    y = b.apply("transpose", [b.input("x", (2, 3, 4, 5), layout=layout)], TransposeAttrs(perm))
    assert y.type == TensorType(tuple((2, 3, 4, 5)[p] for p in perm), DType.FLOAT32, want)


def test_transpose_perm_error() -> None:
    msg = ("layer 'layer' (transpose): perm: perm must be a permutation of range(4) for x of shape "
           "(2, 3, 4, 5), got (0, 1, 1, 2)")
    with pytest.raises(ShapeError, match=re.escape(msg)):
        _single("transpose", (2, 3, 4, 5), TransposeAttrs((0, 1, 1, 2)))
    with pytest.raises(ShapeError, match=re.escape("got (1, 0)")):
        _single("transpose", (2, 3, 4, 5), TransposeAttrs((1, 0)))


def _single(op: str, shape: tuple[int, ...], attrs: object) -> tuple[Graph, dict, dict]:
    return single_op_graph(op, [np.zeros(shape, np.float32)], attrs)
