"""Convolution algorithms (issue 5): the transforms' math against PyTorch in float64, every compiled algorithm
against the float64 reference within its named tolerance over zoo and random layer shapes where it applies (each
test asserts which kernel ran: ``layer_algorithms``), the documented error for an algorithm forced or hand-set
where it does not apply, epilogues, the registry as the single source of tolerances and defaults, the selection
pass (error budget, measured times from the database, forcing), tuning and its resumption, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import cnncc
from cnncc.codegen.select import DEFAULT_ALGORITHMS, CpuConvChooser, MachineModel, emulated_error
from cnncc.codegen.target import Target
from cnncc.codegen.transforms import WINOGRAD_POINTS, TransformConv, _winograd, emulate
from cnncc.convalgo import ConvShape, lookup, records
from cnncc.errors import AlgorithmError
from cnncc.frontend import models
from cnncc.ir import GraphBuilder
from cnncc.ops.conv2d import ALGORITHMS, Conv2dAttrs, ConvImpl
from cnncc.ops.conv2d_grad_input import Conv2dGradAttrs
from cnncc.runtime import interpret
from cnncc.testing import TOL_ALGORITHM, TOL_F64, rel_error
from cnncc.tuner import layer_graph, measure, model_convs, tune_shapes
from cnncc.tuning import TuningDB

MACHINE = MachineModel(peak_gflops=100.0, cache_gbs=80.0, dram_gbs=20.0)  # fixed: tests must not depend on timing


def shape(n: int, c: int, h: int, w: int, k: int, r: int, stride: int = 1, pad: int | None = None) -> ConvShape:
    p = r // 2 if pad is None else pad
    oh, ow = (h + 2 * p - r) // stride + 1, (w + 2 * p - r) // stride + 1
    return ConvShape(n, c, h, w, k, r, r, (stride, stride), (p, p, p, p), (1, 1), 1, oh, ow)


def why_not(algorithm: str, cs: ConvShape) -> str | None:
    return lookup(algorithm, "cpu").why_not(cs)


def transform(algorithm: str, r: int, stride: int) -> TransformConv:
    return lookup(algorithm, "cpu").hooks.transform(r, r, stride, stride)


def torch_conv64(x: np.ndarray, w: np.ndarray, cs: ConvShape) -> np.ndarray:
    t = torch.nn.functional.pad(torch.tensor(x), (cs.padding[2], cs.padding[3], cs.padding[0], cs.padding[1]))
    return torch.nn.functional.conv2d(t, torch.tensor(w), stride=cs.stride).numpy()


# -- the transforms' math -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm,r,stride", [("winograd2", 3, 1), ("winograd4", 3, 1), ("winograd6", 3, 1),
                                                ("fft8", 3, 1), ("fft8", 5, 1), ("fft16", 5, 1), ("fft16", 7, 2),
                                                ("fft16", 11, 4), ("fft8", 4, 1)])
def test_transform_math_equals_torch_in_float64(algorithm: str, r: int, stride: int) -> None:
    rng = np.random.default_rng(1)
    cs = shape(2, 5, 19, 23, 6, r, stride, pad=r // 2)
    x = rng.standard_normal((cs.n, cs.c, cs.h, cs.w))
    w = rng.standard_normal((cs.k, cs.c, r, r))
    got = emulate(x, w, transform(algorithm, r, stride), cs.padding, np.float64)
    assert rel_error(got, torch_conv64(x, w, cs)) <= TOL_F64


def test_winograd_f23_matches_the_one_dimensional_definition() -> None:
    """F(2,3) on d = (1, 2, 3, 4), g = (1, 0, -1): y = (d0 - d2, d1 - d3) = (-2, -2), exactly."""
    at, g, bt = _winograd(2, 3)
    d, gv = np.array([1.0, 2, 3, 4]), np.array([1.0, 0, -1])
    assert np.array_equal(at @ ((g @ gv) * (bt @ d)), [-2.0, -2.0])
    assert at.shape == (2, 4) and g.shape == (4, 3) and bt.shape == (4, 4)


def test_winograd_points_are_the_stable_set() -> None:
    """{0, +-1, +-2} for F(4,3); F(6,3) adds +-1/2 instead of +-3 (integer-only sets lose ~100x accuracy)."""
    assert set(WINOGRAD_POINTS[:5]) == {0, 1, -1, 2, -2}
    assert set(WINOGRAD_POINTS[5:7]) == {Fraction(1, 2), Fraction(-1, 2)}
    e4 = emulated_error(shape(1, 256, 14, 14, 64, 3), "winograd4")
    e6 = emulated_error(shape(1, 256, 14, 14, 64, 3), "winograd6")
    ed = emulated_error(shape(1, 256, 14, 14, 64, 3), "direct")
    assert ed < e4 < e6 < 200 * ed, (ed, e4, e6)


def test_fft_codelets_are_cheaper_than_dense_dft() -> None:
    """The radix-2 factorisation is used where it saves operations (the generator keeps the cheaper form)."""
    tc = transform("fft16", 5, 1)
    dense_in = 16 * (2 * 9) * 16 + 9 * (2 * 16) * (2 * 16)  # dense DFT along W, then along H
    assert sum(tc.transform_ops()) < 0.75 * dense_in + 16 * 16 * 12


# -- compiled algorithms against float64 --------------------------------------------------------------------------


def compiled_error(cs: ConvShape, algorithm: str, cpu: str = "host", threads: int = 1) -> tuple[float, np.ndarray]:
    """The layer compiled with ``algorithm`` hand-set: its error against float64 and its output, after asserting
    that the kernel which ran is ``algorithm``'s."""
    m = measure(cs, ConvImpl(algorithm), cpu, threads, repeats=1)
    graph, params, inputs = layer_graph(cs, ConvImpl(algorithm))
    cm = cnncc.compile(graph, params=params, cpu=cpu, threads=threads, batch=cs.n, optimize_graph=False)
    assert cm.layer_algorithms == {"conv": algorithm}
    return m.error, cm.run(inputs)["y"]


