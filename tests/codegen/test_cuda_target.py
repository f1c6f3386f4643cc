"""The TVM CUDA target without a GPU: every kernel family's numerics on the CPU, two ways, against independent
references, and the build (nvcc, ptxas report, launch plan) of small models and zoo models.

* **TE on LLVM** (:mod:`cnncc.codegen.cuda.emulate`): each call's TE compute -- the one the CUDA kernel is scheduled
  from -- built for TVM's LLVM target and run over the launch plan's regions: checks lowering, weight packing,
  epilogues, the memory plan and the arena layout.
* **CUDA C on the CPU** (:mod:`cnncc.testing.cuda_on_cpu`): the generated CUDA C itself, one host thread per CUDA
  thread, shared memory and ``__syncthreads`` included: checks the schedules.

References: the float64 reference interpreter (itself checked against PyTorch by the op tests) for the small models,
the PyTorch twins for zoo models. Tolerances: 1e-5 relative for plain summation, 1e-4 where a layer runs Winograd
(the registry's tolerances).
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

import cnncc
import cnncc.frontend as nn
from cnncc.errors import CnnccError

pytest.importorskip("tvm", reason="the CUDA target needs Apache TVM: pip install 'cnncc[cuda]'")

from cnncc.codegen.cuda.build import find_nvcc, kernel_params, parse_ptxas  # noqa: E402
from cnncc.codegen.cuda.emulate import emulate  # noqa: E402
from cnncc.codegen.cuda.lower import CudaUnsupported  # noqa: E402
from cnncc.testing.cuda_on_cpu import cxx_compiler, run_plan_on_cpu  # noqa: E402

needs_nvcc = pytest.mark.skipif(find_nvcc() is None, reason="nvcc (the CUDA toolkit) is not installed")
needs_cxx = pytest.mark.skipif(cxx_compiler() is None, reason="no C++ compiler for CUDA-on-CPU")

TOL = 1e-5
TOL_WINOGRAD = 1e-4


def rel_error(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30))


def both_ways(model: nn.Model, batch: int = 2, algorithms: object = None, seed: int = 1,
              on_cpu: bool = True) -> tuple[object, np.ndarray, list[np.ndarray]]:
    """Compile for CUDA; the float64 reference and the outputs of the TE emulation and of the CUDA C on the CPU."""
    compiled = cnncc.compile(model, target="cuda", batch=batch, algorithms=algorithms)
    ex = compiled.executable
    x = np.random.default_rng(seed).standard_normal(ex.graph.inputs[0].shape).astype(np.float32)
    ref = np.asarray(model(x, dtype="float64"))
    outs = [emulate(ex.native, ex.program, [x])[0]]
    if on_cpu:
        outs.append(run_plan_on_cpu(ex.native, [x])[0])
    return compiled, ref, [o.reshape(ref.shape) for o in outs]


def small_convnet() -> nn.Model:
    """Every conv shape class: 3x3 pad 1 (+ReLU), 7x7 stride 2 with bias, 1x1, grouped, dilated, non-square,
    depthwise with ReLU6, a residual add fused into a conv epilogue, pools with padding and ceil mode."""
    x = nn.Input((5, 19, 17), seed=3)
    y = nn.Conv2d(16, 3, padding=1, activation="relu", name="c3x3")(x)
    y = nn.Conv2d(12, 7, stride=2, padding=3, name="c7x7")(y)
    y = nn.MaxPool2d(3, 2, padding=1, name="mp")(y)
    z = nn.Conv2d(12, 1, activation="relu", name="c1x1")(y)
    z = nn.Conv2d(12, 3, padding=1, groups=3, name="grouped")(z)
    z = nn.Conv2d(12, 3, padding=2, dilation=2, name="dilated")(z)
    z = nn.Conv2d(12, (3, 1), padding=(1, 1, 0, 0), name="tall")(z)
    z = nn.Conv2d(12, 3, padding=1, groups=12, activation="relu6", name="dw")(z)
    y = nn.Add(name="res")([y, z])
    y = nn.ReLU(name="res_relu")(y)
    y = nn.AvgPool2d(2, 2, name="ap")(y)
    y = nn.Flatten(name="flat")(y)
    y = nn.Linear(10, activation="relu", name="fc1")(y)
    y = nn.Linear(7, name="fc2")(y)
    return nn.Model(x, nn.Softmax(name="softmax")(y), name="small_convnet")


def head_model() -> nn.Model:
    """Standalone element-wise ops (no convolution to fuse into), batch norm that cannot fold, concat, global
    average pooling, log-softmax, squeeze-excitation broadcasting."""
    x = nn.Input((6, 9, 9), seed=4)
    a = nn.Conv2d(8, 3, padding=1, name="a")(x)
    b = nn.MaxPool2d(3, 1, padding=1, name="b")(x)
    y = nn.Concat(name="cat")([a, b])
    y = nn.BatchNorm(name="bn")(y)
    y = nn.LeakyReLU(0.1, name="leaky")(y)
    y = nn.ELU(0.7, name="elu")(y)
    s = nn.GlobalAvgPool2d(name="gap")(y)
    s = nn.Conv2d(14, 1, activation="sigmoid", name="gate")(s)
    y = nn.Multiply(name="excite")([y, s])
    y = nn.Tanh(name="tanh")(y)
    y = nn.Softplus(name="softplus")(y)
    y = nn.Hardtanh(-0.5, 0.5, name="hardtanh")(y)
    y = nn.GlobalAvgPool2d(name="gap2")(y)
    y = nn.Flatten(name="flat")(y)
    y = nn.Linear(5, name="fc")(y)
    return nn.Model(x, nn.LogSoftmax(name="logsoftmax")(y), name="head_model")


@needs_nvcc
@needs_cxx
def test_conv_families_equal_the_float64_reference_two_ways() -> None:
    compiled, ref, outs = both_ways(small_convnet(), algorithms="direct")
    algos = compiled.layer_algorithms
    assert algos["dw"] == "depthwise" and algos["grouped"] == "direct" and algos["c3x3"] == "direct"
    launches = compiled.executable.native.launches
    families = {launch.kernel.split("_", 2)[-1].removesuffix("_kernel") for launch in launches}
    assert {"conv", "depthwise", "max_pool", "avg_pool", "linear_partial", "linear_reduce", "softmax"} <= families
    for out in outs:
        assert rel_error(out, ref) <= TOL


@needs_nvcc
@needs_cxx
@pytest.mark.parametrize("algorithm", ["winograd2", "winograd4"])
def test_winograd_with_a_fused_residual_equals_the_reference(algorithm: str) -> None:
    x = nn.Input((6, 11, 10), seed=5)
    y = nn.Conv2d(8, 3, padding=1, activation="relu", name="c1")(x)
    z = nn.Conv2d(8, 3, padding=1, name="c2")(y)
    out = nn.ReLU(name="relu")(nn.Add(name="res")([y, z]))
    model = nn.Model(x, out, name="wino")
    compiled, ref, outs = both_ways(model, algorithms={"c1": algorithm, "c2": algorithm})
    assert compiled.layer_algorithms == {"c1": algorithm, "c2": algorithm}
    kernels = {launch.kernel.split("_", 2)[-1] for launch in compiled.executable.native.launches}
    assert {"wino_input_kernel", "wino_gemm_kernel", "wino_output_kernel"} <= kernels
    for got in outs:
        assert rel_error(got, ref) <= TOL_WINOGRAD


@needs_nvcc
@needs_cxx
def test_elementwise_pooling_and_heads_equal_the_reference() -> None:
    compiled, ref, outs = both_ways(head_model(), batch=3)
    for got in outs:
        assert rel_error(got, ref) <= TOL
    maps = [launch for launch in compiled.executable.native.launches if launch.kernel.endswith("_map_kernel")]
    assert len(maps) >= 7  # concat, batch norm, five activations, the broadcast multiply


@needs_nvcc
@needs_cxx
def test_nhwc_input_transposes_and_small_batch_is_one_launch_plan() -> None:
    from cnncc.frontend.models import get_model

    model = get_model("keras_sequential")
    compiled, ref, outs = both_ways(model, batch=2)
    assert any(launch.kernel.endswith("_map_kernel") for launch in compiled.executable.native.launches)
    for got in outs:
        assert rel_error(got, ref) <= TOL


@needs_nvcc
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_zoo_model_emulated_equals_pytorch(name: str) -> None:
    """The whole network through the TE computes of its launch plan vs its PyTorch twin in float32."""
    torch = pytest.importorskip("torch")
    from cnncc.frontend.models import get_model
    from cnncc.testing.twins import TWINS

    model = get_model(name)
    compiled = cnncc.compile(model, target="cuda")
    ex = compiled.executable
    x = np.random.default_rng(0).standard_normal(ex.graph.inputs[0].shape).astype(np.float32)
    twin = TWINS[name]()
    twin.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in model.params.items()})
    with torch.no_grad():
        ref = twin.eval()(torch.from_numpy(x)).numpy()
    got = emulate(ex.native, ex.program, [x])[0].reshape(ref.shape)
    tol = TOL_WINOGRAD if any(a.startswith("winograd") for a in compiled.layer_algorithms.values()) else TOL
    assert rel_error(got, ref) <= tol


@needs_nvcc
@pytest.mark.parametrize("name", ["lenet5", "resnet18", "mobilenet_v2"])
def test_zoo_models_build_without_spills_and_with_a_valid_launch_plan(name: str) -> None:
    from cnncc.frontend.models import get_model

    code = cnncc.compile(get_model(name), target="cuda").executable.native
    code.validate(1024, 48 * 1024)
    assert set(code.ptxas) == set(code.kernels)  # ptxas reported every kernel
    for kernel, report in code.ptxas.items():
        assert report["registers"] > 0
        assert report["spill_stores"] == 0 and report["spill_loads"] == 0, (kernel, report)
    assert code.fatbin[:4] == b"\x50\xed\x55\xba"  # the fat binary's magic
    assert code.source.count("__global__") == 2 * len(code.kernels)  # declaration + definition, host code none


def test_ptxas_report_is_parsed() -> None:
    report = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'k1_conv_kernel' for 'sm_90'
ptxas info    : Function properties for k1_conv_kernel
    0 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 40 registers, used 1 barriers, 4096 bytes smem, 384 bytes cmem[0]"""
    assert parse_ptxas(report) == {"k1_conv_kernel": {"registers": 40, "spill_stores": 8, "spill_loads": 4,
                                                      "shared": 4096, "stack": 0}}


