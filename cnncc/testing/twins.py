"""PyTorch definitions ("twins") of every zoo model, for tests and benchmarks (needs torch: the test extra).

Each twin's ``state_dict`` keys are exactly the cnncc model's parameter names, so weights move both ways without a
mapping: ``twin.load_state_dict({k: torch.from_numpy(v) for k, v in model.params.items()})``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn

from cnncc.frontend.models.googlenet import MODULES as GOOGLENET_MODULES
from cnncc.frontend.models.mobilenet import SETTINGS as MOBILENET_SETTINGS


def named(*layers: tuple[str, nn.Module]) -> nn.Sequential:
    """An nn.Sequential whose children carry the given names (so keys are ``conv1.weight``, not ``0.weight``)."""
    return nn.Sequential(OrderedDict(layers))


class Permute(nn.Module):
    def __init__(self, *perm: int) -> None:
        super().__init__()
        self.perm = perm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(*self.perm)


def twin_lenet5() -> nn.Module:
    return named(("conv1", nn.Conv2d(1, 6, 5)), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2, 2)),
                 ("conv2", nn.Conv2d(6, 16, 5)), ("relu2", nn.ReLU()), ("pool2", nn.MaxPool2d(2, 2)),
                 ("flatten", nn.Flatten()),
                 ("fc1", nn.Linear(400, 120)), ("relu3", nn.ReLU()),
                 ("fc2", nn.Linear(120, 84)), ("relu4", nn.ReLU()),
                 ("fc3", nn.Linear(84, 10)))


def twin_lenet() -> nn.Module:
    """Seed 003's PyTorch LeNet(numChannels=1, classes=10)."""
    return named(("conv1", nn.Conv2d(1, 20, 5)), ("relu1", nn.ReLU()), ("maxpool1", nn.MaxPool2d(2, 2)),
                 ("conv2", nn.Conv2d(20, 50, 5)), ("relu2", nn.ReLU()), ("maxpool2", nn.MaxPool2d(2, 2)),
                 ("flatten", nn.Flatten()),
                 ("fc1", nn.Linear(800, 500)), ("relu3", nn.ReLU()),
                 ("fc2", nn.Linear(500, 10)), ("logSoftmax", nn.LogSoftmax(dim=1)))


def twin_keras_mnist() -> nn.Module:
    """Keras 'same': 5x5 stride-1 conv pads 2 each side; 2x2/2 pools on 28 and 14 need no padding."""
    return named(("conv1", nn.Conv2d(1, 32, 5, padding=2)), ("act1", nn.ReLU()), ("pool1", nn.MaxPool2d(2, 2)),
                 ("conv2", nn.Conv2d(32, 64, 5, padding=2)), ("act2", nn.ReLU()), ("pool2", nn.MaxPool2d(2, 2)),
                 ("flatten", nn.Flatten()),
                 ("dense1", nn.Linear(64 * 7 * 7, 1024)), ("act3", nn.ReLU()),
                 ("dense2", nn.Linear(1024, 10)), ("softmax", nn.Softmax(dim=1)))


def twin_keras_sequential() -> nn.Module:
    """Takes NHWC (N, 28, 28, 1) like the cnncc model, and permutes to NCHW first."""
    return named(("to_nchw", Permute(0, 3, 1, 2)),
                 ("conv1", nn.Conv2d(1, 64, 3)), ("relu1", nn.ReLU()),
                 ("conv2", nn.Conv2d(64, 32, 3)), ("relu2", nn.ReLU()),
                 ("flatten", nn.Flatten()),
                 ("dense", nn.Linear(32 * 24 * 24, 10)), ("softmax", nn.Softmax(dim=1)))


def twin_alexnet() -> nn.Module:
    return named(("conv1", nn.Conv2d(3, 96, 11, stride=4)), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(3, 2)),
                 ("conv2", nn.Conv2d(96, 256, 5, padding=2)), ("relu2", nn.ReLU()), ("pool2", nn.MaxPool2d(3, 2)),
                 ("conv3", nn.Conv2d(256, 384, 3, padding=1)), ("relu3", nn.ReLU()),
                 ("conv4", nn.Conv2d(384, 384, 3, padding=1)), ("relu4", nn.ReLU()),
                 ("conv5", nn.Conv2d(384, 256, 3, padding=1)), ("relu5", nn.ReLU()), ("pool5", nn.MaxPool2d(3, 2)),
                 ("flatten", nn.Flatten()),
                 ("drop6", nn.Dropout(0.5)), ("fc6", nn.Linear(256 * 6 * 6, 4096)), ("relu6", nn.ReLU()),
                 ("drop7", nn.Dropout(0.5)), ("fc7", nn.Linear(4096, 4096)), ("relu7", nn.ReLU()),
                 ("fc8", nn.Linear(4096, 1000)))


VGG_CONFIGS = {
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
}


def twin_vgg(config: str) -> nn.Module:
    layers: list[tuple[str, nn.Module]] = []
    c_in = 3
    for block, widths in enumerate(VGG_CONFIGS[config], start=1):
        for i, width in enumerate(widths, start=1):
            layers += [(f"conv{block}_{i}", nn.Conv2d(c_in, width, 3, padding=1)), (f"relu{block}_{i}", nn.ReLU())]
            c_in = width
        layers.append((f"pool{block}", nn.MaxPool2d(2, 2)))
    layers += [("flatten", nn.Flatten()),
               ("fc6", nn.Linear(512 * 7 * 7, 4096)), ("relu6", nn.ReLU()), ("drop6", nn.Dropout(0.5)),
               ("fc7", nn.Linear(4096, 4096)), ("relu7", nn.ReLU()), ("drop7", nn.Dropout(0.5)),
               ("fc8", nn.Linear(4096, 1000))]
    return named(*layers)