ZOO_SHAPES = {  # distinct conv layers of the zoo (batch 1), one per kind of constraint
    "resnet18.layer1": shape(1, 64, 56, 56, 64, 3),
    "resnet18.layer3": shape(1, 256, 14, 14, 256, 3),
    "vgg11.conv3": shape(1, 128, 56, 56, 256, 3),
    "resnet18.conv1": shape(1, 3, 224, 224, 64, 7, 2),
    "alexnet.conv2": shape(1, 64, 27, 27, 192, 5),
    "alexnet.conv1": shape(1, 3, 227, 227, 64, 11, 4, pad=2),
    "googlenet.5x5": shape(1, 16, 28, 28, 32, 5),
    "resnet18.1x1s2": shape(1, 64, 56, 56, 128, 1, 2, pad=0),
    "lenet5.conv2": shape(1, 6, 14, 14, 16, 5, pad=0),
}


@pytest.mark.parametrize("name,algorithm", [(n, a) for n, cs in ZOO_SHAPES.items() for a in ALGORITHMS
                                             if a != "fft16" and why_not(a, cs) is None])
def test_algorithm_on_zoo_layer(name: str, algorithm: str) -> None:
    cs = ZOO_SHAPES[name]
    err, _ = compiled_error(cs, algorithm)
    assert err <= TOL_ALGORITHM[algorithm], f"{name} {algorithm}: {err:.2e}"


@pytest.mark.parametrize("name", ["alexnet.conv2", "alexnet.conv1"])
def test_fft16_on_alexnet_layers(name: str) -> None:
    err, _ = compiled_error(ZOO_SHAPES[name], "fft16")
    assert err <= TOL_ALGORITHM["fft16"]


# Kernel sizes and strides each algorithm applies to (its record's rule admits them): the draws are applicable by
# construction, and what the rule still rejects (an FFT tile too small for kernel + stride) is discarded by assume.
RANDOM_KERNELS = {"im2col": ([1, 3, 5], [1, 2, 3]), "winograd2": ([3], [1]), "winograd4": ([3], [1]),
                  "winograd6": ([3], [1]), "fft8": ([3, 5], [1, 2, 3])}


@st.composite
def applicable_layers(draw: st.DrawFn) -> tuple[str, ConvShape]:
    algorithm = draw(st.sampled_from(sorted(RANDOM_KERNELS)))
    kernels, strides = RANDOM_KERNELS[algorithm]
    r, stride = draw(st.sampled_from(kernels)), draw(st.sampled_from(strides))
    n, c, k = draw(st.integers(1, 2)), draw(st.integers(1, 40)), draw(st.integers(1, 40))
    h, w = draw(st.integers(3, 20)), draw(st.integers(3, 20))
    pads = draw(st.tuples(*[st.integers(0, 2)] * 4))
    oh, ow = (h + pads[0] + pads[1] - r) // stride + 1, (w + pads[2] + pads[3] - r) // stride + 1
    assume(oh >= 1 and ow >= 1)
    cs = ConvShape(n, c, h, w, k, r, r, (stride, stride), pads, (1, 1), 1, oh, ow)
    assume(why_not(algorithm, cs) is None)
    return algorithm, cs


