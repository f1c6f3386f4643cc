"""Training-mode dropout with a run-time seed: the Philox4x32-10 mask (cnncc.ops.dropout), its CPU kernel
(cnncc.codegen.kernels.dropout) and the per-step seed of the compiled training step (cnncc.training).

Oracles: Random123's published known-answer vectors for Philox4x32-10; the numpy reference (bit for bit: the
mask is an integer function of the element's logical index, so the compiled output must equal the reference
exactly, in any layout, batch and thread count); central differences in float64 for the VJP (dropout with a fixed
seed is linear); the reference interpreter running the compiled training step's own graph.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

import cnncc
import cnncc.frontend as nn
from cnncc.autodiff import grad
from cnncc.driver import compile_graph
from cnncc.errors import CnnccError, ShapeError
from cnncc.ir import DType, Graph, GraphBuilder
from cnncc.ops.dropout import DropoutAttrs, keep_mask, keep_threshold, philox4x32, philox_bits
from cnncc.ops.sum_to import SumToAttrs
from cnncc.optim import SGD
from cnncc.runtime import interpret
from cnncc.testing import TOL_F32_MODEL, TOL_F32_REDUCTION, TOL_F64, rel_error, run_op, single_op_graph
from cnncc.training import training_graph

M32 = 0xFFFFFFFF


def seed(value: int) -> np.ndarray:
    return np.array(value, np.int64)


# -- the generator ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("counter", "key", "want"), [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((M32, M32, M32, M32), (M32, M32), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
])
def test_philox4x32_10_known_answers(counter: tuple[int, ...], key: tuple[int, int], want: tuple[int, ...]) -> None:
    """Random123's kat_vectors for philox4x32 with 10 rounds."""
    assert tuple(int(w) for w in philox4x32(counter, key)) == want


def test_bits_are_word_0_of_index_salt_counters_under_the_seed_key() -> None:
    run, salt = -5, (7 << 32) | 3  # the run-time seed as uint64: key (2^32 - 5, 2^32 - 1)
    bits = philox_bits(6, run, salt)
    for i in range(6):
        assert bits[i] == philox4x32((i, 0, 3, 7), ((-5) & M32, M32))[0]


@pytest.mark.parametrize("p", [0.0, 0.1, 0.3, 0.5, 2.0 ** -24, 3 * 2.0 ** -24, 1 - 2.0 ** -24, 1 - 2.0 ** -30])
def test_integer_keep_test_is_the_uniform_test(p: float) -> None:
    """keep iff u = (bits >> 8)·2^-24 >= p, evaluated as the integer test bits >> 8 >= ceil(p·2^24); checked at
    and next to the threshold, where a float comparison would differ first."""
    t = keep_threshold(p)
    assert 0 <= t <= 1 << 24
    for top in {max(t - 1, 0), t, min(t + 1, (1 << 24) - 1)}:
        assert (top * 2.0 ** -24 >= p) == (top >= t)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_reference_keep_fraction_and_scale(p: float) -> None:
    """Kept fraction within 5 binomial standard deviations of 1 − p; kept values are x·float32(1/(1 − p))."""
    rng = np.random.default_rng(3)
    shape = (32, 16, 12, 12)
    x = (rng.uniform(0.5, 2.0, shape) * rng.choice([-1.0, 1.0], shape)).astype(np.float32)
    y = run_op("dropout", [x, seed(11)], DropoutAttrs(p, True, 5))
    kept = y != 0
    assert np.array_equal(kept, keep_mask(shape, p, 5, 11))
    assert abs(kept.mean() - (1 - p)) <= 5 * math.sqrt(p * (1 - p) / x.size)
    assert np.array_equal(y[kept], x[kept] * np.float32(1 / (1 - p)))