def test_kernel_parameters_map_to_call_buffers() -> None:
    source = ('extern "C" __global__ void __launch_bounds__(256) k0_kernel(float* __restrict__ a1_ptr, '
              'float* __restrict__ a0_ptr, float* __restrict__ y_ptr) {\n}\n'
              'extern "C" __global__ void k1_kernel(float* __restrict__ a0_ptr, float* __restrict__ y_ptr) {\n}\n')
    assert kernel_params(source) == {"k0_kernel": [1, 0, -1], "k1_kernel": [0, -1]}
    with pytest.raises(CnnccError, match="parameter cnncc does not pass"):
        kernel_params('extern "C" __global__ void k(int n, float* __restrict__ y_ptr) {\n}\n')


def test_training_and_unsupported_ops_are_refused_with_the_layer() -> None:
    x = nn.Input((3, 8, 8), seed=0)
    model = nn.Model(x, nn.Dropout(0.5, name="drop")(nn.Conv2d(4, 3, name="conv")(x)), name="m")
    graph = model.graph(1)
    from cnncc.codegen.cuda.target import CudaTarget

    with pytest.raises(CnnccError, match="inference only"):
        CudaTarget().chooser(1e-4, None, None, runtime_weights=True)
    with pytest.raises(CudaUnsupported, match="training state"):
        CudaTarget().lower(graph, model.params, state=("conv.weight",))
    with pytest.raises(CnnccError, match="sm_70 or newer"):
        cnncc.compile(model, target="cuda", cuda_arch="sm_52")


