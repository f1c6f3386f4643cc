"""The DSL: both styles, naming, initialisers, summary, weights files, and bad input with exact messages."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import cnncc.frontend as nn
from cnncc.errors import GraphError, OpAttributeError, ShapeError, WeightsError
from cnncc.frontend.init import fans, get_initializer, rng_for
from cnncc.frontend.models import lenet5


def tiny(seed: int = 0) -> nn.Model:
    return nn.Sequential([nn.Conv2d(4, 3, activation="relu", name="conv"), nn.MaxPool2d(2, name="pool"),
                          nn.Flatten(name="flat"), nn.Linear(3, name="fc")],
                         input_shape=(2, 6, 6), name="tiny", seed=seed)


def test_sequential_and_functional_build_the_same_graph() -> None:
    x = nn.Input((2, 6, 6))
    y = nn.Conv2d(4, 3, activation="relu", name="conv")(x)
    y = nn.MaxPool2d(2, name="pool")(y)
    y = nn.Linear(3, name="fc")(nn.Flatten(name="flat")(y))
    functional = nn.Model(x, y, name="tiny")
    assert functional.graph(3).text() == tiny().graph(3).text()
    np.testing.assert_array_equal(functional.params["conv.weight"], tiny().params["conv.weight"])


def test_graph_for_any_batch_and_interpreter_matches_numpy() -> None:
    m = tiny()
    x = np.random.default_rng(1).standard_normal((5, 2, 6, 6)).astype(np.float32)
    y = m(x)
    assert y.shape == (5, 3) and m.graph(5).inputs[0].shape == (5, 2, 6, 6)
    for i in range(5):  # batch elements are independent
        np.testing.assert_allclose(m(x[i:i + 1])[0], y[i], rtol=1e-6, atol=1e-6)


def test_residual_model_and_auto_names() -> None:
    x = nn.Input((8, 5, 5))
    a = nn.Conv2d(8, 3, padding="same")(x)
    b = nn.Conv2d(8, 1)(x)
    y = nn.ReLU()(nn.Add()([a, b]))
    m = nn.Model(x, y, name="res")
    names = [layer.name for layer in m.layers()]
    assert names == ["conv2d_1", "conv2d_2", "add_1", "relu_1"]
    assert m(np.ones((2, 8, 5, 5), np.float32)).shape == (2, 8, 5, 5)


def test_layer_names_must_be_unique() -> None:
    with pytest.raises(GraphError, match=re.escape("layer name 'c' is used by two different layers")):
        nn.Sequential([nn.Conv2d(2, 1, name="c"), nn.Conv2d(2, 1, name="c")], input_shape=(1, 4, 4))


def test_shared_layer_shares_parameters() -> None:
    x = nn.Input((3, 4, 4))
    conv = nn.Conv2d(3, 1, name="shared")
    m = nn.Model(x, conv(conv(x)))
    assert list(m.params) == ["shared.weight", "shared.bias"]
    assert len([n for n in m.graph().nodes if n.op == "conv2d"]) == 2


def test_nhwc_input_is_transposed_at_the_edge() -> None:
    m = nn.Sequential([nn.Conv2d(2, 3, name="conv")], input_shape=(6, 6, 1), layout="NHWC")
    g = m.graph(2)
    assert g.inputs[0].shape == (2, 6, 6, 1) and g.inputs[0].type.layout.value == "NHWC"
    assert g.nodes[0].op == "transpose"
    x = np.random.default_rng(0).standard_normal((2, 6, 6, 1)).astype(np.float32)
    nchw = nn.Sequential([nn.Conv2d(2, 3, name="conv")], input_shape=(1, 6, 6))
    nchw.set_weights(m.params)
    np.testing.assert_allclose(m(x), nchw(x.transpose(0, 3, 1, 2)), rtol=1e-6)


def test_same_padding_is_explicit_and_asymmetric_for_even_kernels() -> None:
    m = nn.Sequential([nn.Conv2d(1, 4, padding="same", name="c")], input_shape=(1, 7, 7))
    node = m.graph().nodes[0]
    assert node.attrs.padding == (1, 2, 1, 2) and node.outputs[0].shape == (1, 1, 7, 7)


def test_seeded_initialisation_is_deterministic_and_has_the_seed_formulas() -> None:
    np.testing.assert_array_equal(tiny(3).params["fc.weight"], tiny(3).params["fc.weight"])
    assert not np.array_equal(tiny(3).params["fc.weight"], tiny(4).params["fc.weight"])
    shape = (256, 128, 3, 3)
    fan_in, fan_out = fans(shape)
    assert (fan_in, fan_out) == (128 * 9, 256 * 9)
    assert fans((64, 1, 3, 3), groups=64) == (9, 9)
    w = get_initializer("he_normal")(shape, fan_in, fan_out, rng_for(0, "w"))
    assert abs(w.std() / np.sqrt(2 / fan_in) - 1) < 0.01 and abs(w.mean()) < 1e-3
    w = get_initializer("xavier_normal")(shape, fan_in, fan_out, rng_for(0, "w"))
    assert abs(w.std() / np.sqrt(2 / (fan_in + fan_out)) - 1) < 0.01
    b = get_initializer("zeros")((7,), 7, 7, rng_for(0, "b"))
    assert not b.any()


def test_summary_table() -> None:
    text = lenet5().summary(print_it=False)
    assert "conv1" in text and "(1, 6, 28, 28)" in text and "61,706" in text and "416,520" in text


def test_weights_roundtrip(tmp_path: Path) -> None:
    a, b = tiny(1), tiny(2)
    a.save_weights(tmp_path / "w.npz")
    b.load_weights(tmp_path / "w.npz")
    x = np.ones((1, 2, 6, 6), np.float32)
    np.testing.assert_array_equal(a(x), b(x))


# -- bad input, exact messages -------------------------------------------------------------------------------


def test_mismatched_channels() -> None:
    msg = ("layer 'conv2' (conv2d): mismatched channels: input has 6 channels but weight (16, 3, 5, 5) with "
           "groups=1 expects 3 (weight in-channels 3 x groups 1)")
    with pytest.raises(ShapeError, match=f"^{re.escape(msg)}$"):
        nn.Sequential([nn.Conv2d(6, 5), nn.Conv2d(16, 5, in_channels=3, name="conv2")], input_shape=(1, 32, 32))


def test_kernel_larger_than_padded_input() -> None:
    msg = ("layer 'big' (conv2d): kernel larger than the padded input: effective kernel 7x7 (kernel 7x7, "
           "dilation 1x1) exceeds padded input 6x6 (input 5x5, padding (top, bottom, left, right) = (0, 1, 0, 1))")
    with pytest.raises(ShapeError, match=f"^{re.escape(msg)}$"):
        nn.Sequential([nn.Conv2d(6, 7, padding=(0, 1, 0, 1), name="big")], input_shape=(1, 5, 5))


@pytest.mark.parametrize("layer, msg", [
    (nn.Conv2d(0, 3, name="c"), "layer 'c' (conv2d): positive size: out_channels must be a positive integer, got 0"),
    (nn.Conv2d(4, -3, name="c"), "layer 'c' (conv2d): positive size: kernel_size, stride and dilation must be a "
                                 "positive integer, got -3"),
    (nn.Linear(-2, name="fc"), "layer 'fc' (linear): positive size: out_features must be a positive integer, got -2"),
])
def test_negative_or_zero_size(layer: nn.Layer, msg: str) -> None:
    with pytest.raises(ShapeError, match=f"^{re.escape(msg)}$"):
        layer(nn.Input((1, 8, 8)) if not isinstance(layer, nn.Linear) else nn.Input((8,)))


def test_zero_input_dimension() -> None:
    with pytest.raises(GraphError, match=re.escape("input 'input': every dimension must be positive, got shape "
                                                   "(1, 0, 8)")):
        nn.Input((1, 0, 8))


def test_unknown_activation() -> None:
    msg = ("unknown activation 'rleu'; known: elu, hardtanh, leaky_relu, log_softmax, logistic, prelu, relu, relu6, "
           "sigmoid, softmax, softplus, tanh; did you mean 'relu'?")
    with pytest.raises(OpAttributeError, match=f"^{re.escape(msg)}$"):
        nn.Activation("rleu")
    with pytest.raises(OpAttributeError, match=re.escape("layer 'c': unknown activation 'swish'")):
        nn.Sequential([nn.Conv2d(2, 1, activation="swish", name="c")], input_shape=(1, 4, 4))


def test_linear_needs_flat_input() -> None:
    msg = ("layer 'fc' (linear): input rank: expected a 2-D (N, features) input, got shape (1, 2, 6, 6); "
           "add a Flatten layer before it")
    with pytest.raises(ShapeError, match=f"^{re.escape(msg)}$"):
        nn.Sequential([nn.Linear(3, name="fc")], input_shape=(2, 6, 6))


def test_weights_file_with_missing_array(tmp_path: Path) -> None:
    m = tiny()
    params = dict(m.params)
    del params["fc.bias"]
    np.savez(tmp_path / "w.npz", **params)
    msg = f"weights file '{tmp_path / 'w.npz'}' does not match model 'tiny': missing arrays ['fc.bias']"
    with pytest.raises(WeightsError, match=f"^{re.escape(msg)}$"):
        m.load_weights(tmp_path / "w.npz")


def test_weights_file_with_misshaped_and_unexpected_arrays(tmp_path: Path) -> None:
    m = tiny()
    params = dict(m.params)
    params["conv.weight"] = np.zeros((4, 2, 5, 5), np.float32)
    params["extra"] = np.zeros(3, np.float32)
    np.savez(tmp_path / "w.npz", **params)
    msg = (f"weights file '{tmp_path / 'w.npz'}' does not match model 'tiny': unexpected arrays ['extra']; "
           "array 'conv.weight' has shape (4, 2, 5, 5), the model expects (4, 2, 3, 3)")
    with pytest.raises(WeightsError, match=f"^{re.escape(msg)}$"):
        m.load_weights(tmp_path / "w.npz")
    np.testing.assert_array_equal(m.params["conv.weight"], tiny().params["conv.weight"])  # nothing changed


def test_truncated_or_missing_weights_file(tmp_path: Path) -> None:
    m = tiny()
    m.save_weights(tmp_path / "w.npz")
    data = (tmp_path / "w.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match=r"weights file '.*cut.npz' cannot be read as \.npz"):
        m.load_weights(tmp_path / "cut.npz")
    with pytest.raises(WeightsError, match=r"^weights file '.*nope.npz' does not exist$"):
        m.load_weights(tmp_path / "nope.npz")


def test_pickled_weights_are_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    import zipfile

    with zipfile.ZipFile(tmp_path / "w.npz", "w") as z:
        z.write(tmp_path / "obj.npy", "conv.weight.npy")
    with pytest.raises(WeightsError, match="cannot be read as .npz"):
        tiny().load_weights(tmp_path / "w.npz")


def test_loaded_weights_are_copies() -> None:
    """A model must not alias its caller's arrays (or a PyTorch model's tensors) after loading them."""
    import torch

    m = nn.Sequential([nn.Linear(3, name="fc")], input_shape=(4,))
    twin = torch.nn.Sequential()
    twin.add_module("fc", torch.nn.Linear(4, 3))
    m.load_state_dict(twin.state_dict())
    before = m.params["fc.weight"].copy()
    with torch.no_grad():
        twin.fc.weight.add_(1.0)
    np.testing.assert_array_equal(m.params["fc.weight"], before)
    arrays = {"fc.weight": np.zeros((3, 4), np.float32), "fc.bias": np.zeros(3, np.float32)}
    m.set_weights(arrays)
    arrays["fc.bias"][0] = 7
    assert m.params["fc.bias"][0] == 0
