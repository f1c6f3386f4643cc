"""conv2d: the seeds' worked examples exactly, PyTorch on an attribute grid and a hypothesis search, exact errors."""

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
from cnncc.ops import get_op
from cnncc.ops.conv2d import Conv2dAttrs
from cnncc.testing import TOL_F32_REDUCTION, TOL_F64, rel_error, run_op

DTYPES = ["float32", "float64"]


def conv(x: list | np.ndarray, w: list | np.ndarray, dtype: str, bias: list | None = None,
         **attrs: object) -> np.ndarray:
    arrays = [np.asarray(x, dtype), np.asarray(w, dtype)] + ([np.asarray(bias, dtype)] if bias is not None else [])
    return run_op("conv2d", arrays, Conv2dAttrs(**attrs), dtype=dtype)  # type: ignore[arg-type]


def plane(rows: list[list[float]]) -> np.ndarray:
    """A single-image, single-channel NCHW array (or a 1x1 filter bank) from a matrix."""
    return np.asarray(rows, dtype=np.float64)[None, None]


# --- seeds digest §5.1 worked examples, bit-exact -------------------------------------------------------------

CURVE_FILTER_7 = [[0, 0, 0, 0, 0, 30, 0], [0, 0, 0, 0, 30, 0, 0]] + [[0, 0, 0, 30, 0, 0, 0]] * 4 + [[0] * 7]
CURVE_FIELD_7 = [[0, 0, 0, 0, 0, 0, 30], [0, 0, 0, 0, 50, 50, 50], [0, 0, 0, 20, 50, 0, 0]] + \
    [[0, 0, 0, 50, 50, 0, 0]] * 4
CURVE_FILTER_8 = [[0, 0, 0, 0, 0, 0, 30, 0], [0, 0, 0, 0, 30, 0, 0, 0]] + [[0, 0, 0, 30, 0, 0, 0, 0]] * 4 + \
    [[0] * 8] * 2
OTHER_FIELD_8 = [[0] * 8, [0, 40, 0, 0, 0, 0, 0, 0], [40, 0, 40, 0, 0, 0, 0, 0], [40, 20, 0, 0, 0, 0, 0, 0],
                 [0, 50, 0, 0, 0, 0, 0, 0], [0, 0, 50, 0, 0, 0, 0, 0], [25, 25, 0, 50, 0, 0, 0, 0],
                 [25, 25, 0, 50, 0, 0, 0, 0]]
BINARY_5 = [[1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1], [0, 0, 1, 1, 0], [0, 1, 1, 0, 0]]
X_FILTER = [[1, 0, 1], [0, 1, 0], [1, 0, 1]]


@pytest.mark.parametrize("dtype", DTYPES)
def test_tv01_curve_detector(dtype: str) -> None:
    """Seed 000 L118-168: (50*30)+(50*30)+(50*30)+(20*30)+(50*30) = 6600."""
    y = conv(plane(CURVE_FIELD_7), plane(CURVE_FILTER_7), dtype)
    assert y.dtype == np.dtype(dtype) and y.shape == (1, 1, 1, 1)
    assert y[0, 0, 0, 0] == 6600


@pytest.mark.parametrize("dtype", DTYPES)
def test_tv03_non_matching_region(dtype: str) -> None:
    """Seed 000 L206-233: the curve detector on a non-matching region gives 0."""
    assert conv(plane(OTHER_FIELD_8), plane(CURVE_FILTER_8), dtype)[0, 0, 0, 0] == 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_tv06_sharpen(dtype: str) -> None:
    """Seed 000 L349-355: sharpen kernel on [[97,122,152],[80,53,98],[128,126,147]] gives -161."""
    y = conv(plane([[97, 122, 152], [80, 53, 98], [128, 126, 147]]), plane([[0, -1, 0], [-1, 5, -1], [0, -1, 0]]),
             dtype)
    assert y[0, 0, 0, 0] == -161


