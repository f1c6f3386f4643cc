"""The model zoo against hand-written PyTorch twins: names, parameter and MAC counts, shapes, and float32 outputs.

Every zoo model has a twin ``torch.nn.Module`` below whose ``state_dict`` keys are exactly the cnncc parameter
names, so weights move both ways without a mapping. The BN statistics, BN affine parameters and every bias are
given random non-trivial values first (the zoo initialises them to 0/1), so BN folding, bias handling and the
weight layouts are all exercised. Outputs must agree within ``TOL_F32_MODEL`` (max abs error / max |torch output|).
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from cnncc.frontend.model import Model
from cnncc.frontend.models import ZOO, get_model
from cnncc.frontend.models.googlenet import MODULES as GOOGLENET_MODULES
from cnncc.frontend.models.mobilenet import SETTINGS as MOBILENET_SETTINGS
from cnncc.testing import TOL_F32_MODEL, rel_error

torch.set_num_threads(2)

# ----------------------------------------------------------------------------------------------------------------
# PyTorch twins
# ----------------------------------------------------------------------------------------------------------------


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
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
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
MODELS = list(ZOO)

# Output heads: which models end in softmax (probabilities) or log-softmax (log-probabilities).
SOFTMAX_HEADS = {"keras_mnist", "keras_sequential"}
LOG_SOFTMAX_HEADS = {"lenet"}

# Trainable parameters (the seeds' / torchvision's figures; googlenet's is checked against its twin).
EXPECTED_PARAMS = {
    "lenet5": 61_706, "lenet": 431_080, "keras_mnist": 3_274_634, "keras_sequential": 203_434,
    "alexnet": 62_378_344, "vgg11": 132_863_336, "vgg16": 138_357_544, "googlenet": 6_998_552,
    "resnet18": 11_689_512, "resnet50": 25_557_032, "mobilenet_v2": 3_504_872,
}
BATCHES = (1, 4)


def test_every_zoo_model_has_a_twin() -> None:
    assert set(TWINS) == set(ZOO)


# ----------------------------------------------------------------------------------------------------------------
# Fixtures: one cnncc model and one twin per zoo model, built once (pytest groups the tests by model)
# ----------------------------------------------------------------------------------------------------------------


def randomize(model: Model, seed: int) -> dict[str, np.ndarray]:
    """Non-trivial BN statistics and affine parameters, and non-zero biases (the zoo initialises them to 0/1)."""
    rng = np.random.default_rng(seed)
    draw = {"running_mean": lambda n: rng.normal(0.0, 0.1, n), "running_var": lambda n: rng.uniform(0.5, 1.5, n),
            "weight": lambda n: rng.uniform(0.5, 1.5, n), "bias": lambda n: rng.normal(0.0, 0.1, n)}
    params = {k: v.copy() for k, v in model.params.items()}
    bn_layers = {k.removesuffix(".running_mean") for k in params if k.endswith(".running_mean")}
    for key, value in params.items():
        layer, _, local = key.rpartition(".")
        if layer in bn_layers or local == "bias":
            value[...] = draw[local](value.shape)
    model.set_weights(params)
    return {k: v.copy() for k, v in params.items()}  # set_weights keeps (aliases) the arrays it is given


@dataclass
class Pair:
    name: str
    model: Model
    twin: nn.Module
    weights: dict[str, np.ndarray]  # what was loaded (a copy, independent of both models)


@pytest.fixture(scope="module", params=MODELS)
def model(request: pytest.FixtureRequest) -> Model:
    m = get_model(request.param, seed=0)
    assert m.name == request.param
    return m


@pytest.fixture(scope="module")
def pair(model: Model) -> Iterator[Pair]:
    name = model.name
    weights = randomize(model, zlib.crc32(name.encode()))
    twin = TWINS[name]()
    # strict: every name must match. (torch's BatchNorm fills in a missing num_batches_tracked itself.)
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in model.params.items()}, strict=True)
    twin.eval()
    # The converse: the twin's state dict (with torch's num_batches_tracked counters) loads back into cnncc.
    model.load_state_dict(twin.state_dict())
    yield Pair(name, model, twin, weights)


# ----------------------------------------------------------------------------------------------------------------
# Names, weights both ways, parameter and MAC counts
# ----------------------------------------------------------------------------------------------------------------


def test_parameter_count(model: Model) -> None:
    assert model.num_params() == EXPECTED_PARAMS[model.name]


def test_twin_names_and_parameter_count(pair: Pair) -> None:
    sd = pair.twin.state_dict()
    assert [k for k in sd if not k.endswith("num_batches_tracked")] == list(pair.model.params)
    assert sum(p.numel() for p in pair.twin.parameters()) == pair.model.num_params() == EXPECTED_PARAMS[pair.name]
    buffers = sum(b.numel() for k, b in pair.twin.named_buffers() if not k.endswith("num_batches_tracked"))
    assert pair.model.num_params(trainable_only=False) == pair.model.num_params() + buffers


def test_state_dict_round_trip(pair: Pair) -> None:
    """twin -> cnncc kept every value; a shifted torch state dict lands in the right cnncc arrays."""
    sd = pair.twin.state_dict()
    has_bn = any(k.endswith(".running_mean") for k in pair.model.params)
    assert any(k.endswith(".num_batches_tracked") for k in sd) == has_bn  # cnncc dropped torch's counters
    for k, v in pair.model.params.items():
        assert np.array_equal(v, pair.weights[k]) and np.array_equal(sd[k].numpy(), v), k
    shifted = {k: (t + 1.0 if t.is_floating_point() else t) for k, t in sd.items()}
    try:
        pair.model.load_state_dict(shifted)
        for k, v in pair.model.params.items():
            assert v.dtype == np.float32 and np.array_equal(v, shifted[k].numpy()), k
    finally:
        pair.model.set_weights({k: v.copy() for k, v in pair.weights.items()})


def test_resnet50_macs() -> None:
    macs = get_model("resnet50").macs()
    assert macs == 4_089_184_256
    assert abs(macs - 4.09e9) <= 0.005 * 4.09e9


# ----------------------------------------------------------------------------------------------------------------
# Float32 outputs against the twins
# ----------------------------------------------------------------------------------------------------------------


def count_macs(twin: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Run ``twin`` and count conv/linear multiply-accumulates with forward hooks."""
    total = 0

    def hook(m: nn.Module, _: object, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        else:
            total += out.numel() * m.in_features

    handles = [m.register_forward_hook(hook) for m in twin.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    try:
        y = twin(x)
    finally:
        for h in handles:
            h.remove()
    return y, total


@pytest.mark.parametrize("batch", BATCHES)
def test_matches_torch(pair: Pair, batch: int) -> None:
    model, twin = pair.model, pair.twin
    shape = model.inputs[0].spec.shape
    x = np.random.default_rng(1000 + batch).standard_normal((batch, *shape)).astype(np.float32)
    got = model(x)
    with torch.no_grad():
        want, macs = count_macs(twin, torch.from_numpy(x))
    want = want.numpy()
    assert got.dtype == np.float32 and got.shape == want.shape
    assert macs == model.macs(batch)
    err = rel_error(got, want)
    print(f"{pair.name} batch {batch}: rel error {err:.3g}, max |out| {np.abs(want).max():.3g}")
    assert err <= TOL_F32_MODEL, f"{pair.name} batch {batch}: rel error {err:.3g}"
    assert np.isfinite(want).all() and np.ptp(want) > 0
    if batch > 1:  # the samples differ, so a batch-indexing mix-up would show
        assert not np.allclose(want[0], want[1])
    if pair.name in SOFTMAX_HEADS | LOG_SOFTMAX_HEADS:
        probs = np.exp(want) if pair.name in LOG_SOFTMAX_HEADS else want
        classes = probs.shape[1]
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
        # Not vacuous: the distributions are neither uniform nor fully saturated one-hots.
        assert probs.max() > 1.5 / classes
        assert ((probs > 1e-3) & (probs < 0.999)).sum(axis=1).min() >= 2


# ----------------------------------------------------------------------------------------------------------------
# The seeds' shape chains
# ----------------------------------------------------------------------------------------------------------------


def spatial_chain(model: Model, ops: tuple[str, ...] = ("conv2d", "max_pool2d")) -> list[int]:
    g = model.graph(1)
    nodes = [n for n in g.nodes if n.op in ops]
    return [g.inputs[0].shape[2]] + [n.outputs[0].shape[2] for n in nodes]


def layer_shapes(model: Model) -> dict[str, tuple[int, ...]]:
    """Output shape (without the batch axis) of the last node of each layer."""
    return {n.layer: n.outputs[0].shape[1:] for n in model.graph(1).nodes}


def test_alexnet_shape_chain() -> None:
    m = get_model("alexnet")
    assert spatial_chain(m) == [227, 55, 27, 27, 13, 13, 13, 13, 6]
    assert layer_shapes(m)["flatten"] == (9216,)


def test_lenet5_shape_chain() -> None:
    m = get_model("lenet5")
    assert spatial_chain(m) == [32, 28, 14, 10, 5]
    assert layer_shapes(m)["flatten"] == (400,)


def test_keras_mnist_shapes() -> None:
    shapes = layer_shapes(get_model("keras_mnist"))
    assert shapes["pool1"] == (32, 14, 14)
    assert shapes["pool2"] == (64, 7, 7)
    assert shapes["flatten"] == (3136,)


def test_pytorch_lenet_has_800_features() -> None:
    m = get_model("lenet")
    assert spatial_chain(m) == [28, 24, 12, 8, 4]
    assert layer_shapes(m)["flatten"] == (800,)


def test_googlenet_and_resnet_spatial_sizes() -> None:
    pools = [n.outputs[0].shape[2] for n in get_model("googlenet").graph(1).nodes
             if n.op == "max_pool2d" and "branch4" not in n.layer]
    assert pools == [56, 28, 14, 7]
    assert layer_shapes(get_model("resnet18"))["layer4.1.relu"] == (512, 7, 7)
