"""The CUDA runtime (cnncc.runtime.cuda) around a hand-built CudaCode: two hand-written kernels (t = x * w, then
y = relu(t)) compiled by nvcc to a fat binary, wrapped in an executable over a one-layer graph. Without a GPU:
the launch-plan checks, the lazy device, NoCudaDevice with its message on each path (no library, cuInit failing,
no devices; the last two through a fake driver library built here), the input checks. With a GPU (skipped
otherwise): results against numpy, with and without CUDA graphs, at the full and a smaller batch, and profiling."""

from __future__ import annotations

import ctypes.util
import dataclasses
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from cnncc.codegen.cuda.build import find_nvcc
from cnncc.errors import CnnccError, InputError
from cnncc.launch_plan import CudaCode, IOSlot, KernelArg
from cnncc.runtime.compiled import KernelTiming
from cnncc.runtime.cuda import CudaModel, Driver, NoCudaDevice
from cnncc.testing.cuda_tiny import (
    BATCH,
    NBYTES,
    SAMPLE,
    N,
    build_fatbin,
    has_gpu,
    reference,
    tiny_code,
    tiny_executable,
)

NVCC = find_nvcc()  # $CNNCC_NVCC, $CUDA_HOME/bin, PATH or /usr/local/cuda/bin
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc is not installed (needed to build the test fat binary)")
HAS_GPU = has_gpu()
needs_gpu = pytest.mark.skipif(not HAS_GPU, reason="no CUDA device (libcuda.so.1 and a GPU are needed)")


@pytest.fixture(scope="module")
def weights() -> np.ndarray:
    return np.random.default_rng(3).uniform(-2, 2, SAMPLE).astype(np.float32)


@pytest.fixture(scope="module")
def code(tmp_path_factory: pytest.TempPathFactory, weights: np.ndarray) -> CudaCode:
    if NVCC is None:
        pytest.skip("nvcc is not installed (needed to build the test fat binary)")
    return tiny_code(build_fatbin(NVCC, tmp_path_factory.mktemp("cuda")), weights)


FAKE_DRIVER = r"""
#include <string.h>
static const char *names[] = {"CUDA_SUCCESS", "CUDA_ERROR_NO_DEVICE"};
int cuInit(unsigned flags) { (void)flags; return INIT_STATUS; }
int cuDeviceGetCount(int *n) { *n = 0; return 0; }
int cuGetErrorName(int e, const char **s) { *s = names[e == 100]; return 0; }
int cuGetErrorString(int e, const char **s) { *s = e ? "no CUDA-capable device is detected" : "no error"; return 0; }
"""


