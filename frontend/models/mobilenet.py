"""MobileNetV2 (Sandler et al. 2018; seed 003 L1149-1176 tables): inverted residual bottlenecks with depthwise 3x3
convolutions and ReLU6, linear 1x1 projections, residual adds where stride is 1 and widths match.

(t, c, n, s) rows = expansion, output channels, repeats, stride of the first repeat (the seed does not explain them).
Layer names are torchvision's (``features.3.conv.1.0``), so its state_dict loads as is. 3,504,872 parameters.
"""

from __future__ import annotations

import cnncc.frontend as nn
from cnncc.frontend.trace import SymbolicTensor

SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)


def conv_bn_relu6(x: SymbolicTensor, width: int, k: int, stride: int, groups: int, name: str) -> SymbolicTensor:
    y = nn.Conv2d(width, k, stride=stride, padding=k // 2, groups=groups, bias=False, name=f"{name}.0")(x)
    y = nn.BatchNorm(name=f"{name}.1")(y)
    return nn.ReLU6(name=f"{name}.2")(y)


def inverted_residual(x: SymbolicTensor, out: int, stride: int, t: int, name: str) -> SymbolicTensor:
    c_in = x.shape[1]
    hidden = c_in * t
    y, k = x, 0
    if t != 1:
        y = conv_bn_relu6(y, hidden, 1, 1, 1, f"{name}.conv.0")
        k = 1
    y = conv_bn_relu6(y, hidden, 3, stride, hidden, f"{name}.conv.{k}")
    y = nn.Conv2d(out, 1, bias=False, name=f"{name}.conv.{k + 1}")(y)
    y = nn.BatchNorm(name=f"{name}.conv.{k + 2}")(y)
    if stride == 1 and c_in == out:
        y = nn.Add(name=f"{name}.add")([x, y])
    return y


def mobilenet_v2(num_classes: int = 1000, seed: int = 0) -> nn.Model:
    x = nn.Input((3, 224, 224), seed=seed)
    y = conv_bn_relu6(x, 32, 3, 2, 1, "features.0")
    index = 1
    for t, c, n, s in SETTINGS:
        for i in range(n):
            y = inverted_residual(y, c, s if i == 0 else 1, t, f"features.{index}")
            index += 1
    y = conv_bn_relu6(y, 1280, 1, 1, 1, f"features.{index}")
    y = nn.GlobalAvgPool2d(name="avgpool")(y)
    y = nn.Flatten(name="flatten")(y)
    y = nn.Dropout(0.2, name="classifier.0")(y)
    y = nn.Linear(num_classes, name="classifier.1")(y)
    return nn.Model(x, y, name="mobilenet_v2")
