"""The compiled training step (cnncc.training, cnncc.compile_training) and `cnncc train`.

Oracles: the reference interpreter running the same step graph (every update, slot and running statistic), and
PyTorch: ten steps of each optimiser on LeNet-5's twin with ``torch.optim`` give the same weights.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import cnncc
import cnncc.frontend as nn
from cnncc.errors import CnnccError, InputError
from cnncc.frontend.models import lenet5
from cnncc.optim import SGD, Adagrad, Adam, RMSprop
from cnncc.runtime import interpret
from cnncc.testing import TOL_F32_MODEL, TOL_F32_REDUCTION, rel_error
from cnncc.testing.twins import twin_lenet5
from cnncc.training import saved_activations, training_graph

OPTIMIZERS = {
    "sgd": SGD(0.05),
    "momentum": SGD(0.02, momentum=0.9),
    "nesterov": SGD(0.02, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adagrad": Adagrad(0.01),
    "rmsprop": RMSprop(1e-3),
    "adam": Adam(1e-3, weight_decay=1e-4),
}


def batch(n: int, seed: int, shape: tuple[int, ...] = (1, 32, 32), classes: int = 10) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *shape)).astype(np.float32), rng.integers(0, classes, n)


def bn_net(seed: int = 0) -> nn.Model:
    """conv -> batch-norm -> relu -> max-pool -> conv (stride 2) -> batch-norm -> relu -> global pool -> linear.

    The convolutions have no bias, as in ResNet: batch-norm subtracts the mean, so a bias's gradient would be 0
    up to rounding noise (which no relative comparison can judge)."""
    return nn.Sequential([
        nn.Conv2d(8, 3, padding=1, bias=False, name="conv1"), nn.BatchNorm(name="bn1"), nn.ReLU(name="relu1"),
        nn.MaxPool2d(2, 2, name="pool1"),
        nn.Conv2d(20, 3, stride=2, padding=1, bias=False, name="conv2"), nn.BatchNorm(name="bn2"),
        nn.ReLU(name="relu2"),
        nn.GlobalAvgPool2d(name="gap"), nn.Flatten(name="flat"), nn.Linear(5, name="fc"),
    ], input_shape=(3, 12, 12), name="bn_net", seed=seed)


def step_vs_interpreter(model: nn.Model, optimizer: object, x: np.ndarray, y: np.ndarray, steps: int = 2,
                        **kw: object) -> None:
    """``steps`` compiled steps against the interpreter running the same step graph on the same state."""
    trainer = cnncc.compile_training(model, optimizer=optimizer, batch=len(x), threads=2, **kw)
    g = trainer.train.graph
    state = dict(model.params)
    state.update({k: np.zeros(s, np.float32) for k, s in trainer.train.slots.items()})
    for _ in range(steps):
        feeds = trainer._feeds(x, y)
        want = interpret(g, feeds, state)
        loss = trainer.step(x, y)
        assert rel_error(np.float32(loss), want["loss"]) <= TOL_F32_REDUCTION
        for name in trainer.train.state:
            got = trainer.compiled.state_array(name)
            assert rel_error(got, want["state:" + name]) <= TOL_F32_MODEL, name
            state[name] = want["state:" + name]  # both continue from the reference state


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_lenet5_step_equals_the_interpreter(name: str) -> None:
    x, y = batch(6, 1)
    step_vs_interpreter(lenet5(), OPTIMIZERS[name], x, y)


def test_batch_norm_step_updates_running_statistics_like_the_interpreter() -> None:
    x, y = batch(4, 2, (3, 12, 12), 5)
    step_vs_interpreter(bn_net(), SGD(0.05, momentum=0.9), x, y)


def _torch_optimizer(name: str, params: object) -> torch.optim.Optimizer:
    o = OPTIMIZERS[name]
    if name in ("sgd", "momentum", "nesterov"):
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=o.lr, eps=o.eps, weight_decay=o.weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=o.lr, alpha=o.alpha, eps=o.eps, weight_decay=o.weight_decay)
    return torch.optim.Adam(params, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, weight_decay=o.weight_decay)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_ten_steps_equal_torch_optim(name: str) -> None:
    """Ten compiled steps of LeNet-5 on ten batches give torch.optim's weights (same initial weights, same data).

    float32 on both sides; the error is relative to each tensor's scale and grows with the steps (each step's
    gradient differs in its last bits, and Adam/RMSprop divide by running magnitudes): TOL_F32_MODEL."""
    model = lenet5(seed=3)
    twin = twin_lenet5()
    twin.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in model.params.items()})
    opt = _torch_optimizer(name, twin.parameters())
    trainer = cnncc.compile_training(model, optimizer=OPTIMIZERS[name], batch=8, threads=2)
    losses = []
    for step in range(10):
        x, y = batch(8, 100 + step)
        opt.zero_grad()
        loss = F.cross_entropy(twin(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        opt.step()
        losses.append((trainer.step(x, y), loss.item()))
    for got, want in losses:
        assert abs(got - want) <= TOL_F32_MODEL * max(1.0, abs(want))
    weights = trainer.weights()
    for key, value in twin.state_dict().items():
        assert rel_error(weights[key], value.numpy()) <= TOL_F32_MODEL, key


def test_recompute_gives_the_same_step_with_fewer_saved_bytes() -> None:
    x, y = batch(4, 4, (3, 12, 12), 5)
    plain = cnncc.compile_training(bn_net(), optimizer=SGD(0.1), batch=4, threads=1)
    again = cnncc.compile_training(bn_net(), optimizer=SGD(0.1), batch=4, threads=1, recompute=True)
    assert any(n.layer.endswith(".recompute") for n in again.train.graph.nodes)
    assert again.stats.saved_activation_bytes < plain.stats.saved_activation_bytes
    for _ in range(2):
        assert plain.step(x, y) == again.step(x, y)
    for name, value in plain.weights().items():
        np.testing.assert_array_equal(again.weights()[name], value, err_msg=name)


def test_saved_activations_are_the_forward_values_the_backward_pass_reads() -> None:
    t = training_graph(lenet5().graph(4, training=True))
    fwd = t.graph.nodes[:t.forward_nodes]
    assert [n.op for n in fwd][-1] == "cross_entropy"
    saved = saved_activations(t.graph, t.forward_nodes)
    assert saved == t.saved and t.saved_bytes == sum(saved.values()) > 0
    # the input image is read by conv1's weight gradient; the logits by the loss's VJP
    assert "input" in saved and 0 < t.saved_bytes < sum(o.type.nbytes for n in fwd for o in n.outputs) + 4 * 4096


def test_trainer_weights_export_and_errors(tmp_path: object) -> None:
    model = lenet5()
    before = {k: v.copy() for k, v in model.params.items()}
    trainer = cnncc.compile_training(model, optimizer=SGD(0.1), batch=4, threads=1)
    x, y = batch(4, 5)
    trainer.step(x, y)
    after = trainer.weights()
    assert not np.array_equal(after["conv1.weight"], before["conv1.weight"])
    np.testing.assert_array_equal(model.params["conv1.weight"], before["conv1.weight"])  # the DSL model is untouched
    path = f"{tmp_path}/w.npz"
    trainer.export(path)
    other = lenet5(seed=9)
    other.load_weights(path)
    for k, v in after.items():
        np.testing.assert_array_equal(other.params[k], v)
    trainer.sync()
    np.testing.assert_array_equal(model.params["fc3.bias"], after["fc3.bias"])
    logits = trainer.predict(x)
    np.testing.assert_allclose(logits, other(x), rtol=1e-5, atol=1e-5)
    loss, acc = trainer.evaluate(x, y)
    assert np.isfinite(loss) and 0.0 <= acc <= 1.0
    with pytest.raises(InputError, match="exactly the compiled batch"):
        trainer.step(x[:3], y[:3])
    with pytest.raises(CnnccError, match="unknown loss"):
        cnncc.compile_training(model, loss="hinge", batch=2)
    with pytest.raises(InputError, match="class labels must lie in"):
        trainer.step(x, np.full(4, 10))


def test_lenet5_learns_real_digits() -> None:
    """Three epochs of the compiled step on scikit-learn's digits: the held-out accuracy is far above chance."""
    from cnncc.datasets import digits
    from cnncc.training import batches

    x, y = digits("train")
    xt, yt = digits("test")
    trainer = cnncc.compile_training(lenet5(), optimizer=Adam(2e-3), batch=32, threads=2)
    rng = np.random.default_rng(0)
    for _ in range(3):
        for idx in batches(len(x), 32, rng):
            trainer.step(x[idx], y[idx])
    _, acc = trainer.evaluate(xt, yt)
    assert acc >= 0.95