def test_mask_depends_on_seed_and_salt_only() -> None:
    shape = (4, 3, 5, 5)
    a = keep_mask(shape, 0.5, 1, 100)
    assert np.array_equal(a, keep_mask(shape, 0.5, 1, 100))  # same seed, same mask
    assert not np.array_equal(a, keep_mask(shape, 0.5, 1, 101))  # another step
    assert not np.array_equal(a, keep_mask(shape, 0.5, 2, 100))  # another layer
    assert not np.array_equal(a, keep_mask(shape, 0.5, 1, 100 + (1 << 32)))  # the seed's high word counts
    assert not np.array_equal(a, keep_mask(shape, 0.5, 1 + (1 << 32), 100))  # so does the salt's
    # an image's mask does not depend on how many images follow it, nor on the tensor's rank
    assert np.array_equal(a[:2], keep_mask((2, 3, 5, 5), 0.5, 1, 100))
    assert np.array_equal(a.reshape(4, 75), keep_mask((4, 75), 0.5, 1, 100))
    # nor on the run dtype
    x = np.random.default_rng(0).standard_normal(shape)
    y32 = run_op("dropout", [x.astype(np.float32), seed(100)], DropoutAttrs(0.5, True, 1))
    y64 = run_op("dropout", [x, seed(100)], DropoutAttrs(0.5, True, 1), dtype="float64")
    assert np.array_equal(y32 != 0, a) and np.array_equal(y64 != 0, a)


def test_without_the_seed_operand_the_mask_is_numpys_philox_stream() -> None:
    x = np.ones((3, 4, 5), np.float64)
    mask = np.random.Generator(np.random.Philox(key=9)).random(x.shape) >= 0.25
    assert np.array_equal(run_op("dropout", [x], DropoutAttrs(0.25, True, 9), dtype="float64") != 0, mask)
    assert np.array_equal(keep_mask(x.shape, 0.25, 9), mask)


def test_inference_ignores_the_seed() -> None:
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 4)).astype(np.float32)
    assert np.array_equal(run_op("dropout", [x, seed(3)], DropoutAttrs(0.5, False, 1)), x)


@pytest.mark.parametrize(("operand", "detail"), [
    (np.array(3.0, np.float32), "f32[]"), (np.array([3], np.int64), "i64[1]")])
def test_seed_operand_must_be_an_int64_scalar(operand: np.ndarray, detail: str) -> None:
    msg = "layer 'layer' (dropout): seed operand: seed must be an int64 scalar (shape ()), got "
    with pytest.raises(ShapeError, match=re.escape(msg)):
        single_op_graph("dropout", [np.zeros((2, 3), np.float32), operand], DropoutAttrs(0.5, True))


def test_salt_must_fit_63_bits() -> None:
    with pytest.raises(ShapeError, match=re.escape("seed: seed must be an int < 2**63")):
        single_op_graph("dropout", [np.zeros((2, 3), np.float32), seed(0)], DropoutAttrs(0.5, True, 1 << 63))


# -- the CPU kernel ---------------------------------------------------------------------------------------------


def dropout_graph(shape: tuple[int, ...], attrs: DropoutAttrs, blocked: bool) -> tuple[Graph, dict[str, np.ndarray]]:
    """x [+ zeros per channel, which makes the backend hand dropout a blocked NCHW16c tensor] -> dropout."""
    b = GraphBuilder("drop")
    x = b.input("x", shape)
    s = b.input("seed", (), DType.INT64)
    params = {}
    if blocked:
        params["zero"] = np.zeros((1, shape[1], 1, 1), np.float32)
        x = b.apply("add", [x, b.param("zero", (1, shape[1], 1, 1))], layer="add")
    b.output(b.apply("dropout", [x, s], attrs, layer="drop"), "y")
    return b.build(), params