@needs_nvcc
def test_cli_compiles_a_cuda_bundle_and_load_says_there_is_no_device(tmp_path: object, capsys: object) -> None:
    from cnncc.cli import main

    out = os.path.join(str(tmp_path), "lenet5")
    assert main(["compile", "lenet5", "--target", "cuda", "-o", out]) == 0
    printed = capsys.readouterr().out  # type: ignore[attr-defined]
    assert "compiled for CUDA sm_90" in printed and "0 B spilled" in printed
    for f in ("lenet5.fatbin", "lenet5.weights", "lenet5.h", "lenet5_plan.c", "manifest.json"):
        assert os.path.isfile(os.path.join(out, f)), f
    if shutil.which("nvidia-smi") is None and not os.path.exists("/dev/nvidia0"):
        from cnncc.runtime.cuda import NoCudaDevice

        with pytest.raises(NoCudaDevice, match="^no CUDA device: "):
            cnncc.load(out)


@needs_nvcc
def test_readme_cuda_section_runs(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's CUDA command (as written, into a temporary folder) and its Python lines run here, without a GPU."""
    import re
    import shlex
    from pathlib import Path

    from cnncc.cli import main
    from cnncc.testing import repo_root

    readme = (repo_root(__file__) / "README.md").read_text()
    section = readme[readme.index("## NVIDIA GPUs"):readme.index("## Design")]
    command = shlex.split(re.search(r"```bash\n(.*?)```", section, re.S).group(1).split("#")[0])
    monkeypatch.chdir(str(tmp_path))
    assert command[:4] == ["cnncc", "compile", "resnet18", "--target"] and main(command[1:]) == 0
    manifest = (Path(str(tmp_path)) / "build" / "resnet18-cuda" / "manifest.json").read_text()
    assert '"arch": "sm_90"' in manifest and '"max_batch": 8' in manifest
    exec(compile(re.search(r"```python\n(.*?)```", section, re.S).group(1), "README.md", "exec"), {})
