"""Pooling: the seeds' worked examples exactly (TV-29..TV-34), PyTorch on a grid and a hypothesis search, the tie
rule of max pooling, global average pooling, and the error messages."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st

from cnncc.errors import ShapeError
from cnncc.ir import DType, GraphBuilder, Layout
from cnncc.ops import NoAttrs, get_op
from cnncc.ops.avg_pool2d import AvgPool2dAttrs
from cnncc.ops.max_pool2d import MaxPool2dAttrs, max_pool2d_indices
from cnncc.testing import TOL_F32_REDUCTION, TOL_F64, rel_error, run_op

DTYPES = ["float32", "float64"]
TV31 = [[35, 19, 25, 6], [13, 22, 16, 63], [4, 3, 7, 10], [9, 8, 1, 3]]
TV33 = [[1, 1, 2, 4], [5, 6, 7, 8], [3, 2, 1, 0], [1, 2, 3, 4]]


def pool(op: str, rows: list[list[float]], attrs: object, dtype: str) -> np.ndarray:
    y = run_op(op, [np.asarray(rows, dtype)[None, None]], attrs, dtype=dtype)
    assert y.dtype == np.dtype(dtype)
    return y[0, 0]


# --- seeds digest §5.3, bit-exact ------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("rows", "want"), [
    ([[4, 6, 1, 3], [0, 8, 12, 9], [2, 3, 16, 100], [1, 46, 74, 27]], [[8, 12], [46, 100]]),  # TV-29 seed 000 L584
    ([[9, 7, 3, 2], [26, 37, 14, 1], [15, 29, 16, 0], [8, 6, 54, 2]], [[37, 14], [29, 54]]),  # TV-30 seed 000 L607
    (TV31, [[35, 63], [9, 10]]),  # TV-31 seed 000 L594-601
    (TV33, [[6, 8], [3, 4]]),  # TV-33 seed 001 L1266-1270
])
def test_max_2x2_stride_2(rows: list, want: list, dtype: str) -> None:
    np.testing.assert_array_equal(pool("max_pool2d", rows, MaxPool2dAttrs((2, 2), (2, 2)), dtype), want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_tv32_overlapping_max(dtype: str) -> None:
    """Seed 000 L617-627: the TV-31 input, 2x2 stride 1 -> [[35,25,63],[22,22,63],[9,8,10]]."""
    got = pool("max_pool2d", TV31, MaxPool2dAttrs((2, 2), (1, 1)), dtype)
    np.testing.assert_array_equal(got, [[35, 25, 63], [22, 22, 63], [9, 8, 10]])


@pytest.mark.parametrize("dtype", DTYPES)
def test_tv34_mean_pool(dtype: str) -> None:
    """Seed 001 L1281-1283: mean pool 2x2 stride 2 -> [[3.25, 5.25], [2, 2]]."""
    got = pool("avg_pool2d", TV33, AvgPool2dAttrs((2, 2), (2, 2)), dtype)
    np.testing.assert_array_equal(got, [[3.25, 5.25], [2, 2]])


def test_tv37_alexnet_pool_shapes() -> None:
    """Seed 001 L2532: AlexNet's overlapping 3x3/2 pools 55 -> 27 -> 13 -> 6; channels untouched (L1716)."""
    b = GraphBuilder("g")
    v = b.input("x", (1, 96, 55, 55))
    sizes = []
    for _ in range(3):
        v = b.apply("max_pool2d", [v], MaxPool2dAttrs((3, 3), (2, 2)))
        sizes.append(v.shape)
    assert sizes == [(1, 96, 27, 27), (1, 96, 13, 13), (1, 96, 6, 6)]
    assert v.type.layout is Layout.NCHW


# --- PyTorch on a grid -----------------------------------------------------------------------------------------