@pytest.mark.parametrize(("shape", "blocked"), [
    ((3, 37, 5, 4), True), ((2, 16, 6, 6), True), ((4, 5, 3, 3), True),  # padded channel lanes, one full block
    ((5, 37), False), ((3, 2900), False), ((2, 7, 9, 11), False), ((1,), False),  # tails, several chunks
])
def test_compiled_mask_equals_the_reference_bit_for_bit(shape: tuple[int, ...], blocked: bool) -> None:
    g, params = dropout_graph(shape, DropoutAttrs(0.4, True, 12345), blocked)
    m = compile_graph(g, params)
    (call,) = [c for c in m.program.calls if c.kernel == "dropout"]
    assert call.params.blocked == blocked
    x = np.random.default_rng(7).standard_normal(shape).astype(np.float32)
    for run_seed in (0, 1, -1, 3 << 40):
        feeds = {"x": x, "seed": seed(run_seed)}
        want = interpret(g, feeds, params)["y"]
        assert np.array_equal(want != 0, keep_mask(shape, 0.4, 12345, run_seed))
        for threads in (1, 2):
            assert np.array_equal(m.run(feeds, threads=threads)["y"], want), (run_seed, threads)
        if shape[0] > 1:  # a smaller run-time batch: the same masks for the images it has
            got = m.run({"x": x[:1], "seed": seed(run_seed)})["y"]
            assert np.array_equal(got, want[:1])


def test_compiled_p_zero_keeps_everything_and_nan_is_dropped_like_the_reference() -> None:
    g, params = dropout_graph((2, 20, 3, 3), DropoutAttrs(0.0, True, 4), True)
    x = np.random.default_rng(2).standard_normal((2, 20, 3, 3)).astype(np.float32)
    assert np.array_equal(compile_graph(g, params).run({"x": x, "seed": seed(8)})["y"], x)
    g, params = dropout_graph((2, 40), DropoutAttrs(0.5, True, 4), False)
    x = np.full((2, 40), np.nan, np.float32)
    feeds = {"x": x, "seed": seed(8)}
    got, want = compile_graph(g, params).run(feeds)["y"], interpret(g, feeds, params)["y"]
    assert np.array_equal(got, want, equal_nan=True) and (got == 0).any()


def test_padded_channel_lanes_stay_zero() -> None:
    """37 channels in 3 blocks of 16: a 1x1 convolution after dropout reads the 11 padded lanes with zero weights,
    so any non-finite value there would show up as NaN in its output."""
    b = GraphBuilder("pad")
    x = b.input("x", (2, 37, 4, 4))
    s = b.input("seed", (), DType.INT64)
    h = b.apply("add", [x, b.param("zero", (1, 37, 1, 1))], layer="add")
    h = b.apply("dropout", [h, s], DropoutAttrs(0.5, True, 1), layer="drop")
    b.output(b.apply("conv2d", [h, b.param("w", (3, 37, 1, 1))], layer="conv"), "y")
    g = b.build()
    rng = np.random.default_rng(4)
    params = {"zero": np.zeros((1, 37, 1, 1), np.float32), "w": rng.standard_normal((3, 37, 1, 1)).astype(np.float32)}
    feeds = {"x": rng.standard_normal((2, 37, 4, 4)).astype(np.float32), "seed": seed(2)}
    got = compile_graph(g, params).run(feeds)["y"]
    assert np.isfinite(got).all()
    assert rel_error(got, interpret(g, feeds, params)["y"]) <= TOL_F32_REDUCTION


def test_training_dropout_without_a_seed_operand_is_not_compiled() -> None:
    g, _, params = single_op_graph("dropout", [np.zeros((2, 4), np.float32)], DropoutAttrs(0.5, True, 1))
    with pytest.raises(CnnccError, match="without a run-time seed operand"):
        compile_graph(g, params)


# -- the VJP ----------------------------------------------------------------------------------------------------


