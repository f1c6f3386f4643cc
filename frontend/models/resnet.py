"""ResNet-18 and ResNet-50 (He et al. 2015; seed 003 L1042-1054 table; seed 001 L2671-2685: batch norm after every
convolution, identity shortcuts, 1x1 projection shortcuts where the shape changes).

Layer names are those of torchvision's ResNet (``layer2.0.downsample.0`` ...), so its state_dict loads as is.
ResNet-50 puts the stride on the 3x3 convolution of the bottleneck (torchvision's "v1.5"): 25,557,032 parameters and
4.09 G multiply-accumulates at 224x224, the figures of the seed's table (4.1x10^9 "FLOPs" are MACs).
"""

from __future__ import annotations

import cnncc.frontend as nn
from cnncc.frontend.trace import SymbolicTensor


def conv_bn(x: SymbolicTensor, width: int, k: int, stride: int, conv: str, bn: str,
            relu: bool) -> SymbolicTensor:
    y = nn.Conv2d(width, k, stride=stride, padding=k // 2, bias=False, name=conv)(x)
    y = nn.BatchNorm(name=bn)(y)
    return nn.ReLU(name=f"{bn}.relu")(y) if relu else y


def shortcut(x: SymbolicTensor, width: int, stride: int, name: str) -> SymbolicTensor:
    if stride == 1 and x.shape[1] == width:
        return x
    return conv_bn(x, width, 1, stride, f"{name}.downsample.0", f"{name}.downsample.1", relu=False)


def basic_block(x: SymbolicTensor, width: int, stride: int, name: str) -> SymbolicTensor:
    y = conv_bn(x, width, 3, stride, f"{name}.conv1", f"{name}.bn1", relu=True)
    y = conv_bn(y, width, 3, 1, f"{name}.conv2", f"{name}.bn2", relu=False)
    y = nn.Add(name=f"{name}.add")([y, shortcut(x, width, stride, name)])
    return nn.ReLU(name=f"{name}.relu")(y)


def bottleneck(x: SymbolicTensor, width: int, stride: int, name: str) -> SymbolicTensor:
    y = conv_bn(x, width, 1, 1, f"{name}.conv1", f"{name}.bn1", relu=True)
    y = conv_bn(y, width, 3, stride, f"{name}.conv2", f"{name}.bn2", relu=True)
    y = conv_bn(y, width * 4, 1, 1, f"{name}.conv3", f"{name}.bn3", relu=False)
    y = nn.Add(name=f"{name}.add")([y, shortcut(x, width * 4, stride, name)])
    return nn.ReLU(name=f"{name}.relu")(y)


def resnet(depth: int, num_classes: int = 1000, seed: int = 0) -> nn.Model:
    blocks, block = {18: ((2, 2, 2, 2), basic_block), 50: ((3, 4, 6, 3), bottleneck)}[depth]
    x = nn.Input((3, 224, 224), seed=seed)
    y = conv_bn(x, 64, 7, 2, "conv1", "bn1", relu=True)
    y = nn.MaxPool2d(3, 2, padding=1, name="maxpool")(y)
    for stage, (count, width) in enumerate(zip(blocks, (64, 128, 256, 512), strict=True), start=1):
        for i in range(count):
            stride = 2 if stage > 1 and i == 0 else 1
            y = block(y, width, stride, f"layer{stage}.{i}")
    y = nn.GlobalAvgPool2d(name="avgpool")(y)
    y = nn.Flatten(name="flatten")(y)
    y = nn.Linear(num_classes, name="fc")(y)
    return nn.Model(x, y, name=f"resnet{depth}")


def resnet18(num_classes: int = 1000, seed: int = 0) -> nn.Model:
    return resnet(18, num_classes, seed)


def resnet50(num_classes: int = 1000, seed: int = 0) -> nn.Model:
    return resnet(50, num_classes, seed)