def fake_driver(directory: Path, init_status: int) -> Path:
    """A library with cuInit returning ``init_status`` and, when it succeeds, no devices."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    src, lib = directory / f"fake{init_status}.c", directory / f"libfakecuda{init_status}.so"
    src.write_text(FAKE_DRIVER)
    subprocess.run([cc, "-shared", "-fPIC", f"-DINIT_STATUS={init_status}", str(src), "-o", str(lib)], check=True)
    return lib


# -- without a GPU --------------------------------------------------------------------------------------------------

def test_validate_catches_bad_launches(weights: np.ndarray) -> None:
    good = tiny_code(b"", weights)
    good.validate()
    bad_block = dataclasses.replace(good.launches[1], block=(2048, 1, 1))
    with pytest.raises(CnnccError, match=r"launch 0 \(relu, layer 'act'\): block \(2048, 1, 1\) has 2048 threads"):
        dataclasses.replace(good, launches=[bad_block]).validate()
    outside = dataclasses.replace(good.launches[0], args=(KernelArg("arena", 3 * NBYTES, 16),))
    with pytest.raises(CnnccError, match=r"lies outside the arena region of 1536 B"):
        dataclasses.replace(good, launches=[outside]).validate()
    weights_outside = dataclasses.replace(good.launches[0], args=(KernelArg("weights", 64, 128),))
    with pytest.raises(CnnccError, match=r"outside the weights region of 128 B"):
        dataclasses.replace(good, launches=[weights_outside]).validate()
    with pytest.raises(CnnccError, match="region 'shared' is not one of weights, arena"):
        dataclasses.replace(good, launches=[dataclasses.replace(good.launches[0],
                                                                args=(KernelArg("shared", 0, 4),))]).validate()
    with pytest.raises(CnnccError, match=r"grid \(0, 1, 1\)"):
        dataclasses.replace(good, launches=[dataclasses.replace(good.launches[0], grid=(0, 1, 1))]).validate()
    with pytest.raises(CnnccError, match="tensor 'output'"):
        dataclasses.replace(good, outputs=[IOSlot("output", 3 * NBYTES, 16)]).validate()


def test_model_constructs_without_a_device(weights: np.ndarray) -> None:
    model = CudaModel(tiny_executable(tiny_code(b"", weights)), library="/nonexistent/libcuda.so.1")
    assert model.input_names == ["input"] and model.output_names == ["output"]
    assert model.max_batch == BATCH and model.use_graphs and model.device_name is None
    assert [s.shape for s in model.input_specs] == [(BATCH, 2, 4, 4)]
    assert model.layer_algorithms == {} and model.choices == {} and model.pass_log == []
    assert "device not opened yet" in repr(model) and "sm_90" in repr(model)
    assert not CudaModel(tiny_executable(tiny_code(b"", weights)), use_graphs=False).use_graphs


def test_first_run_without_driver_raises_no_cuda_device(weights: np.ndarray) -> None:
    model = CudaModel(tiny_executable(tiny_code(b"", weights)), library="/nonexistent/libcuda.so.1")
    x = np.ones((BATCH, 2, 4, 4), np.float32)
    for _ in range(2):  # a failed open leaves the model closed: the next call says the same
        with pytest.raises(NoCudaDevice, match=r"^no CUDA device: /nonexistent/libcuda\.so\.1 not found") as e:
            model(x)
        assert "target='cpu'" in str(e.value) and "NVIDIA" in str(e.value)
    with pytest.raises(NoCudaDevice, match="^no CUDA device: "):
        model.profile(x)
    model.close()


def test_library_from_the_environment(weights: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNNCC_LIBCUDA", "/nonexistent/libcuda-env.so.1")
    model = CudaModel(tiny_executable(tiny_code(b"", weights)))
    with pytest.raises(NoCudaDevice, match="libcuda-env.so.1 not found"):
        model.open()


@pytest.mark.skipif(HAS_GPU or ctypes.util.find_library("cuda") is not None, reason="a CUDA driver is installed")
def test_default_library_missing_here(weights: np.ndarray) -> None:
    with pytest.raises(NoCudaDevice, match=r"^no CUDA device: libcuda\.so\.1 not found"):
        CudaModel(tiny_executable(tiny_code(b"", weights)))(np.ones((1, 2, 4, 4), np.float32))


def test_cuinit_failure_and_no_devices(tmp_path: Path) -> None:
    with pytest.raises(NoCudaDevice, match=r"^no CUDA device: cuInit returned CUDA_ERROR_NO_DEVICE \(no CUDA-capable"):
        Driver(str(fake_driver(tmp_path, 100)))
    with pytest.raises(NoCudaDevice, match=r"^no CUDA device: the driver \(.*\) reports 0 devices; compile for"):
        Driver(str(fake_driver(tmp_path, 0)))


def test_inputs_checked_before_the_device(weights: np.ndarray) -> None:
    model = CudaModel(tiny_executable(tiny_code(b"", weights)), library="/nonexistent/libcuda.so.1")
    with pytest.raises(InputError, match="has dtype float64; the compiled model takes float32"):
        model(np.ones((1, 2, 4, 4)))
    with pytest.raises(InputError, match=r"with 1 <= batch <= 4"):
        model(np.ones((5, 2, 4, 4), np.float32))
    with pytest.raises(InputError, match=r"unknown input\(s\) \['x'\]"):
        model.run({"input": np.ones((1, 2, 4, 4), np.float32), "x": np.ones(1)})


def test_refuses_cpu_executables_and_bad_slots(weights: np.ndarray) -> None:
    ex = tiny_executable(tiny_code(b"", weights))
    with pytest.raises(CnnccError, match="needs an executable built for CUDA"):
        CudaModel(dataclasses.replace(ex, native=object()))
    short = dataclasses.replace(ex.native, outputs=[IOSlot("output", 2 * NBYTES, 16)])
    with pytest.raises(CnnccError, match="tensor 'output' of shape .* has an arena slot of 16 B"):
        CudaModel(dataclasses.replace(ex, native=short))


@needs_nvcc
def test_fatbin_builds(code: CudaCode) -> None:
    assert code.fatbin and code.kernels == ["scale", "relu"]


# -- with a GPU -----------------------------------------------------------------------------------------------------

@needs_gpu
@pytest.mark.parametrize("use_graphs", [True, False])
def test_runs_on_the_gpu(code: CudaCode, weights: np.ndarray, use_graphs: bool) -> None:
    rng = np.random.default_rng(0)
    with CudaModel(tiny_executable(code), use_graphs=use_graphs) as model:
        for batch in (BATCH, 2, BATCH, 1):  # the graph is captured once and replayed
            x = rng.standard_normal((batch, 2, 4, 4)).astype(np.float32)
            y = model(x)
            assert y.shape == x.shape
            np.testing.assert_array_equal(y, reference(x, weights))
        assert model.device_name and "device not opened yet" not in repr(model)


@needs_gpu
def test_profile_on_the_gpu(code: CudaCode, weights: np.ndarray) -> None:
    model = CudaModel(tiny_executable(code))
    timings = model.profile(np.ones((BATCH, 2, 4, 4), np.float32), repeats=3)
    assert [(t.layer, t.kernel, t.macs) for t in timings] == [("scale", "scale", N), ("act", "relu", N // 2)]
    assert all(isinstance(t, KernelTiming) and 0 < t.seconds < 1 for t in timings)
    model.close()
    model.close()  # closing twice is fine; a later call opens the device again
    x = np.ones((1, 2, 4, 4), np.float32)
    np.testing.assert_array_equal(model(x), reference(x, weights))
    model.close()