@settings(max_examples=12, deadline=None)
@given(case=applicable_layers())
def test_algorithms_on_random_layers(case: tuple[str, ConvShape]) -> None:
    algorithm, cs = case
    err, _ = compiled_error(cs, algorithm)  # asserts that the algorithm's own kernel ran
    assert err <= TOL_ALGORITHM[algorithm]


@pytest.mark.parametrize("algorithm", ["winograd4", "fft8", "im2col"])
def test_algorithms_on_avx2_code(algorithm: str) -> None:
    cs = shape(2, 20, 13, 11, 24, 3)
    err, _ = compiled_error(cs, algorithm, cpu="x86-64-v3")
    assert err <= TOL_ALGORITHM[algorithm]


@pytest.mark.parametrize("algorithm", ["winograd4", "fft8", "im2col"])
def test_one_and_two_threads_bit_identical(algorithm: str) -> None:
    cs = shape(1, 32, 20, 20, 48, 3)
    _, y1 = compiled_error(cs, algorithm, threads=1)
    _, y2 = compiled_error(cs, algorithm, threads=2)
    assert np.array_equal(y1, y2)


NOT_APPLICABLE = [  # (algorithm, layer, the error's rule)
    ("winograd4", ConvShape(1, 32, 10, 10, 32, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 4, 10, 10),
     r"groups=4: only direct convolution runs grouped and depthwise layers"),
    ("fft8", ConvShape(1, 16, 12, 12, 16, 3, 3, (1, 1), (2, 2, 2, 2), (2, 2), 1, 12, 12),
     r"dilation \(2, 2\): needs dilation 1"),
    ("winograd4", shape(1, 16, 12, 12, 16, 1, pad=0), r"kernel 1x1: Winograd F\(m, 3x3\) needs a 3x3 kernel"),
    ("winograd4", shape(1, 16, 12, 12, 16, 3, 2), r"stride \(2, 2\): Winograd needs stride 1"),
    ("winograd2", shape(1, 16, 12, 12, 16, 5), r"kernel 5x5: Winograd F\(m, 3x3\) needs a 3x3 kernel"),
    ("depthwise", shape(1, 16, 12, 12, 16, 3), r"groups=1, 16 channels, 16 filters: the depthwise kernel needs"),
]


@pytest.mark.parametrize("algorithm,cs,rule", NOT_APPLICABLE)
def test_hand_set_algorithm_that_does_not_apply_is_an_error(algorithm: str, cs: ConvShape, rule: str) -> None:
    """An ``impl`` in the IR that does not apply reaches the lowering: the documented error, never direct code."""
    graph, params, _ = layer_graph(cs, ConvImpl(algorithm))
    with pytest.raises(AlgorithmError, match=f"^layer 'conv': {algorithm} does not apply: {rule}"):
        cnncc.compile(graph, params=params, batch=cs.n, optimize_graph=False)


def forcing_net() -> models.nn.Model:
    import cnncc.frontend as nn

    x = nn.Input((16, 12, 12))
    h = nn.Conv2d(16, 3, padding=1, name="c3x3")(x)
    h = nn.Conv2d(16, 1, name="c1x1")(h)
    y = nn.Conv2d(16, 3, stride=2, padding=1, name="strided")(h)
    return nn.Model(x, y, name="forcing")


@pytest.mark.parametrize("layer,rule", [("c1x1", r"kernel 1x1: Winograd F\(m, 3x3\) needs a 3x3 kernel"),
                                        ("strided", r"stride \(2, 2\): Winograd needs stride 1")])
def test_forcing_an_algorithm_where_it_does_not_apply_raises(layer: str, rule: str) -> None:
    with pytest.raises(AlgorithmError, match=f"^layer '{layer}': winograd4 does not apply: {rule}$"):
        cnncc.compile(forcing_net(), algorithms={layer: "winograd4"})


