"""The seeds' parameter, connection and operation counts (SEEDS-DIGEST.md §5.5), computed by cnncc's counters."""

from __future__ import annotations

import cnncc.frontend as nn


def conv_macs(c_in: int, c_out: int, k: int, size: int = 1, groups: int = 1) -> int:
    """MACs of one 'same' convolution on a size x size input."""
    m = nn.Sequential([nn.Conv2d(c_out, k, padding="same", groups=groups, bias=False)],
                      input_shape=(c_in, size, size))
    return m.macs()


def test_tv51_bottleneck_operation_counts() -> None:
    """Seed 003 L1017-1023: 256x256x3x3 ~ 600K vs the bottleneck's ~16K + ~36K + ~16K ~ 70K (per output pixel)."""
    assert conv_macs(256, 256, 3) == 589_824
    parts = conv_macs(256, 64, 1), conv_macs(64, 64, 3), conv_macs(64, 256, 1)
    assert parts == (16_384, 36_864, 16_384) and sum(parts) == 69_632


def test_tv41_fully_connected_vs_shared_weights() -> None:
    """Seed 002 L61-73: 9 features from a 5x5 image: fully connected 225 weights, shared 3x3 filter 9 weights."""
    fc = nn.Sequential([nn.Flatten(), nn.Linear(9, bias=False)], input_shape=(1, 5, 5))
    shared = nn.Sequential([nn.Conv2d(1, 3, bias=False)], input_shape=(1, 5, 5))
    assert fc.num_params() == 225 and shared.num_params() == 9
    assert shared.graph().outputs[0].shape == (1, 1, 3, 3)  # the 9 features


def test_tv46_layer_parameter_formula() -> None:
    """Seed 001 L2112-2127: a conv layer has K_J (K_{J-1} L_J^2 + 1) parameters."""
    for k_prev, k, l in ((3, 96, 11), (1, 6, 5), (6, 16, 5), (64, 128, 3)):
        m = nn.Sequential([nn.Conv2d(k, l)], input_shape=(k_prev, 32, 32))
        assert m.num_params() == k * (k_prev * l * l + 1)


def test_tv09_depthwise_separable_multiplications() -> None:
    """Seed 003 L1132-1146: 12x12x3 input, 5x5 kernels, 8x8 output: 256 full kernels vs depthwise + pointwise."""
    full = nn.Sequential([nn.Conv2d(256, 5, bias=False)], input_shape=(3, 12, 12))
    separable = nn.Sequential([nn.Conv2d(3, 5, groups=3, bias=False), nn.Conv2d(256, 1, bias=False)],
                              input_shape=(3, 12, 12))
    assert full.macs() == 1_228_800
    assert separable.macs() == 4_800 + 49_152


def test_tv42_locally_connected_counts() -> None:
    """Seed 002 L95-155: a 1000x1000 image scanned by one shared 10x10 filter has 10^2 weights (vs 10^12 dense)."""
    shared = nn.Sequential([nn.Conv2d(1, 10, bias=False)], input_shape=(1, 1000, 1000))
    assert shared.num_params() == 10**2
    assert shared.graph().outputs[0].shape == (1, 1, 991, 991)