@pytest.mark.parametrize("dtype", DTYPES)
def test_tv07_red_channel(dtype: str) -> None:
    """Seed 000 L371-383: red channel numerator 503; divided by the kernel sum 2 -> 251.5 (no flip)."""
    patch, kernel = plane([[3, 9, 2], [18, 32, 0], [39, 17, 16]]), plane([[-9, -1, 0], [3, 8, -6], [5, 2, 0]])
    assert conv(patch, kernel, dtype)[0, 0, 0, 0] == 503
    assert kernel.sum() == 2
    assert conv(patch, kernel / 2, dtype)[0, 0, 0, 0] == 251.5


@pytest.mark.parametrize("dtype", DTYPES)
def test_tv08_binary_image(dtype: str) -> None:
    """Seed 002 L75-83, seed 001 L560-659: stride 2 -> [[4,4],[2,4]]; stride 1 -> [[4,3,4],[2,4,3],[2,3,4]]."""
    img, filt = plane(BINARY_5), plane(X_FILTER)
    np.testing.assert_array_equal(conv(img, filt, dtype, stride=(2, 2))[0, 0], [[4, 4], [2, 4]])
    np.testing.assert_array_equal(conv(img, filt, dtype)[0, 0], [[4, 3, 4], [2, 4, 3], [2, 3, 4]])
    np.testing.assert_array_equal(conv(img, filt, dtype, bias=[0.5])[0, 0], [[4.5, 3.5, 4.5], [2.5, 4.5, 3.5],
                                                                            [2.5, 3.5, 4.5]])


def test_cross_correlation_not_convolution() -> None:
    """No kernel flip (seed 000 L289-291): an asymmetric kernel picks out the pixel at its own offset."""
    x = np.arange(9, dtype=np.float64).reshape(1, 1, 3, 3)
    w = np.zeros((1, 1, 2, 2))
    w[0, 0, 0, 1] = 1.0  # picks x[i, j + 1]
    np.testing.assert_array_equal(conv(x, w, "float64")[0, 0], [[1, 2], [4, 5]])


def test_multi_channel_and_tv14_receptive_field() -> None:
    """Seed 001 L706-869: the map sums all input planes; TV-14: a 5x5 field on 3 channels = 75 weights + bias."""
    x = np.ones((1, 3, 5, 5))
    y = conv(x, np.ones((2, 3, 5, 5)), "float64", bias=[1.0, -1.0])
    np.testing.assert_array_equal(y.reshape(2), [76, 74])


# --- counts -------------------------------------------------------------------------------------------------------

def _counts(x_shape: tuple[int, ...], w_shape: tuple[int, ...], bias: bool, **attrs: object) -> tuple[int, int]:
    b = GraphBuilder("g")
    ins = [b.input("x", x_shape), b.param("w", w_shape)] + ([b.param("b", (w_shape[0],))] if bias else [])
    y = b.apply("conv2d", ins, Conv2dAttrs(**attrs))  # type: ignore[arg-type]
    op = get_op("conv2d")
    return op.macs([v.type for v in ins], [y.type], y.node.attrs), op.flops([v.type for v in ins], [y.type],
                                                                           y.node.attrs)


def test_tv09_depthwise_separable_macs() -> None:
    """TV-09 (seed 003 L1132-1146): normal 1,228,800 MACs vs depthwise 4,800 + pointwise 49,152."""
    assert _counts((1, 3, 12, 12), (256, 3, 5, 5), False)[0] == 1_228_800
    assert _counts((1, 3, 12, 12), (3, 1, 5, 5), False, groups=3)[0] == 4_800
    assert _counts((1, 3, 8, 8), (256, 3, 1, 1), False) == (49_152, 2 * 49_152)
    assert _counts((2, 3, 8, 8), (256, 3, 1, 1), True) == (2 * 49_152, 4 * 49_152 + 2 * 256 * 64)


# --- PyTorch on a grid of attributes --------------------------------------------------------------------------

def torch_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, a: Conv2dAttrs) -> np.ndarray:
    t, bo, l, r = a.padding
    xt = F.pad(torch.from_numpy(x), (l, r, t, bo))
    bt = None if b is None else torch.from_numpy(b)
    return F.conv2d(xt, torch.from_numpy(w), bt, a.stride, 0, a.dilation, a.groups).numpy()