def test_forcing_per_layer_runs_the_forced_kernels_and_chooses_the_rest(tmp_path: Path) -> None:
    cm = cnncc.compile(forcing_net(), algorithms={"c3x3": "winograd2", "c1x1": "im2col"}, tuning_db=tmp_path / "db")
    assert cm.layer_algorithms["c3x3"] == "winograd2" and cm.layer_algorithms["c1x1"] == "im2col"
    assert cm.choices["c3x3"].basis == "forced" and cm.choices["strided"].basis != "forced"
    assert cm.layer_algorithms["strided"] == cm.choices["strided"].impl.algorithm
    with pytest.raises(cnncc.CnnccError, match="no convolution layer named 'c9'"):
        cnncc.compile(forcing_net(), algorithms={"c9": "direct"})
    with pytest.raises(cnncc.CnnccError, match="unknown convolution algorithm"):
        cnncc.compile(forcing_net(), algorithms={"c3x3": "strassen"})


def test_backward_data_impl_that_does_not_apply_is_an_error() -> None:
    b = GraphBuilder("backward")
    dy, w = b.input("dy", (1, 16, 6, 6)), b.param("w", (16, 16, 3, 3))
    attrs = Conv2dGradAttrs((2, 2), (1, 1, 1, 1), (1, 1), 1, (12, 12), ConvImpl("winograd4"))
    b.output(b.apply("conv2d_grad_input", [dy, w], attrs, layer="conv.grad_input"), "dx")
    params = {"w": np.ones((16, 16, 3, 3), np.float32)}
    with pytest.raises(AlgorithmError, match=r"^layer 'conv.grad_input': winograd4 does not apply: stride \(2, 2\)"):
        cnncc.compile(b.build(), params=params, optimize_graph=False)


def test_backward_data_selection_keeps_compile_time_weights_on_the_baseline(tmp_path: Path) -> None:
    """Backward data with weights known at compile time stays on the baseline (Winograd runs backward data only
    with a run-time filter transform), chosen in the IR and reported as what ran."""
    b = GraphBuilder("backward")
    dy, w = b.input("dy", (1, 32, 12, 12)), b.param("w", (32, 32, 3, 3))
    attrs = Conv2dGradAttrs((1, 1), (1, 1, 1, 1), (1, 1), 1, (12, 12))
    b.output(b.apply("conv2d_grad_input", [dy, w], attrs, layer="conv.grad"), "dx")
    cm = cnncc.compile(b.build(), params={"w": np.ones((32, 32, 3, 3), np.float32)}, tuning_db=tmp_path / "db")
    assert cm.layer_algorithms == {"conv.grad": "direct"}
    assert "compile-time weights" in cm.choices["conv.grad"].not_applicable["winograd4"]


def test_registry_is_the_single_source() -> None:
    """Tolerances, the default candidates, the training set and the IR's algorithm names all come from the
    registry's records (a new record changes them all)."""
    cpu = records("cpu")
    assert TOL_ALGORITHM == {r.name: r.tolerance for r in cpu}
    assert DEFAULT_ALGORITHMS == tuple(r.name for r in cpu) and set(ALGORITHMS) == set(DEFAULT_ALGORITHMS)
    assert {r.name for r in cpu if r.runtime_weights} == {"direct", "depthwise", "im2col", "winograd2", "winograd4",
                                                          "winograd6"}
    assert {r.name for r in cpu if r.baseline} == {"direct", "depthwise"}
    assert {r.precision for r in cpu} == {"fp32"}
    for r in cpu:
        assert r.arithmetic.tolerance_reason and r.hooks.lower and r.hooks.estimate and r.hooks.error
    fft = ConvShape(1, 16, 12, 12, 16, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1, 12, 12)
    assert "run time" in lookup("fft8", "cpu").why_not(fft, runtime_weights=True)


@pytest.mark.parametrize("algorithm", ["winograd4", "winograd2", "fft8", "im2col"])
def test_fused_epilogue_and_residual(algorithm: str) -> None:
    """A residual block (conv+BN+ReLU, conv+BN + identity, ReLU) with the algorithm forced on both convs."""
    import cnncc.frontend as nn
    from cnncc.testing import randomize

    x = nn.Input((20, 19, 21))
    h = nn.Conv2d(20, 3, padding=1, bias=False, name="c1")(x)
    h = nn.ReLU(name="r1")(nn.BatchNorm(name="bn1")(h))
    h = nn.BatchNorm(name="bn2")(nn.Conv2d(20, 3, padding=1, bias=False, name="c2")(h))
    y = nn.ReLU(name="r2")(nn.Add(name="add")([h, x]))
    model = nn.Model(x, y, name="block")
    randomize(model, 3)
    cm = cnncc.compile(model, batch=2, algorithms=algorithm)
    assert {c.impl.algorithm for c in cm.choices.values()} == {algorithm}
    assert cm.layer_algorithms == {"c1": algorithm, "c2": algorithm}
    inp = np.random.default_rng(0).standard_normal((2, 20, 19, 21)).astype(np.float32)
    want = interpret(model.graph(2), {cm.input_names[0]: inp.astype(np.float64)}, model.params, dtype="float64")
    got = cm(inp)
    assert rel_error(got, next(iter(want.values()))) <= TOL_ALGORITHM[algorithm]


