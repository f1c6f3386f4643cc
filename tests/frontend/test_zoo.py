"""The model zoo against hand-written PyTorch twins: names, parameter and MAC counts, shapes, and float32 outputs.

Every zoo model has a twin ``torch.nn.Module`` below whose ``state_dict`` keys are exactly the cnncc parameter
names, so weights move both ways without a mapping. The BN statistics, BN affine parameters and every bias are
given random non-trivial values first (the zoo initialises them to 0/1), so BN folding, bias handling and the
weight layouts are all exercised. Outputs must agree within ``TOL_F32_MODEL`` (max abs error / max |torch output|).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from cnncc.frontend.model import Model
from cnncc.frontend.models import ZOO, get_model
from cnncc.testing import TOL_F32_MODEL, randomize, rel_error

torch.set_num_threads(2)

from cnncc.testing.twins import TWINS  # noqa: E402

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