GRID = [  # (N, C, H, W, K, (R, S), stride, padding, dilation, groups, bias)
    (2, 3, 9, 11, 4, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, True),
    (1, 4, 8, 8, 6, (2, 2), (2, 2), (0, 1, 0, 1), (1, 1), 2, False),
    (2, 6, 10, 7, 6, (3, 3), (1, 2), (1, 1, 1, 1), (1, 1), 6, True),  # depthwise
    (1, 4, 12, 12, 8, (3, 3), (1, 1), (0, 0, 0, 0), (2, 3), 4, True),  # depthwise x2 multiplier, dilation
    (1, 3, 13, 13, 5, (5, 5), (3, 3), (2, 1, 0, 3), (1, 1), 1, True),
    (3, 2, 17, 9, 3, (7, 1), (4, 1), (3, 3, 0, 0), (1, 1), 1, False),
    (1, 3, 227, 227, 4, (11, 11), (4, 4), (0, 0, 0, 0), (1, 1), 1, True),  # AlexNet conv1 geometry
    (1, 8, 7, 7, 16, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, True),  # pointwise
    (1, 6, 6, 6, 9, (3, 2), (2, 3), (1, 2, 2, 1), (2, 1), 3, True),
    (2, 5, 5, 5, 5, (5, 5), (1, 1), (0, 0, 0, 0), (1, 1), 5, False),  # kernel == input
    (1, 64, 14, 14, 32, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, True),  # a longer reduction (576)
]