def test_conv_impl_attribute_is_validated_and_printed() -> None:
    b = GraphBuilder("g")
    x = b.input("x", (1, 4, 8, 8))
    w = b.param("w", (4, 4, 3, 3))
    with pytest.raises(cnncc.CnnccError, match="algorithm 'strassen' is not one of direct, depthwise, im2col"):
        b.apply("conv2d", [x, w], Conv2dAttrs(padding=(1, 1, 1, 1), impl=ConvImpl("strassen")))
    y = b.apply("conv2d", [x, w], Conv2dAttrs(padding=(1, 1, 1, 1), impl=ConvImpl("winograd4")))
    z = b.apply("conv2d", [y, w], Conv2dAttrs(padding=(1, 1, 1, 1)))
    b.output(z)
    text = b.build().text()
    assert "impl={algorithm=winograd4, ur_w=0, ocb=0}" in text
    assert text.count("impl=") == 1  # unset: not printed, so graphs without it keep their text and hash


# -- selection ------------------------------------------------------------------------------------------------------


def chooser(tmp_path: Path, **kw: object) -> CpuConvChooser:
    return CpuConvChooser(Target.host(), db=TuningDB(tmp_path / "db.json"), machine=MACHINE, **kw)  # type: ignore


def test_model_prefers_winograd_on_wide_3x3_and_direct_elsewhere(tmp_path: Path) -> None:
    ch = chooser(tmp_path)
    assert ch.choose_shape(shape(1, 64, 56, 56, 64, 3)).impl.algorithm.startswith("winograd")
    assert ch.choose_shape(shape(1, 64, 56, 56, 128, 1, 2, pad=0)).impl.algorithm == "direct"
    dw = ConvShape(1, 32, 28, 28, 32, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 32, 28, 28)
    c = ch.choose_shape(dw)
    assert c.impl.algorithm == "depthwise" and c.basis == "only candidate"
    assert "only direct" in c.not_applicable["winograd4"]
    assert "depthwise layer runs on the depthwise kernel" in c.not_applicable["direct"]
    only_direct = chooser(tmp_path, algorithms=("direct",))  # "direct" stands for the baseline: depthwise here
    assert only_direct.choose_shape(dw).impl.algorithm == "depthwise"


def test_error_budget_excludes_candidates(tmp_path: Path) -> None:
    cs = shape(1, 128, 28, 28, 128, 3)
    tight = chooser(tmp_path, max_error=3e-6).choose_shape(cs, all_errors=True)
    excluded = {c.impl.algorithm for c in tight.candidates if c.excluded}
    assert {"winograd4", "winograd6"} <= excluded
    assert tight.impl.algorithm not in excluded
    assert "budget 3e-06" in tight.reason()
    loose = chooser(tmp_path).choose_shape(cs)
    assert loose.impl.algorithm in ("winograd4", "winograd6")


def test_measured_times_in_the_database_decide(tmp_path: Path) -> None:
    ch = chooser(tmp_path)
    cs = shape(1, 64, 28, 28, 64, 3)
    assert ch.choose_shape(cs).basis == "model"
    ch.db.put(ch.key(cs), {"best": "im2col", "measured": {
        "im2col": {"seconds": 1e-4, "error": 1e-7, "impl": {"algorithm": "im2col", "ur_w": 0, "ocb": 0}},
        "winograd4": {"seconds": 5e-4, "error": 1e-6, "impl": {"algorithm": "winograd4", "ur_w": 0, "ocb": 0}}}})
    c = ch.choose_shape(cs)
    assert (c.impl.algorithm, c.basis) == ("im2col", "measured")
    assert "measured 0.100 ms" in c.reason()


def test_restricting_algorithms_and_unknown_names(tmp_path: Path) -> None:
    assert chooser(tmp_path, algorithms=("direct",)).choose_shape(shape(1, 64, 56, 56, 64, 3)).impl == ConvImpl()
    with pytest.raises(cnncc.CnnccError, match="unknown convolution algorithm"):
        chooser(tmp_path, algorithms=("direct", "magic"))
    with pytest.raises(cnncc.CnnccError, match="max_error must be a positive"):
        chooser(tmp_path, max_error=-1.0)