def test_vjp_with_the_seed_operand_matches_finite_differences() -> None:
    """loss = Σ dropout(x, seed) · R: linear in x for a fixed seed, so central differences are exact up to
    rounding; the backward dropout reads the same seed operand, and the seed gets no gradient."""
    rng = np.random.default_rng(5)
    b = GraphBuilder("vjp")
    x = b.input("x", (3, 4, 5), DType.FLOAT64)
    s = b.input("seed", (), DType.INT64)
    r = b.input("R", (3, 4, 5), DType.FLOAT64)
    y = b.apply("dropout", [x, s], DropoutAttrs(0.3, True, 17), layer="drop")
    b.output(b.apply("sum_to", [b.apply("multiply", [y, r], layer="project")], SumToAttrs(()), layer="loss"), "loss")
    graph = b.build()
    arrays = {"x": rng.standard_normal((3, 4, 5)), "seed": seed(21), "R": rng.standard_normal((3, 4, 5))}
    g = grad(graph, wrt=["x"])
    back = [n for n in g.nodes if n.op == "dropout" and n.layer.endswith(".grad")]
    assert len(back) == 1 and back[0].inputs[1] is g.inputs[1]
    got = interpret(g, arrays, dtype="float64")["grad:x"]
    step = 0.5
    fd = np.zeros((3, 4, 5))
    for idx in np.ndindex(fd.shape):
        vals = []
        for h in (step, -step):
            shifted = arrays["x"].copy()
            shifted[idx] += h
            vals.append(float(interpret(graph, {**arrays, "x": shifted}, dtype="float64")["loss"]))
        fd[idx] = (vals[0] - vals[1]) / (2 * step)
    assert rel_error(got, fd) <= TOL_F64
    want = keep_mask((3, 4, 5), 0.3, 17, 21) * arrays["R"] / 0.7
    assert rel_error(got, want) <= TOL_F64


# -- the training step ------------------------------------------------------------------------------------------


def dropout_net() -> nn.Model:
    """conv -> relu -> dropout (on NCHW16c) -> flatten -> linear -> relu -> dropout (plain) -> linear; both dropout
    layers keep the DSL's default seed attribute 0."""
    return nn.Sequential([
        nn.Conv2d(20, 3, padding=1, activation="relu", name="conv"), nn.Dropout(0.3, name="drop1"),
        nn.Flatten(name="flat"), nn.Linear(24, activation="relu", name="fc1"), nn.Dropout(0.5, name="drop2"),
        nn.Linear(5, name="fc2"),
    ], input_shape=(3, 6, 6), name="dropnet", seed=4)


@pytest.mark.parametrize("recompute", [False, True])
def test_training_step_equals_the_interpreter_with_a_new_mask_each_step(recompute: bool) -> None:
    model = dropout_net()
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((4, 3, 6, 6)).astype(np.float32), rng.integers(0, 5, 4)
    trainer = cnncc.compile_training(model, optimizer=SGD(0.1), batch=4, threads=2, recompute=recompute)
    g = trainer.train.graph
    assert g.inputs[0].name == "input" and {v.name for v in g.inputs if v.dtype is DType.INT64} == {"labels", "seed"}
    forward = [n for n in g.nodes[:trainer.train.forward_nodes] if n.op == "dropout"]
    assert len(forward) == 2 and all(n.inputs[1].name == "seed" for n in forward)
    assert forward[0].attrs.seed != forward[1].attrs.seed  # per-layer salts, though both layers say seed=0
    state = dict(model.params)
    state.update({k: np.zeros(s, np.float32) for k, s in trainer.train.slots.items()})
    masks = []
    for step in range(2):
        feeds = trainer._feeds(x, y)
        assert feeds["seed"] == step and feeds["seed"].dtype == np.int64
        want = interpret(g, feeds, state)
        loss, logits = trainer.step_logits(x, y)
        assert rel_error(np.float32(loss), want["loss"]) <= TOL_F32_REDUCTION
        assert rel_error(logits, want["logits"]) <= TOL_F32_MODEL
        for name in trainer.train.state:
            got = trainer.compiled.state_array(name)
            assert rel_error(got, want["state:" + name]) <= TOL_F32_MODEL, name
            state[name] = want["state:" + name]
        masks.append(keep_mask((4, 24), 0.5, forward[1].attrs.seed, step))
    assert not np.array_equal(masks[0], masks[1])
    trainer.seed_base = 100
    assert trainer._feeds(x, y)["seed"] == 102


def test_only_training_dropout_adds_the_seed_input() -> None:
    model = nn.Sequential([nn.Flatten(name="flat"), nn.Dropout(0.5, name="drop"), nn.Linear(3, name="fc")],
                          input_shape=(2, 3, 3), name="nodrop")
    assert "seed" in [v.name for v in training_graph(model.graph(2, training=True)).graph.inputs]
    assert "seed" not in [v.name for v in training_graph(model.graph(2)).graph.inputs]
