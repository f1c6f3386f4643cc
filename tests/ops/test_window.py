"""Sliding-window geometry: output sizes (seeds digest §5.2 / §5.3) and padding resolution ('same', tuples)."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from cnncc.errors import ShapeError
from cnncc.ops.registry import Where
from cnncc.ops.window import output_size, resolve_padding

W = Where("layer", "conv2d")


def test_tv13_288_k4_s2() -> None:
    """Seed 000 L648-650: (288 - 4 + 2*0)/2 + 1 = 143."""
    assert output_size(288, 4, 2, 0, 0) == 143


def test_tv10_5x5_k3_p1_s2_twice() -> None:
    """Seed 000 L402-403: 5x5, k3, p1, s2 -> 3x3, and again -> 2x2."""
    assert output_size(5, 3, 2, 1, 1) == 3
    assert output_size(3, 3, 2, 1, 1) == 2


def test_tv11_32_pad2_k5() -> None:
    """Seed 000 L437: 32x32 with two borders of zeros, 5x5 filters, stride 1 -> 32x32."""
    assert output_size(32, 5, 1, 2, 2) == 32


def test_tv23_alexnet_chain() -> None:
    """Seed 003 L71-80: 227 -> 55 -> 27 -> 27 -> 13 -> 13 -> 6."""
    chain = [(11, 4, 0), (3, 2, 0), (5, 1, 2), (3, 2, 0), (3, 1, 1), (3, 2, 0)]
    sizes = [227]
    for k, s, p in chain:
        sizes.append(output_size(sizes[-1], k, s, p, p))
    assert sizes == [227, 55, 27, 27, 13, 13, 6]


def test_lenet_chain() -> None:
    """TV-20 (seed 001 L2469-2485): 32 -> conv5 -> 28 -> pool2/2 -> 14 -> conv5 -> 10 -> pool2/2 -> 5."""
    sizes = [32]
    for k, s in [(5, 1), (2, 2), (5, 1), (2, 2)]:
        sizes.append(output_size(sizes[-1], k, s, 0, 0))
    assert sizes == [32, 28, 14, 10, 5]


def test_keras_same_conv_keeps_size() -> None:
    """Seed 000 L979: Keras conv 'same' (k5, s1) keeps 28x28: pad 2 on every side."""
    pad = resolve_padding("same", (5, 5), (1, 1), (1, 1), (28, 28), W)
    assert pad == (2, 2, 2, 2)
    assert output_size(28, 5, 1, pad[0], pad[1]) == 28


@pytest.mark.parametrize(("n", "want_pad", "want_out"), [(28, (0, 0), 14), (14, (0, 0), 7), (7, (0, 1), 4)])
def test_keras_same_pool(n: int, want_pad: tuple[int, int], want_out: int) -> None:
    """TV-21/TV-37 (seed 000 L971, L1004): pool 'same' 2/2 halves 28 -> 14 -> 7; odd 7 -> 4 pads the bottom."""
    pad = resolve_padding("same", (2, 2), (2, 2), (1, 1), (n, n), W)
    assert pad == (*want_pad, *want_pad)
    assert output_size(n, 2, 2, *want_pad) == want_out


def test_same_even_kernel_is_asymmetric() -> None:
    """Seed 001 L1012-1019: PL + PR = M - 1, |PL - PR| <= 1; Keras puts the extra pad at the bottom/right."""
    assert resolve_padding("same", (4, 2), (1, 1), (1, 1), (10, 9), W) == (1, 2, 0, 1)
    assert resolve_padding("SAME", (3, 3), (1, 1), (2, 2), (9, 9), W) == (2, 2, 2, 2)  # dilated: eff. kernel 5
    assert resolve_padding("same", (3, 3), (2, 2), (1, 1), (6, 6), W) == (0, 1, 0, 1)  # out 3: total 1


def test_same_matches_tensorflow_output() -> None:
    """'same' gives ceil(n / s) outputs for a grid of sizes, kernels, strides and dilations."""
    for n in range(1, 12):
        for k in range(1, 6):
            for s in range(1, 4):
                for d in range(1, 3):
                    t, b, _, _ = resolve_padding("same", (k, 1), (s, 1), (d, 1), (n, 1), W)
                    assert abs(t - b) <= 1 and b >= t
                    assert output_size(n, k, s, t, b, d) == -(-n // s)


def test_explicit_padding_forms() -> None:
    assert resolve_padding("valid", (3, 3), (1, 1), (1, 1), (5, 5), W) == (0, 0, 0, 0)
    assert resolve_padding(2, (3, 3), (1, 1), (1, 1), (5, 5), W) == (2, 2, 2, 2)
    assert resolve_padding((1, 2), (3, 3), (1, 1), (1, 1), (5, 5), W) == (1, 1, 2, 2)
    assert resolve_padding([0, 1, 2, 3], (3, 3), (1, 1), (1, 1), (5, 5), W) == (0, 1, 2, 3)


@pytest.mark.parametrize(("spec", "message"), [
    (-1, "negative padding: padding (top, bottom, left, right) = (-1, -1, -1, -1) must be >= 0"),
    ((1, -2), "negative padding: padding (top, bottom, left, right) = (1, 1, -2, -2) must be >= 0"),
    ((1, 2, 3), "invalid padding: padding must be an int, (ph, pw), (top, bottom, left, right), 'valid' or "
                "'same', got (1, 2, 3)"),
    ("full", "invalid padding: unknown padding mode 'full'; expected 'valid', 'same', an int, (ph, pw) or "
             "(top, bottom, left, right)"),
    (1.5, "invalid padding: padding must be an int, (ph, pw), (top, bottom, left, right), 'valid' or 'same', "
          "got 1.5"),
    (True, "invalid padding: padding must be an int, (ph, pw), (top, bottom, left, right), 'valid' or 'same', "
           "got True"),
])
def test_bad_padding_specs(spec: object, message: str) -> None:
    with pytest.raises(ShapeError, match=re.escape(f"layer 'layer' (conv2d): {message}")):
        resolve_padding(spec, (3, 3), (1, 1), (1, 1), (5, 5), W)


def test_same_with_zero_stride_is_an_error() -> None:
    with pytest.raises(ShapeError, match=re.escape("invalid stride: stride (0, 1) must be at least 1")):
        resolve_padding("same", (3, 3), (0, 1), (1, 1), (5, 5), W)


def test_ceil_vs_floor() -> None:
    """Seed 000 L408 writes ceil; floor is the default. n=6, k=3, p=1, s=2: floor 3, ceil 4 (as PyTorch)."""
    assert output_size(6, 3, 2, 1, 1) == 3
    assert output_size(6, 3, 2, 1, 1, ceil_mode=True) == 4
    assert output_size(28, 5, 2, 0, 0) == 12 and output_size(28, 5, 2, 0, 0, ceil_mode=True) == 13
    x = torch.zeros(1, 1, 6, 6)
    assert F.max_pool2d(x, 3, 2, 1).shape[-1] == 3
    assert F.max_pool2d(x, 3, 2, 1, ceil_mode=True).shape[-1] == 4


def test_ceil_mode_drops_a_window_starting_in_the_padding() -> None:
    """PyTorch's rule: the last window must start inside the input or its top/left padding."""
    # n=5, k=2, s=2, p=1: ceil((5+2-2)/2)+1 = 4, but window 3 starts at 6 - 1 = 5 >= n: dropped.
    assert output_size(5, 2, 2, 1, 1, ceil_mode=True) == 3
    assert F.max_pool2d(torch.zeros(1, 1, 5, 5), 2, 2, 1, ceil_mode=True).shape[-1] == 3


def test_output_size_matches_torch_grid() -> None:
    """floor and ceil sizes agree with torch's pooling for every valid small configuration."""
    for n in range(1, 10):
        for k in range(1, 5):
            for s in range(1, 4):
                for p in range(0, k // 2 + 1):
                    for d in (1, 2):
                        for ceil in (False, True):
                            ours = output_size(n, k, s, p, p, d, ceil)
                            if n + 2 * p < d * (k - 1) + 1:
                                continue
                            got = F.max_pool2d(torch.zeros(1, 1, n, 1), (k, 1), (s, 1), (p, 0), (d, 1), ceil)
                            assert got.shape[2] == ours, (n, k, s, p, d, ceil)