def conv_relu(c_in: int, c_out: int, k: int, stride: int = 1, padding: int = 0) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride=stride, padding=padding), nn.ReLU())


class Inception(nn.Module):
    def __init__(self, c_in: int, widths: tuple[int, int, int, int, int, int]) -> None:
        super().__init__()
        c1, r3, c3, r5, c5, pp = widths
        self.branch1 = nn.Conv2d(c_in, c1, 1)
        self.branch2_reduce = nn.Conv2d(c_in, r3, 1)
        self.branch2 = nn.Conv2d(r3, c3, 3, padding=1)
        self.branch3_reduce = nn.Conv2d(c_in, r5, 1)
        self.branch3 = nn.Conv2d(r5, c5, 5, padding=2)
        self.branch4_pool = nn.MaxPool2d(3, 1, padding=1)
        self.branch4 = nn.Conv2d(c_in, pp, 1)
        self.out_channels = c1 + c3 + c5 + pp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = torch.relu
        b1 = r(self.branch1(x))
        b2 = r(self.branch2(r(self.branch2_reduce(x))))
        b3 = r(self.branch3(r(self.branch3_reduce(x))))
        b4 = r(self.branch4(self.branch4_pool(x)))
        return torch.cat([b1, b2, b3, b4], dim=1)


class GoogLeNet(nn.Module):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3)
        self.conv2_reduce = nn.Conv2d(64, 64, 1)
        self.conv2 = nn.Conv2d(64, 192, 3, padding=1)
        self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        c_in = 192
        for name, widths in GOOGLENET_MODULES.items():
            module = Inception(c_in, widths)
            self.add_module(name, module)
            c_in = module.out_channels
        self.dropout = nn.Dropout(0.4)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(torch.relu(self.conv2_reduce(x)))))
        for name in GOOGLENET_MODULES:
            x = getattr(self, name)(x)
            if name in ("inception3b", "inception4e"):
                x = self.pool(x)
        x = torch.flatten(x.mean(dim=(2, 3)), 1)
        return self.fc(self.dropout(x))


def conv_bn(c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out, eps=1e-5)]


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in: int, width: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = conv_bn(c_in, width, 3, stride)
        self.conv2, self.bn2 = conv_bn(width, width, 3)
        self.downsample = (nn.Sequential(*conv_bn(c_in, width, 1, stride))
                           if stride != 1 or c_in != width else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(y + (self.downsample(x) if self.downsample is not None else x))


class Bottleneck(nn.Module):
    """torchvision's v1.5 bottleneck: the stride is on the 3x3 convolution."""

    expansion = 4

    def __init__(self, c_in: int, width: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = conv_bn(c_in, width, 1)
        self.conv2, self.bn2 = conv_bn(width, width, 3, stride)
        self.conv3, self.bn3 = conv_bn(width, width * 4, 1)
        self.downsample = (nn.Sequential(*conv_bn(c_in, width * 4, 1, stride))
                           if stride != 1 or c_in != width * 4 else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return torch.relu(y + (self.downsample(x) if self.downsample is not None else x))


class ResNet(nn.Module):
    def __init__(self, block: type[BasicBlock] | type[Bottleneck], counts: tuple[int, ...],
                 num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1, self.bn1 = conv_bn(3, 64, 7, 2)
        self.maxpool = nn.MaxPool2d(3, 2, padding=1)
        c_in = 64
        for stage, (count, width) in enumerate(zip(counts, (64, 128, 256, 512), strict=True), start=1):
            blocks = []
            for i in range(count):
                blocks.append(block(c_in, width, 2 if stage > 1 and i == 0 else 1))
                c_in = width * block.expansion
            self.add_module(f"layer{stage}", nn.Sequential(*blocks))
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        for stage in range(1, 5):  # added with add_module: get_submodule types them as modules
            x = self.get_submodule(f"layer{stage}")(x)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def conv_bn_relu6(c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(*conv_bn(c_in, c_out, k, stride, groups), nn.ReLU6())


class InvertedResidual(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, t: int) -> None:
        super().__init__()
        hidden = c_in * t
        layers: list[nn.Module] = [conv_bn_relu6(c_in, hidden, 1)] if t != 1 else []
        layers += [conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden), *conv_bn(hidden, c_out, 1)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        features: list[nn.Module] = [conv_bn_relu6(3, 32, 3, 2)]
        c_in = 32
        for t, c, n, s in MOBILENET_SETTINGS:
            for i in range(n):
                features.append(InvertedResidual(c_in, c, s if i == 0 else 1, t))
                c_in = c
        features.append(conv_bn_relu6(c_in, 1280, 1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x).mean(dim=(2, 3)), 1))


TWINS: dict[str, Callable[[], nn.Module]] = {
    "lenet5": twin_lenet5, "lenet": twin_lenet, "keras_mnist": twin_keras_mnist,
    "keras_sequential": twin_keras_sequential, "alexnet": twin_alexnet,
    "vgg11": lambda: twin_vgg("vgg11"), "vgg16": lambda: twin_vgg("vgg16"), "googlenet": GoogLeNet,
    "resnet18": lambda: ResNet(BasicBlock, (2, 2, 2, 2)), "resnet50": lambda: ResNet(Bottleneck, (3, 4, 6, 3)),
    "mobilenet_v2": MobileNetV2,
}