def test_cli_train_writes_history_plot_and_weights_reproducibly(tmp_path: object) -> None:
    runs = []
    for k in range(2):
        out = f"{tmp_path}/run{k}"
        r = subprocess.run([sys.executable, "-m", "cnncc.cli", "train", "lenet5", "--epochs", "1", "--batch", "64",
                            "--out", out, "--quiet", "--threads", str(k + 1)], cwd=tmp_path, capture_output=True,
                           text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        assert "test accuracy" in r.stdout and "saved activations" in r.stdout
        with open(f"{out}/train-lenet5.json") as f:
            runs.append(json.load(f))
        with open(f"{out}/train-lenet5.png", "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        assert np.load(f"{out}/lenet5-trained.npz")["conv1.weight"].shape == (6, 1, 5, 5)
    # the same seed gives the same numbers, on 1 thread and on 2
    keys = ("train_loss", "train_acc", "test_loss", "test_acc")
    assert [[h[k] for k in keys] for h in runs[0]["history"]] == [[h[k] for k in keys] for h in runs[1]["history"]]


def test_cli_train_rejects_a_model_the_dataset_does_not_fit(tmp_path: object) -> None:
    r = subprocess.run([sys.executable, "-m", "cnncc.cli", "train", "resnet18", "--epochs", "1"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "1x32x32 or 1x28x28" in r.stderr


@pytest.mark.parametrize("target", ["index", "probabilities"])
def test_fused_cross_entropy_gradient_is_stable_and_compiled(target: str) -> None:
    """cross_entropy_grad (one row-wise pass) = PyTorch's logits gradient, compiled and in the reference, also for
    logits around 1e4 where an unshifted softmax would overflow float32."""
    from cnncc.ops.cross_entropy import CrossEntropyAttrs
    from cnncc.ops.operands import Reduction
    from cnncc.testing import single_op_graph

    rng = np.random.default_rng(7)
    for scale, reduction in ((3.0, Reduction.MEAN), (1e4, Reduction.SUM)):
        logits = (scale * rng.standard_normal((5, 11))).astype(np.float32)
        if target == "index":
            t = rng.integers(0, 11, 5)
        else:
            t = rng.random((5, 11)).astype(np.float32)
            t /= t.sum(axis=1, keepdims=True)
        g = np.array(0.75, np.float32)
        graph, inputs, params = single_op_graph("cross_entropy_grad", [logits, t, g], CrossEntropyAttrs(reduction))
        lt = torch.from_numpy(logits.astype(np.float64)).requires_grad_()
        tt = torch.from_numpy(t if target == "index" else t.astype(np.float64))
        (0.75 * F.cross_entropy(lt, tt, reduction=reduction.value)).backward()
        want = lt.grad.numpy()
        ref = interpret(graph, inputs, params)
        got = cnncc.compile(graph, params=params, optimize_graph=False)(inputs)
        for out in (ref, got):
            (value,) = out.values() if isinstance(out, dict) else (out,)
            assert np.isfinite(value).all()
            assert rel_error(value, want) <= TOL_F32_REDUCTION


def winograd_net() -> nn.Model:
    """3x3 stride-1 convolutions (Winograd applies), channel counts that are not multiples of 16, odd image sizes."""
    return nn.Sequential([
        nn.Conv2d(16, 3, padding=1, bias=False, name="conv1"), nn.BatchNorm(name="bn1"), nn.ReLU(name="relu1"),
        nn.Conv2d(20, 3, padding=1, name="conv2"), nn.ReLU(name="relu2"),
        nn.GlobalAvgPool2d(name="gap"), nn.Flatten(name="flat"), nn.Linear(5, name="fc"),
    ], input_shape=(3, 13, 11), name="wnet", seed=1)


@pytest.mark.parametrize("algorithm", ["winograd2", "winograd4", "winograd6"])
def test_winograd_forward_with_filters_transformed_at_run_time(algorithm: str) -> None:
    """The weights change every step, so a Winograd forward convolution transforms its filters in the step
    (kernel filter_transform, straight into the packed layout); three steps equal the interpreter's."""
    x, y = batch(3, 8, (3, 13, 11), 5)
    model = winograd_net()
    trainer = cnncc.compile_training(model, optimizer=SGD(0.05, momentum=0.9), batch=3, threads=2,
                                     algorithms=algorithm)
    assert {c.impl.algorithm for layer, c in trainer.choices.items() if not layer.endswith(".grad")} == {algorithm}
    # the kernels that ran: conv1 and conv2 forward, and conv2's backward-data convolution (conv1 needs no dx),
    # which the selection pass gives Winograd F(4x4) whatever the forward candidates (the cost model prefers it);
    # fc's backward data is a 1x1 one on the baseline (its matrix-product path)
    assert trainer.compiled.layer_algorithms == {"conv1": algorithm, "conv2": algorithm, "conv2.grad": "winograd4",
                                                   "fc.grad": "direct"}
    assert sum(c.kernel == "filter_transform" for c in trainer.compiled.program.calls) == 3
    step_vs_interpreter(model, SGD(0.05, momentum=0.9), x, y, steps=3, algorithms=algorithm)


def test_forcing_fft_on_a_training_step_is_the_documented_error() -> None:
    """The FFT transforms its filters at compile time only: forced on a training step's convolution, it is an
    AlgorithmError naming the layer and the rule (it used to compile direct code silently)."""
    from cnncc.errors import AlgorithmError

    with pytest.raises(AlgorithmError, match=r"^layer 'conv2': fft8 does not apply: weights that change at run time"):
        cnncc.compile_training(winograd_net(), batch=3, threads=1, algorithms={"conv2": "fft8"})


def test_winograd_streaming_stores_equal_the_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    """The non-temporal store paths (filter transform, input transform, GEMM output; taken on ResNet-18's large
    layers only) forced on for a small net: the steps still equal the interpreter's, and the backward-data
    convolution's filter transform reads the forward's weights in place (no gathered flipped copy)."""
    import cnncc.codegen.kernels.transform_conv as tc

    for name in ("STREAM_BYTES", "STREAM_V_BYTES", "STREAM_M_BYTES"):
        monkeypatch.setattr(tc, name, 0)
    x, y = batch(3, 8, (3, 13, 11), 5)
    model = winograd_net()
    trainer = cnncc.compile_training(model, optimizer=SGD(0.05, momentum=0.9), batch=3, threads=2,
                                     algorithms="winograd4")
    calls = trainer.compiled.program.calls
    assert trainer.compiled.layer_algorithms == {"conv1": "winograd4", "conv2": "winograd4",
                                                   "conv2.grad": "winograd4", "fc.grad": "direct"}
    assert all(c.params.nontemporal for c in calls if c.kernel in ("filter_transform", "transform_input") or
               (c.kernel == "conv_direct" and c.params.img_mult > 1))
    assert sum(c.params.strides is not None for c in calls if c.kernel == "filter_transform") == 1
    assert not any(c.kernel == "gather" and c.layer.startswith("conv2.grad") for c in calls)
    step_vs_interpreter(model, SGD(0.05, momentum=0.9), x, y, steps=3, algorithms="winograd4")