MAX_GRID = [  # (H, W, kernel, stride, pad (ph, pw), dilation, ceil_mode)
    (8, 8, (2, 2), (2, 2), (0, 0), (1, 1), False),
    (9, 11, (3, 3), (2, 2), (1, 1), (1, 1), False),  # overlapping 3x3/2
    (9, 11, (3, 3), (2, 2), (1, 1), (1, 1), True),
    (6, 6, (3, 3), (2, 2), (1, 1), (1, 1), True),  # ceil adds a window
    (5, 5, (2, 2), (2, 2), (1, 1), (1, 1), True),  # ceil window dropped: it would start in the padding
    (10, 7, (3, 2), (1, 3), (1, 0), (2, 1), False),
    (12, 12, (3, 3), (3, 2), (1, 1), (2, 2), True),
    (112, 112, (3, 3), (2, 2), (1, 1), (1, 1), False),  # ResNet stem pool
    (7, 9, (4, 5), (2, 3), (2, 2), (1, 1), True),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", MAX_GRID, ids=str)
def test_max_grid_vs_torch(case: tuple, dtype: type) -> None:
    h, w, k, s, p, d, ceil = case
    x = np.random.default_rng(h * w).standard_normal((2, 3, h, w)).astype(dtype)
    want = F.max_pool2d(torch.from_numpy(x), k, s, p, d, ceil).numpy()
    got = run_op("max_pool2d", [x], MaxPool2dAttrs(k, s, (p[0], p[0], p[1], p[1]), d, ceil), dtype=dtype.__name__)
    np.testing.assert_array_equal(got, want)  # a max is exact


AVG_GRID = [  # (H, W, kernel, stride, pad (ph, pw), ceil_mode, count_include_pad)
    (8, 8, (2, 2), (2, 2), (0, 0), False, True),
    (9, 11, (3, 3), (2, 2), (1, 1), False, True),
    (9, 11, (3, 3), (2, 2), (1, 1), False, False),
    (6, 6, (3, 3), (2, 2), (1, 1), True, True),  # the ceil window is clipped to the padded extent
    (6, 6, (3, 3), (2, 2), (1, 1), True, False),
    (10, 7, (4, 2), (3, 1), (2, 1), True, True),
    (10, 7, (4, 2), (3, 1), (2, 1), True, False),
    (7, 7, (7, 7), (1, 1), (0, 0), False, True),  # MobileNet's "Avg Pool 7x7"
    (13, 5, (5, 3), (4, 2), (2, 0), True, True),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", AVG_GRID, ids=str)
def test_avg_grid_vs_torch(case: tuple, dtype: type) -> None:
    h, w, k, s, p, ceil, cip = case
    x = np.random.default_rng(h * w).standard_normal((2, 3, h, w)).astype(dtype)
    want = F.avg_pool2d(torch.from_numpy(x), k, s, p, ceil, cip).numpy()
    got = run_op("avg_pool2d", [x], AvgPool2dAttrs(k, s, (p[0], p[0], p[1], p[1]), ceil, cip), dtype=dtype.__name__)
    assert rel_error(got, want) <= (TOL_F32_REDUCTION if dtype is np.float32 else TOL_F64)


def test_asymmetric_padding() -> None:
    """Asymmetric pads (Keras 'same' on odd sizes): max ignores the pad, avg divides as documented."""
    x = np.arange(1, 10, dtype=np.float64).reshape(1, 1, 3, 3)
    pad = (0, 1, 0, 1)  # 3 -> 4 -> two 2x2 windows per axis
    np.testing.assert_array_equal(run_op("max_pool2d", [x], MaxPool2dAttrs((2, 2), (2, 2), pad), "float64")[0, 0],
                                  [[5, 6], [8, 9]])
    want_incl = [[(1 + 2 + 4 + 5) / 4, (3 + 6) / 4], [(7 + 8) / 4, 9 / 4]]
    want_real = [[(1 + 2 + 4 + 5) / 4, (3 + 6) / 2], [(7 + 8) / 2, 9 / 1]]
    for cip, want in [(True, want_incl), (False, want_real)]:
        got = run_op("avg_pool2d", [x], AvgPool2dAttrs((2, 2), (2, 2), pad, False, cip), "float64")
        np.testing.assert_array_equal(got[0, 0], want)
    xt = F.pad(torch.from_numpy(x), (1, 2, 0, 1), value=-np.inf)  # also vs torch, pads done by hand
    got = run_op("max_pool2d", [x], MaxPool2dAttrs((3, 4), (1, 2), (0, 1, 1, 2)), "float64")
    assert got.shape == (1, 1, 2, 2)
    np.testing.assert_array_equal(got, F.max_pool2d(xt, (3, 4), (1, 2)).numpy())


# --- hypothesis: cnncc accepts exactly what PyTorch accepts (pads within half the kernel) ----------------------

@st.composite
def pool_configs(draw: st.DrawFn) -> tuple[np.ndarray, tuple, tuple, tuple, tuple, bool, bool]:
    k = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    s = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    p = (draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[1] // 2)))
    d = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    x = rng.standard_normal((draw(st.integers(1, 2)), draw(st.integers(1, 3)), h, w)).astype(np.float32)
    return x, k, s, p, d, draw(st.booleans()), draw(st.booleans())


def _agree(op: str, x: np.ndarray, attrs: object, torch_fn: object) -> None:
    try:
        want, torch_error = torch_fn(), None  # type: ignore[operator]
    except RuntimeError as e:
        want, torch_error = None, e
    try:
        got = run_op(op, [x], attrs, dtype="float32")
    except ShapeError as e:
        event(f"rejected: {e.rule}")
        padding_only = e.rule == "window sees only padding" and want is not None and np.isneginf(want).any()
        assert torch_error is not None or padding_only, f"cnncc rejected a config torch accepts: {e}"
        assume(False)  # both reject it (checked): discarded, so max_examples counts compared configs only
    assert torch_error is None, f"cnncc accepted a config torch rejects: {torch_error}"
    event("accepted")
    assert rel_error(got, want) <= TOL_F32_REDUCTION


@settings(max_examples=60, deadline=None)
@given(pool_configs())
def test_hypothesis_max_vs_torch(config: tuple) -> None:
    x, k, s, p, d, ceil, _ = config
    attrs = MaxPool2dAttrs(k, s, (p[0], p[0], p[1], p[1]), d, ceil)
    _agree("max_pool2d", x, attrs, lambda: F.max_pool2d(torch.from_numpy(x), k, s, p, d, ceil).numpy())


@settings(max_examples=60, deadline=None)
@given(pool_configs())
def test_hypothesis_avg_vs_torch(config: tuple) -> None:
    x, k, s, p, _, ceil, cip = config
    attrs = AvgPool2dAttrs(k, s, (p[0], p[0], p[1], p[1]), ceil, cip)
    _agree("avg_pool2d", x, attrs, lambda: F.avg_pool2d(torch.from_numpy(x), k, s, p, ceil, cip).numpy())


# --- the tie rule ----------------------------------------------------------------------------------------------

def test_tie_first_maximum_in_row_major_order_wins() -> None:
    """Ties go to the first maximum in row-major window order: the cell that gets the gradient later."""
    x = np.array([[5, 5], [5, 1]], dtype=np.float64)[None, None]
    a = MaxPool2dAttrs((2, 2), (2, 2))
    assert run_op("max_pool2d", [x], a, "float64")[0, 0, 0, 0] == 5
    assert max_pool2d_indices(x, a)[0, 0, 0, 0] == 0
    x = np.array([[0, 7], [7, 7]], dtype=np.float64)[None, None]
    assert max_pool2d_indices(x, a)[0, 0, 0, 0] == 1


@pytest.mark.parametrize("case", MAX_GRID, ids=str)
def test_tie_indices_match_torch(case: tuple) -> None:
    """On inputs full of ties (values 0..2), the argmax indices equal PyTorch's return_indices."""
    h, w, k, s, p, d, ceil = case
    x = np.random.default_rng(7).integers(0, 3, (2, 3, h, w)).astype(np.float32)
    _, want = F.max_pool2d(torch.from_numpy(x), k, s, p, d, ceil, return_indices=True)
    got = max_pool2d_indices(x, MaxPool2dAttrs(k, s, (p[0], p[0], p[1], p[1]), d, ceil))
    np.testing.assert_array_equal(got, want.numpy())


# --- global average pooling ------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(2, 3, 7, 7), (1, 5, 1, 1), (3, 4, 8, 13), (1, 64, 56, 56)])
def test_global_avg_pool_vs_torch(shape: tuple, dtype: type) -> None:
    x = np.random.default_rng(3).standard_normal(shape).astype(dtype)
    got = run_op("global_avg_pool", [x], dtype=dtype.__name__)
    assert got.shape == (shape[0], shape[1], 1, 1) and got.dtype == dtype
    want = F.adaptive_avg_pool2d(torch.from_numpy(x), 1).numpy()
    assert rel_error(got, want) <= (TOL_F32_REDUCTION if dtype is np.float32 else TOL_F64)


def test_global_avg_pool_is_the_se_squeeze() -> None:
    """Seed 003 L1264-1266: z_c = 1/(HW) sum u_c(i, j); TV-33's plane averages to 50/16 = 3.125."""
    x = np.asarray(TV33, dtype=np.float32)[None, None]
    assert run_op("global_avg_pool", [x], NoAttrs())[0, 0, 0, 0] == 3.125


# --- errors and counts -----------------------------------------------------------------------------------------

def _message(op: str, shape: tuple, attrs: object) -> str:
    with pytest.raises(ShapeError) as info:
        run_op(op, [np.zeros(shape, np.float32)], attrs)
    return str(info.value)


@pytest.mark.parametrize(("op", "shape", "attrs", "message"), [
    ("max_pool2d", (1, 1, 4, 4), MaxPool2dAttrs((0, 2), (2, 2)),
     "invalid kernel: kernel (0, 2) must be at least 1 in each dimension"),
    ("avg_pool2d", (1, 1, 4, 4), AvgPool2dAttrs((2, 2), (2, 0)),
     "invalid stride: stride (2, 0) must be at least 1 in each dimension"),
    ("max_pool2d", (1, 1, 4, 4), MaxPool2dAttrs((3, 3), (1, 1), (2, 1, 1, 1)),
     "padding must be at most half the kernel: padding (top, bottom, left, right) = (2, 1, 1, 1) with kernel "
     "3x3: top and bottom must be <= 1, left and right <= 1"),
    ("avg_pool2d", (1, 1, 4, 4), AvgPool2dAttrs((2, 4), (1, 1), (0, 0, 0, -1)),
     "negative padding: padding (top, bottom, left, right) = (0, 0, 0, -1) must be >= 0"),
    ("max_pool2d", (1, 1, 2, 5), MaxPool2dAttrs((3, 3), (1, 1)),
     "kernel larger than the padded input: effective kernel 3x3 (kernel 3x3, dilation 1x1) exceeds padded input "
     "2x5 (input 2x5, padding (top, bottom, left, right) = (0, 0, 0, 0))"),
    ("avg_pool2d", (1, 1, 2, 5), AvgPool2dAttrs((4, 3), (2, 1), ceil_mode=True),
     "output size: output 0x3 must be at least 1x1 (effective kernel 4x3, padded input 2x5, stride 2x1, "
     "ceil_mode=True)"),
    ("max_pool2d", (1, 1, 1, 3), MaxPool2dAttrs((2, 1), (1, 1), (1, 1, 0, 0), (2, 1)),
     "window sees only padding: output row 0 reads input rows [-1, 1] but the input has rows 0..0 (kernel 2, "
     "stride 1, dilation 2, padding before 1)"),
    ("max_pool2d", (1, 4, 4), MaxPool2dAttrs((2, 2), (2, 2)),
     "input rank: input must be rank 4 (N, C, H, W), got shape (1, 4, 4)"),
    ("max_pool2d", (1, 1, 4, 4), MaxPool2dAttrs((2, 2), (2, 2), ceil_mode=1),  # type: ignore[arg-type]
     "malformed ceil_mode: ceil_mode must be a bool, got 1"),
    ("avg_pool2d", (1, 1, 4, 4), AvgPool2dAttrs((2, 2), (2, 2), count_include_pad=None),  # type: ignore[arg-type]
     "malformed count_include_pad: count_include_pad must be a bool, got None"),
    ("global_avg_pool", (2, 3), NoAttrs(), "input rank: input must be rank 4 (N, C, H, W), got shape (2, 3)"),
    ("global_avg_pool", (2, 3, 0, 4), NoAttrs(), "empty input: input spatial size 0x4 must be at least 1x1"),
])
def test_errors(op: str, shape: tuple, attrs: object, message: str) -> None:
    assert _message(op, shape, attrs) == f"layer 'layer' ({op}): {message}"


def test_pool_needs_attributes() -> None:
    b = GraphBuilder("g")
    with pytest.raises(Exception, match=re.escape("op 'max_pool2d' needs attributes (MaxPool2dAttrs)")):
        b.apply("max_pool2d", [b.input("x", (1, 1, 4, 4))])


def test_flops() -> None:
    b = GraphBuilder("g")
    x = b.input("x", (2, 3, 8, 8), DType.FLOAT64)
    for op, attrs, want in [("max_pool2d", MaxPool2dAttrs((2, 2), (2, 2)), 2 * 3 * 16 * 3),
                            ("avg_pool2d", AvgPool2dAttrs((2, 2), (2, 2)), 2 * 3 * 16 * 4),
                            ("global_avg_pool", NoAttrs(), 2 * 3 * 64)]:
        y = b.apply(op, [x], attrs)
        assert get_op(op).flops([x.type], [y.type], attrs) == want
        assert get_op(op).macs([x.type], [y.type], attrs) == 0
