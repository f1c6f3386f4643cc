"""GoogLeNet (Inception v1; Szegedy et al. 2014, Table 1), as the seeds describe it (seed 003 L876-903).

Nine inception modules, each four branches concatenated along channels: 1x1; 1x1 -> 3x3; 1x1 -> 5x5;
3x3/1 max pool -> 1x1. Every convolution is followed by ReLU; max pools 3x3/2 use ceil_mode as in the reference
implementation (112 -> 56 -> 28 -> 14 -> 7); global average pooling, dropout 0.4 and a 1000-way classifier.
Left out: local response normalisation (seed 001: "unnecessary") and the two auxiliary classifiers, which only
serve training (weight 0.3, seed 003 L898). Logits out.
"""

from __future__ import annotations

import cnncc.frontend as nn
from cnncc.frontend.trace import SymbolicTensor

# (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj) per module, from the paper's Table 1.
MODULES: dict[str, tuple[int, int, int, int, int, int]] = {
    "inception3a": (64, 96, 128, 16, 32, 32), "inception3b": (128, 128, 192, 32, 96, 64),
    "inception4a": (192, 96, 208, 16, 48, 64), "inception4b": (160, 112, 224, 24, 64, 64),
    "inception4c": (128, 128, 256, 24, 64, 64), "inception4d": (112, 144, 288, 32, 64, 64),
    "inception4e": (256, 160, 320, 32, 128, 128), "inception5a": (256, 160, 320, 32, 128, 128),
    "inception5b": (384, 192, 384, 48, 128, 128),
}


def inception(x: SymbolicTensor, name: str, widths: tuple[int, int, int, int, int, int]) -> SymbolicTensor:
    c1, r3, c3, r5, c5, pp = widths
    b1 = nn.Conv2d(c1, 1, activation="relu", name=f"{name}.branch1")(x)
    b2 = nn.Conv2d(r3, 1, activation="relu", name=f"{name}.branch2_reduce")(x)
    b2 = nn.Conv2d(c3, 3, padding=1, activation="relu", name=f"{name}.branch2")(b2)
    b3 = nn.Conv2d(r5, 1, activation="relu", name=f"{name}.branch3_reduce")(x)
    b3 = nn.Conv2d(c5, 5, padding=2, activation="relu", name=f"{name}.branch3")(b3)
    b4 = nn.MaxPool2d(3, 1, padding=1, name=f"{name}.branch4_pool")(x)
    b4 = nn.Conv2d(pp, 1, activation="relu", name=f"{name}.branch4")(b4)
    return nn.Concat(axis=1, name=f"{name}.concat")([b1, b2, b3, b4])


def googlenet(num_classes: int = 1000, seed: int = 0) -> nn.Model:
    x = nn.Input((3, 224, 224), seed=seed)
    y = nn.Conv2d(64, 7, stride=2, padding=3, activation="relu", name="conv1")(x)
    y = nn.MaxPool2d(3, 2, ceil_mode=True, name="pool1")(y)
    y = nn.Conv2d(64, 1, activation="relu", name="conv2_reduce")(y)
    y = nn.Conv2d(192, 3, padding=1, activation="relu", name="conv2")(y)
    y = nn.MaxPool2d(3, 2, ceil_mode=True, name="pool2")(y)
    for name, widths in MODULES.items():
        y = inception(y, name, widths)
        if name in ("inception3b", "inception4e"):
            y = nn.MaxPool2d(3, 2, ceil_mode=True, name=f"pool{name[-2]}")(y)
    y = nn.GlobalAvgPool2d(name="avgpool")(y)
    y = nn.Flatten(name="flatten")(y)
    y = nn.Dropout(0.4, name="dropout")(y)
    y = nn.Linear(num_classes, name="fc")(y)
    return nn.Model(x, y, name="googlenet")