def test_resnet18_compiled_with_selection_matches_reference(tmp_path: Path) -> None:
    from cnncc.testing import randomize

    m = models.resnet18()
    randomize(m, 0)
    cm = cnncc.compile(m, tuning_db=tmp_path / "db.json")
    algos = {c.impl.algorithm for c in cm.choices.values()}
    assert "direct" in algos and algos & {"winograd2", "winograd4", "winograd6"}
    assert cm.layer_algorithms == {layer: c.impl.algorithm for layer, c in cm.choices.items()}
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    want = interpret(m.graph(1), {cm.input_names[0]: x.astype(np.float64)}, m.params, dtype="float64")
    assert rel_error(cm(x), next(iter(want.values()))) <= 1e-4
    assert any("select-algorithms: layer1.0.conv1: winograd" in line for line in cm.pass_log)


# -- tuning ---------------------------------------------------------------------------------------------------------


def test_tuning_fills_the_database_and_resumes(tmp_path: Path) -> None:
    m = models.lenet5()
    graph, _, _ = cnncc.api.optimize(m.graph(1), m.params)
    shapes = model_convs(graph)
    ch = chooser(tmp_path, algorithms=("direct", "im2col"))
    first = tune_shapes(shapes, ch, top=2, repeats=2, budget_s=0.0)  # budget spent after the first shape
    keys = [ch.key(cs) for cs in shapes]
    assert len(first) == 1 and not first[0].skipped
    assert ch.db.get(keys[0]) is not None and ch.db.get(keys[1]) is None
    second = tune_shapes(shapes, ch, top=2, repeats=2)
    assert [r.skipped for r in second] == [True, False]
    rec = ch.db.get(ch.key(next(iter(shapes))))
    assert rec["best"] in rec["measured"] and {"direct", "im2col"} <= set(rec["measured"])
    c = ch.choose_shape(next(iter(shapes)))
    assert c.basis == "measured" and c.impl == ConvImpl(**rec["measured"][rec["best"]]["impl"])


# -- CLI ------------------------------------------------------------------------------------------------------------


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"CNNCC_TUNING_DB": str(tmp_path / "db.json"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    return subprocess.run([sys.executable, "-m", "cnncc.cli", *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)


def test_cli_bench_tune_explain(tmp_path: Path) -> None:
    r = run_cli(tmp_path, "bench", "lenet5", "--algorithms", "direct,im2col,fft8", "--repeats", "2")
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "bench-lenet5.json").read_text())
    assert {row["algorithm"] for row in report["rows"]} == {"direct", "im2col", "fft8"}
    assert all(row["error"] < 1e-5 and row["gflops"] > 0 for row in report["rows"])
    assert (tmp_path / "bench-lenet5.png").read_bytes()[:4] == b"\x89PNG"
    assert "% peak" in r.stdout and "selected" in r.stdout
    r = run_cli(tmp_path, "tune", "lenet5", "--top", "1", "--repeats", "2")
    assert r.returncode == 0, r.stderr
    assert "conv1" in r.stdout
    r = run_cli(tmp_path, "explain", "lenet5")
    assert r.returncode == 0, r.stderr
    assert "CHOSEN (measured)" in r.stdout and "not applicable" in r.stdout
    assert "schedule: register tile" in r.stdout or "schedule: patch matrix" in r.stdout
    r = run_cli(tmp_path, "explain", "lenet5", "--layer", "nope")
    assert r.returncode == 2 and "no conv layer named 'nope'; the conv layers are: conv1, conv2" in r.stderr


def test_compile_survives_a_corrupted_tuning_database(tmp_path: Path) -> None:
    from cnncc.tuning import TuningDBWarning

    path = tmp_path / "db.json"
    path.write_text('{"format": "cnncc-tuning", "version": 1, "records": {"conv2d n1')  # a write cut short
    with pytest.warns(TuningDBWarning, match="rebuild"):
        cm = cnncc.compile(models.lenet5(), tuning_db=path)
    assert cm.choices["conv1"].impl.algorithm in ALGORITHMS
    assert json.loads(path.read_text())["format"] == "cnncc-tuning"  # rebuilt with this compile's records
    assert (tmp_path / "db.json.corrupt").exists()