def _grid_case(case: tuple, dtype: type) -> tuple[list[np.ndarray], Conv2dAttrs]:
    n, c, h, w, k, (r, s), stride, padding, dilation, groups, bias = case
    rng = np.random.default_rng(abs(hash(case)) % 2**32)
    arrays = [rng.standard_normal((n, c, h, w)).astype(dtype),
              rng.standard_normal((k, c // groups, r, s)).astype(dtype)]
    if bias:
        arrays.append(rng.standard_normal(k).astype(dtype))
    return arrays, Conv2dAttrs(stride, padding, dilation, groups)


@pytest.mark.parametrize("case", GRID, ids=lambda c: "x".join(map(str, c[:5])) + f"-g{c[9]}")
def test_grid_vs_torch_float32(case: tuple) -> None:
    arrays, a = _grid_case(case, np.float32)
    want = torch_conv(*arrays[:2], arrays[2] if len(arrays) == 3 else None, a)
    got = run_op("conv2d", arrays, a, dtype="float32")
    assert got.dtype == np.float32
    assert rel_error(got, want) <= TOL_F32_REDUCTION


@pytest.mark.parametrize("case", GRID, ids=lambda c: "x".join(map(str, c[:5])) + f"-g{c[9]}")
def test_grid_vs_torch_float64(case: tuple) -> None:
    arrays, a = _grid_case(case, np.float64)
    want = torch_conv(*arrays[:2], arrays[2] if len(arrays) == 3 else None, a)
    got = run_op("conv2d", arrays, a, dtype="float64")
    assert got.dtype == np.float64
    assert rel_error(got, want) <= TOL_F64


# --- hypothesis: cnncc accepts exactly what PyTorch accepts, and agrees on it ----------------------------------

def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@st.composite
def conv_configs(draw: st.DrawFn) -> tuple[list[np.ndarray], Conv2dAttrs]:
    """Odd sizes and channel counts, every attribute; one config in four breaks a channel/group rule on purpose
    (the kernel-larger-than-input rule breaks by itself often enough)."""
    broken = draw(st.sampled_from(["none"] * 9 + ["groups", "out", "in"]))
    c = draw(st.integers(1, 7))
    groups = draw(st.sampled_from([g for g in range(2, 9) if c % g]) if broken == "groups" and c > 1
                  else st.sampled_from(_divisors(c)))
    k = groups * draw(st.integers(1, 3)) + (1 if broken == "out" and groups > 1 else 0)
    cin = max(c // groups, 1) + (1 if broken == "in" else 0)
    r, s = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    h, w = draw(st.integers(1, 17)), draw(st.integers(1, 17))
    stride = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = tuple(draw(st.integers(0, 3)) for _ in range(4))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    arrays = [rng.standard_normal((draw(st.integers(1, 2)), c, h, w)).astype(np.float32),
              rng.standard_normal((k, cin, r, s)).astype(np.float32)]
    if draw(st.booleans()):
        arrays.append(rng.standard_normal(k).astype(np.float32))
    return arrays, Conv2dAttrs(stride, padding, dilation, groups)  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(conv_configs())
def test_hypothesis_vs_torch(config: tuple[list[np.ndarray], Conv2dAttrs]) -> None:
    arrays, a = config
    try:
        want, torch_error = torch_conv(*arrays[:2], arrays[2] if len(arrays) == 3 else None, a), None
    except RuntimeError as e:
        want, torch_error = None, e
    try:
        got = run_op("conv2d", arrays, a, dtype="float32")
    except ShapeError as e:
        event(f"rejected: {e.rule}")
        assert torch_error is not None or want.size == 0, f"cnncc rejected a config torch accepts: {e}"
        assume(False)  # both reject it (checked): discarded, so max_examples counts compared configs only
    assert torch_error is None, f"cnncc accepted a config torch rejects: {torch_error}"
    event("accepted")
    assert got.shape == want.shape
    assert rel_error(got, want) <= TOL_F32_REDUCTION


# --- errors: the rule and the values ---------------------------------------------------------------------------

def _error(x_shape: tuple, w_shape: tuple, bias_shape: tuple | None = None, **attrs: object) -> str:
    arrays = [np.zeros(x_shape, np.float32), np.zeros(w_shape, np.float32)]
    arrays += [np.zeros(bias_shape, np.float32)] if bias_shape is not None else []
    with pytest.raises(ShapeError) as info:
        run_op("conv2d", arrays, Conv2dAttrs(**attrs))  # type: ignore[arg-type]
    return str(info.value)


def test_mismatched_channels_message() -> None:
    with pytest.raises(ShapeError, match=re.escape(
            "layer 'layer' (conv2d): mismatched channels: input has 3 channels but weight (4, 2, 3, 3) with "
            "groups=1 expects 2 (weight in-channels 2 x groups 1)")):
        run_op("conv2d", [np.zeros((1, 3, 5, 5)), np.zeros((4, 2, 3, 3))], Conv2dAttrs())
    assert _error((1, 4, 5, 5), (4, 1, 3, 3), groups=2) == (
        "layer 'layer' (conv2d): mismatched channels: input has 4 channels but weight (4, 1, 3, 3) with groups=2 "
        "expects 2 (weight in-channels 1 x groups 2)")


def test_kernel_larger_than_padded_input_message() -> None:
    with pytest.raises(ShapeError, match=re.escape(
            "layer 'layer' (conv2d): kernel larger than the padded input: effective kernel 7x7 (kernel 3x3, "
            "dilation 3x3) exceeds padded input 6x4 (input 4x4, padding (top, bottom, left, right) = "
            "(1, 1, 0, 0))")):
        run_op("conv2d", [np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 3, 3))],
               Conv2dAttrs(padding=(1, 1, 0, 0), dilation=(3, 3)))
    assert "effective kernel 5x1 (kernel 5x1, dilation 1x1) exceeds padded input 4x4" in \
        _error((1, 1, 4, 4), (1, 1, 5, 1))


@pytest.mark.parametrize(("attrs", "message"), [
    ({"stride": (0, 1)}, "invalid stride: stride (0, 1) must be at least 1 in each dimension"),
    ({"stride": (2, -1)}, "invalid stride: stride (2, -1) must be at least 1 in each dimension"),
    ({"dilation": (1, 0)}, "invalid dilation: dilation (1, 0) must be at least 1 in each dimension"),
    ({"groups": 0}, "invalid groups: groups 0 must be at least 1"),
    ({"padding": (0, -1, 0, 0)}, "negative padding: padding (top, bottom, left, right) = (0, -1, 0, 0) must be >= 0"),
    ({"padding": (1, 1)}, "malformed padding: padding must be a tuple of 4 ints (top, bottom, left, right), "
                          "got (1, 1)"),
    ({"stride": [1, 1]}, "malformed stride: stride must be a tuple of 2 ints (height, width), got [1, 1]"),
    ({"groups": 1.0}, "malformed groups: groups must be an int, got 1.0"),
])
def test_attribute_errors(attrs: dict, message: str) -> None:
    assert _error((1, 2, 5, 5), (2, 2, 3, 3), **attrs) == f"layer 'layer' (conv2d): {message}"


@pytest.mark.parametrize(("x", "w", "b", "groups", "message"), [
    ((1, 2, 5), (2, 2, 3, 3), None, 1, "input rank: input must be rank 4 (N, C, H, W), got shape (1, 2, 5)"),
    ((1, 2, 5, 5), (2, 2, 3), None, 1, "weight rank: weight must be rank 4 (K, C/groups, R, S), got shape (2, 2, 3)"),
    ((1, 4, 5, 5), (6, 1, 3, 3), None, 4, "output channels not divisible by groups: weight (6, 1, 3, 3) has 6 "
                                          "output channels, which groups=4 does not divide"),
    ((1, 6, 5, 5), (4, 1, 3, 3), None, 4, "input channels not divisible by groups: input (1, 6, 5, 5) has 6 "
                                          "channels, which groups=4 does not divide"),
    ((1, 2, 5, 5), (3, 2, 3, 3), (2,), 1, "bias shape: bias must have shape (3,) (one per output channel), got (2,)"),
    ((1, 2, 5, 5), (3, 2, 0, 3), None, 1, "empty weight: every dimension of weight (3, 2, 0, 3) must be at least 1"),
    ((1, 2, 0, 5), (3, 2, 1, 1), None, 1, "empty input: input spatial size 0x5 must be at least 1x1"),
])
def test_shape_errors(x: tuple, w: tuple, b: tuple | None, groups: int, message: str) -> None:
    assert _error(x, w, b, groups=groups) == f"layer 'layer' (conv2d): {message}"


def test_dtype_and_layout_errors() -> None:
    b = GraphBuilder("g")
    x, w = b.input("x", (1, 2, 5, 5)), b.param("w", (2, 2, 3, 3), DType.FLOAT64)
    with pytest.raises(ShapeError, match=re.escape("(conv2d): mismatched dtypes: input is float32 but weight is "
                                                   "float64")):
        b.apply("conv2d", [x, w], Conv2dAttrs(), layer="c1")
    xl = b.input("xl", (1, 5, 5, 2), layout=Layout.NHWC)
    with pytest.raises(ShapeError, match=re.escape("layer 'c2' (conv2d): input layout: input must be NCHW, got NHWC")):
        b.apply("conv2d", [xl, b.param("w2", (2, 5, 3, 3))], Conv2dAttrs(), layer="c2")
    xi = b.input("xi", (1, 2, 5, 5), DType.INT64)
    with pytest.raises(ShapeError, match="input must be float32 or float64, got int64"):
        b.apply("conv2d", [xi, b.param("w3", (2, 2, 3, 3), DType.INT64)], Conv2dAttrs(), layer="c3")


def test_output_type_is_nchw() -> None:
    b = GraphBuilder("g")
    y = b.apply("conv2d", [b.input("x", (2, 3, 9, 9), DType.FLOAT64), b.param("w", (8, 3, 3, 3), DType.FLOAT64)],
                Conv2dAttrs(stride=(2, 2), padding=(0, 1, 1, 0)))
    assert (y.shape, y.dtype, y.type.layout) == ((2, 8, 4, 4), DType.FLOAT64, Layout.NCHW)
    assert get_op("conv2d").algorithms == ("direct", "depthwise", "im2col", "winograd2", "winograd4", "winograd6",
                                           "fft8", "fft16")  # cnncc.convalgo.ALGORITHMS
